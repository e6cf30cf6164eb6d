"""The command line as a user meets it: one clear line per user error, range-checked flags, defaults shown,
flags applied or refused, resume rules, val's data default, crash points of a run."""

import csv
import errno
import json
import os

import pytest
import torch
import yaml

import spikeyolo
from _train_data import make_dataset
from spikeyolo import cli
from spikeyolo.cli import main

TINY = ["--model", "n", "--width", "0.0625", "--imgsz", "64", "--batch", "2", "--device", "cpu", "--workers", "0",
        "--no-plots"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ds"), n_train=4, n_val=2)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """One finished 1-epoch run (runs/t) in its own folder."""
    root = tmp_path_factory.mktemp("run")
    assert main(["train", "--data", str(data), *TINY, "--epochs", "1", "--project", str(root), "--name", "t"]) == 0
    return root / "t"


@pytest.mark.parametrize("flag,value", [
    ("--batch", "-2"), ("--batch", "0"), ("--epochs", "0"), ("--imgsz", "0"), ("--imgsz", "-64"), ("--imgsz", "70"),
    ("--width", "0"), ("--lr0", "nan"), ("--T", "0"), ("--workers", "-1"), ("--fliplr", "2"), ("--momentum", "1")])
def test_train_rejects_out_of_range_numbers_at_parse_time(flag, value, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", "d.yaml", flag, value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and repr(value) in err


@pytest.mark.parametrize("cmd,flag,value", [
    ("val", "--conf", "2"), ("val", "--iou", "0"), ("val", "--max-det", "0"), ("predict", "--conf", "-0.1"),
    ("predict", "--max-det", "0"), ("energy", "--batch", "0"), ("info", "--imgsz", "0")])
def test_other_commands_reject_out_of_range_numbers(cmd, flag, value, capsys):
    base = {"val": ["--weights", "w.pt"], "predict": ["--weights", "w.pt", "--source", "x"],
            "energy": ["--weights", "w.pt", "--data", "d.yaml"], "info": []}[cmd]
    with pytest.raises(SystemExit) as e:
        main([cmd, *base, flag, value])
    assert e.value.code == 2 and f"argument {flag}" in capsys.readouterr().err


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["val", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 0.001)" in out and "(default: 300)" in out and "(default: runs/detect)" in out


def test_workers_default_to_at_most_the_cpus(monkeypatch):
    from spikeyolo.data.loader import default_workers
    from spikeyolo.engine.trainer import TrainConfig

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert default_workers() == 2 and TrainConfig().workers == 2
    for cmd, base in (("train", []), ("val", ["--weights", "w.pt"])):
        assert cli.build_parser().parse_args([cmd, *base]).workers == 2
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert default_workers() == 8


def test_user_errors_are_one_line_with_exit_1(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert main(["train", "--data", str(missing), "--project", str(tmp_path / "runs")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(missing) in err and "Traceback" not in err and "\n" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no empty run folder
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["val", "--weights", str(bad), "--data", str(missing)]) == 1
    assert str(bad) in capsys.readouterr().err
    assert main(["predict", "--weights", str(tmp_path / "gone.pt"), "--source", str(tmp_path)]) == 1
    assert "gone.pt" in capsys.readouterr().err


def test_verbose_shows_the_traceback_and_bugs_keep_theirs(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError):
        main(["--verbose", "val", "--weights", str(tmp_path / "gone.pt"), "--data", "d.yaml"])
    monkeypatch.setenv(cli.VERBOSE_ENV, "1")
    with pytest.raises(FileNotFoundError):
        main(["val", "--weights", str(tmp_path / "gone.pt"), "--data", "d.yaml"])
    monkeypatch.delenv(cli.VERBOSE_ENV)

    def bug(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "info", (cli.add_info_args, bug, "x"))
    with pytest.raises(ZeroDivisionError):
        main(["info"])


def test_disk_full_says_no_space_left(tmp_path, monkeypatch, capsys):
    import spikeyolo.utils.runs as runs

    def full_disk(path, data):
        with open("/dev/full", "wb") as f:  # a real ENOSPC from the kernel
            f.write(data)
            f.flush()

    monkeypatch.setattr(runs, "_write_file", full_disk)

    def save(args):
        spikeyolo.save(spikeyolo.build_model("n", nc=1, width=0.0625), tmp_path / "m.pt")

    monkeypatch.setitem(cli.COMMANDS, "info", (cli.add_info_args, save, "x"))
    assert main(["info"]) == 1
    err = capsys.readouterr().err
    assert "no space left" in err and "m.pt" in err and "unexpected pos" not in err
    assert not list(tmp_path.glob(".m.tmp*"))


def test_ctrl_c_exits_130_with_the_resume_hint(data, tmp_path, monkeypatch, capsys):
    from spikeyolo.engine.trainer import Trainer

    def interrupt(self, epoch, metrics):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "on_epoch_end", interrupt)
    argv = ["train", "--data", str(data), *TINY, "--epochs", "2", "--project", str(tmp_path), "--name", "c"]
    assert main(argv) == 130
    assert f"resume with `spikeyolo train --resume {tmp_path / 'c'}`" in capsys.readouterr().err


def test_checkpoint_flags_are_applied_or_refused(run, data, tmp_path, capsys):
    last = str(run / "weights" / "last.pt")
    base = ["train", "--data", str(data), "--model", last, "--imgsz", "64", "--batch", "2", "--device", "cpu",
            "--workers", "0", "--no-plots", "--epochs", "1", "--project", str(tmp_path)]
    assert main([*base, "--width", "0.5", "--name", "w"]) == 1
    assert "--width 0.5" in capsys.readouterr().err and not (tmp_path / "w").exists()
    assert main([*base, "--T", "2", "--D", "8", "--name", "td"]) == 0
    args = yaml.safe_load((tmp_path / "td" / "args.yaml").read_text())
    ck = torch.load(tmp_path / "td" / "weights" / "last.pt", weights_only=True)
    assert (args["T"], args["D"]) == (2, 8) and (ck["config"]["T"], ck["config"]["D"]) == (2, 8)
    assert (ck["train_args"]["T"], ck["train_args"]["D"]) == (2, 8)
    # without the flags: the checkpoint's own values are used and recorded
    assert main([*base, "--name", "own"]) == 0
    args = yaml.safe_load((tmp_path / "own" / "args.yaml").read_text())
    assert (args["T"], args["D"]) == (1, 4) and args["model"] == last


def test_load_applies_T_and_D_or_refuses(run):
    best = run / "weights" / "best.pt"
    m = spikeyolo.load(best, T=3, D=2)
    assert (m.T, m.D, m.config["T"], m.config["D"]) == (3, 2, 3, 2)
    x = torch.rand(1, 3, 64, 64)
    assert m(x).shape == spikeyolo.load(best)(x).shape
    assert (spikeyolo.load(best).T, spikeyolo.load(best).D) == (1, 4)
    with pytest.raises(spikeyolo.utils.errors.InputError, match="decay"):
        spikeyolo.load(best, decay=0.5)
    with pytest.raises(spikeyolo.utils.errors.InputError, match="T must be a positive integer"):
        spikeyolo.load(best, T=0)


def test_resume_refuses_other_flags_accepts_data_and_works_from_elsewhere(data, tmp_path, monkeypatch, capsys):
    from spikeyolo.engine.trainer import Trainer

    def stop(self, epoch, metrics):
        raise KeyboardInterrupt

    # relative paths, as a user types them
    monkeypatch.chdir(data.parent)
    monkeypatch.setattr(Trainer, "on_epoch_end", stop)
    assert main(["train", "--data", "data.yaml", *TINY, "--epochs", "2", "--project", "runs", "--name", "r"]) == 130
    monkeypatch.undo()
    run = data.parent / "runs" / "r"
    assert yaml.safe_load((run / "args.yaml").read_text())["data"] == str(data)  # stored absolute
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "5", "--batch", "4"]) == 1
    err = capsys.readouterr().err
    assert "--epochs" in err and "--batch" in err and "--data" in err
    # the dataset moved: --data points at its new place; resumed from another working directory
    moved = tmp_path / "moved"
    make_dataset(moved, n_train=4, n_val=2)
    monkeypatch.chdir(tmp_path)
    (run / "weights" / ".last.tmp99999.pt").write_bytes(b"torn")  # left by a killed run
    assert main(["train", "--resume", str(run), "--data", str(moved / "data.yaml"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["epochs"] == 2 and yaml.safe_load((run / "args.yaml").read_text())["data"] == str(moved / "data.yaml")
    assert not list((run / "weights").glob(".*tmp*"))
    rows = list(csv.reader(open(run / "results.csv")))
    assert [r[0] for r in rows[1:]] == ["1", "2"]
    # a finished run: nothing to resume, and nothing is rewritten
    before = {f: f.stat().st_mtime_ns for f in run.rglob("*") if f.is_file()}
    assert main(["train", "--resume", str(run)]) == 1
    assert "nothing to resume" in capsys.readouterr().err
    assert before == {f: f.stat().st_mtime_ns for f in run.rglob("*") if f.is_file()}


def test_val_defaults_to_the_recorded_data(run, data, tmp_path, capsys):
    capsys.readouterr()
    assert main(["val", "--weights", str(run / "weights" / "best.pt"), "--device", "cpu", "--workers", "0",
                 "--no-plots", "--project", str(tmp_path), "--name", "v", "--json"]) == 0
    out = capsys.readouterr().out
    assert f"data: {data}" in out and json.loads(out.strip().splitlines()[-1])["images"] == 2


def test_val_without_recorded_data_names_the_problem(tmp_path, capsys):
    m = spikeyolo.build_model("n", nc=1, width=0.0625)
    spikeyolo.save(m, tmp_path / "m.pt")
    assert main(["val", "--weights", str(tmp_path / "m.pt")]) == 1
    assert "--data is required" in capsys.readouterr().err
    spikeyolo.save(m, tmp_path / "n.pt", train_args={"data": str(tmp_path / "gone.yaml")})
    assert main(["val", "--weights", str(tmp_path / "n.pt")]) == 1
    assert "gone.yaml" in capsys.readouterr().err


def test_diverged_run_prints_its_json_line(data, tmp_path, monkeypatch, capsys):
    from spikeyolo.engine import loss as loss_module

    original = loss_module.DetectionLoss.__call__
    calls = {"n": 0}

    def poisoned(self, preds, batch):
        total, items = original(self, preds, batch)
        calls["n"] += 1
        return (total * float("nan") if calls["n"] >= 4 else total), items

    monkeypatch.setattr(loss_module.DetectionLoss, "__call__", poisoned)
    argv = ["train", "--data", str(data), *TINY, "--epochs", "3", "--project", str(tmp_path), "--name", "d", "--json"]
    assert main(argv) == 1
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["stopped"] and "nan" in out["stopped"] and out["epochs"] == 1
    assert out["weights"] is None or os.path.isfile(out["weights"])


def test_a_failed_start_leaves_no_run_folder(data, tmp_path, monkeypatch):
    from spikeyolo.engine.trainer import Trainer

    def broken(self, *a, **k):
        raise OSError(errno.EIO, "input/output error", "x.png")

    monkeypatch.setattr(Trainer, "_step", broken)
    argv = ["train", "--data", str(data), *TINY, "--epochs", "1", "--project", str(tmp_path), "--name", "f"]
    assert main(argv) == 1
    assert not (tmp_path / "f").exists()


def test_demo_prepare_only_writes_a_ready_dataset(tmp_path, capsys):
    from spikeyolo.data import load_data_config

    assert main(["demo", "--prepare-only", "--project", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cfg = load_data_config(out["data"])
    assert cfg["names"] == ["Tree"] and cfg["train"] and cfg["val"]
    assert not (tmp_path / "trees").exists()  # no training run


@pytest.mark.parametrize("epochs,close,hyp,said", [(2, 1, {}, True), (2, 1, {"mosaic": 0.0}, False),
                                                   (2, 2, {}, False)])
def test_mosaic_message_only_when_mosaic_ran(data, tmp_path, epochs, close, hyp, said):
    from spikeyolo.engine.trainer import TrainConfig, Trainer

    t = Trainer(TrainConfig(data=str(data), model="n", width=0.0625, imgsz=64, batch=2, workers=0, device="cpu",
                            epochs=epochs, close_mosaic=close, hyp=hyp, val=False, plots=False, progress=False,
                            project=str(tmp_path)))
    lines = []
    t.log = lambda *a, **k: lines.append(" ".join(map(str, a)))
    t.train()
    assert any("mosaic off for the last 1 epochs" in x for x in lines) == said
