"""Building blocks of ``benchmarks/precision.py``: an enlarged held-out set, per-image AP, a paired bootstrap and
spike flip rates.

- :func:`write_dihedral_dataset`: every held-out image in its 8 dihedral views (4 rotations x optional horizontal
  flip; aerial photos have no up direction), boxes transformed exactly, written as a YOLO dataset.
- per-image AP and the paired bootstrap of the difference of AP between two forms are
  :mod:`spikeyolo.metrics.per_image`; here the bootstrap resamples source images (all views of a source image
  together, since they are correlated: :func:`group_by_source`).
- :func:`spike_flip_counts`: how many I-LIF outputs of a form differ from the reference form on the same inputs.
- :func:`compare_forms`: all of the above for every form of a trained checkpoint against its train form.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from torch import nn

from spikeyolo.data import build_dataloader, build_dataset, load_data_config
from spikeyolo.data.calibration import calibration_images
from spikeyolo.engine.validator import Validator, to_input
from spikeyolo.forms.deploy import SUPPORTED
from spikeyolo.inference import deploy
from spikeyolo.metrics.per_image import ImageScores, average_precision, paired_bootstrap, score_images
from spikeyolo.models.checkpoint import checkpoint_imgsz, load
from spikeyolo.nn.neuron import ILIF

VIEWS = tuple((k, flip) for flip in (False, True) for k in range(4))
"""The 8 dihedral views ``(quarter turns counter-clockwise, flipped first)``; view 0 is the image itself."""
# (precision, backend) of each form; train is the reference
# deploy-int8-cal: int8 with the bias correction calibrated on training images (compare_forms' calibration)
FORMS = {"train": None, "deploy-fp32": ("fp32", "torch"), "deploy-bf16": ("bf16", "torch"),
         "deploy-int8": ("int8", "torch"), "deploy-int8-cal": ("int8", "torch"), "ort-fp32": ("fp32", "onnxruntime"),
         "ort-int8": ("int8", "onnxruntime")}
VIEW_NAME = re.compile(r"^(?P<source>.+)__d(?P<view>[0-7])$")  # file stem of a written view


def dihedral_image(img: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """``img [H, W, ...]`` flipped horizontally (when ``flip``), then turned ``k`` quarter turns counter-clockwise."""
    if flip:
        img = img[:, ::-1]
    return np.ascontiguousarray(np.rot90(img, k))


def dihedral_boxes(boxes: np.ndarray, shape: tuple[int, int], k: int, flip: bool) -> np.ndarray:
    """xyxy pixel boxes of an ``(h, w)`` image, moved as :func:`dihedral_image` moves the pixels.

    Pixel edges are coordinates: a horizontal flip maps x to ``w - x``; a counter-clockwise quarter turn maps
    ``(x, y)`` to ``(y, w - x)`` and makes the image ``(w, h)``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    h, w = shape
    if flip:
        b[:, [0, 2]] = w - b[:, [2, 0]]
    for _ in range(k):
        b = np.stack((b[:, 1], w - b[:, 2], b[:, 3], w - b[:, 0]), 1)
        h, w = w, h
    return b


def write_dihedral_dataset(data, splits, out_dir: str | Path, imgsz: int = 640, views=range(8)) -> Path:
    """Write every image of ``splits`` of a data YAML (any label format the library reads, tiles included) in
    its 8 views (or those indexed by ``views``) as a YOLO dataset under ``out_dir`` (PNG, lossless); returns the
    new data YAML. View ``v`` of image ``stem`` is ``stem__d{v}.png`` (``v`` indexes :data:`VIEWS`)."""
    cfg = load_data_config(data)
    out = Path(out_dir)
    for split in splits:
        ds = build_dataset(cfg, split, imgsz=imgsz, augment=False, progress=False)
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        seen = set()
        for i in range(len(ds)):
            gt, img = ds.ground_truth(i), ds.load(i)
            stem = Path(gt["im_file"]).stem
            if stem in seen:
                raise ValueError(f"{data}: split {split} has two images named {stem}; views need unique stems")
            seen.add(stem)
            for v in views:
                k, flip = VIEWS[v]
                view = dihedral_image(img, k, flip)
                ok, png = cv2.imencode(".png", view)
                if not ok:
                    raise OSError(f"cannot encode view {v} of {gt['im_file']}")
                png.tofile(str(out / "images" / split / f"{stem}__d{v}.png"))
                boxes = dihedral_boxes(gt["boxes_xyxy"], img.shape[:2], k, flip)
                _write_yolo_labels(out / "labels" / split / f"{stem}__d{v}.txt", boxes, gt["cls"], view.shape[:2])
    data_yaml = out / "data.yaml"
    data_yaml.write_text(yaml.safe_dump({"path": str(out.resolve()), **{s: f"images/{s}" for s in splits},
                                         "names": dict(enumerate(cfg["names"]))}))
    return data_yaml


