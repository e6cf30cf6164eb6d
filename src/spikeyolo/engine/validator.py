"""Validation: run a model over a dataloader, suppress, map boxes to original pixels, score by a protocol.

``Validator(dataloader, ..., protocol=...)(model) -> dict`` is used by the trainer after each epoch (on the EMA
weights, with ``TrainConfig.protocol``) and by ``spikeyolo val`` (via :func:`validate`) on a checkpoint. One
pass is ``preprocess`` (uint8 -> float, finite check) -> ``infer`` (the model, with the head's raw maps when the
loss is wanted) -> ``postprocess`` (NMS) -> ``update`` (loss, ground truth, scoring) per batch, then
``finalize`` (the metrics dict).

Protocols (``PROTOCOLS``; docs/training.md, "Evaluation protocols"):

- ``coco``: pycocotools / faster-coco-eval (metrics/coco.py), the standard: one class per box after NMS, the
  100 best detections per image scored, COCO crowd regions as ``iscrowd=1`` (detections on them ignored);
  P and R from metrics/detection.py.
- ``ultralytics``: the AP ultralytics 8.0 reports (metrics/ultralytics_ap.py), behind the published SpikeYOLO
  COCO numbers: multi-label NMS (a box kept once per class above ``conf``), all ``max_det`` (300) detections
  scored, crowd boxes as ordinary ground truth; :func:`validate` also runs rectangular batches (data/rect.py).

Reported keys: ``protocol``; ``precision``, ``recall`` (at the confidence of best mean F1, IoU 0.5);
``map50``, ``map``, ``map75``, ``ap50_per_class``, ``ap_per_class``; per class ``p_per_class``, ``r_per_class``
(at that confidence), ``images_per_class`` (images holding the class), ``instances_per_class`` (its boxes the
protocol counts); ``conf_best_f1``; ``confusion_matrix`` (``[nc + 1][nc + 1]``, rows predicted, columns true,
last background; metrics/detection.py); ``fitness`` = 0.1 * map50 + 0.9 * map; ``box_loss``, ``cls_loss``,
``dfl_loss`` (mean over batches, the train-mode loss of the same forward); ``speed``: milliseconds per image for
preprocess / inference / postprocess; ``coco_backend`` (coco protocol); whatever the optional ``energy`` monitor
returns (``snn/firing_rate``, ``snn/synops``, ``snn/energy_mJ``).

The ``energy`` argument is a hook for the energy module: any object with ``start(model)`` (called before the
first batch) and ``stop() -> dict`` (called after the last one; its items are merged into the result).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..data import build_dataloader, build_dataset, load_data_config
from ..data.calibration import calibration_images
from ..data.config import check_class_names
from ..data.dataset import DetectionDataset
from ..data.labels import coco_id_maps
from ..data.protocol import DetectionItems, EventDetectionItems
from ..energy import EnergyMeter
from ..energy.plots import plot_energy_breakdown, plot_firing_rates
from ..inference import InferenceModel
from ..metrics.coco import coco_evaluate, write_coco_json
from ..metrics.detection import DetectionMetrics
from ..metrics.ultralytics_ap import UltralyticsAP
from ..utils.boxes import clip_boxes, cxcywh2xyxy, unletterbox
from ..utils.errors import InputError
from ..utils.nms import non_max_suppression
from ..utils.plots import image_grid, plot_confusion_matrix, plot_metric_curve, plot_pr_curve
from ..utils.runs import increment_path, select_device, unwrap
from .loss import DetectionLoss
from .recordings import event_settings, score_sample_detections
from .results import fitness

PROTOCOLS = ("coco", "ultralytics")
COCO_MAX_DETS = 100  # the COCO protocol's maxDets (NMS may keep more; COCO scores the 100 best per image)


def check_protocol(protocol: str) -> str:
    """``protocol`` if it is one of :data:`PROTOCOLS`, else a ValueError naming them."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    return protocol


def protocol_loader(dataset, batch_size: int, workers: int, protocol: str = "coco", rect: bool = True, seed: int = 0):
    """The validation loader of a protocol: rectangular batches for ``ultralytics`` on an image dataset (when
    ``rect``: a model that takes any input size), else square letterboxed images in dataset order."""
    order = None
    if isinstance(dataset, DetectionDataset):
        order = dataset.set_rect_batches(batch_size if check_protocol(protocol) == "ultralytics" and rect else None)
    return build_dataloader(dataset, batch_size=batch_size, workers=workers, shuffle=False, seed=seed, order=order)


