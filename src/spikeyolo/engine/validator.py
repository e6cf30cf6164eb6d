"""Validation: run a model over a dataloader, suppress, map boxes to original pixels, score with COCO mAP.

``Validator(dataloader, ...)(model) -> dict`` is used by the trainer after each epoch (on the EMA weights) and by
``spikeyolo val`` (via :func:`validate`) on a checkpoint. Reported keys:

- ``precision``, ``recall`` (at the confidence of best mean F1, IoU 0.5; metrics/detection.py),
- ``map50``, ``map`` (COCO AP@0.5 and AP@[.5:.95] by pycocotools / faster-coco-eval; metrics/coco.py; the
  standard protocol, maxDets 100 per image), ``map75``, ``ap50_per_class``, ``ap_per_class``,
- per class: ``p_per_class``, ``r_per_class`` (at that same confidence), ``images_per_class`` (images holding
  the class), ``instances_per_class`` (its ground-truth boxes); ``conf_best_f1``; ``confusion_matrix``
  (``[nc + 1][nc + 1]``, rows predicted, columns true, last background; metrics/detection.py),
- ``fitness`` = 0.1 * map50 + 0.9 * map,
- ``box_loss``, ``cls_loss``, ``dfl_loss`` (mean over batches, the train-mode loss of the same forward),
- ``speed``: milliseconds per image for preprocess / inference / postprocess,
- whatever the optional ``energy`` monitor returns (``snn/firing_rate``, ``snn/synops``, ``snn/energy_mJ``).

The ``energy`` argument is a hook for the energy module: any object with ``start(model)`` (called before the
first batch) and ``stop() -> dict`` (called after the last one; its items are merged into the result).
"""

from __future__ import annotations

import time
import warnings
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
from ..nn.head import returning_maps
from ..utils.boxes import clip_boxes, cxcywh2xyxy, unletterbox
from ..utils.errors import InputError
from ..utils.nms import non_max_suppression
from ..utils.plots import image_grid, plot_confusion_matrix, plot_metric_curve, plot_pr_curve
from ..utils.runs import increment_path, select_device, unwrap
from .loss import DetectionLoss
from .recordings import event_settings, score_sample_detections
from .results import fitness

COCO_MAX_DETS = 100  # the COCO protocol's maxDets (NMS may keep more; COCO scores the 100 best per image)


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


def _image_ground_truth(dataset, index_of: dict, batch: dict, k: int, input_hw) -> tuple:
    """Ground truth of image ``k`` of the batch: the dataset's own (exact, original pixels) when it has
    ``ground_truth(i)``, else the batch labels mapped back through ``ratio_pad``."""
    f = batch["im_file"][k]
    if isinstance(dataset, DetectionItems) and f in index_of:
        gt = dataset.ground_truth(index_of[f])
        boxes = torch.as_tensor(np.asarray(gt["boxes_xyxy"], dtype=np.float32)).reshape(-1, 4)
        cls = torch.as_tensor(np.asarray(gt["cls"], dtype=np.float32)).reshape(-1)
        return boxes, cls
    return batch_ground_truth(batch, k, input_hw)


def _score_image(batch: dict, k: int, d: torch.Tensor, gt: tuple, det: DetectionMetrics, gts: list, preds: list,
                 event_dets: dict) -> None:
    """Image ``k``'s detections ``d [n, 6]`` (input pixels) back in original pixels, scored and collected."""
    boxes = clip_boxes(unletterbox(d[:, :4], batch["ratio_pad"][k]), batch["ori_shape"][k])
    gt_boxes, gt_cls = gt
    image_id = batch["im_file"][k]  # unique (a stem is not: cam1/0001.jpg, cam2/0001.jpg)
    det.update(torch.cat((boxes, d[:, 4:6]), 1), gt_boxes, gt_cls)
    gts.append({"image_id": image_id, "shape": tuple(batch["ori_shape"][k]), "boxes_xyxy": gt_boxes, "cls": gt_cls})
    preds.append((image_id, boxes, d[:, 4], d[:, 5]))
    if "recording" in batch:  # event data: detections per recording, stamped with the label time
        event_dets.setdefault(batch["recording"][k], []).append((int(batch["t"][k]), boxes, d[:, 4:6]))


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


