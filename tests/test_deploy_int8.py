"""int8 on the torch backend: exact uint8 spike inputs, int8 weights per output channel, float32 outputs.

References are computed here independently: float64 convs with weights rounded by hand to the int8 grid."""

import copy
import json
import pickle

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import spikeyolo
from _train_data import make_dataset
from spikeyolo.cli import main
from spikeyolo.data.calibration import calibration_images
from spikeyolo.forms.deploy import check_device_support, deploy_torch
from spikeyolo.nn.int8 import Int8SpikeConv, bias_shift, int8_available, quantize_weight
from spikeyolo.nn.neuron import ILIF
from spikeyolo.nn.units import ConvBN, DeployUnit, RepConvBN, SepRepConvBN
from test_forms import randomize_bn, rel_diff

pytestmark = pytest.mark.skipif(not int8_available(), reason="no oneDNN quantized conv in this PyTorch build")


def int8_grid(w: torch.Tensor) -> torch.Tensor:
    """The weight rounded to the symmetric per-output-channel int8 grid, in float64 (brute force, per channel)."""
    out = torch.empty_like(w, dtype=torch.float64)
    for o in range(w.shape[0]):
        step = w[o].abs().max().item() / 127
        out[o] = torch.tensor([round(v / step) * step for v in w[o].flatten().tolist()]).view(w[o].shape)
    return out


def test_quantize_weight_hand_example():
    w = torch.tensor([[1.0, -0.5, 0.25, 0.0]]).view(1, 4, 1, 1)
    q, scale = quantize_weight(w)
    # step 1/127: 127, -63.5 -> -64 (half to even), 31.75 -> 32, 0
    assert q.dtype == torch.int8 and q.flatten().tolist() == [127, -64, 32, 0]
    assert scale.tolist() == pytest.approx([1 / 127])
    q0, s0 = quantize_weight(torch.zeros(2, 3, 1, 1))  # an all-zero channel does not divide by zero
    assert q0.abs().sum() == 0 and s0.tolist() == [1.0, 1.0]


@pytest.mark.parametrize("cin, cout, k, stride, groups, hw", [
    (6, 5, 3, 1, 1, (9, 11)), (6, 5, 3, 2, 1, (10, 7)), (8, 8, 7, 1, 8, (12, 9)), (16, 32, 1, 1, 1, (5, 6)),
])
def test_int8_conv_equals_float64_conv_with_int8_grid_weights(cin, cout, k, stride, groups, hw):
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=True)
    q = Int8SpikeConv(conv)
    w64 = int8_grid(conv.weight.detach())
    for batch in (1, 3):  # two input shapes: one packed weight each
        x = torch.randint(0, 5, (batch, cin, *hw)).float()
        ref = F.conv2d(x.double(), w64, conv.bias.detach().double(), stride, k // 2, 1, groups)
        got = q(x)
        assert got.dtype == torch.float32 and got.shape == ref.shape
        assert rel_diff(got.double(), ref) < 1e-6
        assert rel_diff(got.double(), F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), stride,
                                               k // 2, 1, groups)) > 1e-6  # not vacuous: the weights were rounded
    assert len(q._packed) == 2


def test_int8_conv_copies_and_pickles_after_use():
    """oneDNN's packed weights are opaque tensors: copies drop them and re-make them on use."""
    torch.manual_seed(0)
    q = Int8SpikeConv(nn.Conv2d(4, 6, 3, 1, 1))
    x = torch.randint(0, 3, (2, 4, 8, 8)).float()
    y = q(x)
    for other in (copy.deepcopy(q), pickle.loads(pickle.dumps(q))):
        assert torch.equal(other(x), y)


@pytest.mark.parametrize("unit", [RepConvBN, SepRepConvBN], ids=["rep", "seprep"])
def test_int8_unit_is_the_fp32_chain_with_its_first_weight_on_the_int8_grid(unit):
    def make():
        return unit(8, 12, lif=ILIF(D=4))  # spike-fed: may run in int8

    torch.manual_seed(0)
    u = randomize_bn(make().double(), 0).eval()
    x = torch.randint(0, 5, (1, 2, 8, 7, 9)).double()
    ref_unit = u.deploy()  # float64 chain
    with torch.no_grad():
        ref_unit.convs[0].weight.copy_(int8_grid(ref_unit.convs[0].weight))
        ref = ref_unit(x)
    dep8 = randomize_bn(make(), 0).eval()
    dep8.load_state_dict({k: v.float() for k, v in u.state_dict().items()})
    dep8 = dep8.deploy("int8")
    assert isinstance(dep8.convs[0], Int8SpikeConv)
    assert all(isinstance(c, nn.Conv2d) and c.weight.dtype == torch.float32 for c in dep8.convs[1:])
    got = dep8(x.float())
    assert got.dtype == torch.float32 and rel_diff(got.double(), ref) < 1e-5


def test_int8_model_keeps_stem_and_logits_fp32_and_runs():
    torch.manual_seed(0)
    model = randomize_bn(spikeyolo.build_model("n", nc=2, width=0.125), 0).eval()
    dep = spikeyolo.deploy(model, "int8")
    units = [m for m in dep.modules() if isinstance(m, DeployUnit)]
    head_last = {id(dep.head.box[i][-1]) for i in range(3)} | {id(dep.head.cls[i][-1]) for i in range(3)}
    for u in units:
        fp32 = u.lif is None or id(u) in head_last
        assert isinstance(u.convs[0], Int8SpikeConv) != fp32
    x = torch.rand(2, 3, 64, 96)
    out = dep(x)
    assert out.dtype == torch.float32 and out.shape == model(x).shape and torch.isfinite(out).all()


def test_int8_refuses_what_it_cannot_run():
    with pytest.raises(RuntimeError, match="int8 runs on the CPU .* not on cuda"):
        check_device_support("int8", "cuda")
    model = spikeyolo.build_model("n", nc=2, width=0.0625, D=300)
    with pytest.raises(ValueError, match="spikes 0..D must fit uint8, but D = 300"):
        deploy_torch(model, "int8")


def test_bias_shift_hand_example():
    w = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.5, 0.5], [0.5, 0.5]]]])  # [1 out, 2 in, 2, 2]
    wq = torch.tensor([[[[1.0, 2.0], [3.0, 3.5]], [[0.0, 0.5], [0.5, 0.5]]]])
    # channel 0 residual sums to 0.5, channel 1 to 0.5; means 2 and 4: 0.5 * 2 + 0.5 * 4 = 3
    assert bias_shift(w, wq, 1, torch.tensor([2.0, 4.0])).tolist() == [3.0]
    # depthwise (groups = channels): each output sees its own input channel's mean
    dw = torch.ones(2, 1, 3, 3)
    assert bias_shift(dw, dw * 0.9, 2, torch.tensor([1.0, 2.0])).tolist() == pytest.approx([0.9, 1.8])


