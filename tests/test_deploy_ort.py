"""The deploy form in ONNX Runtime: int8 weights within scale/2, spikes exact as uint8, exported files that carry
their metadata and refuse other sizes, and the CLI flags end to end."""

import json

import numpy as np
import pytest
import torch
from torch import nn

import spikeyolo
from _train_data import make_dataset
from spikeyolo.cli import main
from spikeyolo.export.onnx import export_onnx
from spikeyolo.forms.deploy import deploy_torch
from spikeyolo.inference import InferenceModel
from spikeyolo.nn.int8 import quantize_weight
from spikeyolo.nn.neuron import ILIF
from spikeyolo.nn.units import DeployUnit, RepConvBN
from test_forms import randomize_bn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from spikeyolo.export.ort import OrtModel, quantize_graph, spike_fed_convs  # noqa: E402


def test_int8_weights_dequantize_within_half_a_step():
    w = np.random.default_rng(0).normal(size=(5, 3, 3, 3)).astype(np.float32)
    w[2] = 0  # an all-zero channel keeps a finite scale
    q, scale = (t.numpy() for t in quantize_weight(torch.from_numpy(w)))
    assert q.dtype == np.int8 and np.abs(q).max() == 127
    for c in range(5):
        expected = np.abs(w[c]).max() / 127 if c != 2 else 1.0  # symmetric: the largest weight maps to +-127
        assert scale[c] == pytest.approx(expected)
        assert np.abs(q[c] * scale[c] - w[c]).max() <= scale[c] / 2 + 1e-7


class OneUnit(nn.Module):
    """A single I-LIF -> RepConv chain on ``[B, C, H, W]`` inputs (T = 1), for a layer-level int8 check."""

    def __init__(self):
        super().__init__()
        self.unit = randomize_bn(RepConvBN(6, 10, lif=ILIF(D=4))).eval().deploy()

    def forward(self, x):
        return self.unit(x.unsqueeze(0)).squeeze(0)