def _write_yolo_labels(path: Path, boxes: np.ndarray, cls, shape: tuple[int, int]) -> None:
    h, w = shape
    lines = [f"{int(c)} {(x1 + x2) / 2 / w:.9f} {(y1 + y2) / 2 / h:.9f} {(x2 - x1) / w:.9f} {(y2 - y1) / h:.9f}"
             for (x1, y1, x2, y2), c in zip(boxes, np.asarray(cls).reshape(-1))]
    path.write_text("".join(line + "\n" for line in lines))


def source_of(image_file: str) -> str:
    """The source image a view file belongs to (``.../stem__d3.png`` -> ``stem``)."""
    m = VIEW_NAME.match(Path(image_file).stem)
    if m is None:
        raise ValueError(f"{image_file}: not a view written by write_dihedral_dataset (stem__d<0-7>)")
    return m["source"]


def group_by_source(scores: dict[str, ImageScores], sources: list[str]) -> list[list[ImageScores]]:
    """The scored views of each source image, in the order of ``sources`` (views in file order)."""
    groups = {s: [] for s in sources}
    for image_id in sorted(scores):
        groups[source_of(image_id)].append(scores[image_id])
    return [groups[s] for s in sources]


def _record_spikes(model: nn.Module, store: dict) -> list:
    """Forward hooks that put every I-LIF's output into ``store[qualified name]``; returns the handles."""
    def hook(name):
        return lambda module, inputs, output: store.__setitem__(name, output.detach())

    return [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, ILIF)]


@torch.no_grad()
def spike_flip_counts(reference: nn.Module, model: nn.Module, batches) -> dict[str, tuple[int, int]]:
    """``{I-LIF name: (outputs differing from the reference's, outputs)}`` over ``batches`` (dicts with ``img``,
    as a dataloader yields them), both models fed the same input. I-LIFs are paired by qualified name (deploy
    units keep theirs as ``.lif``); a model without the reference's I-LIF names is refused."""
    ref_out, out = {}, {}
    handles = _record_spikes(reference, ref_out) + _record_spikes(model, out)
    counts: dict[str, list[int]] = {}
    try:
        for batch in batches:
            x = to_input(batch["img"], "cpu")
            reference(x)
            model(x)
            if set(out) != set(ref_out):
                raise ValueError(f"spike_flip_counts: the model's I-LIF names differ from the reference's "
                                 f"(only in reference: {sorted(set(ref_out) - set(out))[:3]})")
            for name, s in ref_out.items():
                c = counts.setdefault(name, [0, 0])
                c[0] += int((out[name].float() != s.float()).sum())
                c[1] += s.numel()
            ref_out.clear()
            out.clear()
    finally:
        for h in handles:
            h.remove()
    return {n: (d, t) for n, (d, t) in counts.items()}


def build_forms(model, names, imgsz: int, calibration: torch.Tensor | None = None) -> dict:
    """The forms to compare, those this spikeyolo supports (``deploy-int8-cal`` only with ``calibration``
    images)."""
    forms = {}
    for name in names:
        spec = FORMS[name]
        if spec is None:
            forms[name] = model
        elif spec in SUPPORTED and (name != "deploy-int8-cal" or calibration is not None):
            kwargs = {"imgsz": imgsz} if spec[1] == "onnxruntime" else {}
            if name == "deploy-int8-cal":
                kwargs["calibration"] = calibration
            forms[name] = deploy(model, *spec, **kwargs)
    return forms


