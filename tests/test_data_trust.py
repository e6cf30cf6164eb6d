"""Labels a user can get wrong without noticing: non-finite values, COCO files missing keys, splits without a
single box, class names in another order (checkpoint vs data YAML, COCO YAML names vs JSON categories)."""

from __future__ import annotations

import json
import logging
import warnings

import cv2
import numpy as np
import pytest

import spikeyolo
from spikeyolo.data import DataConfigError, build_dataset
from spikeyolo.data.labels import LabelFileError, Report, coco_id_maps, parse_yolo_txt, read_voc
from spikeyolo.utils.errors import SpikeYOLOError


def write_img(path, h=40, w=80):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((h, w, 3), 90, np.uint8))


@pytest.mark.parametrize("line", ["0 nan 0.5 0.2 0.2", "0 0.5 0.5 inf 0.2", "nan 0.5 0.5 0.2 0.2",
                                  "inf 0.5 0.5 0.2 0.2", "0 0.5 -inf 0.2 0.2"])
def test_yolo_non_finite_values_are_bad_lines(line):
    rep = Report()
    assert parse_yolo_txt(f"1 0.5 0.5 0.1 0.1\n{line}\n", 2, "lab/x.txt", rep) is None  # the image is skipped
    assert rep.warnings == [f"lab/x.txt:2: not a finite number in {line!r}"]


def coco_set(tmp_path, categories, annotations, images=None, names=None):
    write_img(tmp_path / "images" / "p.png", 50, 100)
    coco = {"images": images if images is not None else [{"id": 1, "file_name": "p.png"}],
            "categories": categories, "annotations": annotations}
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    y = tmp_path / "coco.yaml"
    y.write_text("type: coco\nval: {images: images, annotations: ann.json}\n" + (f"names: {names}\n" if names else ""))
    return y


def test_coco_non_finite_bbox_is_named_and_dropped(tmp_path):
    cats = [{"id": 1, "name": "a"}]
    anns = [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [10, 10, float("nan"), 5]},
            {"id": 6, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 5]}]
    ds = build_dataset(coco_set(tmp_path, cats, anns), "val", cache=False)
    assert len(ds.ground_truth(0)["cls"]) == 1
    assert any("annotation id 5: NaN or infinite value in bbox" in w for w in ds.stats["warnings"])


@pytest.mark.parametrize("images,cats,anns,words", [
    ([{"file_name": "p.png"}], [{"id": 1, "name": "a"}], [], "images[0] has no 'id' key"),
    ([{"id": 1}], [{"id": 1, "name": "a"}], [], "images[0] has no 'file_name' key"),
    (None, [{"id": 1, "name": "a"}], [{"id": 9, "category_id": 1, "bbox": [1, 1, 2, 2]}], "annotations[0] (id 9)"),
    (None, [{"id": 1, "name": "a"}], [{"id": 9, "image_id": "x", "bbox": [1, 1, 2, 2]}], "annotations[0].image_id"),
])
def test_coco_missing_keys_are_named(tmp_path, images, cats, anns, words):
    y = coco_set(tmp_path, cats, anns, images=images, names="[a]")
    with pytest.raises(LabelFileError, match=words.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")) as e:
        build_dataset(y, "val", cache=False)
    assert str(tmp_path / "ann.json") in str(e.value) and isinstance(e.value, SpikeYOLOError)


def test_coco_category_without_a_name_is_named(tmp_path):
    y = coco_set(tmp_path, [{"id": 1}], [])  # names read from the JSON
    with pytest.raises(DataConfigError, match="'id' and a 'name'"):
        build_dataset(y, "val", cache=False)


def test_coco_yaml_names_are_matched_by_name_not_position(tmp_path):
    cats = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    anns = [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [10, 10, 20, 20]}]  # a dog
    ds = build_dataset(coco_set(tmp_path, cats, anns, names="[dog, cat]"), "val", cache=False)
    assert ds.names == ["dog", "cat"] and ds.ground_truth(0)["cls"].tolist() == [0]  # still a dog
    # predictions.json maps class indices back to the JSON's own category ids in the same order
    assert coco_id_maps([str(tmp_path / "images")], str(tmp_path / "ann.json"), ["dog", "cat"])[1] == [2, 1]
    with pytest.raises(LabelFileError, match="not the data YAML's names"):
        build_dataset(coco_set(tmp_path, cats, anns, names="[dog, horse]"), "val", cache=False)


def test_voc_non_finite_box_is_named(tmp_path):
    write_img(tmp_path / "img" / "t.png")
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "t.xml").write_text(
        "<annotation><object><name>a</name><bndbox><xmin>nan</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax>"
        "</bndbox></object></annotation>")
    rep = Report()
    recs = read_voc([str(tmp_path / "img" / "t.png")], str(tmp_path / "ann"), ["a"], rep)
    assert len(recs[0].cls) == 0 and "NaN or infinite value in bndbox" in rep.warnings[0] and ":1:" in rep.warnings[0]


def yolo_without_labels(tmp_path):
    for i in range(2):
        write_img(tmp_path / "images" / "train" / f"{i}.png")
    y = tmp_path / "data.yaml"
    y.write_text("train: images/train\nval: images/train\nnames: [a]\n")
    return y


def test_a_split_without_boxes_warns(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="spikeyolo.data"):
        ds = build_dataset(yolo_without_labels(tmp_path), "val", cache=False)
    assert ds.stats["boxes"] == 0 and "no box in any of the 2 images" in caplog.text


def test_training_on_no_boxes_is_an_error_unless_allowed(tmp_path):
    from spikeyolo.engine.trainer import TrainConfig, Trainer

    y = yolo_without_labels(tmp_path)
    cfg = dict(data=str(y), model="n", width=0.0625, imgsz=64, batch=2, epochs=1, workers=0, device="cpu",
               project=str(tmp_path / "runs"), progress=False, verbose=False, plots=False, val=False)
    with pytest.raises(SpikeYOLOError, match="--allow-no-boxes"):
        Trainer(TrainConfig(**cfg)).train()
    assert not (tmp_path / "runs" / "train").exists()
    assert Trainer(TrainConfig(**cfg, allow_no_boxes=True)).train()["epochs_done"] == 1


def test_checkpoint_names_against_data_names(tmp_path):
    from spikeyolo.engine.validator import validate

    for i in range(2):
        write_img(tmp_path / "images" / f"{i}.png")
    m = spikeyolo.build_model("n", nc=2, width=0.0625, names=["cat", "dog"])
    spikeyolo.save(m, tmp_path / "m.pt")
    y = tmp_path / "d.yaml"
    y.write_text("train: images\nval: images\nnames: [dog, cat]\n")
    kw = dict(imgsz=64, device="cpu", workers=0, plots=False, progress=False, project=str(tmp_path / "runs"))
    with pytest.raises(DataConfigError, match="another order"):
        validate(tmp_path / "m.pt", y, **kw)
    y.write_text("train: images\nval: images\nnames: [cat, dog, bird]\n")
    with pytest.raises(DataConfigError, match="3"):
        validate(tmp_path / "m.pt", y, **kw)
    y.write_text("train: images\nval: images\nnames: [car, bus]\n")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        validate(tmp_path / "m.pt", y, **kw)
    assert any("car" in str(x.message) and "cat" in str(x.message) for x in w)