class Validator:
    """Evaluates detection models on one dataloader (see the module docstring for what it reports).

    Args:
        dataloader: yields collated batches (internals contract); when ``dataloader.dataset`` has
            ``ground_truth(i)`` (labels in original pixels, keyed by ``im_file``) those are the ground truth,
            else the batch labels mapped back through ``ratio_pad``.
        names: class names (default: the model's).
        device: where the model runs.
        conf, iou, max_det: NMS settings (0.001, 0.7, 300 as the reference validation).
        save_dir: where predictions.json and plots go (None: nowhere).
        save_json: write ``predictions.json`` (COCO results format). ``image_id`` and ``category_id`` are the
            annotation file's own for a COCO-JSON split; otherwise the file stem (relative path when two
            images share a stem) and the class index.
        plots: write ``PR_curve.png``, ``P_curve.png``, ``R_curve.png``, ``F1_curve.png`` (against the
            confidence threshold), ``confusion_matrix.png`` and ``confusion_matrix_normalized.png`` (rows
            predicted, columns true; detections with score >= 0.25 paired at IoU >= 0.45),
            ``val_batch0_labels.jpg`` and ``val_batch0_pred.jpg``; with an energy monitor that has a report, also
            ``firing_rates.png`` and ``energy_by_stage.png``.
        compute_loss: also report the validation loss (needs a head with ``decode``).
        half: run under float16 autocast (CUDA only; the weights stay float32).
        energy: optional monitor with ``start(model)`` / ``stop() -> dict``.
        progress: show a tqdm progress bar.
    """

    def __init__(self, dataloader, names=None, device="cpu", conf: float = 0.001, iou: float = 0.7,
                 max_det: int = 300, save_dir: str | Path | None = None, save_json: bool = False,
                 plots: bool = False, compute_loss: bool = True, half: bool = False, energy=None,
                 progress: bool = True):
        self.dataloader, self.names, self.device = dataloader, names, torch.device(device)
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.save_dir = Path(save_dir) if save_dir is not None else None
        self.save_json, self.plots, self.compute_loss = save_json, plots, compute_loss
        self.half = half and self.device.type == "cuda"
        self.energy, self.progress = energy, progress
        self.loss_fn = None
        self.predictions: list = []  # (image_id, boxes xyxy original px, scores, cls) of the last run

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict:
        model = unwrap(model)
        was_training = model.training
        model.eval()
        names = self.names if self.names is not None else getattr(model, "names", None)
        nc = int(getattr(model, "nc", len(names or [])))
        names = list(names) if names is not None else [str(i) for i in range(nc)]
        if self.compute_loss and self.loss_fn is None and hasattr(model, "stride"):
            self.loss_fn = DetectionLoss(model)

        dataset = getattr(self.dataloader, "dataset", None)
        index_of = {}
        if isinstance(dataset, DetectionItems):
            index_of = {dataset.ground_truth(i)["im_file"]: i for i in range(len(dataset))}
        det = DetectionMetrics(nc)
        gts, preds = [], []
        event_dets: dict[str, list] = {}  # event data: detections per recording, stamped with the label time
        loss_sum, n_loss_batches = torch.zeros(3), 0
        t_pre = t_inf = t_post = 0.0
        n_images = 0
        if self.save_dir is not None:
            self.save_dir.mkdir(parents=True, exist_ok=True)
        if self.energy is not None:
            self.energy.start(model)
        bar = tqdm(self.dataloader, desc="val", leave=False, disable=not self.progress, unit="batch")
        for bi, batch in enumerate(bar):
            t0 = time.perf_counter()
            x = to_input(batch["img"], self.device)
            require_finite(x, f"the images of validation batch {bi + 1} ({', '.join(map(str, batch['im_file'][:3]))}"
                              f"{', ...' if len(batch['im_file']) > 3 else ''})")
            t1 = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.half), returning_maps(model) as has_maps:
                out = model(x)
            out, maps = out if has_maps else (out, None)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            t2 = time.perf_counter()
            if self.loss_fn is not None and maps is not None:
                on_dev = {k: batch[k].to(self.device) for k in ("cls", "bboxes", "batch_idx")}
                loss_sum += self.loss_fn([m.float() for m in maps], on_dev)[1].detach().float().cpu()
                n_loss_batches += 1
            dets = [d.detach().float().cpu() for d in non_max_suppression(out.float(), self.conf, self.iou,
                                                                         self.max_det)]
            for k, d in enumerate(dets):
                gt = _image_ground_truth(dataset, index_of, batch, k, tuple(x.shape[-2:]))
                _score_image(batch, k, d, gt, det, gts, preds, event_dets)
            t3 = time.perf_counter()
            t_pre, t_inf, t_post = t_pre + t1 - t0, t_inf + t2 - t1, t_post + t3 - t2
            n_images += len(dets)
            if self.plots and bi == 0 and self.save_dir is not None:
                self._plot_batch(batch, dets, names)
        energy = self.energy.stop() if self.energy is not None else {}
        if was_training:
            model.train()

        coco = coco_evaluate(gts, preds, names, max_dets=COCO_MAX_DETS)
        pr = det.compute()
        n = max(n_images, 1)
        losses = (loss_sum / max(n_loss_batches, 1)).tolist() if n_loss_batches else [float("nan")] * 3
        result = {
            "precision": pr["precision"], "recall": pr["recall"],
            "map50": coco["map50"], "map": coco["map"], "map75": coco["map75"],
            "ap50_per_class": coco["ap50_per_class"], "ap_per_class": coco["ap_per_class"],
            "p_per_class": pr["p_per_class"].tolist(), "r_per_class": pr["r_per_class"].tolist(),
            "images_per_class": det.images_per_class.tolist(),
            "instances_per_class": np.bincount(np.concatenate([g["cls"].numpy().astype(int) for g in gts] or
                                                              [np.zeros(0, int)]), minlength=nc)[:nc].tolist(),
            "conf_best_f1": pr["conf"], "confusion_matrix": det.matrix.tolist(),
            "box_loss": losses[0], "cls_loss": losses[1], "dfl_loss": losses[2],
            "images": n_images, "instances": int(sum(len(g["cls"]) for g in gts)),
            "speed": {"preprocess": 1e3 * t_pre / n, "inference": 1e3 * t_inf / n, "postprocess": 1e3 * t_post / n},
            "coco_backend": coco["backend"],
            **energy,
        }
        if isinstance(dataset, EventDetectionItems):  # event recordings: the field's standard protocol too
            result["protocol"] = "per-sample"
            result["prophesee"] = score_sample_detections(dataset, event_dets, names)
        result["fitness"] = fitness(result)
        self.predictions = preds
        if self.save_dir is not None:
            self._save_outputs(bool(energy), preds, det, pr, names, dataset)
        return result

    def _save_outputs(self, energy: bool, preds: list, det: DetectionMetrics, pr: dict, names, dataset) -> None:
        """Files beside the metrics: the energy report (and its plots), COCO predictions JSON, the metric plots."""
        if energy and hasattr(self.energy, "report"):
            report = self.energy.report()
            report.save_csv(self.save_dir / "energy_layers.csv")
            report.save_json(self.save_dir / "energy.json")
            if self.plots:
                plot_firing_rates(report, self.save_dir / "firing_rates.png")
                plot_energy_breakdown(report, self.save_dir / "energy_by_stage.png")
        if self.save_json:
            class_ids, image_ids = _json_ids(dataset)
            write_coco_json(preds, self.save_dir / "predictions.json", class_ids=class_ids, image_ids=image_ids)
        if self.plots:
            self._plot_metrics(det, pr, names)

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
             backend: str | None = None, calibration: str | Path | None = None) -> tuple[dict, Path]:
    """Validate a checkpoint, a ``.onnx`` export or a loaded model (:class:`~spikeyolo.inference.InferenceModel`,
    each file read once) on a data YAML split; writes into a new ``project/name`` folder. ``precision`` /
    ``backend`` run the deploy form (:func:`spikeyolo.deploy`; ``calibration``: an image folder, list or glob
    whose images correct the int8 biases); energy is measured on the train form only (the default).

    Returns ``(metrics, save_dir)``.
    """
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
    loader = build_dataloader(dataset, batch_size=batch, workers=workers, shuffle=False)
    save_dir = increment_path(Path(project) / name, exist_ok)
    validator = Validator(loader, names=data_cfg["names"], device=dev, conf=conf, iou=iou, max_det=max_det,
                          save_dir=save_dir, save_json=save_json, plots=plots, half=dev.type == "cuda",
                          energy=energy, progress=progress)
    return validator(model), save_dir
