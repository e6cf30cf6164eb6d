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
from .image_cache import ResizedImages
from .labels import Record, Report, list_images, read_coco, read_image, read_voc, read_yolo, yolo_label_path
from .rect import rect_batch_shapes, rect_letterbox
from .tiling import clip_boxes_to_region, tile_grid

LOG = logging.getLogger("spikeyolo.data")
MAX_LOGGED_WARNINGS = 10
EVENT_DATASETS = {"gen1": Gen1Dataset, "gen4": Gen4Dataset}  # recordings + Prophesee boxes (type: gen1 / gen4)
PIPELINES = ("spikeyolo", "official")  # training-data arithmetic: ours, or the official run's (augment.py)
MOSAIC_BUFFER = 80  # official: 8 x the batch per GPU (10 in the 4 x 10 run), at most 1000


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
    # COCO iscrowd boxes that are not training targets (crowd_targets off): kept for evaluation as ignore regions
    crowd_cls: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    crowd_boxes: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 4), np.float32))

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
        cache_ram: decode and resize every image (or tile) once, here, and serve it from memory afterwards
            (``--cache ram``; loader workers started later share the arrays by fork).
        cache_disk: a folder for ``.npy`` copies of the resized images (``--cache disk``; see ``image_cache``).
        pipeline: ``"spikeyolo"`` (ours) or ``"official"``: the official run's resize, HSV, box filter and mosaic
            partners drawn from this process's last ``mosaic_buffer - 1`` loaded images (docs/training.md).
        crowd_targets: COCO iscrowd boxes are training targets (the official labels keep them); else they are
            left out of training and kept in ``ground_truth``'s ``crowd_*`` keys.

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
        *,
        cache_disk: str | Path | None = None,
        pipeline: str = "spikeyolo",
        crowd_targets: bool = False,
        mosaic_buffer: int = MOSAIC_BUFFER,
    ):
        if pipeline not in PIPELINES:
            raise ValueError(f"pipeline must be one of {PIPELINES}, got {pipeline!r}")
        self.names, self.nc, self.imgsz = list(names), len(names), int(imgsz)
        self.augment, self.hyp, self.seed = bool(augment), A.merge_hyp(hyp), int(seed)
        self.official = pipeline == "official"
        self.epoch = 0
        self.mosaic = self.augment and self.hyp["mosaic"] > 0
        self.samples = _make_samples(records, tile_size, overlap, min_visibility, crowd_targets)
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
        buffer = min(len(self.samples), int(mosaic_buffer), 1000) if self.official and self.augment else 0
        self.images = ResizedImages(
            self.load, [f"{s.im_file}\0{s.region}" for s in self.samples], [s.im_file for s in self.samples],
            self.imgsz, self.official, "ram" if cache_ram else "disk" if cache_disk else None, cache_disk, buffer)
        if cache_ram or cache_disk:
            self.stats["cached_bytes"] = self.images.cached_bytes
        self._rect_shapes: dict[int, tuple[int, int]] = {}  # index -> input (h, w) of its rect batch (validation)

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
            "crowd_cls": s.crowd_cls.copy(),  # iscrowd boxes that are not targets (empty with crowd_targets)
            "crowd_boxes_xyxy": s.crowd_boxes.copy(),
        }

    def load(self, i: int) -> np.ndarray:
        """BGR uint8 ``[h, w, 3]`` of sample ``i`` (the tile cut out for a tile), decoded from its file."""
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

    def resized(self, i: int) -> tuple[np.ndarray, tuple[float, float]]:
        """Sample ``i`` with its longer side scaled to ``imgsz`` (from a cache when there is one), and the gain
        ``(gain_y, gain_x)`` over the sample's pixels. Read-only: copy before changing it."""
        return self.images.get(i, self.samples[i].shape)

    def _letterboxed(self, index: int):
        # = letterboxing the original: the long-side resize has the letterbox's size and interpolation
        s = self.samples[index]
        if index in self._rect_shapes and not self.augment:
            img, gain, pad = rect_letterbox(self.load(index), self.imgsz, self._rect_shapes[index])
        else:
            im, (ry, rx) = self.resized(index)
            img, (gy, gx), pad = A.letterbox(im, self.imgsz)
            gain = (ry * gy, rx * gx)
        return img, A.apply_gain_pad(s.boxes, gain, pad), s.cls, gain, pad

    def _partners(self, index: int, rng: np.random.Generator) -> list[int]:
        """Three mosaic partners: uniform over the dataset, or (official) over this process's recent images."""
        recent = self.images.recent() if self.official else []
        if not recent:
            return rng.integers(0, len(self.samples), size=3).tolist()
        return [recent[k] for k in rng.integers(0, len(recent), size=3)]

    def _augmented(self, index: int, rng: np.random.Generator, mosaic: bool):
        h, size = self.hyp, self.imgsz
        if mosaic and rng.random() < h["mosaic"]:
            first = self.resized(index)  # loaded first: the official buffer then holds it too
            pieces = []
            for j in (index, *self._partners(index, rng)):
                im, gain = first if j == index else self.resized(j)
                pieces.append((im, A.apply_gain_pad(self.samples[j].boxes, gain, (0, 0)), self.samples[j].cls))
            img, boxes, cls = A.mosaic4(pieces, size, rng, channels=4)  # BGRA: the faster warp
            gain, pad = (1.0, 1.0), (0.0, 0.0)
        else:
            img, boxes, cls, gain, pad = self._letterboxed(index)
        img, boxes, cls = A.random_affine(img, boxes, cls, (size, size), rng, h["translate"], h["scale"],
                                          self.official)
        img = A.hsv_jitter(img, rng, h["hsv_h"], h["hsv_s"], h["hsv_v"], self.official)
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