def test_calibration_removes_the_mean_output_shift_of_weight_rounding():
    """A 1x1 unit (no borders): over the calibration spikes, int8 outputs average to the fp32 outputs once the
    bias is corrected, and not before."""
    torch.manual_seed(0)
    u = randomize_bn(ConvBN(16, 8, 1, lif=ILIF(D=4)), 0).eval()
    x = torch.rand(1, 4, 16, 6, 6) * 5 * torch.linspace(0.2, 1, 16).view(1, 1, 16, 1, 1)  # channel means differ
    spikes = u.lif(x).flatten(0, 1)
    mean = spikes.double().mean((0, 2, 3))
    with torch.no_grad():
        ref = u(x).double().mean((0, 1, 3, 4))
        plain = u.deploy("int8")(x).double().mean((0, 1, 3, 4))
        corrected = u.deploy("int8", input_mean=mean)(x).double().mean((0, 1, 3, 4))
    assert (plain - ref).abs().max() > 1e-3
    assert (corrected - ref).abs().max() < 1e-4


def test_deploy_int8_with_calibration_images():
    torch.manual_seed(0)
    model = randomize_bn(spikeyolo.build_model("n", nc=2, width=0.125), 0).eval()
    images = torch.rand(2, 3, 64, 64)
    plain, calibrated = spikeyolo.deploy(model, "int8"), spikeyolo.deploy(model, "int8", calibration=[images])
    biases = [(a.bias, b.bias) for a, b in zip(plain.modules(), calibrated.modules()) if isinstance(a, Int8SpikeConv)]
    assert biases and any(not torch.equal(a, b) for a, b in biases)
    assert calibrated(images).shape == plain(images).shape
    with pytest.raises(ValueError, match="precision bf16 takes none"):
        spikeyolo.deploy(model, "bf16", calibration=images)
    with pytest.raises(ValueError, match="calibration batch 0: expected a finite"):
        spikeyolo.deploy(model, "int8", calibration=torch.full((1, 3, 8, 8), float("nan")))


def test_cli_val_and_predict_int8_with_calibration(tmp_path, capsys):
    data = make_dataset(tmp_path / "ds", n_train=3, n_val=2)
    model = spikeyolo.build_model("n", nc=2, width=0.0625, imgsz=64, names=["class0", "class1"]).eval()
    weights = spikeyolo.save(model, tmp_path / "w.pt")
    train_images = str(data.parent / "images" / "train")
    common = ["--weights", str(weights), "--device", "cpu", "--project", str(tmp_path / "runs"), "--json"]
    assert main(["val", *common, "--data", str(data), "--workers", "0", "--no-plots", "--precision", "int8",
                 "--calibration", train_images]) == 0
    v = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert v["form"] == {"name": "deploy", "precision": "int8", "backend": "torch"} and 0 <= v["map50"] <= 1
    assert main(["predict", *common, "--source", str(data.parent / "images" / "val"), "--no-save",
                 "--precision", "int8", "--calibration", str(data.parent / "images" / "train" / "*")]) == 0
    assert len(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["sources"]) == 2
    with pytest.raises(ValueError, match="precision bf16 takes none"):
        main(["val", *common, "--data", str(data), "--precision", "bf16", "--calibration", train_images])
    with pytest.raises(ValueError, match="calibration: .*none does not exist"):
        main(["val", *common, "--data", str(data), "--precision", "int8", "--calibration", str(tmp_path / "none")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="calibration: no images in .*empty"):
        main(["val", *common, "--data", str(data), "--precision", "int8", "--calibration", str(tmp_path / "empty")])


def test_calibration_images_are_letterboxed_rgb_in_unit_range(tmp_path):
    img = np.zeros((20, 40, 3), np.uint8)
    img[..., 0] = 255  # blue in BGR
    cv2.imwrite(str(tmp_path / "a.png"), img)
    x = calibration_images(tmp_path, 32)
    assert x.shape == (1, 3, 32, 32) and x.dtype == torch.float32
    # 40x20 -> 32x16, centred: rows 8..23 are the image (blue = channel 2 in RGB), the rest is the grey pad
    assert torch.all(x[0, 2, 8:24] == 1) and torch.all(x[0, 0, 8:24] == 0)
    assert torch.allclose(x[0, :, :8], torch.full((3, 8, 32), 114 / 255))
    (tmp_path / "b.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="b.png is missing or is not an image"):
        calibration_images(tmp_path, 32)
