"""Label readers on hand-written tiny files, and every bad-input case (warning names file and line)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from spikeyolo.data import DataError, build_dataset, load_data_config
from spikeyolo.data.labels import Report, parse_yolo_txt, read_voc, yolo_label_path


def write_img(path: Path, h: int = 40, w: int = 80) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((h, w, 3), 90, np.uint8))


def write_label(root: Path, name: str, text: str) -> Path:
    p = root / "labels" / "train" / f"{name}.txt"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def make_yaml(root: Path, extra: str = "") -> Path:
    y = root / "data.yaml"
    y.write_text("train: images/train\nval: images/train\nnames: [a, b]\n" + extra)
    return y


def test_yolo_label_path():
    assert yolo_label_path("/d/images/train/x.jpg") == "/d/labels/train/x.txt"
    assert yolo_label_path("/d/images/sub/images/x.png") == "/d/images/sub/labels/x.txt"  # last `images` only
    assert yolo_label_path("/d/pics/x.jpg") == "/d/pics/x.txt"


def test_good_yolo_labels_to_pixels(tmp_path):
    write_img(tmp_path / "images/train/good.png", 40, 80)
    write_label(tmp_path, "good", "1 0.5 0.25 0.25 0.5\n\n0 0.1 0.9 0.2 0.2\n")
    ds = build_dataset(make_yaml(tmp_path), "val")
    gt = ds.ground_truth(0)
    # cx 0.5*80=40, w 0.25*80=20 -> x 30..50; cy 0.25*40=10, h 0.5*40=20 -> y 0..20
    np.testing.assert_allclose(gt["boxes_xyxy"], [[30, 0, 50, 20], [0, 32, 16, 40]], atol=1e-4)
    np.testing.assert_array_equal(gt["cls"], [1, 0])
    assert gt["shape"] == (40, 80) and ds.stats["warnings"] == [] and ds.stats["skipped"] == 0


def test_coordinates_within_tolerance_are_clipped_silently():
    rep = Report()
    cls, boxes = parse_yolo_txt("0 0.9 0.5 0.2005 0.2\n", 2, "f.txt", rep)
    np.testing.assert_allclose(boxes, [[0.79975, 0.4, 1.0, 0.6]], atol=1e-6)
    assert rep.warnings == []


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2\n", 2, "expected 5 columns"),
        ("0 0.5 0.5 0.2 0.2 7\n", 1, "expected 5 columns"),
        ("0 0.5 0.5 0.2 0.2\n\n0 1.2 0.5 0.2 0.2\n", 3, "outside [0, 1]"),
        ("0 0.5 0.5 -0.2 0.2\n", 1, "non-positive"),
        ("2 0.5 0.5 0.2 0.2\n", 1, "class id 2 outside 0..1"),
        ("0.5 0.5 0.5 0.2 0.2\n", 1, "class id 0.5"),
        ("0 0.5 x 0.2 0.2\n", 1, "not a number"),
    ],
)
def test_bad_label_line_warns_with_file_and_line_and_skips(tmp_path, text, line, words):
    write_img(tmp_path / "images/train/ok.png")
    write_label(tmp_path, "ok", "0 0.5 0.5 0.5 0.5\n")
    write_img(tmp_path / "images/train/bad.png")
    lf = write_label(tmp_path, "bad", text)
    ds = build_dataset(make_yaml(tmp_path), "val")
    assert ds.stats["skipped"] == 1 and len(ds) == 1 and ds.ground_truth(0)["im_file"].endswith("ok.png")
    hits = [w for w in ds.stats["warnings"] if w.startswith(f"{lf}:{line}: ")]
    assert len(hits) == 1 and words in hits[0], ds.stats["warnings"]
    assert any(str(lf) in w and "image skipped" in w for w in ds.stats["warnings"])


def test_corrupt_image_missing_label_and_counts(tmp_path, caplog):
    write_img(tmp_path / "images/train/a.png")
    write_label(tmp_path, "a", "0 0.5 0.5 0.5 0.5\n1 0.2 0.2 0.1 0.1\n")
    write_img(tmp_path / "images/train/bg.png")  # no label file: background
    broken = tmp_path / "images/train/broken.jpg"
    broken.write_bytes(b"\xff\xd8 this is not a jpeg")
    write_label(tmp_path, "broken", "0 0.5 0.5 0.5 0.5\n")
    ds = build_dataset(make_yaml(tmp_path), "val")
    s = ds.stats
    assert (s["images"], s["boxes"], s["background"], s["skipped"]) == (2, 2, 1, 1)
    assert len(s["warnings"]) == 1 and str(broken) in s["warnings"][0] and "cannot read image" in s["warnings"][0]
    assert str(broken) in caplog.text  # also logged for a person to see


def test_nothing_usable_raises_before_training(tmp_path):
    (tmp_path / "images/train").mkdir(parents=True)
    (tmp_path / "images/train/x.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="no usable image"):
        build_dataset(make_yaml(tmp_path), "train")


def test_coco_json_reader(tmp_path):
    img_dir = tmp_path / "images" / "val"
    write_img(img_dir / "p.png", 50, 100)
    write_img(img_dir / "q.png", 50, 100)
    coco = {
        "images": [
            {"id": 11, "file_name": "p.png", "width": 100, "height": 50},
            {"id": 12, "file_name": "q.png", "width": 100, "height": 50},
            {"id": 13, "file_name": "missing.png", "width": 100, "height": 50},
        ],
        "categories": [{"id": 7, "name": "aardvark"}, {"id": 3, "name": "zebra"}],
        "annotations": [
            {"id": 1, "image_id": 11, "category_id": 7, "bbox": [10, 20, 30, 20], "iscrowd": 0},
            {"id": 2, "image_id": 11, "category_id": 3, "bbox": [0, 0, 5, 5], "iscrowd": 1},
            {"id": 3, "image_id": 11, "category_id": 3, "bbox": [60, 5, 50, 10], "iscrowd": 0},  # past the edge
            {"id": 4, "image_id": 11, "category_id": 3, "bbox": [1, 1, 0, 4], "iscrowd": 0},
            {"id": 5, "image_id": 11, "category_id": 9, "bbox": [1, 1, 4, 4], "iscrowd": 0},
        ],
    }
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(coco))
    y = tmp_path / "coco.yaml"
    y.write_text("type: coco\nval: {images: images/val, annotations: ann.json}\n")
    cfg = load_data_config(y)
    assert cfg["names"] == ["zebra", "aardvark"] and cfg["nc"] == 2  # sorted by category id: 3 -> 0, 7 -> 1
    ds = build_dataset(y, "val")
    gt = {Path(ds.ground_truth(i)["im_file"]).name: ds.ground_truth(i) for i in range(len(ds))}
    np.testing.assert_array_equal(gt["p.png"]["cls"], [1, 0])
    np.testing.assert_allclose(gt["p.png"]["boxes_xyxy"], [[10, 20, 40, 40], [60, 5, 100, 15]])
    assert len(gt["q.png"]["cls"]) == 0
    s = ds.stats
    assert (s["crowd"], s["skipped"], s["background"], s["images"]) == (1, 1, 1, 2)
    text = "\n".join(s["warnings"])
    for words in ("annotation id 3", "annotation id 4: non-positive", "annotation id 5: unknown category_id 9"):
        assert words in text
    assert "missing.png" in text


VOC = """<annotation>
  <size><width>80</width><height>40</height><depth>3</depth></size>
  <object>
    <name>Tree</name>
    <bndbox><xmin>10</xmin><ymin>5</ymin><xmax>30</xmax><ymax>25</ymax></bndbox>
  </object>
  <object>
    <name>Shrub</name>
    <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>3</xmax><ymax>3</ymax></bndbox>
  </object>
  <object>
    <name>Dead</name>
    <bndbox><xmin>40.5</xmin><ymin>0</ymin><xmax>80</xmax><ymax>40</ymax></bndbox>
  </object>