def _make_samples(records: list[Record], tile_size, overlap, min_visibility, crowd_targets=False) -> list[Sample]:
    samples = []
    for r in records:
        stem = Path(r.im_file).stem
        target = np.ones(len(r.cls), bool) if crowd_targets or r.crowd is None else ~r.crowd
        parts = [(r.cls[target], r.boxes[target]), (r.cls[~target], r.boxes[~target])]  # targets, crowd
        if not tile_size:
            samples.append(Sample(r.im_file, stem, tuple(r.shape), None, *parts[0], *parts[1]))
            continue
        for region in tile_grid(r.shape[0], r.shape[1], int(tile_size), overlap):
            cut = [clip_boxes_to_region(b, c, region, min_visibility)[::-1] for c, b in parts]
            x0, y0, x1, y1 = region
            samples.append(Sample(r.im_file, f"{stem}__{x0}_{y0}", (y1 - y0, x1 - x0), region, *cut[0], *cut[1]))
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


def records_to_arrays(records: list[Record]) -> dict[str, np.ndarray]:
    """Records as flat arrays (what the label cache stores): file names as one UTF-8 blob with end offsets,
    ``shapes [M, 2]``, ``counts [M]`` boxes per image, and ``cls [N]``, ``boxes [N, 4]``, ``crowd_flags [N]``."""
    names = [r.im_file.encode("utf-8", "surrogateescape") for r in records]
    crowd = [r.crowd if r.crowd is not None else np.zeros(len(r.cls), bool) for r in records]
    return {
        "names": np.frombuffer(b"".join(names), np.uint8),
        "name_ends": np.cumsum([len(n) for n in names], dtype=np.int64),
        "shapes": np.asarray([r.shape for r in records], np.int64).reshape(-1, 2),
        "counts": np.asarray([len(r.cls) for r in records], np.int64),
        "cls": np.concatenate([r.cls for r in records] or [np.zeros(0)]).astype(np.int64),
        "boxes": np.concatenate([r.boxes for r in records] or [np.zeros((0, 4))]).astype(np.float32),
        "crowd_flags": np.concatenate(crowd or [np.zeros(0)]).astype(bool),
    }