def test_int8_conv_is_exact_on_spikes_with_dequantized_weights(tmp_path):
    """ConvInteger on uint8 spikes (scale 1, zero point 0) equals the float conv with the int8 round-trip weights:
    the only error left is weight rounding, which the float64 reference with original weights shows is real."""
    torch.manual_seed(0)
    m = OneUnit()
    path = tmp_path / "u.onnx"
    torch.onnx.export(m, (torch.rand(2, 6, 9, 11),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"])
    proto = onnx.load(str(path))
    assert quantize_graph(proto, {"unit.convs.0.weight": m.unit.convs[0]}, D=4) == 1
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("ConvInteger") == 1 and ops.count("Conv") == 2  # the chain's inner convs stay float
    x = torch.rand(2, 6, 9, 11) * 5
    got = ort.InferenceSession(proto.SerializeToString())
    got = torch.from_numpy(got.run(None, {"x": x.numpy()})[0]).double()
    ref = m.double()
    with torch.no_grad():
        exact = ref(x.double())
        w = ref.unit.convs[0].weight
        q, scale = quantize_weight(w.float())
        w.copy_(q.double() * scale.double()[:, None, None, None])
        twin = ref(x.double())
    assert ((got - twin).abs().max() / twin.abs().max()).item() < 1e-5
    assert ((got - exact).abs().max() / exact.abs().max()).item() > 1e-5  # weight rounding is visible


def test_int8_export_quantizes_every_spike_fed_conv_but_stem_and_logits(tmp_path):
    torch.manual_seed(0)
    model = randomize_bn(spikeyolo.build_model("n", nc=2, width=0.125, T=2, imgsz=64), 0).eval()
    dep = deploy_torch(model)
    units = [m for m in dep.modules() if isinstance(m, DeployUnit)]
    spiking = [u for u in units if u.lif is not None]
    names = spike_fed_convs(dep)
    assert len(names) == len(spiking) - 6  # the head's 3 box + 3 class logit convs stay float
    result = export_onnx(model, tmp_path / "m.onnx", form="deploy", precision="int8")
    assert result["int8_convs"] == len(names) and result["imgsz"] == [64, 64]
    assert result["max_abs_diff"] < 1e-3  # against torch with the same dequantized weights
    g = onnx.load(result["path"]).graph
    ops = [n.op_type for n in g.node]
    assert ops.count("ConvInteger") == len(names)
    float_convs = [n for n in g.node if n.op_type == "Conv"]
    assert any(n.input[1] == "layers.1.convs.0.weight" for n in float_convs)  # the stem
    assert not any(i.name in names for i in g.initializer)  # float copies of quantized weights are gone


def test_onnx_file_carries_metadata_and_refuses_other_sizes(tmp_path):
    torch.manual_seed(0)
    model = spikeyolo.build_model("n", nc=2, width=0.125, imgsz=64, names=["a", "b"]).eval()
    result = export_onnx(model, tmp_path / "m.onnx", form="deploy")
    assert result["max_abs_diff"] < 1e-4
    o = OrtModel(result["path"])
    assert (o.names, o.imgsz, o.T, o.D, o.strides, o.precision) == (["a", "b"], (64, 64), 1, 4, [8, 16, 32], "fp32")
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(o(x), model(x), atol=1e-3)  # batch 3: the batch axis is dynamic
    with pytest.raises(ValueError, match="exported for 64x64 inputs, got 96x96"):
        o(torch.rand(1, 3, 96, 96))
    with pytest.raises(ValueError, match="not 96; drop --imgsz"):
        InferenceModel.load(result["path"], imgsz=96)
    with pytest.raises(ValueError, match="exported in fp32, not int8"):
        InferenceModel.load(result["path"], precision="int8")
    fused = tmp_path / "fused.onnx"  # the default export carries the metadata too (issue 19: val/predict take it)
    export_onnx(model, fused, imgsz=64, check=False)
    assert (OrtModel(fused).form, OrtModel(result["path"]).form) == ("fused", "deploy")


def test_version_mismatch_warns(tmp_path, monkeypatch):
    model = spikeyolo.build_model("n", nc=2, width=0.125, imgsz=64).eval()
    path = export_onnx(model, tmp_path / "m.onnx", check=False, form="deploy")["path"]
    monkeypatch.setattr("spikeyolo.export.ort.__version__", "9.9.9")
    with pytest.warns(UserWarning, match="exported by spikeyolo 0.1.0, this is 9.9.9"):
        OrtModel(path)


def last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_cli_export_val_predict_with_precisions(tmp_path, capsys):
    data = make_dataset(tmp_path / "ds", n_train=2, n_val=2)
    model = spikeyolo.build_model("n", nc=2, width=0.0625, imgsz=64, names=["class0", "class1"]).eval()
    weights = spikeyolo.save(model, tmp_path / "w.pt")
    assert main(["export", "--weights", str(weights), "--precision", "int8"]) == 0
    out = capsys.readouterr().out
    assert "deploy form (int8" in out and "at 64x64" in out  # the checkpoint's size by default
    common = ["--data", str(data), "--device", "cpu", "--workers", "0", "--no-plots", "--project",
              str(tmp_path / "runs"), "--json"]
    keys, forms = [], []
    for extra in (["--weights", str(weights), "--precision", "fp32"], ["--weights", str(weights), "--precision",
                  "bf16"], ["--weights", str(weights), "--precision", "int8"], ["--weights", str(weights),
                  "--precision", "int8", "--backend", "onnxruntime"], ["--weights", str(tmp_path / "w.onnx")]):
        assert main(["val", *extra, *common]) == 0
        v = last_json(capsys)
        keys.append(set(v) - {"save_dir"})
        forms.append((v["form"]["precision"], v["form"]["backend"]))
        assert v["images"] == 2 and 0 <= v["map50"] <= 1
    assert all(k == keys[0] for k in keys)
    assert forms == [("fp32", "torch"), ("bf16", "torch"), ("int8", "torch"), ("int8", "onnxruntime"),
                     ("int8", "onnxruntime")]
    assert main(["predict", "--weights", str(tmp_path / "w.onnx"), "--source", str(data.parent / "images" / "val"),
                 "--no-save", "--project", str(tmp_path / "runs"), "--json"]) == 0
    assert len(last_json(capsys)["sources"]) == 2
    with pytest.raises(ValueError, match="bf16 is not available with backend onnxruntime"):
        main(["val", "--weights", str(weights), "--precision", "bf16", "--backend", "onnxruntime", *common])
