"""Importing official (ultralytics-fork) checkpoints: weights renamed correctly, and no code from the file runs."""

import collections
import contextlib
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
from _train_data import make_dataset
from spikeyolo.cli import main
from spikeyolo.models.checkpoint import checkpoint_imgsz, checkpoint_names
from spikeyolo.models.official import (
    MAX_MODULE_DEPTH,
    import_official,
    official_to_ours,
    read_official_state_dict,
    recognize_official,
)
from spikeyolo.models.yolo import SpikeYOLO, build_config, load_spec
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


COCO_MODULE = "ultralytics.nn.modules.yolo_spikformer"
SJ_MODULE = "spikingjelly.clock_driven.neuron"
BIN_MODULE = "ultralytics.nn.modules.yolo_spikformer_bin"


@contextlib.contextmanager
def official_classes():
    """``make(module, name)``: an nn.Module class that pickles as ``module.name`` (fake modules in sys.modules
    while the file is written, removed afterwards, so the reader never finds them)."""
    made = {}

    def make(module, name):
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            made.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
            sys.modules[".".join(parts[:i])] = made[".".join(parts[:i])]
        cls = getattr(made[module], name, None)
        if cls is None:
            cls = type(name, (nn.Module,), {"__module__": module, "__qualname__": name})
            setattr(made[module], name, cls)
        return cls

    try:
        yield make
    finally:
        for name in made:
            sys.modules.pop(name, None)


def official_tree(make, state: dict, modules: dict, root_attrs: dict) -> nn.Module:
    """An official-format model: ``state`` (official key -> tensor) on plain nodes, ``modules`` (path ->
    (module, class, attributes)) inserted where given, ``root_attrs`` on the DetectionModel (yaml, names)."""
    root = make("ultralytics.nn.tasks", "DetectionModel")()
    root.__dict__.update(root_attrs)
    node_cls = make("ultralytics.nn.modules.block", "Node")

    def node_at(path):
        node = root
        for part in path:
            if part not in node._modules:
                node.add_module(part, node_cls())
            node = node._modules[part]
        return node

    for path, (module, name, attrs) in modules.items():
        *parent, leaf = path.split(".")
        child = make(module, name)()
        child.__dict__.update(attrs)
        node_at(parent).add_module(leaf, child)
    for key, value in state.items():
        *path, leaf = key.split(".")
        node = node_at(path)
        if "running" in leaf or "num_batches" in leaf:
            node.register_buffer(leaf, value)
        else:
            node.register_parameter(leaf, nn.Parameter(value, requires_grad=False))
    return root


def official_state(model, tensor=lambda v: v.detach().clone().half()) -> dict:
    """Our model's weights under their official names (``tensor`` makes each stored value)."""
    state = {}
    for k, v in model.state_dict().items():
        if k.endswith("dfl.bins"):
            state["model.26.dfl.conv.weight"] = tensor(v.view(1, -1, 1, 1))
            continue
        official = ours_to_official(k)
        # the outer BN of a RepConv unit is the block's own bn1/bn2 in the reference
        if re.search(r"\.conv([12])\.bn\.", k) and isinstance(model.get_submodule(k.rsplit(".", 2)[0]),
                                                              spikeyolo.nn.units.RepConvBN):
            official = re.sub(r"(conv)([12])\.bn\.", r"bn\2.", official)
        state[official] = tensor(v)
    return state


def coco_modules(T=1, D=4) -> dict:
    return {"model.0": (COCO_MODULE, "MS_GetT", {"T": T, "in_channels": 3}),
            "model.2.Conv.lif1": (COCO_MODULE, "mem_update", {"act": False}),
            "model.2.Conv.lif1.qtrick": (COCO_MODULE, f"MultiSpike{D}", {}),
            "model.9.cv1.lif": (COCO_MODULE, "mem_update", {"act": False}),
            "model.9.cv1.lif.qtrick": (COCO_MODULE, f"MultiSpike{D}", {})}


def gen1_modules(tau=2.0, decay_input=True) -> dict:
    lif = {"tau": tau, "decay_input": decay_input, "v_threshold": 1.0, "v_reset": None, "detach_reset": True}
    return {"model.0": (COCO_MODULE, "MS_GetT", {"T": 1, "in_channels": 3}),
            "model.2.Conv.lif1": (SJ_MODULE, "MultiStepLIFNode", lif),
            "model.4.0.conv1.lif": (SJ_MODULE, "MultiStepLIFNode", dict(lif))}


def getT_yaml(T):
    rows = [[-1, 1, "MS_GetT", [3, T]], [-1, 1, "MS_DownSampling", [128, 7, 4, 2, True]]]
    return {"yaml": {"nc": 80, "backbone": rows}}


def write_official(path, state, modules, root_attrs=None, train_args=None):
    with official_classes() as make:
        tree = official_tree(make, state, modules, root_attrs or {})
        torch.save({"epoch": -1, "ema": tree, "model": None, "train_args": train_args or {}}, path)
    return path


