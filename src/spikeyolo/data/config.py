"""Data YAML loading (the ultralytics convention, plus COCO JSON, Pascal VOC and Gen1 layouts).

Layouts by ``type`` (default ``yolo``)::

    # yolo: images with YOLO txt labels (``.../images/x.jpg`` -> ``.../labels/x.txt``, else beside the image)
    path: /data/set            # root; relative paths are relative to this YAML's folder; default: that folder
    train: images/train        # a folder of images, a .txt file listing images (one a line), or a list of these
    val: images/val
    test: images/test          # optional
    names: [cat, dog]          # or {0: cat, 1: dog}; ``nc`` optional, checked against names

    # coco: one JSON per split; class names from the JSON categories (sorted by id) unless ``names`` given
    type: coco
    train: {images: images/train2017, annotations: annotations/instances_train2017.json}
    val: {images: images/val2017, annotations: annotations/instances_val2017.json}

    # voc: Pascal VOC XML, one ``<stem>.xml`` per image in ``annotations``; ``names`` required
    type: voc
    train: {images: JPEGImages, annotations: Annotations}   # images may also be a .txt list or a list
    names: [aeroplane, bicycle, ...]
    class_map: {Alive: Tree, Dead: Tree}                    # optional: rename classes before the lookup

    # gen1: Prophesee Gen1; only resolved here, read by spikeyolo.data.gen1.Gen1Dataset
    type: gen1
    train: train
    val: test

    # gen4: Prophesee 1Mpx, the Gen1 layout with RVT's filters (spikeyolo.data.gen4.Gen4Dataset); ``names``
    # optional: from ``classes: rvt`` (pedestrian, two-wheeler, car; default) or ``classes: all`` (7 classes)
    type: gen4

Every path is checked: a missing one raises :class:`DataConfigError` naming the YAML file and the key.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import yaml

from ..utils.errors import SpikeYOLOError
from .gen4 import GEN4_CLASSES, RVT_CLASSES

TYPES = ("yolo", "coco", "voc", "gen1", "gen4")
SPLITS = ("train", "val", "test")


class DataConfigError(SpikeYOLOError, ValueError):
    """A data YAML that cannot be used; the message names the file and the key."""


def load_data_config(path_or_dict: str | Path | dict) -> dict:
    """Read and check a data YAML (or an already loaded dict).

    A dict is read like a YAML's content, with relative paths relative to the working directory (or to its
    ``yaml_file`` when it has one, as a returned config has: loading a returned config again is a no-op).

    Returns a new dict with every path absolute (``str``): ``yaml_file`` (str or None), ``path`` (root),
    ``type``, ``names`` (list of str, index = class id), ``nc``, and per present split either a list of
    image sources (yolo, gen1, gen4) or ``{"images": [sources], "annotations": file_or_folder}`` (coco, voc).
    Unknown keys are kept as they are.
    """
    if isinstance(path_or_dict, dict):
        # a config this function returned keeps naming its YAML file in messages
        raw = dict(path_or_dict)
        yaml_file = Path(raw["yaml_file"]) if raw.get("yaml_file") else None
        base = yaml_file.parent if yaml_file else Path.cwd()
        where = str(yaml_file) if yaml_file else "data config dict"
    else:
        yaml_file = Path(path_or_dict).expanduser().resolve()
        where = str(yaml_file)
        if not yaml_file.is_file():
            raise DataConfigError(f"data YAML not found: {yaml_file}")
        try:
            raw = yaml.safe_load(yaml_file.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise DataConfigError(f"{where}: not valid YAML: {e}") from e
        if not isinstance(raw, dict):
            raise DataConfigError(f"{where}: expected a mapping at top level, got {type(raw).__name__}")
        base = yaml_file.parent

    cfg = dict(raw)
    cfg["yaml_file"] = str(yaml_file) if yaml_file else None
    dtype = str(raw.get("type", "yolo")).lower()
    if dtype not in TYPES:
        raise DataConfigError(f"{where}: key 'type': unknown dataset type {dtype!r}; expected one of {TYPES}")
    cfg["type"] = dtype

    root = Path(str(raw.get("path") or ".")).expanduser()
    root = (base / root).resolve() if not root.is_absolute() else root
    if not root.is_dir():
        raise DataConfigError(f"{where}: key 'path': folder {root} does not exist")
    cfg["path"] = str(root)

    if not any(raw.get(s) for s in SPLITS):
        raise DataConfigError(f"{where}: no split given; expected at least one of keys {SPLITS}")
    for split in SPLITS:
        if raw.get(split):
            cfg[split] = _resolve_split(raw[split], root, dtype, where, split)
        else:
            cfg.pop(split, None)

    names = _names(raw, where)
    if names is None and dtype == "coco":
        names = _coco_names(cfg, where)
    if names is None and dtype == "gen4":
        names = list(RVT_CLASSES if raw.get("classes", "rvt") == "rvt" else GEN4_CLASSES)
    if names is None:
        raise DataConfigError(f"{where}: key 'names': class names are required for type {dtype!r}")
    if raw.get("nc") is not None and int(raw["nc"]) != len(names):
        raise DataConfigError(f"{where}: key 'nc': nc={raw['nc']} but 'names' lists {len(names)} classes")
    cfg["names"], cfg["nc"] = names, len(names)
    return cfg


def check_class_names(model_names, data_names, model_src, data_src) -> None:
    """Compare the class names a model was trained with and a dataset's, as lists (class id = position).

    The same names in another order would silently rename classes: an error. Another count: an error. Other
    names (a relabelled or new dataset of the same size): a warning naming both lists.
    """
    model_names, data_names = [str(n) for n in model_names], [str(n) for n in data_names]
    if model_names == data_names:
        return
    if len(model_names) != len(data_names):
        raise DataConfigError(f"{model_src} detects {len(model_names)} classes {model_names} but {data_src} "
                              f"lists {len(data_names)}: {data_names}")
    if sorted(model_names) == sorted(data_names):
        raise DataConfigError(f"{data_src} lists the classes of {model_src} in another order ({data_names} vs "
                              f"{model_names}); class ids would be renamed: use the order {model_names}")
    warnings.warn(f"{data_src} names the classes {data_names}, {model_src} was trained with {model_names}; "
                  "class ids are kept", stacklevel=3)


def _resolve_path(p, root: Path, where: str, key: str, want_file: bool = False) -> str:
    q = Path(str(p)).expanduser()
    q = q if q.is_absolute() else root / q
    ok = q.is_file() if want_file else q.exists()
    if not ok:
        raise DataConfigError(f"{where}: key '{key}': {q} does not exist")
    return str(q.resolve())


def _resolve_sources(value, root: Path, where: str, key: str) -> list[str]:
    items = value if isinstance(value, list | tuple) else [value]
    return [_resolve_path(v, root, where, key) for v in items]


def _resolve_split(value, root: Path, dtype: str, where: str, split: str):
    if dtype in ("coco", "voc"):
        if not isinstance(value, dict) or "images" not in value or "annotations" not in value:
            raise DataConfigError(
                f"{where}: key '{split}': type {dtype!r} expects a mapping with 'images' and 'annotations'"
            )
        out = dict(value)
        out["images"] = _resolve_sources(value["images"], root, where, f"{split}.images")
        out["annotations"] = _resolve_path(
            value["annotations"], root, where, f"{split}.annotations", want_file=dtype == "coco"
        )
        return out
    return _resolve_sources(value, root, where, split)


def _names(raw: dict, where: str) -> list[str] | None:
    names = raw.get("names")
    if names is None:
        nc = raw.get("nc")
        return [f"class{i}" for i in range(int(nc))] if nc is not None else None
    if isinstance(names, dict):
        try:
            ids = sorted(int(k) for k in names)
        except (TypeError, ValueError) as e:
            raise DataConfigError(f"{where}: key 'names': ids must be integers") from e
        if ids != list(range(len(ids))):
            raise DataConfigError(f"{where}: key 'names': ids must be 0..{len(ids) - 1} without gaps, got {ids}")
        return [str(names[k] if k in names else names[str(k)]) for k in ids]
    if isinstance(names, list | tuple):
        return [str(n) for n in names]
    raise DataConfigError(f"{where}: key 'names': expected a list or a mapping, got {type(names).__name__}")


def _coco_names(cfg: dict, where: str) -> list[str]:
    """Names from the categories of the first annotation file (val first: it is the smallest)."""
    for split in ("val", "test", "train"):
        if split in cfg:
            ann = cfg[split]["annotations"]
            try:
                cats = json.loads(Path(ann).read_text(encoding="utf-8")).get("categories", [])
                return [str(c["name"]) for c in sorted(cats, key=lambda c: int(c["id"]))]
            except (OSError, ValueError, AttributeError) as e:
                raise DataConfigError(f"{where}: key '{split}.annotations': cannot read {ann}: {e}") from e
            except (KeyError, TypeError) as e:
                raise DataConfigError(f"{where}: key '{split}.annotations': {ann}: every category needs an "
                                      f"'id' and a 'name' (missing or bad: {e})") from e
    raise DataConfigError(f"{where}: key 'names': no annotation file to read categories from")