def to_input(img: torch.Tensor, device) -> torch.Tensor:
    """A batch of images as the network takes them: uint8 -> float in [0, 1]; event frames (float) unchanged."""
    x = img.to(device, non_blocking=True)
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def require_finite(x: torch.Tensor, what: str) -> None:
    """Refuse NaN or infinite network input: the execution forms disagree on it (NaN in the train and fused
    forms, finite values in the spike-driven one), so no form's answer would be right."""
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"{what} contain NaN or infinite values; the model needs finite input")


def batch_ground_truth(batch: dict, k: int, input_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels of image ``k`` of a collated batch in original pixels: ``(boxes xyxy [m, 4], cls [m])``."""
    sel = batch["batch_idx"] == k
    xyxy = _input_boxes(batch, sel, input_hw)
    xyxy = clip_boxes(unletterbox(xyxy, batch["ratio_pad"][k]), batch["ori_shape"][k])
    return xyxy, batch["cls"][sel].reshape(-1).float()


def _input_boxes(batch: dict, sel: torch.Tensor, input_hw) -> torch.Tensor:
    """The selected labels as xyxy network-input pixels."""
    h, w = input_hw
    return cxcywh2xyxy(batch["bboxes"][sel].float() * torch.tensor([w, h, w, h], dtype=torch.float32))


def _tensors(boxes, cls) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4),
            torch.as_tensor(np.asarray(cls, dtype=np.float32)).reshape(-1))


def _image_ground_truth(dataset, index_of: dict, batch: dict, k: int, input_hw) -> tuple:
    """Ground truth of image ``k`` of the batch as ``(boxes, cls, crowd_boxes, crowd_cls)``: the dataset's own
    (exact, original pixels; crowd regions where it has them) when it has ``ground_truth(i)``, else the batch
    labels mapped back through ``ratio_pad`` (no crowd regions)."""
    f = batch["im_file"][k]
    if isinstance(dataset, DetectionItems) and f in index_of:
        gt = dataset.ground_truth(index_of[f])
        crowd = _tensors(gt.get("crowd_boxes_xyxy", np.zeros((0, 4))), gt.get("crowd_cls", np.zeros(0)))
        return (*_tensors(gt["boxes_xyxy"], gt["cls"]), *crowd)
    boxes, cls = batch_ground_truth(batch, k, input_hw)
    return boxes, cls, boxes[:0], cls[:0]


def batch_images_and_boxes(batch: dict) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """A collated batch as drawable BGR images with each image's xyxy input-pixel boxes and class ids."""
    images = _bgr_images(batch["img"])
    boxes, cls = [], []
    for k in range(len(images)):
        sel = batch["batch_idx"] == k
        boxes.append(_input_boxes(batch, sel, batch["img"].shape[-2:]).numpy())
        cls.append(batch["cls"][sel].reshape(-1).numpy())
    return images, boxes, cls


def _bgr_images(img: torch.Tensor) -> list[np.ndarray]:
    """Batch images as BGR uint8 arrays for drawing (RGB uint8 images; event frames shown as grey levels)."""
    if img.dtype == torch.uint8:
        arr = img.permute(0, 2, 3, 1).cpu().numpy()
        return [np.ascontiguousarray(a[..., ::-1]) if a.shape[-1] == 3 else np.repeat(a[..., :1], 3, -1) for a in arr]
    x = img.float()
    x = x.abs().sum(dim=tuple(range(1, x.dim() - 2)))  # [B, H, W]: activity summed over time and channels
    x = (x / x.amax(dim=(1, 2), keepdim=True).clamp(min=1e-9) * 255).to(torch.uint8).cpu().numpy()
    return [np.repeat(a[..., None], 3, -1) for a in x]


@dataclass
class ValidationPass:
    """What one pass over the loader gathers (``Validator.begin`` makes it, ``update`` fills it)."""

    names: list[str]
    dataset: object
    index_of: dict  # im_file -> dataset index (datasets with ground_truth(i))
    det: DetectionMetrics  # P / R / curves / confusion matrix
    ultralytics: UltralyticsAP | None  # the ultralytics protocol's AP
    gts: list = field(default_factory=list)  # per image: image_id, shape, boxes_xyxy, cls, iscrowd
    preds: list = field(default_factory=list)  # per image: (image_id, boxes xyxy original px, scores, cls)
    event_dets: dict = field(default_factory=dict)  # event data: recording -> [(label time, boxes, score+cls)]
    loss_sum: torch.Tensor = field(default_factory=lambda: torch.zeros(3))
    loss_batches: int = 0
    seconds: list = field(default_factory=lambda: [0.0, 0.0, 0.0])  # preprocess, inference, postprocess
    images: int = 0


class Validator:
    """Evaluates detection models on one dataloader (see the module docstring for what it reports).

    Args:
        dataloader: yields collated batches (internals contract); when ``dataloader.dataset`` has
            ``ground_truth(i)`` (labels in original pixels, keyed by ``im_file``) those are the ground truth,
            else the batch labels mapped back through ``ratio_pad``.
        names: class names (default: the model's).
        device: where the model runs.
        conf, iou, max_det: NMS settings (0.001, 0.7, 300 as the reference validation).
        protocol: ``coco`` or ``ultralytics`` (see the module docstring); the loader decides the batch shapes
            (:func:`protocol_loader`).
        save_dir: where predictions.json and plots go (None: nowhere).
        save_json: write ``predictions.json`` (COCO results format). ``image_id`` and ``category_id`` are the
            annotation file's own for a COCO-JSON split; otherwise the file stem (relative path when two
            images share a stem) and the class index.
        plots: write ``PR_curve.png``, ``P_curve.png``, ``R_curve.png``, ``F1_curve.png`` (against the
            confidence threshold), ``confusion_matrix.png`` and ``confusion_matrix_normalized.png`` (rows
            predicted, columns true; detections with score >= 0.25 paired at IoU >= 0.45),
            ``val_batch0_labels.jpg`` and ``val_batch0_pred.jpg``; with an energy monitor that has a report, also
            ``firing_rates.png`` and ``energy_by_stage.png``.
        compute_loss: also report the validation loss (a SpikeYOLO model: its head returns the raw maps).
        half: run under float16 autocast (CUDA only; the weights stay float32).
        energy: optional monitor with ``start(model)`` / ``stop() -> dict``.
        progress: show a tqdm progress bar.
    """

    def __init__(self, dataloader, names=None, device="cpu", conf: float = 0.001, iou: float = 0.7,
                 max_det: int = 300, save_dir: str | Path | None = None, save_json: bool = False,
                 plots: bool = False, compute_loss: bool = True, half: bool = False, energy=None,
                 progress: bool = True, protocol: str = "coco"):
        self.dataloader, self.names, self.device = dataloader, names, torch.device(device)
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.protocol = check_protocol(protocol)
        self.save_dir = Path(save_dir) if save_dir is not None else None
        self.save_json, self.plots, self.compute_loss = save_json, plots, compute_loss
        self.half = half and self.device.type == "cuda"
        self.energy, self.progress = energy, progress
        self.loss_fn = None
        self.predictions: list = []  # (image_id, boxes xyxy original px, scores, cls) of the last run

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict:
        model = InferenceModel.of(unwrap(model))  # any form; the trainer passes its (EMA) SpikeYOLO
        was_training = model.training
        model.eval()
        run = self.begin(model)
        bar = tqdm(self.dataloader, desc="val", leave=False, disable=not self.progress, unit="batch")
        for bi, batch in enumerate(bar):
            t0 = time.perf_counter()
            x = self.preprocess(batch, bi)
            t1 = time.perf_counter()
            out, maps = self.infer(model, x)
            t2 = time.perf_counter()
            dets = self.postprocess(out)
            self.update(run, batch, tuple(x.shape[-2:]), dets, maps)
            t3 = time.perf_counter()
            run.seconds = [run.seconds[0] + t1 - t0, run.seconds[1] + t2 - t1, run.seconds[2] + t3 - t2]
            if self.plots and bi == 0 and self.save_dir is not None:
                self._plot_batch(batch, dets, run.names)
        energy = self.energy.stop() if self.energy is not None else {}
        if was_training:
            model.train()
        return self.finalize(run, energy)

    def begin(self, model: InferenceModel) -> ValidationPass:
        """A fresh :class:`ValidationPass` for ``model`` (names, the loss, the energy monitor started)."""
        names = list(self.names) if self.names is not None else model.names
        nc = model.nc
        if self.compute_loss and self.loss_fn is None and model.has_maps:
            self.loss_fn = DetectionLoss(model.net)
        dataset = getattr(self.dataloader, "dataset", None)
        index_of = {}
        if isinstance(dataset, DetectionItems):
            index_of = {dataset.ground_truth(i)["im_file"]: i for i in range(len(dataset))}
        if self.save_dir is not None:
            self.save_dir.mkdir(parents=True, exist_ok=True)
        if self.energy is not None:
            self.energy.start(model.net)
        ultralytics = UltralyticsAP(nc) if self.protocol == "ultralytics" else None
        return ValidationPass(names, dataset, index_of, DetectionMetrics(nc), ultralytics)

    def preprocess(self, batch: dict, index: int) -> torch.Tensor:
        """The batch's images as network input on the device (finite, or an InputError naming them)."""
        x = to_input(batch["img"], self.device)
        files = batch["im_file"]
        require_finite(x, f"the images of validation batch {index + 1} ({', '.join(map(str, files[:3]))}"
                          f"{', ...' if len(files) > 3 else ''})")
        return x

    def infer(self, model: InferenceModel, x: torch.Tensor) -> tuple[torch.Tensor, list | None]:
        """``(decoded [B, 4 + nc, A], raw head maps or None)``; the maps only when the loss is computed."""
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.half):
            if self.loss_fn is not None and model.has_maps:
                out, maps = model(x, return_maps=True)
            else:
                out, maps = model(x), None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return out, maps

    def postprocess(self, out: torch.Tensor) -> list[torch.Tensor]:
        """NMS per image (multi-label under the ultralytics protocol): ``[n, 6]`` float CPU tensors."""
        dets = non_max_suppression(out.float(), self.conf, self.iou, self.max_det,
                                   multi_label=self.protocol == "ultralytics")
        return [d.detach().float().cpu() for d in dets]

    def update(self, run: ValidationPass, batch: dict, input_hw: tuple[int, int], dets: list, maps) -> None:
        """Add one batch: its loss (when ``maps``), and each image's detections scored against its ground truth."""
        if self.loss_fn is not None and maps is not None:
            on_dev = {k: batch[k].to(self.device) for k in ("cls", "bboxes", "batch_idx")}
            run.loss_sum += self.loss_fn([m.float() for m in maps], on_dev)[1].detach().float().cpu()
            run.loss_batches += 1
        for k, d in enumerate(dets):
            gt = _image_ground_truth(run.dataset, run.index_of, batch, k, input_hw)
            self._score_image(run, batch, k, d, *gt)
        run.images += len(dets)

    def _score_image(self, run: ValidationPass, batch: dict, k: int, d: torch.Tensor, boxes_gt, cls_gt,
                     crowd_boxes, crowd_cls) -> None:
        """Image ``k``'s detections ``d [n, 6]`` (input pixels) back in original pixels, scored and collected.
        Crowd regions: ``iscrowd`` for COCO (and left out of P / R), ordinary boxes for ultralytics."""
        boxes = clip_boxes(unletterbox(d[:, :4], batch["ratio_pad"][k]), batch["ori_shape"][k])
        pred = torch.cat((boxes, d[:, 4:6]), 1)
        image_id = batch["im_file"][k]  # unique (a stem is not: cam1/0001.jpg, cam2/0001.jpg)
        all_boxes, all_cls = torch.cat((boxes_gt, crowd_boxes)), torch.cat((cls_gt, crowd_cls))
        if run.ultralytics is not None:
            run.ultralytics.update(pred, all_boxes, all_cls)
            run.det.update(pred, all_boxes, all_cls)
            crowd = torch.zeros(len(all_cls), dtype=torch.bool)
        else:
            run.det.update(pred, boxes_gt, cls_gt)
            crowd = torch.arange(len(all_cls)) >= len(cls_gt)
        run.gts.append({"image_id": image_id, "shape": tuple(batch["ori_shape"][k]), "boxes_xyxy": all_boxes,
                        "cls": all_cls, "iscrowd": crowd})
        run.preds.append((image_id, boxes, d[:, 4], d[:, 5]))
        if "recording" in batch:  # event data: detections per recording, stamped with the label time
            run.event_dets.setdefault(batch["recording"][k], []).append((int(batch["t"][k]), boxes, d[:, 4:6]))

    def finalize(self, run: ValidationPass, energy: dict) -> dict:
        """The metrics dict of a finished pass (module docstring); also writes the files asked for."""
        nc = run.det.nc
        pr = run.det.compute()
        n = max(run.images, 1)
        losses = (run.loss_sum / run.loss_batches).tolist() if run.loss_batches else [float("nan")] * 3
        counted = [g["cls"][~g["iscrowd"]].numpy().astype(int) for g in run.gts]  # the objects to find
        result = {
            "protocol": self.protocol,
            **self._box_metrics(run, pr),
            "images_per_class": run.det.images_per_class.tolist(),
            "instances_per_class": np.bincount(np.concatenate(counted or [np.zeros(0, int)]),
                                               minlength=nc)[:nc].tolist(),
            "confusion_matrix": run.det.matrix.tolist(),
            "box_loss": losses[0], "cls_loss": losses[1], "dfl_loss": losses[2],
            "images": run.images, "instances": int(sum(len(c) for c in counted)),
            "speed": dict(zip(("preprocess", "inference", "postprocess"), (1e3 * s / n for s in run.seconds))),
            **energy,
        }
        if isinstance(run.dataset, EventDetectionItems):  # event recordings: the field's standard protocol too
            result["protocol"] = "per-sample" if self.protocol == "coco" else "ultralytics per-sample"
            result["prophesee"] = score_sample_detections(run.dataset, run.event_dets, run.names)
        result["fitness"] = fitness(result)
        self.predictions = run.preds
        if self.save_dir is not None:
            self._save_outputs(bool(energy), run, pr)
        return result

    def _box_metrics(self, run: ValidationPass, pr: dict) -> dict:
        """mAP, AP per class, P and R by the protocol (COCOeval + metrics/detection.py, or the ultralytics AP)."""
        if run.ultralytics is not None:
            u = run.ultralytics.compute()
            keys = ("precision", "recall", "map50", "map", "map75", "ap50_per_class", "ap_per_class",
                    "p_per_class", "r_per_class")
            return {**{k: u[k] for k in keys}, "conf_best_f1": u["conf"]}
        coco = coco_evaluate(run.gts, run.preds, run.names, max_dets=COCO_MAX_DETS)
        return {
            "precision": pr["precision"], "recall": pr["recall"],
            "map50": coco["map50"], "map": coco["map"], "map75": coco["map75"],
            "ap50_per_class": coco["ap50_per_class"], "ap_per_class": coco["ap_per_class"],
            "p_per_class": pr["p_per_class"].tolist(), "r_per_class": pr["r_per_class"].tolist(),
            "conf_best_f1": pr["conf"], "coco_backend": coco["backend"],
        }

    def _save_outputs(self, energy: bool, run: ValidationPass, pr: dict) -> None:
        """Files beside the metrics: the energy report (and its plots), COCO predictions JSON, the metric plots."""
        if energy and hasattr(self.energy, "report"):
            report = self.energy.report()
            report.save_csv(self.save_dir / "energy_layers.csv")
            report.save_json(self.save_dir / "energy.json")
            if self.plots:
                plot_firing_rates(report, self.save_dir / "firing_rates.png")
                plot_energy_breakdown(report, self.save_dir / "energy_by_stage.png")
        if self.save_json:
            class_ids, image_ids = _json_ids(run.dataset)
            write_coco_json(run.preds, self.save_dir / "predictions.json", class_ids=class_ids, image_ids=image_ids)
        if self.plots:
            self._plot_metrics(run.det, pr, run.names)

    def _plot_metrics(self, det: DetectionMetrics, pr: dict, names) -> None:
        """PR curve, P/R/F1 against confidence, confusion matrix (counts and normalized)."""
        out = self.save_dir
        grid, prec, ap = det.pr_curves()
        plot_pr_curve(grid, prec, ap, names, out / "PR_curve.png")
        conf_grid, p, r, f1 = det.confidence_curves()
        present = det.images_per_class > 0  # classes with ground truth (the others have no curve)
        if not present.any():
            present[:] = True
        shown = [names[i] for i in np.flatnonzero(present)]
        best_f1 = (pr["conf"], pr["f1"])
        for values, label, file, best in ((p, "Precision", "P_curve.png", None), (r, "Recall", "R_curve.png", None),
                                          (f1, "F1", "F1_curve.png", best_f1)):
            plot_metric_curve(conf_grid, values[present], shown, out / file, label, best)
        plot_confusion_matrix(det.matrix, names, out / "confusion_matrix.png")
        plot_confusion_matrix(det.matrix, names, out / "confusion_matrix_normalized.png", normalize=True)

    def _plot_batch(self, batch: dict, dets: list[torch.Tensor], names) -> None:
        images, gt_boxes, gt_cls = batch_images_and_boxes(batch)
        image_grid(images, gt_boxes, gt_cls, names=names, path=self.save_dir / "val_batch0_labels.jpg")
        keep = [d[d[:, 4] >= 0.25] for d in dets]
        image_grid(images, [d[:, :4].numpy() for d in keep], [d[:, 5].numpy() for d in keep],
                   [d[:, 4].numpy() for d in keep], names=names, path=self.save_dir / "val_batch0_pred.jpg")


