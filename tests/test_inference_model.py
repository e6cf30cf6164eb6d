"""InferenceModel: every file read once, the default (fused) export accepted by val / predict, one clear line for
a malformed or foreign .onnx, the same description for every form, and spikeyolo.predict's precision/backend."""

import json

import cv2
import numpy as np
import pytest
import torch

import spikeyolo
from _train_data import make_dataset
from spikeyolo.cli import main
from spikeyolo.inference import InferenceModel
from spikeyolo.utils.errors import FileFormatError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny checkpoint saved with train_args (data, imgsz 64), its data set and its default .onnx export."""
    tmp = tmp_path_factory.mktemp("im")
    data = make_dataset(tmp / "ds", n_train=1, n_val=2)
    torch.manual_seed(0)
    model = spikeyolo.build_model("n", nc=2, width=0.0625, imgsz=64, names=["box", "disc"]).eval()
    weights = spikeyolo.save(model, tmp / "w.pt", train_args={"data": str(data), "imgsz": 64})
    assert main(["export", "--weights", str(weights)]) == 0  # the default: the fused form
    return model, weights, data, tmp / "w.onnx"


@pytest.fixture
def torch_loads(monkeypatch):
    """Every torch.load call's file."""
    calls, real = [], torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: (calls.append(str(f)), real(f, *a, **k))[1])
    return calls


def last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_val_predict_export_read_the_checkpoint_once(trained, tmp_path, torch_loads, capsys):
    _, weights, data, _ = trained
    # val without --data: the data YAML recorded in the checkpoint, found in the same single read
    assert main(["val", "--weights", str(weights), "--device", "cpu", "--workers", "0", "--no-plots",
                 "--project", str(tmp_path / "runs"), "--json"]) == 0
    assert torch_loads == [str(weights)]
    assert last_json(capsys)["form"] == {"name": "train", "precision": "fp32", "backend": "torch"}
    torch_loads.clear()
    assert main(["predict", "--weights", str(weights), "--source", str(data.parent / "images" / "val"),
                 "--no-save", "--project", str(tmp_path / "runs"), "--json"]) == 0
    assert torch_loads == [str(weights)]
    torch_loads.clear()
    assert main(["export", "--weights", str(weights), "--output", str(tmp_path / "e.onnx")]) == 0
    assert torch_loads == [str(weights)] and "at 64x64" in capsys.readouterr().out  # the recorded size


def test_val_and_predict_take_the_default_fused_export(trained, tmp_path, capsys, monkeypatch):
    model, _, data, fused = trained
    reads = []
    real = spikeyolo.export.ort.read_onnx
    monkeypatch.setattr(spikeyolo.export.ort, "read_onnx", lambda p: (reads.append(str(p)), real(p))[1])
    assert main(["val", "--weights", str(fused), "--data", str(data), "--device", "cpu", "--workers", "0",
                 "--no-plots", "--project", str(tmp_path / "runs"), "--json"]) == 0
    v = last_json(capsys)
    assert v["form"] == {"name": "fused", "precision": "fp32", "backend": "onnxruntime"} and v["images"] == 2
    assert reads == [str(fused)]  # the .onnx is read once too
    assert main(["predict", "--weights", str(fused), "--source", str(data.parent / "images" / "val"),
                 "--no-save", "--project", str(tmp_path / "runs"), "--json"]) == 0
    assert len(last_json(capsys)["sources"]) == 2
    m = InferenceModel.load(fused)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(m(x).numpy(), model(x).numpy(), atol=1e-3)  # the train form, independently


