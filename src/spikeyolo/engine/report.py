"""Validation results for people: the fitness that picks the best epoch, the metrics table, one-line JSON."""

from __future__ import annotations

import numpy as np

from ..runs import plain_json


def fitness(metrics: dict) -> float:
    """The model-selection score: 0.1 * mAP50 + 0.9 * mAP50-95 (NaN counts as 0)."""
    m50, m = metrics.get("map50", 0.0), metrics.get("map", 0.0)
    m50 = 0.0 if m50 is None or not np.isfinite(m50) else m50
    m = 0.0 if m is None or not np.isfinite(m) else m
    return 0.1 * float(m50) + 0.9 * float(m)


def summary_table(metrics: dict, names) -> str:
    """A readable table: all classes, then per class (AP50, AP50-95)."""
    def f(x, w=7):
        return f"{x:{w}.3f}" if x is not None and np.isfinite(x) else f"{'-':>{w}}"

    def num(x, spec=".3f"):
        return format(x, spec) if x is not None and np.isfinite(x) else "-"

    lines = [f"{'class':>16} {'images':>7} {'labels':>7} {'P':>7} {'R':>7} {'mAP50':>7} {'mAP50-95':>9}"]
    lines.append(
        f"{'all':>16} {metrics['images']:>7} {metrics['instances']:>7} {f(metrics['precision'])} "
        f"{f(metrics['recall'])} {f(metrics['map50'])} {f(metrics['map'], 9)}"
    )
    names = list(names.values()) if isinstance(names, dict) else list(names)
    if len(names) > 1:
        for i, n in enumerate(names):
            a50, a = metrics["ap50_per_class"][i], metrics["ap_per_class"][i]
            if a50 is not None and np.isfinite(a50):
                lines.append(f"{n:>16} {'':>7} {'':>7} {'':>7} {'':>7} {f(a50)} {f(a, 9)}")
    if "protocol" in metrics:
        lines[0] += f"   (protocol: {metrics['protocol']})"
    if "prophesee" in metrics:
        p = metrics["prophesee"]
        lines.append(f"protocol prophesee (0.5 s skip, min diag 30 / side 10 px, +-50 ms): AP {f(p['AP'], 0)}, "
                     f"AP50 {f(p['AP50'], 0)}, AP75 {f(p['AP75'], 0)} over {p['images']} timestamps")
    if "snn/energy_mJ" in metrics:  # values may be None: plain() turns NaN (a diverged model) into None
        synops = metrics.get("snn/synops")
        lines.append(f"SNN: firing rate {num(metrics.get('snn/firing_rate'))} (mean spike count per neuron and "
                     f"step), {num(None if synops is None else synops / 1e9)} G synaptic ops, "
                     f"{num(metrics.get('snn/energy_mJ'))} mJ per image"
                     + (f" (ANN twin {num(metrics['snn/ann_energy_mJ'])} mJ)" if "snn/ann_energy_mJ" in metrics
                        else ""))
    sp = metrics.get("speed") or {}
    lines.append(f"speed: {num(sp.get('preprocess'), '.1f')} ms preprocess, {num(sp.get('inference'), '.1f')} ms "
                 f"inference, {num(sp.get('postprocess'), '.1f')} ms postprocess per image")
    return "\n".join(lines)


def metrics_json(metrics: dict, **extra) -> str:
    """A result as one line of strict JSON (for ``--json``)."""
    return plain_json({**metrics, **extra})