def _json_ids(dataset) -> tuple:
    """(class_ids, image_ids) for predictions.json: a COCO-JSON split's own ids, else the defaults."""
    source = dataset.coco_source if isinstance(dataset, DetectionDataset) else None
    if source is None:
        return None, None
    images, cats = coco_id_maps(*source)
    return cats, images


def _warn_event_mismatch(model, dataset, weights, data) -> None:
    """Warn when an event dataset makes inputs other than those the checkpoint was trained on."""
    trained, now = model.config.get("events"), event_settings(dataset)
    if trained and now:
        diff = {k: (trained.get(k), v) for k, v in now.items() if trained.get(k) != v}
        if diff:
            warnings.warn(f"{data}: event inputs differ from those {weights} was trained on "
                          f"(setting: (trained, now)): {diff}", stacklevel=3)


def validate(weights, data, imgsz: int | None = None, batch: int = 16, device=None, workers: int = 4,
             conf: float = 0.001, iou: float = 0.7, max_det: int = 300, save_json: bool = False,
             project: str = "runs/detect", name: str = "val", plots: bool = True, progress: bool = True,
             split: str = "val", energy=None, exist_ok: bool = False, precision: str | None = None,
             backend: str | None = None, calibration: str | Path | None = None,
             protocol: str = "coco") -> tuple[dict, Path]:
    """Validate a checkpoint, a ``.onnx`` export or a loaded model (:class:`~spikeyolo.inference.InferenceModel`,
    each file read once) on a data YAML split; writes into a new ``project/name`` folder. ``precision`` /
    ``backend`` run the deploy form (:func:`spikeyolo.deploy`; ``calibration``: an image folder, list or glob
    whose images correct the int8 biases); energy is measured on the train form only (the default).
    ``protocol``: ``coco`` or ``ultralytics`` (module docstring; ``ultralytics`` runs rectangular batches of
    ``batch`` images, except in ONNX Runtime, whose export has a fixed size, as ultralytics validates exported
    models on square inputs).

    Returns ``(metrics, save_dir)``.
    """
    check_protocol(protocol)
    dev = select_device(device)
    images = None if calibration is None else lambda size: calibration_images(calibration, size)
    model = InferenceModel.load(weights, precision, backend, imgsz, dev, images)
    imgsz, weights = model.imgsz, model.source or "the model"
    if energy is None and model.form == "train":
        energy = EnergyMeter()  # firing rates, synaptic operations and energy at the end of every val
    data_cfg = load_data_config(data)
    check_class_names(model.names, data_cfg["names"], weights, data)
    dataset = build_dataset(data_cfg, split, imgsz=imgsz, augment=False, progress=progress)
    _warn_event_mismatch(model, dataset, weights, data)
    loader = protocol_loader(dataset, batch, workers, protocol, rect=model.backend != "onnxruntime")
    save_dir = increment_path(Path(project) / name, exist_ok)
    validator = Validator(loader, names=data_cfg["names"], device=dev, conf=conf, iou=iou, max_det=max_det,
                          save_dir=save_dir, save_json=save_json, plots=plots, half=dev.type == "cuda",
                          energy=energy, progress=progress, protocol=protocol)
    return validator(model), save_dir
