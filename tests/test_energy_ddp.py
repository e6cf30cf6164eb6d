"""FiringRateMonitor.all_reduce over two gloo processes: the sums of both shards, by hand."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn


class _OneUnit(nn.Module):
    def __init__(self):
        super().__init__()
        from spikeyolo.nn.neuron import ILIF
        from spikeyolo.nn.units import FusedUnit

        self.unit = FusedUnit(ILIF(D=4), nn.Conv2d(2, 3, 3, 1, 1))

    def forward(self, x):
        return self.unit(x.transpose(0, 1))


def _worker(rank: int, world: int, init: str, results):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        from spikeyolo.energy import FiringRateMonitor

        model = _OneUnit()
        mon = FiringRateMonitor(model)
        with mon:  # rank 0: one 4x4 image of spikes 1; rank 1: two 4x4 images of spikes 2
            model(torch.full((rank + 1, 1, 2, 4, 4), float(rank + 1)))
        mon.all_reduce()
        s = mon.stats()["unit"]
        results[rank] = (s.total, s.elements, s.nonzero, s.synops, mon.inputs.images, dict(mon.inputs.sizes))
    finally:
        dist.destroy_process_group()


def test_all_reduce_two_ranks(tmp_path):
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(2, f"file://{tmp_path / 'store'}", results), nprocs=2)
        results = dict(results)
    # totals: 16 px x 2 ch x (1 image x 1 + 2 images x 2) = 160; 96 elements, all nonzero.
    # 3x3 conv, pad 1, on 4x4: 10 x 10 = 100 taps land inside; channel sum 2 (rank 0) or 4 (rank 1); Cout 3:
    # 100 * 2 * 3 + 2 * 100 * 4 * 3 = 3000 synaptic operations.
    expected = (160.0, 96, 96, 3000.0, 3, {(4, 4): 3})
    assert results == {0: expected, 1: expected}
