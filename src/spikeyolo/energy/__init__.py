"""Firing rates, operation counts and energy of SpikeYOLO models (see docs/energy.md).

    meter = EnergyMeter(model)
    with meter.monitor(model):
        for batch in loader:
            model(images)
    report = meter.report()          # EnergyReport: per-layer table, totals, summary() for results.csv
"""

from .monitor import FiringRateMonitor, InputStats, NeuronStats
from .ops import ConvGeometry, ConvSpec, fused_conv_spec, layer_index, stage_of, synops, synops_tensor, unit_geometry
from .report import E_AC_PJ, E_MAC_PJ, EnergyMeter, EnergyReport, LayerEnergy, estimate_energy

__all__ = [
    "E_AC_PJ",
    "E_MAC_PJ",
    "ConvGeometry",
    "ConvSpec",
    "EnergyMeter",
    "EnergyReport",
    "FiringRateMonitor",
    "InputStats",
    "LayerEnergy",
    "NeuronStats",
    "estimate_energy",
    "fused_conv_spec",
    "layer_index",
    "stage_of",
    "synops",
    "synops_tensor",
    "unit_geometry",
]
