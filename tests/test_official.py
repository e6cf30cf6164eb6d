"""Importing official (ultralytics-fork) checkpoints: weights renamed correctly, and no code from the file runs."""

import collections
import io
import pickle
import re
import sys
import types
import zipfile

import pytest
import torch
from torch import nn

import spikeyolo
from spikeyolo.models.official import MAX_MODULE_DEPTH, import_official, official_to_ours, read_official_state_dict
from spikeyolo.utils.errors import CheckpointError

# A few official key names, written out by hand from the reference code's module attributes.
HAND_CASES = {
    "1.encode_conv.weight": "layers.1.conv.weight",
    "3.encode_bn.running_var": "layers.3.bn.running_var",
    "2.Conv.pwconv1.weight": "layers.2.sep.pw.conv.weight",
    "4.1.Conv.bn2.bias": "layers.4.1.sep.dw.bn.bias",
    "6.0.Conv.pwconv3.body.0.bn.running_mean": "layers.6.0.sep.rep.bnpad.bn.running_mean",
    "6.0.Conv.pwconv3.body.1.1.weight": "layers.6.0.sep.rep.dw.weight",
    "8.conv1.body.2.1.weight": "layers.8.conv1.pw2.weight",
    "8.conv2.body.2.2.num_batches_tracked": "layers.8.conv2.bn_inner.num_batches_tracked",
    "8.bn2.weight": "layers.8.conv2.bn.weight",
    "2.conv1.bn.weight": "layers.2.conv1.bn.weight",
    "9.cv2.conv.weight": "layers.9.cv2.conv.weight",
    "26.cv2.1.2.conv.bias": "layers.26.box.1.2.conv.bias",
    "26.cv3.0.0.bn.weight": "layers.26.cls.0.0.bn.weight",
    "26.dfl.conv.weight": "layers.26.dfl.bins",
}


@pytest.mark.parametrize("official,ours", HAND_CASES.items())
def test_hand_written_key_mapping(official, ours):
    assert official_to_ours(official) == ours


def ours_to_official(key: str) -> str:
    """The inverse mapping, written independently for the round-trip test."""
    key = key.removeprefix("layers.")
    for a, b in [(r"sep\.pw\.conv\.", "Conv.pwconv1."), (r"sep\.pw\.bn\.", "Conv.bn1."),
                 (r"sep\.dw\.conv\.", "Conv.dwconv2."), (r"sep\.dw\.bn\.", "Conv.bn2."),
                 (r"sep\.rep\.bnpad\.bn\.", "Conv.pwconv3.body.0.bn."), (r"sep\.rep\.pw\.", "Conv.pwconv3.body.1.0."),
                 (r"sep\.rep\.dw\.", "Conv.pwconv3.body.1.1."), (r"sep\.rep\.bn\.", "Conv.bn3."),
                 (r"(conv[12])\.pw1\.", r"\1.body.0."), (r"(conv[12])\.bnpad\.bn\.", r"\1.body.1.bn."),
                 (r"(conv[12])\.dw\.", r"\1.body.2.0."), (r"(conv[12])\.pw2\.", r"\1.body.2.1."),
                 (r"(conv[12])\.bn_inner\.", r"\1.body.2.2."), (r"\.box\.", ".cv2."), (r"\.cls\.", ".cv3.")]:
        key = re.sub(a, b, key)
    key = re.sub(r"^(\d+)\.(conv|bn)\.", lambda m: f"{m[1]}.encode_{m[2]}." if m[1] in "1 3 5 7".split() else m[0], key)
    return "model." + key