def test_round_trip_through_a_fake_official_file(tmp_path):
    torch.manual_seed(0)
    ours = spikeyolo.build_model("n", nc=2, width=0.125).eval()
    path = write_official(tmp_path / "official.pt", official_state(ours), coco_modules(),
                          {**getT_yaml(1), "names": {0: "box", 1: "disc"}}, {"T": "?"})
    imported = import_official(path, "n", nc=2, width=0.125)
    reference = spikeyolo.build_model("n", nc=2, width=0.125).eval()
    fp16 = {k: v.half().float() if v.is_floating_point() else v for k, v in ours.state_dict().items()}
    reference.load_state_dict(fp16)  # the released files are fp16
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(imported(x), reference(x))
    with pytest.raises(ValueError, match="does not match SpikeYOLO-s"):
        import_official(path, "s", nc=2)
    # spikeyolo.load recognizes the file: classes and their names from it, T and D from its modules
    loaded = spikeyolo.load(path, scale="n", width=0.125)
    assert loaded.nc == 2 and loaded.names == ["box", "disc"] and torch.equal(loaded(x), reference(x))


def _reference(ours, **settings):
    """Our tiny model with the fp16-rounded weights and the given settings: what the import must equal."""
    ref = spikeyolo.build_model("n", nc=ours.nc, width=0.125, **settings).eval()
    ref.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in ours.state_dict().items()})
    return ref


def test_load_sets_T_D_and_the_neuron_from_the_file_and_says_so(tmp_path, capsys):
    torch.manual_seed(1)
    ours = spikeyolo.build_model("n", nc=3, width=0.125).eval()
    x = torch.rand(2, 3, 64, 64)
    # COCO code: T from MS_GetT (2 here, so not the default 1), D from MultiSpike2, decay 0.25 / gain 1
    coco = write_official(tmp_path / "coco.pt", official_state(ours), coco_modules(T=2, D=2), getT_yaml(2))
    model = spikeyolo.load(coco, scale="n", width=0.125)
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "coco.pt: official SpikeYOLO" in line and "T=2 (its MS_GetT)" in line
    assert "D=2 (MultiSpike2)" in line and "decay 0.25, input gain 1" in line
    assert (model.T, model.D, model.neuron.decay, model.neuron.input_gain) == (2, 2, 0.25, 1.0)
    assert torch.equal(model(x), _reference(ours, T=2, D=2)(x))
    # Gen1 code: SpikingJelly MultiStepLIFNode, tau 2 with decay_input: decay 0.5, gain 0.5; the release's T=2, D=4
    gen1 = write_official(tmp_path / "gen1.pt", official_state(ours), gen1_modules(), getT_yaml(1))
    model = spikeyolo.load(gen1, scale="n", width=0.125)
    line = capsys.readouterr().out.strip()
    assert "T=2 (the Gen1 release; the file does not record it)" in line and "decay 0.5, input gain 0.5" in line
    assert (model.T, model.D, model.neuron.decay, model.neuron.input_gain) == (2, 4, 0.5, 0.5)
    frames = torch.rand(2, 2, 3, 64, 64)
    assert torch.equal(model(frames), _reference(ours, T=2, D=4, decay=0.5, input_gain=0.5)(frames))
    # tau 4 without decay_input: decay 0.75, gain 1; a given T replaces the release's
    tau4 = write_official(tmp_path / "tau4.pt", official_state(ours), gen1_modules(tau=4.0, decay_input=False))
    model = spikeyolo.load(tau4, scale="n", width=0.125, T=3)
    assert "T=3 (given)" in capsys.readouterr().out
    assert (model.T, model.neuron.decay, model.neuron.input_gain) == (3, 0.75, 1.0)


def meta_state(scale, nc, **kwargs) -> dict:
    """Official-named weights of a real-size model whose every tensor is a stride-0 view of one fp16 value
    (the file stays a few hundred kB; the shapes and parameter counts are the real ones)."""
    with torch.device("meta"):
        model = SpikeYOLO(build_config(scale, nc, **kwargs))
    return official_state(model, _one_value_view)


def _one_value_view(v):
    dtype = torch.half if v.is_floating_point() else v.dtype
    return torch.zeros(1, dtype=dtype).expand(v.shape) if v.dim() else torch.zeros((), dtype=dtype)


# parameter counts written from the reference (every nn.Parameter, as ultralytics counts; docs: reference 2.4)
COCO_S_PARAMS, COCO_L_PARAMS, GEN1_S_PARAMS, L_AS_SHIPPED_PARAMS = 23_153_024, 68_478_400, 23_122_838, 65_517_760


