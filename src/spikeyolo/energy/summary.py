"""Model summary: parameters, a layer table, and MACs per form (computed shape-only, on the meta device)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..models.checkpoint import count_parameters, load
from ..models.yolo import SpikeYOLO, build_model
from .ops import unit_geometry


@dataclass
class ModelSummary:
    config: dict
    params: int
    layers: list[dict]
    macs: dict[str, float]
    imgsz: int
    extra: dict = field(default_factory=dict)

    def table(self) -> str:
        c = self.config
        neuron = c.get("neuron", "ilif")
        kind = (f"I-LIF(decay={c['decay']}, input_gain={c['input_gain']}, detach_reset={c['detach_reset']})"
                if neuron == "ilif" else f"ANN twin ({neuron})")
        lines = [f"SpikeYOLO-{c['scale']}  nc={c['nc']}  T={c['T']}  D={c['D']}  in_channels={c['in_channels']}  "
                 f"{kind}",
                 f"{'#':>3}  {'from':>12}  {'n':>2}  {'params':>11}  {'module':<11}  {'out':>5}  {'stride':>6}"]
        for row in self.layers:
            lines.append(f"{row['index']:>3}  {row['from']!s:>12}  {row['repeats']:>2}  {row['params']:>11,}  "
                         f"{row['module']:<11}  {row['channels']:>5}  {row['stride']:>6}")
        m = self.macs
        lines += [
            f"parameters: {self.params:,}",
            f"MACs per image per timestep at {self.imgsz}x{self.imgsz}: train form {m['train'] / 1e9:.2f} G, "
            f"fused form {m['fused'] / 1e9:.2f} G, deploy form {m['deploy'] / 1e9:.2f} G",
            f"(first layer, real-valued input: {m['first_layer']:,.0f} MACs)",
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"params": self.params, "macs": self.macs, "imgsz": self.imgsz, "scale": self.config["scale"],
                "nc": self.config["nc"], "T": self.config["T"], "D": self.config["D"],
                "neuron": self.config.get("neuron", "ilif"), "layers": self.layers}


def layer_rows(model: SpikeYOLO) -> list[dict]:
    """One row per layer: index, inputs, repeats, parameters, module, output channels and stride."""
    rows = []
    for i, (layer, src, spec) in enumerate(zip(model.layers, model.froms, model.config["spec"]["layers"])):
        rows.append({"index": i, "from": src, "repeats": len(layer) if isinstance(layer, nn.Sequential) else 1,
                     "params": count_parameters(layer), "module": spec[2],
                     "channels": model.layer_channels[i] or "-", "stride": model.layer_strides[i] or "-"})
    return rows


def _resolve(model: str | Path | nn.Module, nc: int, imgsz: int) -> SpikeYOLO:
    if isinstance(model, nn.Module):
        return model
    if str(model).endswith(".pt"):
        return load(model)
    with torch.device("meta"):  # shapes only: no memory for weights, no initialisation cost
        return build_model(model, nc=nc, imgsz=imgsz)


def model_summary(model: str | Path | nn.Module = "s", nc: int = 80, imgsz: int = 640) -> ModelSummary:
    """Parameters, layer table and MACs (train, fused and deploy forms, first layer) of a scale, YAML or checkpoint."""
    model = _resolve(model, nc, imgsz)
    ops = {form: unit_geometry(model, imgsz, form) for form in ("train", "fused", "deploy")}
    macs = {form: float(sum(o.macs for o in found)) for form, found in ops.items()}
    macs["first_layer"] = float(ops["fused"][0].macs)
    return ModelSummary(model.config, count_parameters(model), layer_rows(model), macs, imgsz)
