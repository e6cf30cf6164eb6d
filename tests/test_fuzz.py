"""Property-based tests (hypothesis): untrusted files either load or raise the project's own error type.

Arbitrary bytes and mutated valid files go to the label parsers (YOLO txt, COCO JSON, VOC XML), the ``.dat``
reader and the checkpoint loaders. Any exception other than :class:`spikeyolo.utils.errors.SpikeYOLOError` fails;
each example has a deadline (no hang) and the process's peak memory may not grow by more than ``MEMORY_MB``.
"""

import json
import resource
import struct
import warnings

import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spikeyolo
from spikeyolo.data.labels import Report, parse_yolo_txt, read_coco, read_voc
from spikeyolo.events.io import DatFormatError, DatReader
from spikeyolo.models.checkpoint import save
from spikeyolo.models.official import read_official_state_dict
from spikeyolo.utils.errors import CheckpointError, SpikeYOLOError

MEMORY_MB = 400
FAST = settings(max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.too_slow], database=None)
SLOW = settings(max_examples=20, deadline=5000, suppress_health_check=[HealthCheck.too_slow], database=None)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    cv2.imwrite(str(d / "a.png"), np.full((48, 64, 3), 80, np.uint8))
    return d


@pytest.fixture(autouse=True)
def bounded_memory():
    before = _peak_mb()
    yield
    assert _peak_mb() - before < MEMORY_MB


def _mutate(data: bytes, ops) -> bytes:
    """Apply (kind, position fraction, payload) edits: overwrite, insert, delete, truncate."""
    b = bytearray(data)
    for kind, frac, payload in ops:
        i = int(frac * len(b)) if b else 0
        if kind == "set":
            b[i:i + len(payload)] = payload
        elif kind == "insert":
            b[i:i] = payload
        elif kind == "delete":
            del b[i:i + len(payload) + 1]
        else:
            del b[i:]
    return bytes(b)


MUTATIONS = st.lists(st.tuples(st.sampled_from(["set", "insert", "delete", "truncate"]),
                               st.floats(0, 1), st.binary(min_size=1, max_size=8)), min_size=1, max_size=4)

# ---------------------------------------------------------------- YOLO txt

TOKENS = st.sampled_from(["0", "1", "2", "7", "-1", "0.5", "0.25", "1.5", "nan", "inf", "-inf", "1e999", "x", "",
                          "0x1", "1_0", "\u0661"])


@FAST
@given(st.one_of(st.text(max_size=200),
                 st.lists(st.lists(TOKENS, max_size=7).map(" ".join), max_size=6).map("\n".join)))
def test_yolo_txt_parser(text):
    report = Report()
    out = parse_yolo_txt(text, 3, "f.txt", report)
    if out is not None:  # every kept box is a finite, in-range, non-empty box of a known class
        cls, boxes = out
        assert np.isfinite(boxes).all() and (boxes >= 0).all() and (boxes <= 1).all()
        assert ((cls >= 0) & (cls < 3)).all() and (boxes[:, 2] > boxes[:, 0]).all()


# ---------------------------------------------------------------- COCO JSON

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                    max_leaves=12)


def _field(valid):
    return st.one_of(valid, JSON)


COCO = st.fixed_dictionaries({
    "images": st.lists(st.fixed_dictionaries({
        "id": _field(st.integers(0, 3)), "file_name": _field(st.sampled_from(["a.png", "missing.png"]))}),
        max_size=3),
    "annotations": st.lists(st.fixed_dictionaries({
        "image_id": _field(st.integers(0, 3)), "category_id": _field(st.integers(0, 3)),
        "bbox": _field(st.lists(st.floats(-100, 200) | st.floats(), min_size=4, max_size=4)),
        "iscrowd": _field(st.sampled_from([0, 1]))}), max_size=4),
    "categories": st.lists(st.fixed_dictionaries({"id": _field(st.integers(0, 3)), "name": JSON}), max_size=3),
})


def _read_coco(workdir, content: bytes):
    ann = workdir / "ann.json"
    ann.write_bytes(content)
    try:
        records = read_coco([str(workdir)], str(ann), Report())
    except SpikeYOLOError as e:
        assert "ann.json" in str(e)
        return
    for r in records:
        assert np.isfinite(r.boxes).all() and len(r.boxes) == len(r.cls)