@pytest.mark.parametrize("scale,nc,modules,release,params,settings", [
    ("s", 80, coco_modules(T=1), "COCO 23M", COCO_S_PARAMS, (1, 4, 0.25, 1.0)),
    ("l", 80, coco_modules(T=1), "COCO 69M", COCO_L_PARAMS, (1, 4, 0.25, 1.0)),
    ("s", 2, gen1_modules(), "Gen1 23M", GEN1_S_PARAMS, (2, 4, 0.5, 0.5)),
])
def test_each_release_is_recognized_at_its_real_geometry(tmp_path, scale, nc, modules, release, params, settings):
    path = write_official(tmp_path / "release.pt", meta_state(scale, nc), modules, getT_yaml(1))
    assert path.stat().st_size < 2_000_000
    kind = recognize_official(path)
    assert (kind.release, kind.scale, kind.nc, kind.n_params) == (release, scale, nc, params)
    assert (kind.T, kind.D, kind.decay, kind.input_gain) == settings


def test_binary_inference_release_is_recognized_and_refused(tmp_path):
    # yolo_spikformer_bin: Conv2d_bn units (conv + bn), a fourth SepConv conv, RepConv as three convs
    state = {"model.1.encode_conv.conv.weight": torch.zeros(8, 3, 7, 7).half(),
             "model.2.Conv.dwconv4.conv.weight": torch.zeros(8, 1, 1, 1).half(),
             "model.26.cv3.0.2.conv.conv.weight": torch.zeros(80, 8, 1, 1).half()}
    modules = {"model.1.encode_conv": (BIN_MODULE, "Conv2d_bn", {"first_layer": False}),
               "model.2.Conv.lif1": (BIN_MODULE, "mem_update", {"act": False}),
               "model.2.Conv.lif1.qtrick": (BIN_MODULE, "MultiSpike4", {})}
    path = write_official(tmp_path / "bin.pt", state, modules)
    with pytest.raises(CheckpointError, match=r"bin.pt: the official binary-inference checkpoint .*does not build"):
        spikeyolo.load(path)


def test_unknown_or_inconsistent_files_are_clear_errors(tmp_path):
    ours = spikeyolo.build_model("n", nc=2, width=0.125)
    state = official_state(ours)
    cases = {
        "noneuron.pt": ({"model.0": (COCO_MODULE, "MS_GetT", {"T": 1})}, {}, "unknown official checkpoint: no neuron"),
        "both.pt": ({**coco_modules(), **{"model.6.lif": (SJ_MODULE, "MultiStepLIFNode", {"tau": 2.0})}}, {},
                    "names both the COCO neuron"),
        "twoD.pt": ({**coco_modules(D=4), "model.9.cv1.lif.qtrick": (COCO_MODULE, "MultiSpike2", {})}, {},
                    r"quantizers for D = \[2, 4\]"),
        "twoT.pt": (coco_modules(T=1), getT_yaml(2), "T differs between"),
        "noT.pt": ({k: v for k, v in coco_modules().items() if k != "model.0"}, {}, "no timesteps recorded"),
        "hardreset.pt": ({"model.2.lif": (SJ_MODULE, "MultiStepLIFNode", {"tau": 2.0, "v_reset": 0.0})}, {},
                         "soft reset"),
    }
    for name, (modules, root, message) in cases.items():
        path = write_official(tmp_path / name, state, modules, root)
        with pytest.raises(CheckpointError, match=f"{name}: .*{message}"):
            spikeyolo.load(path, scale="n", width=0.125)
    # the l model as the official yaml ships it (layer 25 ratio 1): 65.5M parameters, no released geometry
    spec = load_spec()
    spec["scales"]["l"][3] = 1
    path = write_official(tmp_path / "l_r1.pt", _meta_state_of(spec), coco_modules())
    with pytest.raises(CheckpointError, match=f"l_r1.pt: {L_AS_SHIPPED_PARAMS:,} parameters match no SpikeYOLO scale"):
        recognize_official(path)


def _meta_state_of(spec):
    with torch.device("meta"):
        model = SpikeYOLO(build_config(dict(spec, scale="l"), 80))
    return official_state(model, _one_value_view)


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


def test_val_command_on_an_official_file(tmp_path, capsys):
    # the CLI reads the image size (ultralytics' train_args) and the class names from the official file itself
    data = make_dataset(tmp_path / "ds", n_train=1, n_val=2)
    path = write_official(tmp_path / "23M_best.pt", meta_state("s", 2), coco_modules(),
                          {**getT_yaml(1), "names": {0: "box", 1: "disc"}}, {"imgsz": 32, "data": "coco.yaml"})
    assert checkpoint_imgsz(path) == 32 and checkpoint_names(path) == ["box", "disc"]
    argv = ["val", "--weights", str(path), "--data", str(data), "--batch", "2", "--workers", "0", "--device", "cpu",
            "--project", str(tmp_path / "runs"), "--no-plots"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "23M_best.pt: official SpikeYOLO COCO-code model (not a released file): scale s (23,122,838" in out
    assert "disc" in out and "results in" in out