def evaluate_split(forms: dict, data_yaml: Path, split: str, imgsz: int, batch: int) -> dict:
    """Per form on one split: COCOeval's metrics, per-image scores grouped by source image, and spike flip
    counts against the train form (torch forms)."""
    cfg = load_data_config(data_yaml)
    ds = build_dataset(cfg, split, imgsz=imgsz, augment=False, progress=False)
    loader = build_dataloader(ds, batch_size=batch, workers=0, shuffle=False)
    gts = {}
    for i in range(len(ds)):
        g = ds.ground_truth(i)
        gts[g["im_file"]] = (g["boxes_xyxy"], g["cls"])
    sources = sorted({source_of(f) for f in gts})
    result = {"sources": sources, "images": len(gts), "boxes": int(sum(len(c) for _, c in gts.values())),
              "coco": {}, "groups": {}, "flips": {}}
    for name, model in forms.items():
        validator = Validator(loader, names=cfg["names"], compute_loss=False, progress=False)
        metrics = validator(model)
        result["coco"][name] = {"map50": metrics["map50"], "map": metrics["map"]}
        result["groups"][name] = group_by_source(score_images(validator.predictions, gts), sources)
        if name.startswith("deploy-"):  # torch forms: hooks on their I-LIFs
            result["flips"][name] = spike_flip_counts(forms["train"], model, loader)
    return result


def flip_summary(counts: dict[str, tuple[int, int]], worst: int = 5) -> dict:
    """Overall flip rate and the ``worst`` layers by rate."""
    d, t = sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())
    layers = sorted(((n, c[0] / c[1]) for n, c in counts.items()), key=lambda x: -x[1])[:worst]
    return {"rate": d / max(t, 1), "flipped": d, "outputs": t, "worst": layers,
            "layers": {n: c[0] / c[1] for n, c in counts.items()}}  # network order


def merge_counts(*counts: dict) -> dict:
    """Flip counts of several splits added per layer."""
    out: dict[str, tuple[int, int]] = {}
    for c in counts:
        for n, (d, t) in c.items():
            a = out.get(n, (0, 0))
            out[n] = (a[0] + d, a[1] + t)
    return out


def compare_forms(weights, data, splits=("val", "test"), forms=tuple(FORMS), views=range(8), imgsz: int | None = None,
                  batch: int = 8, resamples: int = 1000, seed: int = 0, calibration=None) -> dict:
    """Every form of a trained checkpoint on the dihedral views of the held-out ``splits``, against the train form.

    Returns ``sets`` (per split and ``pooled``: :func:`paired_bootstrap`'s result per form), ``flips`` (per set:
    :func:`flip_summary` per torch deploy form), ``coco_gap`` (per split: the largest difference between the
    cached-match AP and COCOeval's on the whole set, a self-check), ``sizes`` and ``forms`` (those that ran).
    ``calibration``: an image folder, list or glob for ``deploy-int8-cal`` (use training images; None: that form
    does not run)."""
    model = load(weights).eval()
    imgsz = imgsz or checkpoint_imgsz(weights)
    nc = int(model.nc)
    images = calibration_images(calibration, imgsz) if calibration is not None else None
    built = build_forms(model, ["train", *(f for f in forms if f != "train")], imgsz, images)
    with tempfile.TemporaryDirectory() as tmp:
        data_yaml = write_dihedral_dataset(data, splits, tmp, imgsz, views)
        per_split = {s: evaluate_split(built, data_yaml, s, imgsz, batch) for s in splits}
    sets, coco_gap, flips = {}, {}, {}
    pooled = {f: [g for r in per_split.values() for g in r["groups"][f]] for f in built}
    for set_name, groups in [*((s, r["groups"]) for s, r in per_split.items()), ("pooled", pooled)]:
        sets[set_name] = paired_bootstrap(groups, "train", nc, resamples, seed)
    for s, r in per_split.items():
        coco_gap[s] = max(float(np.abs(np.array(average_precision([x for g in r["groups"][f] for x in g], nc))
                                       - (r["coco"][f]["map50"], r["coco"][f]["map"])).max()) for f in built)
        flips[s] = {f: flip_summary(c) for f, c in r["flips"].items()}
    torch_forms = next(iter(per_split.values()))["flips"]
    flips["pooled"] = {f: flip_summary(merge_counts(*(r["flips"][f] for r in per_split.values())))
                       for f in torch_forms}
    sizes = {s: {"source_images": len(r["sources"]), "images": r["images"], "boxes": r["boxes"]}
             for s, r in per_split.items()}
    return {"sets": sets, "coco_gap": coco_gap, "flips": flips, "sizes": sizes, "forms": list(built)}