def _fake_ultralytics_tree(state: dict) -> nn.Module:
    """An nn.Module tree with official names whose classes live in a fake 'ultralytics' module."""
    mod = types.ModuleType("ultralytics.nn.tasks")
    sys.modules["ultralytics"] = types.ModuleType("ultralytics")
    sys.modules["ultralytics.nn"] = types.ModuleType("ultralytics.nn")
    sys.modules["ultralytics.nn.tasks"] = mod
    Node = type("DetectionModel", (nn.Module,), {"__module__": "ultralytics.nn.tasks"})
    mod.DetectionModel = Node
    root = Node()
    for key, value in state.items():
        *path, leaf = key.split(".")
        node = root
        for part in path:
            if not hasattr(node, part):
                node.add_module(part, Node())
            node = getattr(node, part)
        if "running" in leaf or "num_batches" in leaf:
            node.register_buffer(leaf, value.clone())
        else:
            node.register_parameter(leaf, nn.Parameter(value.clone().half(), requires_grad=False))
    return root


def test_round_trip_through_a_fake_official_file(tmp_path):
    torch.manual_seed(0)
    ours = spikeyolo.build_model("n", nc=2, width=0.125).eval()
    state = {}
    for k, v in ours.state_dict().items():
        if k.endswith("dfl.bins"):
            state["model.26.dfl.conv.weight"] = v.view(1, -1, 1, 1)
        else:
            # the outer BN of a RepConv unit is the block's own bn1/bn2 in the reference
            official = ours_to_official(k)
            if re.search(r"\.conv([12])\.bn\.", k) and isinstance(ours.get_submodule(k.rsplit(".", 2)[0]),
                                                                  spikeyolo.nn.units.RepConvBN):
                official = re.sub(r"(conv)([12])\.bn\.", r"bn\2.", official)
            state[official] = v
    ckpt = {"epoch": -1, "ema": _fake_ultralytics_tree(state), "model": None, "train_args": {"T": "?"}}
    path = tmp_path / "official.pt"
    torch.save(ckpt, path)
    for name in ("ultralytics.nn.tasks", "ultralytics.nn", "ultralytics"):
        del sys.modules[name]
    imported = import_official(path, "n", nc=2, width=0.125)
    reference = spikeyolo.build_model("n", nc=2, width=0.125).eval()
    fp16 = {k: v.half().float() if v.is_floating_point() else v for k, v in ours.state_dict().items()}
    reference.load_state_dict(fp16)  # the released files are fp16
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(imported(x), reference(x))
    with pytest.raises(ValueError, match="does not match SpikeYOLO-s"):
        import_official(path, "s", nc=2)
    # spikeyolo.load recognises the file, infers scale and classes from the weights, and assumes T=1, D=4
    with pytest.warns(UserWarning, match="T=1, D=4"):
        loaded = spikeyolo.load(path, scale="n", width=0.125)
    assert loaded.nc == 2 and torch.equal(loaded(x), reference(x))


class Payload:
    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(MARKER),))


MARKER = ""


def test_code_in_the_file_never_runs(tmp_path):
    global MARKER
    MARKER = str(tmp_path / "pwned")
    path = tmp_path / "evil.pt"
    torch.save({"ema": Payload()}, path)
    with pytest.raises(ValueError, match="cannot be read|no model weights"):
        import_official(path, "n")
    assert not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------- hostile files (issue 11.11)