def _foreign_onnx(path):
    """A valid ONNX model that spikeyolo did not write (one Relu, no metadata)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph), str(path))


@pytest.mark.parametrize("kind", ["random", "empty", "foreign", "damaged"])
def test_a_malformed_or_foreign_onnx_is_one_line(kind, trained, tmp_path, capsys):
    path = tmp_path / f"{kind}.onnx"
    if kind == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "foreign":
        _foreign_onnx(path)
    else:  # a spikeyolo export cut in half
        path.write_bytes(trained[3].read_bytes()[:20000])
    with pytest.raises(FileFormatError, match=str(path)):
        InferenceModel.load(path)
    for cmd in (["val", "--data", str(trained[2]), "--workers", "0"], ["predict", "--source", str(tmp_path)]):
        assert main([cmd[0], "--weights", str(path), *cmd[1:], "--project", str(tmp_path / "runs")]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {path}") and "Traceback" not in err[0]


def test_every_form_has_the_same_description(trained, tmp_path):
    model, weights, _, fused = trained
    deploy_onnx = tmp_path / "d.onnx"
    spikeyolo.export.onnx.export_onnx(model, deploy_onnx, 64, check=False, form="deploy", precision="int8")
    cases = {  # form, precision, backend written out by hand
        "train": (InferenceModel.load(weights), ("train", "fp32", "torch")),
        "fused": (InferenceModel.of(spikeyolo.fuse(model)), ("fused", "fp32", "torch")),
        "spike-driven": (InferenceModel.of(spikeyolo.to_spike_driven(model)), ("spike-driven", "fp32", "torch")),
        "bf16": (InferenceModel.of(spikeyolo.deploy(model, "bf16")), ("deploy", "bf16", "torch")),
        "int8": (InferenceModel.load(weights, "int8"), ("deploy", "int8", "torch")),
        "ort int8": (InferenceModel.of(spikeyolo.deploy(model, "int8", "onnxruntime", imgsz=64)),
                     ("deploy", "int8", "onnxruntime")),
        "fused onnx": (InferenceModel.load(fused), ("fused", "fp32", "onnxruntime")),
        "deploy onnx": (InferenceModel.load(deploy_onnx), ("deploy", "int8", "onnxruntime")),
    }
    for name, (m, (form, precision, backend)) in cases.items():
        assert (m.form, m.precision, m.backend) == (form, precision, backend), name
        assert (m.names, m.nc, m.stride, m.imgsz, m.T, m.D) == (["box", "disc"], 2, (8, 16, 32), 64, 1, 4), name
        with torch.no_grad():
            assert m.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 4 + 2, 8 * 8 + 4 * 4 + 2 * 2), name
    assert InferenceModel.load(weights).record["train_args"]["data"] == str(trained[2])


def test_a_converted_form_refuses_another_precision(trained):
    _, weights, _, fused = trained
    with pytest.raises(ValueError, match="exported in fp32, not int8"):
        InferenceModel.load(fused, precision="int8")
    with pytest.raises(ValueError, match="cannot run with backend torch"):
        InferenceModel.load(fused, backend="torch")
    with pytest.raises(ValueError, match="calibration applies when a checkpoint is converted"):
        InferenceModel.load(fused, calibration=torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="exported for 64x64 inputs, not 96"):
        InferenceModel.load(fused, imgsz=96)
    with pytest.raises(TypeError, match="cannot describe a Linear"):
        InferenceModel.of(torch.nn.Linear(2, 2))


def test_predict_takes_precision_and_backend(trained, tmp_path):
    model, weights, _, _ = trained
    img = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    predictor = spikeyolo.engine.predictor.load_predictor(weights, None, 0.25, 0.7, 300, "cpu", None,
                                                          precision="fp32", backend="onnxruntime")
    assert (predictor.model.form, predictor.model.backend, predictor.imgsz) == ("deploy", "onnxruntime", 64)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(predictor.model(x).numpy(), model(x).numpy(), atol=1e-3)
    results = spikeyolo.predict(weights, str(tmp_path / "a.png"), conf=0.0, precision="bf16")
    reference = spikeyolo.predict(weights, str(tmp_path / "a.png"), conf=0.0)
    assert len(results) == len(reference) == 1 and len(results[0].boxes) > 0
    with pytest.raises(ValueError, match="bf16 is not available with backend onnxruntime"):
        spikeyolo.predict(weights, str(tmp_path / "a.png"), precision="bf16", backend="onnxruntime")


def test_head_maps_only_from_a_torch_network(trained):
    model, _, _, fused = trained
    m = InferenceModel.of(model).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        out, maps = m(x, return_maps=True)
        assert torch.equal(out, m(x))
    assert [tuple(t.shape) for t in maps] == [(1, 4 * 16 + 2, s, s) for s in (8, 4, 2)]  # reg_max 16 DFL bins
    onnx_model = InferenceModel.load(fused)
    assert m.has_maps and not onnx_model.has_maps
    with pytest.raises(ValueError, match="gives no head maps"):
        onnx_model(x, return_maps=True)
