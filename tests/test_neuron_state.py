"""I-LIF state is registered memory: cleared by reset_state, never saved, moved with the module, and refused
(not silently dropped) when a carried stream changes batch size."""

import pytest
import torch

import spikeyolo
from spikeyolo.nn.neuron import ILIF, iter_neurons, reset_state, set_carry_state


def test_a_new_batch_size_needs_a_reset():
    neuron = ILIF(D=4)
    set_carry_state(neuron, True)
    neuron(torch.rand(2, 3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"carried membrane has shape \(3, 5\) but this input step is \(4, 5\)"):
        neuron(torch.rand(2, 4, 5, dtype=torch.float64))
    reset_state(neuron)
    x = torch.rand(2, 4, 5, dtype=torch.float64) * 3
    assert torch.equal(neuron(x), ILIF(D=4)(x))  # from rest, as a fresh neuron


def test_state_is_a_buffer_that_is_not_saved():
    model = spikeyolo.build_model("n", nc=2, width=0.0625, T=2).eval()
    set_carry_state(model, True)
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64))
    neurons = list(iter_neurons(model))
    assert all(n.residual is not None for n in neurons)
    assert not any("residual" in k for k in model.state_dict())  # a checkpoint never holds a stream's state
    assert all(n.residual.dtype == torch.float64 for n in iter_neurons(model.double()))  # moves with the module
    reset_state(model)
    assert all(n.residual is None for n in neurons) and all(n.carry_state for n in neurons)
    set_carry_state(model, False)
    assert not any(n.carry_state for n in neurons)
