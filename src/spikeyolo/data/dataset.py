"""Detection dataset: reads labels once (cached), serves augmented training items or letterboxed validation
items as dicts per docs/internals.md, and exposes ground truth in original pixels for the validator.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..utils.boxes import xyxy2cxcywh
from ..utils.errors import SpikeYOLOError
from . import augment as A
from .cache import cached, files_hash
from .config import DataConfigError, load_data_config
from .gen1 import Gen1Dataset
from .gen4 import Gen4Dataset
from .labels import Record, Report, list_images, read_coco, read_image, read_voc, read_yolo, yolo_label_path
from .rect import rect_batch_shapes, rect_letterbox
from .tiling import clip_boxes_to_region, tile_grid

LOG = logging.getLogger("spikeyolo.data")
MAX_LOGGED_WARNINGS = 10
EVENT_DATASETS = {"gen1": Gen1Dataset, "gen4": Gen4Dataset}  # recordings + Prophesee boxes (type: gen1 / gen4)


class DataError(SpikeYOLOError, ValueError):
    """A split with nothing usable left after reading (every image unreadable or skipped)."""


@dataclass
class Sample:
    """One item source: a whole image (``region=None``) or a tile of it. Boxes in the sample's own pixels."""

    im_file: str  # the real image file
    image_id: str  # file stem, plus ``__x0_y0`` for a tile
    shape: tuple[int, int]  # (h, w) of the sample (the tile for a tile)
    region: tuple[int, int, int, int] | None
    cls: np.ndarray  # [n] int64
    boxes: np.ndarray  # [n, 4] float32 xyxy
    crowd_cls: np.ndarray  # [k] int64: COCO crowd regions, for the validator only (never training targets)
    crowd_boxes: np.ndarray  # [k, 4] float32 xyxy

    @property
    def name(self) -> str:
        """The ``im_file`` the batch reports: the real path, or a virtual ``<stem>__x0_y0<ext>`` for a tile."""
        if self.region is None:
            return self.im_file
        p = Path(self.im_file)
        return str(p.with_name(self.image_id + p.suffix))


@functools.lru_cache(maxsize=2)
def _read_full(path: str) -> np.ndarray:
    """Decoded whole image kept for consecutive tiles of it (per process; never modified: tiles are copies)."""
    im = read_image(path)
    if im is None:
        raise OSError(f"cannot read image {path}")
    im.setflags(write=False)
    return im


