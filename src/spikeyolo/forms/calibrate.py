"""Optional calibration of the int8 deploy form: the spikes' mean per input channel of every spike-fed conv.

Rounding a conv's weights to int8 shifts its output on average by ``sum over inputs of (W - Wq) * E[x]``; with
``E[x]`` measured here on calibration images (in the fp32 deploy form), the int8 conversion adds that shift back
to the bias (:func:`spikeyolo.nn.int8.bias_shift`; empirical bias correction, Nagel et al., ICCV 2019).
Without calibration nothing is corrected: the int8 form is then exact up to its weight rounding.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..nn.units import DeployUnit


def calibration_batches(images) -> Iterable[torch.Tensor]:
    """``images``: one ``[N, 3, H, W]`` tensor in [0, 1], or an iterable of such tensors."""
    if isinstance(images, torch.Tensor):
        images = [images]
    for i, x in enumerate(images):
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or not torch.isfinite(x).all():
            raise ValueError(f"calibration batch {i}: expected a finite [N, 3, H, W] image tensor, got "
                             f"{type(x).__name__}{list(x.shape) if isinstance(x, torch.Tensor) else ''}")
        yield x


@torch.inference_mode()
def spike_means(dep: nn.Module, images) -> dict[str, torch.Tensor]:
    """``{unit name: mean spike count per input channel of its first conv}`` over the calibration images, for
    every unit of a float32 deploy form that is fed by an I-LIF (float64 means)."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def record(name):
        def hook(conv, args):
            x = args[0]
            sums[name] = sums.get(name, 0) + x.double().sum((0, 2, 3))
            counts[name] = counts.get(name, 0) + x.numel() // x.shape[1]
        return hook

    hooks = [u.convs[0].register_forward_pre_hook(record(name)) for name, u in dep.named_modules()
             if isinstance(u, DeployUnit) and u.lif is not None]
    try:
        n = 0
        for x in calibration_batches(images):
            dep(x.to(next(dep.parameters()).device, torch.float32))
            n += len(x)
    finally:
        for h in hooks:
            h.remove()
    if n == 0:
        raise ValueError("calibration: no images given")
    return {name: sums[name] / counts[name] for name in sums}