</annotation>
"""


def test_voc_reader_unknown_class_warns_with_line(tmp_path):
    write_img(tmp_path / "img" / "t.png", 40, 80)
    write_img(tmp_path / "img" / "u.png", 40, 80)  # no XML: background
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "t.xml").write_text(VOC)
    rep = Report()
    recs = read_voc([str(tmp_path / "img/t.png"), str(tmp_path / "img/u.png")], str(tmp_path / "ann"),
                    ["Tree"], rep, {"Dead": "Tree"})  # fmt: skip
    np.testing.assert_allclose(recs[0].boxes, [[10, 5, 30, 25], [40.5, 0, 80, 40]])
    np.testing.assert_array_equal(recs[0].cls, [0, 0])
    assert len(recs[1].cls) == 0
    shrub_line = VOC.splitlines().index("  <object>", 6) + 1  # the second <object> tag, 1-based
    assert len(rep.warnings) == 1 and rep.warnings[0].startswith(f"{tmp_path / 'ann' / 't.xml'}:{shrub_line}: ")
    assert "Shrub" in rep.warnings[0]


def test_voc_via_yaml_and_bad_xml(tmp_path):
    write_img(tmp_path / "img" / "t.png", 40, 80)
    write_img(tmp_path / "img" / "v.png", 40, 80)
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "t.xml").write_text(VOC)
    (tmp_path / "ann" / "v.xml").write_text("<annotation><object>")
    y = tmp_path / "voc.yaml"
    y.write_text("type: voc\ntrain: {images: img, annotations: ann}\nnames: [Tree]\nclass_map: {Dead: Tree}\n")
    ds = build_dataset(y, "train", augment=False)
    assert len(ds) == 1 and ds.stats["skipped"] == 1 and ds.stats["boxes"] == 2
    assert any("v.xml" in w and "cannot parse XML" in w for w in ds.stats["warnings"])
