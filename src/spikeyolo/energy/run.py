"""`spikeyolo energy`: firing rates over a dataset's val split, then the per-layer energy report and files."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from tqdm import tqdm

from ..data import build_dataloader, build_dataset
from ..forms.fuse import fuse
from ..forms.spike_driven import to_spike_driven
from ..inference import InferenceModel
from ..utils.errors import InputError
from ..utils.runs import increment_path, select_device
from .plots import plot_energy_breakdown, plot_firing_rates
from .report import E_AC_PJ, E_MAC_PJ, EnergyMeter, EnergyReport

FORMS = ("fused", "spike-driven", "train")
LOGGER = logging.getLogger("spikeyolo.energy")


def to_input(img: torch.Tensor, device) -> torch.Tensor:
    """uint8 images -> float in [0, 1]; float event frames are used as they are."""
    x = img.to(device)
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def _form(model, form: str):
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    return fuse(model) if form == "fused" else to_spike_driven(model) if form == "spike-driven" else model.eval()


@torch.no_grad()
def measure(model, loader, *, device="cpu", max_batches: int | None = None, form: str = "fused",
            e_mac: float = E_MAC_PJ, e_ac: float = E_AC_PJ, first_layer: str = "mac", geometry: str = "fused",
            synops: bool = True, imgsz: int | None = None, progress: bool = False) -> EnergyReport:
    """Run a train-form ``model`` (in the given execution ``form``) over ``loader`` and report its energy."""
    model = model.to(device).eval()
    runner = _form(model, form).to(device)
    meter = EnergyMeter(model, e_mac=e_mac, e_ac=e_ac, first_layer=first_layer, geometry=geometry, synops=synops)
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    with meter.monitor(runner):
        for i, batch in enumerate(tqdm(loader, total=total, desc="energy", disable=not progress, unit="batch")):
            if max_batches is not None and i >= max_batches:
                break
            runner(to_input(batch["img"], device))
    return meter.report(imgsz)


def run(weights: str | Path, data: str | Path, *, imgsz: int | None = None, batch: int = 8,
        max_batches: int | None = None, workers: int = 0, device: str = "cpu", out: str | Path | None = None,
        plots: bool = True, **kwargs) -> tuple[EnergyReport, Path]:
    """The `energy` command: load weights (a checkpoint, read once; the train form), build the val loader,
    measure, write CSV/JSON/plots to ``out``."""
    model = InferenceModel.load(weights, imgsz=imgsz)
    if model.form != "train":
        raise InputError(f"{weights}: energy is measured from a train-form checkpoint, not a {model.form}-form "
                         f"{model.backend} model")
    dataset = build_dataset(data, split="val", imgsz=model.imgsz, augment=False)
    if dataset.nc != model.nc:
        LOGGER.warning("the data has %s classes, the model %s: energy does not depend on it, continuing",
                       dataset.nc, model.nc)
    loader = build_dataloader(dataset, batch, workers=workers, shuffle=False)
    report = measure(model.net, loader, device=select_device(device), max_batches=max_batches, imgsz=model.imgsz,
                     **kwargs)
    report.extra.update(weights=str(weights), data=str(data))
    out = increment_path(out or "runs/energy/exp", exist_ok=out is not None)
    report.save_csv(out / "energy_layers.csv")
    report.save_json(out / "energy.json")
    if plots:
        if not report.is_ann:  # the ANN twin has no firing rates
            plot_firing_rates(report, out / "firing_rates.png")
        plot_energy_breakdown(report, out / "energy_by_stage.png")
    return report, out
