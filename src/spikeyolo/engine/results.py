"""Validation results for people: the fitness that picks the best epoch, the metrics table, one-line JSON."""

from __future__ import annotations

import numpy as np

from ..energy.report import SILENT_FIRING_RATE
from ..utils.runs import plain_json


def fitness(metrics: dict) -> float:
    """The model-selection score: 0.1 * mAP50 + 0.9 * mAP50-95 (NaN counts as 0)."""
    m50, m = metrics.get("map50", 0.0), metrics.get("map", 0.0)
    m50 = 0.0 if m50 is None or not np.isfinite(m50) else m50
    m = 0.0 if m is None or not np.isfinite(m) else m
    return 0.1 * float(m50) + 0.9 * float(m)


def summary_table(metrics: dict, names) -> str:
    """A readable table: all classes, then per class (images, instances, P, R, mAP50, mAP50-95)."""
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
        lines += _class_rows(metrics, names, f)
    if "protocol" in metrics:
        lines[0] += f"   (protocol: {metrics['protocol']})"
    if "prophesee" in metrics:
        p = metrics["prophesee"]
        st = p.get("settings") or {"skip_us": 500_000, "min_box_diag": 30, "min_box_side": 10, "time_tol_us": 50_000}
        lines.append(f"protocol prophesee ({st['skip_us'] / 1e6:g} s skip, min diag {st['min_box_diag']:g} / side "
                     f"{st['min_box_side']:g} px, +-{st['time_tol_us'] / 1e3:g} ms): AP {f(p['AP'], 0)}, "
                     f"AP50 {f(p['AP50'], 0)}, AP75 {f(p['AP75'], 0)} over {p['images']} timestamps")
    lines += _energy_lines(metrics)
    sp = metrics.get("speed") or {}
    lines.append(f"speed: {num(sp.get('preprocess'), '.1f')} ms preprocess, {num(sp.get('inference'), '.1f')} ms "
                 f"inference, {num(sp.get('postprocess'), '.1f')} ms postprocess per image")
    return "\n".join(lines)


def _class_rows(metrics: dict, names: list, f) -> list[str]:
    """One table row per class with ground truth (or a finite AP): images, instances, P, R, mAP50, mAP50-95."""
    n = len(names)
    ims = metrics.get("images_per_class") or [None] * n
    inst = metrics.get("instances_per_class") or [None] * n
    p, r = metrics.get("p_per_class") or [None] * n, metrics.get("r_per_class") or [None] * n
    rows = []
    for i, name in enumerate(names):
        a50, a = metrics["ap50_per_class"][i], metrics["ap_per_class"][i]
        if not inst[i] and (a50 is None or not np.isfinite(a50)):
            continue
        ni = "" if ims[i] is None else ims[i]
        nb = "" if inst[i] is None else inst[i]
        rows.append(f"{str(name)[:16]:>16} {ni:>7} {nb:>7} {f(p[i])} {f(r[i])} {f(a50)} {f(a, 9)}")
    return rows


def _energy_lines(metrics: dict) -> list[str]:
    """The energy lines: the ANN twin's MAC energy (no firing rate, no synaptic ops), or the SNN's rates and
    energy, with a warning when the network is nearly silent. Values may be None (NaN of a diverged model)."""
    if "snn/energy_mJ" not in metrics:
        return []

    def num(x, spec=".3f"):
        return format(x, spec) if x is not None and np.isfinite(x) else "-"

    fr, synops = metrics.get("snn/firing_rate"), metrics.get("snn/synops")
    if synops == 0 and (fr is None or not np.isfinite(fr)):  # the ANN twin: no spikes
        return [f"ANN twin: {num(metrics.get('snn/energy_mJ'))} mJ per image (every conv as dense MACs)"]
    lines = []
    if fr is not None and fr < SILENT_FIRING_RATE:
        lines.append(f"WARNING: the network is nearly silent (firing rate {fr:.4f} < {SILENT_FIRING_RATE}): "
                     "its energy and the ANN/SNN ratio are not meaningful")
    lines.append(f"SNN: firing rate {num(fr)} (mean spike count per neuron and step), "
                 f"{num(None if synops is None else synops / 1e9)} G synaptic ops, "
                 f"{num(metrics.get('snn/energy_mJ'))} mJ per image"
                 + (f" (ANN twin {num(metrics['snn/ann_energy_mJ'])} mJ)" if "snn/ann_energy_mJ" in metrics else ""))
    return lines


def metrics_json(metrics: dict, **extra) -> str:
    """A result as one line of strict JSON (for ``--json``)."""
    return plain_json({**metrics, **extra})
