"""Energy plots (matplotlib, Agg backend, PNG files): per-layer firing rates and energy by stage."""

from __future__ import annotations

from pathlib import Path

from ..utils.plots import pyplot
from .ops import STAGES
from .report import EnergyReport

_STAGE_COLOURS = {"backbone": "#1f77b4", "neck": "#ff7f0e", "head": "#2ca02c", "other": "#7f7f7f"}


def plot_firing_rates(report: EnergyReport, path: str | Path) -> Path:
    """Bars of the firing rate (mean spike count in [0, D]) of the neuron feeding each spiking conv, by stage."""
    plt = pyplot()
    rows = [r for r in report.layers if r.firing_rate is not None]
    fig, ax = plt.subplots(figsize=(max(8, 0.13 * len(rows)), 4.5), dpi=120)
    ax.bar(range(len(rows)), [r.firing_rate for r in rows], color=[_STAGE_COLOURS.get(r.stage, "#7f7f7f")
                                                                     for r in rows])
    ax.set_xticks(range(len(rows)), [r.name.removeprefix("layers.") for r in rows], rotation=90, fontsize=5)
    ax.set_ylabel(f"firing rate (mean spike count, 0..{report.D})")
    ax.axhline(report.firing_rate, color="k", lw=0.8, ls="--", label=f"element-weighted mean {report.firing_rate:.3f}")
    from matplotlib.patches import Patch  # heavy: loaded only when a plot is drawn

    handles = [ax.get_lines()[0]] + [Patch(color=_STAGE_COLOURS[s], label=s) for s in STAGES]
    ax.legend(handles=handles, fontsize=7)
    ax.set_title(f"I-LIF firing rates ({report.images} images, T={report.T}, D={report.D})", fontsize=9)
    return _save(plt, fig, path)


def _save(plt, fig, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_energy_breakdown(report: EnergyReport, path: str | Path) -> Path:
    """Energy per image by stage, the stem's MACs and the spiking convs' ACs stacked; the ANN twin beside it."""
    plt = pyplot()
    stages = [s for s in STAGES if any(r.stage == s for r in report.layers)]
    mac = [sum(r.energy_pJ for r in report.layers if r.stage == s and r.firing_rate is None) * 1e-9 for s in stages]
    ac = [sum(r.energy_pJ for r in report.layers if r.stage == s and r.firing_rate is not None) * 1e-9
          for s in stages]
    ann = [sum(r.macs for r in report.layers if r.stage == s) * report.e_mac * 1e-9 for s in stages]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 4), dpi=120)
    x = range(len(stages))
    ax.bar(x, mac, color="#d62728", label=f"stem ({report.first_layer.upper()})")
    ax.bar(x, ac, bottom=mac, color="#1f77b4", label="spiking convs (AC)")
    ax.set_xticks(list(x), stages)
    ax.set_ylabel("energy per image (mJ)")
    ax.set_title(f"SNN {report.energy_mJ:.3f} mJ", fontsize=9)
    ax.legend(fontsize=7)
    ax2.bar(x, ann, color="#7f7f7f")
    ax2.set_xticks(list(x), stages)
    ax2.set_title(f"ANN twin {report.ann_energy_mJ:.3f} mJ ({report.ratio:.1f}x)", fontsize=9)
    fig.suptitle(f"energy by stage at {report.imgsz[0]}x{report.imgsz[1]} (E_MAC {report.e_mac} pJ, "
                 f"E_AC {report.e_ac} pJ)", fontsize=9)
    return _save(plt, fig, path)
