"""The deploy form: equal to the train form in float64, fewer MACs than the fused form, bf16 where it is exact."""

import pytest
import torch
from torch import nn

import spikeyolo
from spikeyolo.forms.deploy import check_precision, deploy_torch
from spikeyolo.nn.neuron import ILIF
from spikeyolo.nn.units import ConvBias, ConvBN, DeployUnit, RepConvBN, SepRepConvBN
from test_forms import randomize_bn, rel_diff


@pytest.mark.parametrize(
    "unit, n_convs",
    [
        (lambda: ConvBN(6, 5, 3, 2, 1, conv_bias=True), 1),
        (lambda: ConvBN(6, 6, 7, groups=6), 1),
        (lambda: ConvBias(6, 5, 1), 1),
        (lambda: SepRepConvBN(6, 4), 2),  # 1x1 + dw3x3: 6*4 + 9*4 MACs per pixel < 9*6*4 dense
        (lambda: RepConvBN(6, 9), 3),  # 1x1 + dw3x3 + 1x1: 36 + 54 + 54 < 486 dense
    ],
    ids=["convbn-stride-bias", "depthwise7", "conv-bias", "seprepconv", "repconv"],
)
def test_each_unit_deploys_to_its_cheapest_exact_chain(unit, n_convs):
    """Borders included (the BN(0) padding became a bias past the depthwise conv), on integer spike inputs."""
    torch.manual_seed(0)
    u = randomize_bn(unit().double()).eval()
    x = torch.randint(0, 5, (3, 6, 11, 13)).double()
    dep = u.deploy()
    convs = [m for m in dep.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == n_convs
    assert not any(isinstance(m, nn.BatchNorm2d) for m in dep.modules())
    assert rel_diff(dep.convs(x), u.linear(x)) < 1e-12


def test_chain_kept_only_when_cheaper():
    """With one channel in and out the dense 3x3 (9 MACs per pixel) beats the chain (1 + 9 + 1): fused, and exact."""
    torch.manual_seed(0)
    u = randomize_bn(RepConvBN(1, 1).double()).eval()
    dep = u.deploy()
    assert len(dep.convs) == 1
    x = torch.randint(0, 5, (2, 1, 7, 6)).double()
    assert rel_diff(dep.convs(x), u.linear(x)) < 1e-12


@pytest.mark.parametrize("T,D", [(1, 4), (2, 4), (3, 1)])
def test_deploy_equals_train_form_in_float64(T, D):
    torch.manual_seed(0)
    model = randomize_bn(spikeyolo.build_model("s", nc=3, width=0.125, T=T, D=D).double(), 0).eval()
    x = torch.rand(2, 3, 64, 96, dtype=torch.float64) * 3
    ref = model(x)
    for channels_last in (False, True):
        dep = spikeyolo.deploy(model, "fp32", channels_last=channels_last)
        assert dep.form == "deploy" and not dep.training
        assert rel_diff(dep(x), ref) < 1e-9
    assert rel_diff(model(torch.rand_like(x) * 3), ref) > 1e-3  # not vacuous: the output depends on the input
    assert not any(isinstance(m, nn.BatchNorm2d) for m in dep.modules())


def test_bf16_runs_spike_fed_convs_in_bf16_and_the_rest_in_fp32():
    torch.manual_seed(0)
    model = randomize_bn(spikeyolo.build_model("n", nc=2, width=0.125), 0).eval()
    dep = deploy_torch(model, "bf16")
    units = [m for m in dep.modules() if isinstance(m, DeployUnit)]
    stem = units[0]
    assert stem.lif is None and stem.convs[0].weight.dtype == torch.float32
    head_last = [dep.head.box[i][-1] for i in range(3)] + [dep.head.cls[i][-1] for i in range(3)]
    assert all(u.convs[0].weight.dtype == torch.float32 for u in head_last)
    bf16 = [u for u in units if u.lif is not None and u not in head_last]
    assert bf16 and all(c.weight.dtype == torch.bfloat16 for u in bf16 for c in u.convs)
    x = torch.rand(1, 3, 64, 64)
    out = dep(x)
    assert out.dtype == torch.float32 and out.shape == model(x).shape


def test_bf16_unit_equals_fp32_on_bf16_weights():
    """Spikes 0..D are exact in bf16, so a bf16 unit differs from fp32 only by its bf16 weights, the inner biases
    and the bf16 outputs of its convs; the last bias stays float32."""
    torch.manual_seed(0)
    u = randomize_bn(RepConvBN(8, 16, lif=ILIF(D=4))).eval()  # spike-fed: may run in bf16
    x = torch.randint(0, 5, (1, 2, 8, 7, 9)).float()
    dep32, dep16 = u.deploy(), u.deploy("bf16")
    assert torch.equal(x.bfloat16().float(), x)
    assert dep16.bias.dtype == torch.float32 and torch.equal(dep16.bias, dep32.convs[-1].bias)
    with torch.no_grad():
        for c in dep32.convs:  # round fp32 weights to bf16 values: the only input rounding left
            c.weight.copy_(c.weight.bfloat16().float())
            if c.bias is not None and c is not dep32.convs[-1]:
                c.bias.copy_(c.bias.bfloat16().float())
        ref, got = dep32(x), dep16(x)
    assert got.dtype == torch.float32
    # three convs with bf16 outputs in between: a few bf16 ulps (2**-8 relative) of the largest value
    assert rel_diff(got, ref) < 3 * 2**-8
    assert rel_diff(got, u(x)) < 0.1


def test_bad_precision_and_backend_say_what_works():
    with pytest.raises(ValueError, match="precision must be one of"):
        check_precision("fp16", None)
    with pytest.raises(ValueError, match="backend must be one of"):
        check_precision("fp32", "tensorrt")
    with pytest.raises(ValueError, match="bf16 is not available with backend onnxruntime; supported: .*int8\\+torch"):
        check_precision("bf16", "onnxruntime")
    assert check_precision("int8", None) == "torch" and check_precision("int8", "onnxruntime") == "onnxruntime"
    with pytest.raises(ValueError, match="no train-form units"):
        spikeyolo.deploy(spikeyolo.fuse(spikeyolo.build_model("n", nc=2, width=0.125)))
