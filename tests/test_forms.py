"""The three execution forms give the same outputs; the spike-driven form only feeds 0/1 to convs after the stem."""

import pytest
import torch
from torch import nn

import spikeyolo
from spikeyolo.nn.neuron import ILIF
from spikeyolo.nn.units import ConvBias, ConvBN, RepConvBN, SepRepConvBN, SpikeDrivenUnit


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model


def rel_diff(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize(
    "unit",
    [
        lambda: ConvBN(6, 5, 3, 2, 1, conv_bias=True),
        lambda: ConvBN(6, 6, 7, groups=6),
        lambda: ConvBias(6, 5, 1),
        lambda: SepRepConvBN(6, 4),
        lambda: RepConvBN(6, 9),
    ],
    ids=["convbn-stride-bias", "depthwise7", "conv-bias", "seprepconv", "repconv"],
)
def test_each_unit_folds_into_one_conv(unit):
    """The folded conv equals the multi-branch chain on integer spike inputs, borders included."""
    torch.manual_seed(0)
    u = randomize_bn(unit().double()).eval()
    x = torch.randint(0, 5, (3, 6, 11, 13)).double()
    fused = u.fuse()
    assert rel_diff(fused.conv(x), u.linear(x)) < 1e-12
    assert fused.conv.bias is not None and sum(isinstance(m, nn.Conv2d) for m in fused.modules()) == 1


def _active_model(T, D, seed=0):
    torch.manual_seed(seed)
    model = randomize_bn(spikeyolo.build_model("s", nc=3, width=0.125, T=T, D=D).double(), seed).eval()
    return model


@pytest.mark.parametrize("T,D", [(1, 4), (2, 4), (3, 1), (1, 8)])
def test_fused_and_spike_driven_equal_train_form(T, D):
    model = _active_model(T, D)
    x = torch.rand(2, 3, 64, 96, dtype=torch.float64) * 3
    ref = model(x)
    fused = spikeyolo.fuse(model)
    sd = spikeyolo.to_spike_driven(model)
    assert rel_diff(fused(x), ref) < 1e-9
    assert rel_diff(sd(x), ref) < 1e-9
    # the comparison is not vacuous: the network is active and its output depends on the input
    assert rel_diff(model(torch.rand_like(x) * 3), ref) > 1e-3
    records = spikeyolo.audit(sd, x)
    assert all(r.events > 0 for r in records[-6:])


def test_original_model_untouched_and_forms_are_eval():
    model = spikeyolo.build_model("n", nc=2, width=0.125).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused, sd = spikeyolo.fuse(model), spikeyolo.to_spike_driven(model)
    assert model.training and not fused.training and not sd.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="train-form units"):
        spikeyolo.fuse(fused)
    sd2 = spikeyolo.to_spike_driven(fused)  # from the fused form too
    x = torch.rand(1, 3, 64, 64)
    assert torch.allclose(sd2(x), fused(x), atol=1e-4)


def test_audit_every_conv_after_the_stem_is_binary():
    model = _active_model(2, 4)
    sd = spikeyolo.to_spike_driven(model)
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    records = spikeyolo.audit(sd, x)
    convs = [n for n, m in sd.named_modules() if isinstance(m, nn.Conv2d)]
    assert sorted(r.name for r in records) == sorted(convs) and len(convs) == 89
    assert records[0].name == "layers.1.conv" and not records[0].binary
    assert all(r.binary for r in records[1:])
    # the train form feeds integers > 1 to its convs: the audit tells the difference
    assert not all(r.binary for r in spikeyolo.audit(model, x)[1:])
    # events counted: the first spiking conv's input ones equal the sum of its neuron's integer output (D slots)
    lif = model.layers[2].sep.pw.lif
    seen = {}
    h = lif.register_forward_hook(lambda m, i, o: seen.setdefault("s", o))
    model(x)
    h.remove()
    assert records[1].events == int(seen["s"].sum())
    assert records[1].elements == seen["s"].numel() * 4


def test_spike_driven_unit_adds_bias_once_per_real_timestep():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 2, 3, padding=1).double()
    nn.init.constant_(conv.bias, 0.75)
    unit = SpikeDrivenUnit(ILIF(D=4), conv)
    x = torch.rand(2, 1, 3, 6, 6, dtype=torch.float64) * 5  # T = 2
    counts = ILIF(D=4)(x)
    expected = torch.stack([conv(counts[t]) for t in range(2)])  # integer conv + bias once
    assert torch.allclose(unit(x), expected, rtol=0, atol=1e-12)
    assert unit.conv.bias is None


def test_bn_and_pad_fills_the_border_with_bn_of_zero_without_gradient():
    from spikeyolo.nn.units import BNAndPad

    layer = randomize_bn(BNAndPad(3, 1)).train()
    x = torch.rand(2, 3, 4, 5)
    y = layer(x)
    bn = layer.bn
    fill = bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)  # BN(0), running stats
    assert y.shape == (2, 3, 6, 7)
    for c in range(3):
        border = torch.cat([y[:, c, 0], y[:, c, -1], y[:, c, :, 0], y[:, c, :, -1]], 1)
        assert torch.allclose(border, fill[c].detach().expand_as(border))
    # the interior is the batch-statistics BN of x; the border carries no gradient to the BN parameters
    mean, var = x.mean((0, 2, 3), keepdim=True), x.var((0, 2, 3), unbiased=False, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    assert torch.allclose(y[..., 1:-1, 1:-1], expected, atol=1e-5)
    y[:, :, 0, 0].sum().backward()
    assert bn.weight.grad is None or torch.all(bn.weight.grad == 0)


def test_form_is_read_from_the_units():
    model = spikeyolo.build_model("n", nc=2, width=0.125)
    assert model.form == "train"
    fused = spikeyolo.fuse(model)
    assert fused.form == "fused" and model.form == "train"  # the original is untouched
    assert spikeyolo.to_spike_driven(model).form == "spike-driven"
    assert spikeyolo.to_spike_driven(fused).form == "spike-driven"
    with pytest.raises(ValueError, match="no spiking unit"):
        spikeyolo.nn.units.form_of(nn.Conv2d(1, 1, 1))
