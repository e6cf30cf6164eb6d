"""I-LIF against an independent loop written here from the equations (not from the module's code)."""

import pytest
import torch

from spikeyolo.nn.neuron import ILIF, reset_state, set_carry_state


def reference_ilif(x, D, decay, gain, detach):
    """Loop over time with explicit per-element rounding; gradient via a manual straight-through surrogate."""
    spikes, prev_u, prev_s = [], None, None
    for t in range(x.shape[0]):
        reset = prev_s.detach() if (prev_s is not None and detach) else prev_s
        u = gain * x[t] if prev_u is None else decay * (prev_u - reset) + gain * x[t]
        clamped = torch.minimum(torch.maximum(u, torch.zeros_like(u)), torch.full_like(u, D))
        rounded = torch.round(clamped.detach())  # half to even
        window = ((u >= 0) & (u <= D)).to(u.dtype)
        s = rounded + (u - u.detach()) * window  # value = rounded, d s / d u = window
        spikes.append(s)
        prev_u, prev_s = u, s
    return torch.stack(spikes)


@pytest.mark.parametrize("T", [1, 3])
@pytest.mark.parametrize("D", [1, 2, 4, 8])
@pytest.mark.parametrize("detach", [True, False])
def test_forward_and_gradient_match_loop(T, D, detach):
    g = torch.Generator().manual_seed(T * 100 + D)
    x = (torch.rand(T, 2, 3, 5, 5, generator=g, dtype=torch.float64) * (D + 3) - 1.5)
    # exact ties and window edges must be in the input
    x[0, 0, 0, 0, :5] = torch.tensor([0.5, 1.5, 2.5, 0.0, float(D)], dtype=torch.float64)
    x1 = x.clone().requires_grad_()
    x2 = x.clone().requires_grad_()
    neuron = ILIF(D=D, decay=0.25, input_gain=0.7, detach_reset=detach)
    out = neuron(x1)
    ref = reference_ilif(x2, D, 0.25, 0.7, detach)
    assert torch.equal(out, ref.detach())
    assert out.dtype == x.dtype and out.shape == x.shape
    assert torch.equal(out, out.round()) and out.min() >= 0 and out.max() <= D
    w = torch.randn(x.shape, generator=g, dtype=torch.float64)
    (out * w).sum().backward()
    (ref * w).sum().backward()
    assert torch.allclose(x1.grad, x2.grad, rtol=0, atol=1e-12)


def test_round_half_to_even_and_inclusive_window():
    neuron = ILIF(D=4, decay=0.25)
    x = torch.tensor([[0.5, 1.5, 2.5, 3.5, 4.5, -0.5, 0.0, 4.0, 4.0001, -1e-6]], requires_grad=True)
    s = neuron(x)
    assert s.tolist() == [[0.0, 2.0, 2.0, 4.0, 4.0, 0.0, 0.0, 4.0, 4.0, 0.0]]
    s.sum().backward()
    assert x.grad.tolist() == [[1, 1, 1, 1, 0, 0, 1, 1, 0, 0]]


def test_hand_computed_three_steps():
    # decay 0.25, gain 1: u0 = 2.6 -> 3; u1 = 0.25*(2.6-3) + 1.1 = 1.0 -> 1; u2 = 0.25*(1.0-1) + 0.6 = 0.6 -> 1
    x = torch.tensor([[2.6], [1.1], [0.6]], dtype=torch.float64)
    assert ILIF(D=4)(x).flatten().tolist() == [3.0, 1.0, 1.0]


def test_carry_state_continues_the_recurrence():
    x = torch.rand(4, 2, 8, dtype=torch.float64) * 3
    whole = ILIF(D=4)(x)
    neuron = ILIF(D=4)
    set_carry_state(neuron, True)
    parts = torch.cat([neuron(x[:2]), neuron(x[2:])])
    assert torch.equal(whole, parts)
    reset_state(neuron)
    assert torch.equal(neuron(x[2:]), ILIF(D=4)(x[2:]))


def test_invalid_D():
    with pytest.raises(ValueError, match="D must be a positive integer"):
        ILIF(D=0)


def test_neuron_config_owns_the_settings():
    from spikeyolo.nn.neuron import NeuronConfig

    assert NeuronConfig() == NeuronConfig(D=4, decay=0.25, input_gain=1.0, detach_reset=True)  # reference COCO
    gen1 = NeuronConfig(decay=0.5, input_gain=0.5)
    lif = gen1.build()
    assert (lif.D, lif.decay, lif.input_gain, lif.detach_reset) == (4, 0.5, 0.5, True)
    assert NeuronConfig.from_config({"D": 2, "decay": 0.5}) == NeuronConfig(D=2, decay=0.5)
    assert NeuronConfig.from_config(gen1.to_config()) == gen1
    assert gen1.replace(D=None, input_gain=1.0) == NeuronConfig(decay=0.5)
    with pytest.raises(ValueError, match="D must be a positive integer"):
        NeuronConfig(D=1.5)


def test_model_and_checkpoint_keep_the_neuron(tmp_path):
    import spikeyolo
    from spikeyolo.nn.neuron import NeuronConfig

    gen1 = NeuronConfig(decay=0.5, input_gain=0.5)
    model = spikeyolo.build_model("n", nc=2, width=0.0625, neuron=gen1)
    assert model.neuron == gen1
    assert {(m.decay, m.input_gain) for m in model.modules() if isinstance(m, ILIF)} == {(0.5, 0.5)}
    config = torch.load(spikeyolo.save(model, tmp_path / "m.pt"), weights_only=True)["config"]
    assert (config["decay"], config["input_gain"], config["D"]) == (0.5, 0.5, 4)  # flat keys, as before
    assert spikeyolo.load(tmp_path / "m.pt").neuron == gen1