class DetectionDataset(torch.utils.data.Dataset):
    """Images with boxes, as training or validation items.

    Args:
        records: usable images from a label reader (boxes in original pixels).
        names: class names (index = class id).
        imgsz: square network input size.
        augment: training augmentation (mosaic, affine, HSV, flip) when True; letterbox only when False.
        hyp: augmentation settings, see ``augment.DEFAULT_HYP``.
        seed: base of the per-sample RNG ``(seed, epoch, index)``.
        tile_size, overlap, min_visibility: cut every image into tiles (see ``tiling.tile_grid``); each tile is
            then an "original image" of its own (also for :meth:`ground_truth`).
        stats: counts from reading, extended here.
        cache_ram: decode every image (or tile) once, here, and serve it from memory afterwards (``--cache
            ram``; loader workers started later share the arrays by fork).

    ``__getitem__`` takes an index or an ``(index, epoch, mosaic)`` key (what ``build_dataloader`` sends, so
    epoch and mosaic reach persistent workers). Items: ``img`` uint8 ``[3, imgsz, imgsz]`` RGB, ``cls [n, 1]``,
    ``bboxes [n, 4]`` normalized cxcywh of the input, ``batch_idx [n]`` zeros, ``im_file``, ``ori_shape`` (h, w),
    ``ratio_pad`` ``((gain_y, gain_x), (pad_x, pad_y))`` (exact for validation items; for augmented items it
    is the letterbox before the random affine, or none at all for a mosaic: ``((1, 1), (0, 0))``).
    """

    keyed = True  # build_dataloader sends (index, epoch, mosaic) keys
    in_channels = 3  # BGR images

    def __init__(
        self,
        records: list[Record],
        names: list[str],
        imgsz: int = 640,
        augment: bool = False,
        hyp: dict | None = None,
        seed: int = 0,
        tile_size: int | None = None,
        overlap: float = 0.2,
        min_visibility: float = 0.5,
        stats: dict | None = None,
        cache_ram: bool = False,
    ):
        self.names, self.nc, self.imgsz = list(names), len(names), int(imgsz)
        self.augment, self.hyp, self.seed = bool(augment), A.merge_hyp(hyp), int(seed)
        self.epoch = 0
        self.mosaic = self.augment and self.hyp["mosaic"] > 0
        self.samples = _make_samples(records, tile_size, overlap, min_visibility)
        n_boxes = sum(len(s.cls) for s in self.samples)
        self.stats = dict(stats or {})
        self.stats.update(
            images=len(records),
            samples=len(self.samples),
            boxes=n_boxes,
            background=sum(len(s.cls) == 0 for s in self.samples),
        )
        self.stats.setdefault("skipped", 0)
        self.stats.setdefault("warnings", [])
        # (image folders, annotation file, class names) of a COCO-JSON split of whole images: predictions.json uses
        # its ids
        self.coco_source: tuple[list[str], str, list[str]] | None = None
        self._ram: list[np.ndarray] | None = None
        self._rect_shapes: dict[int, tuple[int, int]] = {}  # index -> input (h, w) of its rect batch (validation)
        if cache_ram:
            self._ram = [self.load(i) for i in range(len(self.samples))]
            self.stats["cached_bytes"] = sum(im.nbytes for im in self._ram)

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Augmentation RNG of the next pass uses this epoch (the loader's ``set_epoch`` calls this)."""
        self.epoch = int(epoch)

    def close_mosaic(self) -> None:
        """Switch mosaic off (the last epochs of the recipe train on single letterboxed images)."""
        self.mosaic = False

    def set_rect_batches(self, batch_size: int | None) -> list[int] | None:
        """Validation items letterboxed into rectangular batch shapes (data/rect.py, the ultralytics protocol);
        returns the item order those batches assume (load them in it, ``batch_size`` at a time). ``None``: back
        to square ``imgsz`` items (returns None)."""
        self._rect_shapes = {}
        if not batch_size:
            return None
        order, shapes = rect_batch_shapes([s.shape for s in self.samples], batch_size, self.imgsz)
        self._rect_shapes = {int(i): tuple(int(v) for v in shapes[k // batch_size]) for k, i in enumerate(order)}
        return order.tolist()

    def ground_truth(self, i: int) -> dict:
        """Labels of sample ``i`` in its original pixels: ``im_file``, ``image_id``, ``shape`` (h, w),
        ``cls [n]`` int64, ``boxes_xyxy [n, 4]`` float32, and its COCO crowd regions ``crowd_cls [k]``,
        ``crowd_boxes_xyxy [k, 4]`` (not among the boxes); for a tile the tile is the original image."""
        s = self.samples[i]
        return {
            "im_file": s.name,
            "image_id": s.image_id,
            "shape": s.shape,
            "cls": s.cls.copy(),
            "boxes_xyxy": s.boxes.copy(),
            "crowd_cls": s.crowd_cls.copy(),
            "crowd_boxes_xyxy": s.crowd_boxes.copy(),
        }

    def load(self, i: int) -> np.ndarray:
        """BGR uint8 ``[h, w, 3]`` of sample ``i`` (the tile cut out for a tile)."""
        if self._ram is not None:
            return self._ram[i]
        s = self.samples[i]
        if s.region is None:
            im = read_image(s.im_file)
            if im is None:
                raise OSError(f"cannot read image {s.im_file} (it was readable when labels were cached)")
            return im
        x0, y0, x1, y1 = s.region
        return _read_full(s.im_file)[y0:y1, x0:x1].copy()

    def __getitem__(self, key) -> dict:
        index, epoch, mosaic = key if isinstance(key, tuple) else (key, self.epoch, self.mosaic)
        if self.augment:
            img, boxes, cls, gain, pad = self._augmented(index, A.sample_rng(self.seed, epoch, index), mosaic)
        else:
            img, boxes, cls, gain, pad = self._letterboxed(index)
        return self._item(img, boxes, cls, self.samples[index], gain, pad)

    def _letterboxed(self, index: int):
        s = self.samples[index]
        if index in self._rect_shapes and not self.augment:
            img, gain, pad = rect_letterbox(self.load(index), self.imgsz, self._rect_shapes[index])
        else:
            img, gain, pad = A.letterbox(self.load(index), self.imgsz)
        return img, A.apply_gain_pad(s.boxes, gain, pad), s.cls, gain, pad

    def _augmented(self, index: int, rng: np.random.Generator, mosaic: bool):
        h, size = self.hyp, self.imgsz
        if mosaic and rng.random() < h["mosaic"]:
            others = rng.integers(0, len(self.samples), size=3)
            pieces = []
            for j in (index, *others.tolist()):
                im, gain = A.resize_long_side(self.load(j), size)
                pieces.append((im, A.apply_gain_pad(self.samples[j].boxes, gain, (0, 0)), self.samples[j].cls))
            img, boxes, cls = A.mosaic4(pieces, size, rng)
            gain, pad = (1.0, 1.0), (0.0, 0.0)
        else:
            img, boxes, cls, gain, pad = self._letterboxed(index)
        img, boxes, cls = A.random_affine(img, boxes, cls, (size, size), rng, h["translate"], h["scale"])
        img = A.hsv_jitter(img, rng, h["hsv_h"], h["hsv_s"], h["hsv_v"])
        if rng.random() < h["fliplr"]:
            img, boxes = A.hflip(img, boxes)
        return img, boxes, cls, gain, pad

    def _item(self, img, boxes, cls, s: Sample, gain, pad) -> dict:
        h, w = img.shape[:2]
        boxes = torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4))
        n = len(boxes)
        return {
            "img": torch.from_numpy(A.bgr_to_rgb_chw(img)),
            "cls": torch.as_tensor(np.asarray(cls, np.float32).reshape(n, 1)),
            "bboxes": xyxy2cxcywh(boxes) / torch.tensor([w, h, w, h], dtype=torch.float32),
            "batch_idx": torch.zeros(n),
            "im_file": s.name,
            "ori_shape": tuple(s.shape),
            "ratio_pad": ((float(gain[0]), float(gain[1])), (float(pad[0]), float(pad[1]))),
        }


def _make_samples(records: list[Record], tile_size, overlap, min_visibility) -> list[Sample]:
    samples = []
    for r in records:
        stem = Path(r.im_file).stem
        if not tile_size:
            samples.append(Sample(r.im_file, stem, tuple(r.shape), None, r.cls, r.boxes, r.crowd_cls, r.crowd_boxes))
            continue
        for region in tile_grid(r.shape[0], r.shape[1], int(tile_size), overlap):
            boxes, cls = clip_boxes_to_region(r.boxes, r.cls, region, min_visibility)
            crowd_boxes, crowd_cls = clip_boxes_to_region(r.crowd_boxes, r.crowd_cls, region, 0.0)
            x0, y0, x1, y1 = region
            samples.append(Sample(r.im_file, f"{stem}__{x0}_{y0}", (y1 - y0, x1 - x0), region, cls, boxes,
                                  crowd_cls, crowd_boxes))
    return samples


# ---------------------------------------------------------------------------------------------------------------
# Reading a split (with the label cache) and building the dataset from a data YAML.


def _cache_target(first_source: str, dtype: str, ann: str | None) -> Path:
    """Preferred cache path: ``<labels dir>.cache`` (yolo), ``<list>.cache``, ``<annotations>.cache``."""
    if dtype == "coco":
        return Path(ann).with_suffix(".cache")
    folder = Path(ann) if dtype == "voc" else Path(first_source)
    if folder.is_file():
        return folder.with_suffix(".cache")
    if dtype == "yolo":
        folder = Path(yolo_label_path(str(folder / "x.jpg"))).parent
    return folder.parent / (folder.name + ".cache")


def read_split(cfg: dict, split: str, use_cache: bool = True) -> tuple[list[Record], dict]:
    """Records of one split of a loaded data config, and stats (``skipped``, ``warnings``, ``crowd``, cache)."""
    dtype, names = cfg["type"], cfg["names"]
    entry = cfg[split]
    if dtype == "yolo":
        images = list_images(entry)
        inputs, ann = images + [yolo_label_path(f) for f in images], None
        build = lambda rep: read_yolo(images, len(names), rep)
    elif dtype == "voc":
        images, ann = list_images(entry["images"]), entry["annotations"]
        inputs = images + [str(Path(ann) / (Path(f).stem + ".xml")) for f in images]
        cmap = cfg.get("class_map")
        build = lambda rep: read_voc(images, ann, names, rep, cmap)
    else:  # coco: the JSON and the image folders (a folder's mtime changes when files come or go)
        ann = entry["annotations"]
        inputs = [ann, *entry["images"]]
        build = lambda rep: read_coco(entry["images"], ann, rep, names)

    def run() -> dict:
        rep = Report()
        recs = build(rep)
        return {
            "records": [[r.im_file, *r.shape, r.cls.tolist(), r.boxes.tolist(), r.crowd_cls.tolist(),
                         r.crowd_boxes.tolist()] for r in recs],
            "warnings": rep.warnings,
            "skipped": rep.skipped,
            "crowd": rep.crowd,
        }

    first = entry[0] if dtype == "yolo" else entry["images"][0]
    if use_cache:
        key = files_hash(inputs, extra={"type": dtype, "names": names, "class_map": cfg.get("class_map"),
                                        "crowd": "kept"})  # older caches dropped crowd regions
        data, path, hit = cached(_cache_target(first, dtype, ann), key, run)
    else:
        data, path, hit = run(), None, False
    records = [
        Record(f, (h, w), np.asarray(c, np.int64), np.asarray(b, np.float32).reshape(-1, 4),
               np.asarray(cc, np.int64), np.asarray(cb, np.float32).reshape(-1, 4))
        for f, h, w, c, b, cc, cb in data["records"]
    ]
    stats = {
        "skipped": data["skipped"],
        "warnings": list(data["warnings"]),
        "crowd": data["crowd"],
        "cache": str(path) if path else None,
        "cache_hit": hit,
    }
    return records, stats


def build_dataset(
    data,
    split: str = "train",
    imgsz: int = 640,
    augment: bool | None = None,
    hyp: dict | None = None,
    seed: int = 0,
    tile_size: int | None = None,
    overlap: float = 0.2,
    min_visibility: float = 0.5,
    cache: bool = True,
    progress: bool = True,
    single_cls: bool = False,
    cache_ram: bool = False,
    **kwargs,
):
    """Dataset for one split of a data YAML (path, dict or loaded config).

    ``augment`` defaults to ``split == "train"``. Type ``gen1`` is handed to
    ``spikeyolo.data.gen1.Gen1Dataset(cfg, split, imgsz, augment=..., seed=..., hyp=..., **kwargs)``, type
    ``gen4`` to its subclass ``spikeyolo.data.gen4.Gen4Dataset`` (RVT's label filters and protocol) (flip,
    zoom and shift from ``hyp``'s ``fliplr``, ``scale``, ``translate``; no mosaic, colour or tiling;
    ``progress``: a progress bar while it caches frames).
    ``single_cls``: every box becomes class 0 (name it with :func:`single_class_names`). ``cache_ram``: images
    decoded once and kept in memory (image datasets; Gen1 frames are cached by their dataset anyway).
    Warnings are logged (the first few) and kept in ``dataset.stats["warnings"]``. Raises :class:`DataError`
    when no usable image is left.
    """
    cfg = load_data_config(data)
    where = cfg["yaml_file"] or "data config dict"
    if split not in cfg:
        raise DataConfigError(f"{where}: key '{split}': split not given")
    if cfg["type"] in EVENT_DATASETS:
        if single_cls:
            raise DataError(f"{where}: --single-cls is for image datasets; {cfg['type']} recordings keep their "
                            "classes")
        augment = split == "train" if augment is None else augment
        return EVENT_DATASETS[cfg["type"]](cfg, split, imgsz, augment=augment, seed=seed, hyp=hyp, progress=progress,
                                          **kwargs)
    if kwargs:
        raise TypeError(f"unexpected arguments for a {cfg['type']} dataset: {sorted(kwargs)}")
    records, stats = read_split(cfg, split, use_cache=cache)
    stats["boxes"] = int(sum(len(r.cls) for r in records))
    _log(where, split, records, stats)
    if not records:
        raise DataError(
            f"{where}: split '{split}' has no usable image ({stats['skipped']} skipped); "
            f"first problems: {stats['warnings'][:3]}"
        )
    augment = split == "train" if augment is None else augment
    names = cfg["names"]
    if single_cls:
        records = [dataclasses.replace(r, cls=np.zeros_like(r.cls), crowd_cls=np.zeros_like(r.crowd_cls))
                   for r in records]
        names = single_class_names(names)
    ds = DetectionDataset(records, names, imgsz, augment, hyp, seed, tile_size, overlap, min_visibility, stats,
                          cache_ram)
    if cfg["type"] == "coco" and not tile_size:
        ds.coco_source = (list(cfg[split]["images"]), cfg[split]["annotations"], list(cfg["names"]))
    return ds


def single_class_names(names: list[str]) -> list[str]:
    """The one class name of a ``single_cls`` run: the dataset's own when it has one class, else ``item``."""
    return list(names) if len(names) == 1 else ["item"]


def _log(where: str, split: str, records: list, stats: dict) -> None:
    warns = stats["warnings"]
    for w in warns[:MAX_LOGGED_WARNINGS]:
        LOG.warning(w)
    if len(warns) > MAX_LOGGED_WARNINGS:
        LOG.warning("... and %d more warnings (dataset.stats['warnings'])", len(warns) - MAX_LOGGED_WARNINGS)
    if warns or stats["skipped"]:
        LOG.warning("%s [%s]: %d images usable, %d skipped", where, split, len(records), stats["skipped"])
    if records and not stats["boxes"]:
        LOG.warning("%s [%s]: no box in any of the %d images (label files missing or empty? YOLO labels are "
                    "looked for in a 'labels' folder beside 'images')", where, split, len(records))