@FAST
@given(st.binary(max_size=300))
def test_coco_json_arbitrary_bytes(workdir, data):
    _read_coco(workdir, data)


@FAST
@given(COCO | JSON)
def test_coco_json_mutated_structure(workdir, data):
    _read_coco(workdir, json.dumps(data).encode())


# ---------------------------------------------------------------- VOC XML

VOC = (b"<annotation><size><width>64</width><height>48</height></size><object><name>box</name><bndbox>"
       b"<xmin>3</xmin><ymin>4</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object></annotation>")


@FAST
@given(st.one_of(st.binary(max_size=300), MUTATIONS.map(lambda ops: _mutate(VOC, ops))))
def test_voc_xml(workdir, data):
    (workdir / "voc").mkdir(exist_ok=True)
    (workdir / "voc" / "a.xml").write_bytes(data)
    records = read_voc([str(workdir / "a.png")], str(workdir / "voc"), ["box"], Report())
    for r in records:  # a bad file skips the image; nothing else may happen
        assert np.isfinite(r.boxes).all()


# ---------------------------------------------------------------- .dat events

DAT = b"% Date 2020-01-01\n% Height 240\n% Width 304\n" + bytes((0, 8)) + b"".join(
    struct.pack("<II", t, (t % 300) | ((t % 200) << 14) | ((t % 2) << 28)) for t in range(0, 4000, 100))


HEADER_VALUES = st.one_of(TOKENS, st.integers(-1, 10**6).map(str), st.text(max_size=4))


@FAST
@given(st.one_of(st.binary(max_size=300), MUTATIONS.map(lambda ops: _mutate(DAT, ops)),
                 st.tuples(HEADER_VALUES, HEADER_VALUES).map(
                     lambda hw: DAT.replace(b"240", hw[0].encode(), 1).replace(b"304", hw[1].encode(), 1))))
def test_dat_reader(workdir, data):
    path = workdir / "x_td.dat"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncated last event, clamped timestamps: warnings by design
        try:
            r = DatReader(path)
        except DatFormatError as e:
            assert "x_td.dat" in str(e)
            return
        ev = r.read()
    assert len(ev) == len(r) and (np.diff(ev["t"]) >= 0).all()
    assert r.height * r.width <= 1 << 24
    assert len(r.read(int(ev["t"][len(ev) // 2]) if len(ev) else 0, None)) <= len(ev)


# ---------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def checkpoint_bytes(workdir):
    model = spikeyolo.build_model("n", nc=1, width=0.0625)
    save(model, workdir / "good.pt")
    return (workdir / "good.pt").read_bytes()


def _load(workdir, data: bytes):
    path = workdir / "ck.pt"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = spikeyolo.load(path)
        except CheckpointError as e:
            assert "ck.pt" in str(e)
            return
    assert isinstance(model, spikeyolo.SpikeYOLO)


@SLOW
@given(st.binary(max_size=400))
def test_checkpoint_arbitrary_bytes(workdir, data):
    _load(workdir, data)


@SLOW
@given(MUTATIONS, st.sampled_from([0.0, 0.003, 0.98]))
def test_checkpoint_mutated(workdir, checkpoint_bytes, ops, region):
    # edits near the start (the pickle), the end (the zip directory) or anywhere
    ops = [(k, region + f * 0.02 if region else f, p) for k, f, p in ops]
    _load(workdir, _mutate(checkpoint_bytes, ops))


class Rec:
    """Pickled as a class the importer does not know: it becomes an inert record of these fields."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


@SLOW
@given(MUTATIONS)
def test_official_importer_mutated(workdir, ops):
    path = workdir / "official.pt"
    if not (workdir / "official_src.pt").exists():
        tree = Rec(_parameters={"w": torch.arange(6.0)}, _modules={"m": Rec(_buffers={"b": torch.ones(2)})})
        torch.save({"ema": tree, "date": "x"}, workdir / "official_src.pt")
        assert set(read_official_state_dict(workdir / "official_src.pt")) == {"w", "m.b"}
    path.write_bytes(_mutate((workdir / "official_src.pt").read_bytes(), ops))
    try:
        state = read_official_state_dict(path)
    except CheckpointError as e:
        assert "official.pt" in str(e)
        return
    assert all(isinstance(v, torch.Tensor) for v in state.values())