def arrays_to_records(a: dict) -> list[Record]:
    """Inverse of :func:`records_to_arrays`; each record's arrays are views of the flat ones."""
    blob, ends = a["names"].tobytes(), a["name_ends"].tolist()
    starts = [0, *ends[:-1]]
    splits = np.cumsum(a["counts"])[:-1]
    cls, boxes, crowd = (np.split(a[k], splits) for k in ("cls", "boxes", "crowd_flags"))
    has_crowd = np.zeros(len(ends), bool)
    has_crowd[np.repeat(np.arange(len(ends)), a["counts"])[a["crowd_flags"]]] = True
    return [
        Record(blob[i:j].decode("utf-8", "surrogateescape"), (int(h), int(w)), c, b, f if hc else None)
        for i, j, (h, w), c, b, f, hc in zip(starts, ends, a["shapes"].tolist(), cls, boxes, crowd, has_crowd)
    ]


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
        return {**records_to_arrays(build(rep)), "warnings": rep.warnings, "skipped": rep.skipped,
                "crowd": rep.crowd}

    first = entry[0] if dtype == "yolo" else entry["images"][0]
    if use_cache:
        key = files_hash(inputs, extra={"type": dtype, "names": names, "class_map": cfg.get("class_map"),
                                        "crowd": "kept"})  # older caches dropped crowd regions
        data, path, hit = cached(_cache_target(first, dtype, ann), key, run)
    else:
        data, path, hit = run(), None, False
    records = arrays_to_records(data)
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
    cache_disk: bool = False,
    pipeline: str = "spikeyolo",
    crowd_targets: bool = False,
    mosaic_buffer: int = MOSAIC_BUFFER,
    **kwargs,
):
    """Dataset for one split of a data YAML (path, dict or loaded config).

    ``augment`` defaults to ``split == "train"``. Type ``gen1`` is handed to
    ``spikeyolo.data.gen1.Gen1Dataset(cfg, split, imgsz, augment=..., seed=..., hyp=..., **kwargs)``, type
    ``gen4`` to its subclass ``spikeyolo.data.gen4.Gen4Dataset`` (RVT's label filters and protocol) (flip,
    zoom and shift from ``hyp``'s ``fliplr``, ``scale``, ``translate``; no mosaic, colour or tiling;
    ``progress``: a progress bar while it caches frames).
    ``single_cls``: every box becomes class 0 (name it with :func:`single_class_names`). ``cache_ram``: images
    decoded once and kept in memory (image datasets; Gen1 frames are cached by their dataset anyway);
    ``cache_disk``: resized images stored once as ``.npy`` in ``<label cache>.images<imgsz>/`` (image datasets).
    ``pipeline``, ``crowd_targets``, ``mosaic_buffer``: see :class:`DetectionDataset` (image datasets; event
    datasets have their own fixed pipeline and no crowd boxes, and ignore them).
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
        records = [dataclasses.replace(r, cls=np.zeros_like(r.cls))
                   for r in records]
        names = single_class_names(names)
    disk = _image_cache_folder(stats, records, imgsz, pipeline) if cache_disk and not cache_ram else None
    ds = DetectionDataset(records, names, imgsz, augment, hyp, seed, tile_size, overlap, min_visibility, stats,
                          cache_ram, cache_disk=disk, pipeline=pipeline, crowd_targets=crowd_targets,
                          mosaic_buffer=mosaic_buffer)
    if cfg["type"] == "coco" and not tile_size:
        ds.coco_source = (list(cfg[split]["images"]), cfg[split]["annotations"], list(cfg["names"]))
    return ds


def _image_cache_folder(stats: dict, records: list[Record], imgsz: int, pipeline: str) -> Path:
    """``<label cache without suffix>.images<imgsz>[-official]`` (else beside the first image's folder)."""
    base = Path(stats["cache"]).with_suffix("") if stats.get("cache") else Path(records[0].im_file).parent
    return base.with_name(f"{base.name}.images{imgsz}" + ("-official" if pipeline == "official" else ""))


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