class Rec:
    """A stand-in nn.Module record: whatever fields a test gives it."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


class FakeStorage:
    def __init__(self, key, numel, storage_type=torch.FloatStorage):
        self.pid = ("storage", storage_type, key, "cpu", numel)


class FakeTensor:
    def __init__(self, storage, size):
        self.storage, self.size = storage, size

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, (self.storage, 0, torch.Size(self.size), (1,), False,
                                                  collections.OrderedDict())


def _write_torch_zip(path, obj, records):
    """A zip-format torch file laid out as torch.save does, with storages given as raw records."""
    buf = io.BytesIO()

    class Pickler(pickle.Pickler):
        def persistent_id(self, o):
            return o.pid if isinstance(o, FakeStorage) else None

    Pickler(buf, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
        zf.writestr("archive/byteorder", "little")
        for key, data in records.items():
            zf.writestr(f"archive/data/{key}", data)
        zf.writestr("archive/version", "3\n")
    return path


def test_storage_larger_than_its_record_is_refused(tmp_path):
    # a pickle asking for 4 TB of floats backed by a 16-byte record must not allocate anything
    w = FakeTensor(FakeStorage("0", 10**12), (10**12,))
    path = _write_torch_zip(tmp_path / "huge.pt", {"ema": Rec(_parameters={"w": w})}, {"0": bytes(16)})
    with pytest.raises(CheckpointError, match=r"huge.pt: .*'0' asks for 4000000000000 bytes; its record holds 16"):
        read_official_state_dict(path)
    # and a view past the end of an honest storage
    w = FakeTensor(FakeStorage("0", 4), (1000,))
    path = _write_torch_zip(tmp_path / "view.pt", {"ema": Rec(_parameters={"w": w})}, {"0": bytes(16)})
    with pytest.raises(CheckpointError, match=r"view.pt: .*size \(1000,\) reaches element 1000 of a storage of 4"):
        read_official_state_dict(path)
    # the honest file reads back the bytes it holds
    w = FakeTensor(FakeStorage("0", 4), (4,))
    path = _write_torch_zip(tmp_path / "ok.pt", {"ema": Rec(_parameters={"w": w})},
                            {"0": torch.tensor([1.0, 2.0, 3.0, 4.0]).numpy().tobytes()})
    assert read_official_state_dict(path)["w"].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_deep_and_cyclic_module_trees(tmp_path):
    w = torch.zeros(2)
    deep = Rec(_parameters={"w": w})
    for _ in range(1500):
        deep = Rec(_modules={"m": deep})
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20000)  # for pickling the test file only
    try:
        torch.save({"ema": deep}, tmp_path / "deep.pt")
    finally:
        sys.setrecursionlimit(limit)
    with pytest.raises(CheckpointError, match=rf"deep.pt: .*deeper than {MAX_MODULE_DEPTH} levels"):
        read_official_state_dict(tmp_path / "deep.pt")
    cyc = Rec(_parameters={"w": w})
    cyc._modules = {"again": cyc, "child": Rec(_modules={"up": cyc})}
    torch.save({"ema": cyc}, tmp_path / "cyc.pt")
    assert list(read_official_state_dict(tmp_path / "cyc.pt")) == ["w"]  # read once, no endless walk
    with pytest.raises(CheckpointError, match="cyc.pt: does not match SpikeYOLO-n"):
        import_official(tmp_path / "cyc.pt", "n")


def test_tensor_valued_fields_and_entries(tmp_path):
    torch.save({"ema": Rec(_parameters=torch.zeros(3))}, tmp_path / "field.pt")
    with pytest.raises(CheckpointError, match="field.pt: .*field _parameters is a Tensor, not a dict"):
        read_official_state_dict(tmp_path / "field.pt")
    torch.save({"ema": torch.zeros(3), "model": torch.ones(2)}, tmp_path / "entry.pt")
    with pytest.raises(CheckpointError, match="entry.pt: no model weights"):
        read_official_state_dict(tmp_path / "entry.pt")
    stem = {"1.encode_conv.weight": torch.zeros(()), "26.cv3.0.2.conv.weight": torch.zeros(())}  # 0-d tensors
    torch.save({"ema": Rec(_parameters=stem)}, tmp_path / "scalar.pt")
    with pytest.raises(CheckpointError, match="scalar.pt: not a SpikeYOLO checkpoint"):
        spikeyolo.models.official.infer_official(tmp_path / "scalar.pt")


def test_no_module_outside_the_allow_list_is_imported(tmp_path):
    # 'this' prints the Zen of Python on import: a file naming this.Anything must not import it
    cls = type("Anything", (), {"__module__": "this", "__qualname__": "Anything"})
    sys.modules.setdefault("this", types.ModuleType("this"))
    fake_this = sys.modules.pop("this")
    fake_this.Anything = cls
    sys.modules["this"] = fake_this
    torch.save({"ema": cls()}, tmp_path / "this.pt")
    del sys.modules["this"]
    with pytest.raises(CheckpointError, match="this.pt: no model weights"):
        read_official_state_dict(tmp_path / "this.pt")
    assert "this" not in sys.modules
