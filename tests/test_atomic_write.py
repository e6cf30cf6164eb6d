"""Nothing a user had is lost: writes go to a temporary beside the target and are renamed when complete."""

import errno

import pytest

from spikeyolo.utils.runs import atomic_path, atomic_write


def test_a_complete_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "model.onnx"
    atomic_write(target, b"old")
    atomic_write(target, "new text")
    assert target.read_bytes() == b"new text"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.onnx"]


def test_a_full_disk_midway_keeps_the_old_file_and_names_it(tmp_path, monkeypatch):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"good old model")

    with pytest.raises(OSError) as info, atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".onnx" and tmp != target
        with open(tmp, "wb") as f:
            f.write(b"half of the new ")
            f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")  # the disk fills midway
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert target.read_bytes() == b"good old model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_any_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "labels.txt"
    target.write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("torn")
        raise KeyboardInterrupt
    assert target.read_text() == "0 0.5 0.5 0.1 0.1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["labels.txt"]
