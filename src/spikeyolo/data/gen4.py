"""Prophesee 1Mpx ("Gen4") automotive detection, with RVT's label filters and evaluation settings.

Same folder layout as Gen1 (``<rec>_td.dat`` + ``<rec>_bbox.npy`` per split, 1280x720 sensor). Data YAML::

    type: gen4
    path: /data/gen4
    train: train
    val: val
    test: test
    window_us: 50000            # RVT: 50 ms windows (stacked histograms of 10 bins)
    T: 1
    representation: histogram
    representation_opts: {bins: 10}
    downsample_by_2: true       # RVT's setting: the input is 640x360 (default true)
    classes: rvt                # rvt (default): pedestrian, two-wheeler, car; all: the 7 published classes

Labels, as RVT's pre-processing (``scripts/genx/preprocess_dataset.py``, read, not copied):

- ``classes: rvt`` keeps class ids 0-2 (pedestrian, two wheeler, car) and drops truck, bus, traffic sign and
  traffic light (ids 3-6);
- boxes are cropped to the sensor, ``[0, W - 1] x [0, H - 1]`` (x1, y1, x2, y2 each clamped), and boxes left
  with a side under 5 px are dropped (RVT's "conservative" filter; its Gen4 setting does not apply the
  Prophesee diagonal/side filter to the training labels);
- in the **train** split only, boxes wider than ``9 * 1280 // 10 = 1152`` px are dropped (faulty labels that
  span the frame);
- with ``downsample_by_2`` the events are those of the pixels RVT's nearest-exact halving keeps
  (:func:`~spikeyolo.data.gen1.downsample_events`) and the boxes are halved.

Evaluation (``protocol``), as RVT's ``evaluate_list(camera="gen4")``: the Prophesee protocol with a 0.5 s skip,
minimum diagonal 60 px and minimum side 20 px, halved to 30 / 10 px when the input is downsampled by 2, on
ground truth and detections alike, in the input's (downsampled) pixels.
"""

from __future__ import annotations

import warnings

import numpy as np

from .gen1 import Gen1Dataset

GEN4_CLASSES = ("pedestrian", "two wheeler", "car", "truck", "bus", "traffic sign", "traffic light")
"""The 7 classes of the published 1Mpx labels, in class-id order."""
RVT_CLASSES = ("pedestrian", "two-wheeler", "car")
"""The 3 classes RVT trains and evaluates on (ids 0-2 of :data:`GEN4_CLASSES`)."""
GEN4_SENSOR = (720, 1280)
MIN_SIDE_PX = 5  # RVT's conservative label filter
HUGE_WIDTH_FRACTION = 0.9  # train labels wider than 9/10 of the sensor are faulty


def crop_to_sensor(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Box rows (``x, y, w, h``) cropped to ``[0, width - 1] x [0, height - 1]``; empty boxes dropped."""
    b = boxes.copy()
    x1 = np.clip(b["x"].astype(np.float64), 0, width - 1)
    y1 = np.clip(b["y"].astype(np.float64), 0, height - 1)
    x2 = np.clip(b["x"].astype(np.float64) + b["w"], 0, width - 1)
    y2 = np.clip(b["y"].astype(np.float64) + b["h"], 0, height - 1)
    b["x"], b["y"], b["w"], b["h"] = x1, y1, x2 - x1, y2 - y1
    return b[(b["w"] > 0) & (b["h"] > 0)]


def rvt_label_filter(boxes: np.ndarray, height: int, width: int, train: bool, keep_classes: int | None = 3):
    """RVT's Gen4 label filtering (module docstring): class ids ``< keep_classes`` (None: all), crop to the
    sensor, sides >= 5 px, and in training widths <= ``9 * width // 10``."""
    if keep_classes is not None:
        boxes = boxes[boxes["class_id"] < keep_classes]
    boxes = crop_to_sensor(boxes, height, width)
    boxes = boxes[(boxes["w"] >= MIN_SIDE_PX) & (boxes["h"] >= MIN_SIDE_PX)]
    if train:
        boxes = boxes[boxes["w"] <= (9 * width) // 10]
    return boxes


def gen4_protocol(downsample_by_2: bool) -> dict:
    """RVT's Prophesee-protocol settings for Gen4: 0.5 s skip, min diagonal 60 px, min side 20 px; halved
    when the evaluation is done on the input downsampled by 2."""
    f = 2 if downsample_by_2 else 1
    return {"min_box_diag": 60 // f, "min_box_side": 20 // f, "skip_us": 500_000}


class Gen4Dataset(Gen1Dataset):
    """One split of a 1Mpx (Gen4) dataset: :class:`~spikeyolo.data.gen1.Gen1Dataset` with RVT's label
    filters, optional input downsampling by 2, and RVT's Gen4 evaluation settings (module docstring).
    ``names`` default to :data:`RVT_CLASSES` (``classes: rvt``) or :data:`GEN4_CLASSES` (``classes: all``)."""

    kind = "gen4"

    def __init__(self, cfg: dict, split: str, *args, **kwargs):
        mode = str(cfg.get("classes", "rvt"))
        if mode not in ("rvt", "all"):
            raise ValueError(f"{cfg.get('yaml_file') or 'gen4 data config'}: classes must be 'rvt' or 'all', "
                             f"got {mode!r}")
        self.keep_classes = len(RVT_CLASSES) if mode == "rvt" else None
        self.downsample = 2 if cfg.get("downsample_by_2", True) else 1
        self.protocol = gen4_protocol(self.downsample == 2)
        self.label_rules = {"classes": mode, "downsample": self.downsample, "filter": "rvt"}
        cfg = dict(cfg)
        cfg["names"] = list(cfg.get("names") or (RVT_CLASSES if mode == "rvt" else GEN4_CLASSES))
        super().__init__(cfg, split, *args, **kwargs)
        for name, (h, w) in self.sensor.items():
            full = (h * self.downsample, w * self.downsample)
            if full != GEN4_SENSOR:
                warnings.warn(f"{self.kind} recording {name}: sensor {full[1]}x{full[0]}, not the 1Mpx "
                              f"{GEN4_SENSOR[1]}x{GEN4_SENSOR[0]}", stacklevel=2)

    def filter_labels(self, boxes: np.ndarray, height: int, width: int) -> np.ndarray:
        return rvt_label_filter(boxes, height, width, self.split == "train", self.keep_classes)
