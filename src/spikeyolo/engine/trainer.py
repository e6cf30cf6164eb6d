"""The training loop (``spikeyolo train``).

Recipe defaults follow the reference COCO training (docs: reference section 6): SGD with Nesterov momentum
0.937, lr0 0.01, weight decay 5e-4 scaled to the nominal batch 64, 3 warm-up epochs (at least 100 iterations;
bias lr 0.1 -> lr, momentum 0.8 -> 0.937), linear decay to ``lr0 * lrf``, EMA (0.9999, ramp 2000), gradient
norm clip 10, AMP on CUDA, mosaic switched off for the last ``close_mosaic`` epochs, seed 0 and deterministic
kernels. The paper used ``lrf=0.004`` (300 epochs, warm-up 10 epochs); ``lrf`` defaults to 0.01 here as in
ultralytics, pass ``--lrf 0.004 --warmup-epochs 10`` to match it exactly.

A run writes ``<project>/<name>/`` (``name``, ``name2``, ... never an existing run): ``args.yaml``,
``results.csv``, ``weights/last.pt`` (every epoch, atomically: EMA weights as the model, plus the raw weights,
optimizer, schedule, EMA counter, epoch, best fitness, RNG states, configuration; loads with
``weights_only=True``), ``weights/best.pt`` (highest ``0.1*mAP50 + 0.9*mAP50-95``) and plots. On an event
dataset the model's config also records the window and representation (``config["events"]``), so prediction
on a ``.dat`` (``spikeyolo.engine.recordings.predict_recording``) feeds the model the inputs it was trained on.
``resume`` continues a run from its ``last.pt`` at the next epoch and ends as if it had never stopped.
Also written: ``labels.jpg`` and ``train_batch0..2.jpg`` (engine/train_plots.py), ``weights/epoch<N>.pt`` every
``save_period`` epochs, TensorBoard scalars of every results.csv column when the package is installed
(engine/tb_log.py). ``patience`` epochs without a better fitness end the run early (``result["early_stopped"]``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn
from tqdm import tqdm

from ..data import build_dataloader, build_dataset, load_data_config, single_class_names
from ..data.config import check_class_names
from ..data.loader import EpochDataLoader, default_workers
from ..data.protocol import DetectionItems, is_event_dataset
from ..energy import EnergyMeter
from ..models.checkpoint import atomic_torch_save, checkpoint_dict, load, read_checkpoint
from ..models.yolo import build_model
from ..nn.neuron import NeuronConfig
from ..utils.errors import InputError, SpikeYOLOError
from ..utils.plots import plot_results
from ..utils.runs import (
    atomic_write,
    get_rng_state,
    increment_path,
    plain,
    seed_everything,
    select_device,
    set_rng_state,
    unwrap,
)
from . import distributed as ddp
from .ema import ModelEMA
from .loss import DetectionLoss
from .optim import LRSchedule, accumulate_steps, apply_warmup, build_optimizer, scaled_weight_decay, warmup_iters
from .recordings import event_settings
from .results import fitness, summary_table
from .tb_log import open_tensorboard
from .train_plots import TRAIN_BATCH_PLOTS, plot_dataset_labels, plot_train_batch
from .validator import Validator, protocol_loader, to_input

RESULTS_COLUMNS = [
    "epoch",
    "train/box_loss", "train/cls_loss", "train/dfl_loss",
    "metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)",
    "val/box_loss", "val/cls_loss", "val/dfl_loss",
    "lr/pg0", "lr/pg1", "lr/pg2",
    "snn/firing_rate", "snn/synops", "snn/energy_mJ",
    "protocol",  # the evaluation protocol of the metrics/ columns (coco, ultralytics, per-sample)
]  # fmt: skip
SNN_KEYS = ("snn/firing_rate", "snn/synops", "snn/energy_mJ")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainConfig:
    """Every training setting (saved as args.yaml and inside each checkpoint); immutable: derive another with
    ``dataclasses.replace``."""

    data: str | None = None
    model: str = "s"  # scale n/s/m/l, a model YAML, or a checkpoint .pt to start from
    epochs: int = 100
    imgsz: int = 640
    batch: int = 16  # total over all processes
    device: str | None = None  # cpu, 0, 0,1, cuda:1; None = CUDA if available
    workers: int = field(default_factory=default_workers)  # 8, or the number of CPUs if fewer
    optimizer: str = "SGD"  # SGD (Nesterov) or AdamW
    lr0: float = 0.01
    lrf: float = 0.01  # final lr = lr0 * lrf (the paper: 0.004)
    momentum: float = 0.937
    weight_decay: float = 5e-4
    warmup_epochs: float = 3.0
    warmup_min_iters: int = 100
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1
    cos_lr: bool = False
    nbs: int = 64  # nominal batch size for gradient accumulation and weight decay
    close_mosaic: int = 10
    seed: int = 0
    deterministic: bool = True
    amp: bool | None = None  # mixed precision: None = on for CUDA (float16), off on CPU (True: bfloat16 autocast)
    ema_decay: float = 0.9999
    ema_tau: float = 2000.0
    clip_grad: float = 10.0
    box: float = 7.5
    cls: float = 0.5
    dfl: float = 1.5
    hyp: dict = field(default_factory=dict)  # augmentation overrides: mosaic, translate, scale, hsv_*, fliplr
    # timesteps; None: a checkpoint's own, the data's T for event data (its YAML, else 4), else 1
    T: int | None = None
    # I-LIF settings (see NeuronConfig; the official Gen1 neuron: decay 0.5, gain 0.5); None: NeuronConfig's
    # default or a checkpoint's own. args.yaml and checkpoints record the values used.
    D: int | None = None
    decay: float | None = None
    input_gain: float | None = None
    detach_reset: bool = NeuronConfig.detach_reset
    neuron_kind: str = NeuronConfig.kind  # --neuron: "relu"/"silu" trains the ANN twin (same blocks and head, T 1)
    width: float | None = None  # override the scale's width multiplier (tiny models)
    depth: float | None = None
    allow_no_boxes: bool = False  # train even when the training split has no box at all (background only)
    val: bool = True
    val_period: int = 1  # validate every this many epochs (and after the last)
    conf: float = 0.001
    iou: float = 0.7
    max_det: int = 300
    plots: bool = True
    patience: int = 100  # stop after this many epochs without a better fitness (0: never)
    save_period: int = -1  # also keep weights/epoch<N>.pt every this many epochs (<= 0: off)
    freeze: int = 0  # freeze the first N layers (their weights are not trained)
    single_cls: bool = False  # train every class as one
    cache: str | None = None  # "ram": resized images kept in memory; "disk": stored once as .npy beside the labels
    window_us: int | None = None  # event data: window length in microseconds (None: the data YAML's, else 250 ms)
    recipe: str | None = None  # the recipe these settings started from (NAME@VERSION, --recipe)
    protocol: str = "coco"  # validation protocol during training: "coco" or "ultralytics"
    crowd_targets: bool = False  # COCO iscrowd boxes are training targets (the official labels keep them)
    pipeline: str = "spikeyolo"  # training-data arithmetic: ours, or "official" (docs/training.md lists both)
    tensorboard: bool = True  # log results.csv's columns to TensorBoard when the package is installed
    project: str = "runs/detect"
    name: str = "train"
    exist_ok: bool = False
    resume: str | None = None
    progress: bool = True
    verbose: bool = True

    @property
    def neuron(self) -> NeuronConfig:
        return NeuronConfig().replace(D=self.D, decay=self.decay, input_gain=self.input_gain,
                                      detach_reset=self.detach_reset, kind=self.neuron_kind)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training settings: {unknown}")
        return cls(**d)


def resolve_resume(path: str | Path) -> Path:
    """``.../weights/last.pt`` from a checkpoint path or a run folder."""
    p = Path(path)
    if p.is_dir():
        for cand in (p / "weights" / "last.pt", p / "last.pt"):
            if cand.is_file():
                return cand
        raise FileNotFoundError(f"no weights/last.pt in run folder {p}")
    if not p.is_file():
        raise FileNotFoundError(f"resume checkpoint not found: {p}")
    return p


RESUME_MAY_CHANGE = ("data", "device")  # a moved dataset, another machine; everything else is the run's own


def _absolute(value: str | None) -> str | None:
    """An existing file's path made absolute (so a run resumes from any working directory); else as given
    (a scale name such as ``n`` stays a name)."""
    if value and Path(value).expanduser().is_file():
        return str(Path(value).expanduser().resolve())
    return value


def remove_stale_temporaries(weights: Path) -> None:
    """Delete ``.last.tmp<pid>.pt`` files a killed run left behind (atomic writes rename them when done)."""
    for tmp in weights.glob(".*.tmp*.pt"):
        tmp.unlink(missing_ok=True)


START_FILES = ("args.yaml", "results.csv", "labels.jpg", *(f"train_batch{i}.jpg" for i in range(3)))


def remove_if_unused(save_dir: Path) -> None:
    """Remove a run folder that a failed or interrupted start left without any checkpoint; only files the
    trainer writes before its first checkpoint (args.yaml, results.csv, labels.jpg, train_batch*.jpg,
    TensorBoard's event file, an empty weights/) are deleted, never anything else."""
    if not save_dir.is_dir() or (save_dir / "weights" / "last.pt").exists():
        return
    for name in START_FILES:
        (save_dir / name).unlink(missing_ok=True)
    for events in save_dir.glob("events.out.tfevents.*"):
        events.unlink()
    for folder in (save_dir / "weights", save_dir):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def resolve_config(cfg: TrainConfig, last: Path | None = None, resume_ckpt: dict | None = None) -> TrainConfig:
    """The run's one config: a new run's with data and model paths made absolute (it resumes from any working
    directory); a resumed run's own saved settings (from ``last``, its ``last.pt``), where only data and device
    may change (and what is printed: verbose, progress). Refuses a run that already finished its epochs."""
    if resume_ckpt is None:
        return dataclasses.replace(cfg, data=_absolute(cfg.data), model=_absolute(str(cfg.model)))
    saved = dict(resume_ckpt["train_args"])
    given = {k: _absolute(getattr(cfg, k)) for k in RESUME_MAY_CHANGE if getattr(cfg, k) is not None}
    saved.update(resume=str(last), verbose=cfg.verbose, progress=cfg.progress, **given)  # display: this session's
    resolved = TrainConfig.from_dict(saved)
    if int(resume_ckpt["train_state"]["epoch"]) + 1 >= resolved.epochs:
        raise SpikeYOLOError(f"{last.parent.parent} already finished its {resolved.epochs} epochs; nothing to "
                             f"resume (to train on, start a new run from its weights: --model {last})")
    return resolved


def capped_workers(asked: int, n_batches: int) -> tuple[int, str | None]:
    """Dataloader workers: ``asked``, at most the CPUs and the batches there are (a worker more starts a process
    that has nothing to do); with a note when capped."""
    cap = max(1, min(os.cpu_count() or 1, n_batches))
    if asked <= cap:
        return asked, None
    return cap, f"--workers {asked}: using {cap} (the CPU count is {os.cpu_count()}, an epoch has {n_batches} batches)"


def write_csv_atomic(path: Path, rows: list[list]) -> None:
    """Write a whole CSV through a temporary file and a rename: a kill never leaves it half written."""
    text = io.StringIO(newline="")
    csv.writer(text).writerows(rows)
    atomic_write(path, text.getvalue())


def _lr_columns(optimizer) -> list[float]:
    return [g["lr"] for g in optimizer.param_groups]


def record_event_settings(model: nn.Module, dataset) -> None:
    """Write the dataset's event settings into ``model.config["events"]`` (saved with every checkpoint, used by
    ``spikeyolo.engine.recordings.predict_recording``), or drop a stale entry when training on images."""
    config = getattr(unwrap(model), "config", None)
    if not isinstance(config, dict):
        return
    settings = event_settings(dataset)
    if settings is None:
        config.pop("events", None)
    else:
        config["events"] = settings


CALLBACK_EVENTS = ("on_train_start", "on_epoch_start", "on_batch_end", "on_epoch_end", "on_fit_end")


class Trainer:
    """Train a SpikeYOLO detector. ``Trainer(config).train()`` returns a summary dict.

    Args:
        config: a :class:`TrainConfig` or a dict of its fields. It is resolved once here (a resumed run takes
            its own saved settings; data and model paths become absolute) into ``self.cfg``, which never
            changes afterwards; what the model really has (T, D, decay, ...) is recorded beside it
            (:meth:`train_args`).
        energy: monitor for the validator (see :mod:`spikeyolo.engine.validator`), an
            :class:`~spikeyolo.energy.EnergyMeter` by default; its ``snn/...`` results fill the SNN columns of
            results.csv.
        model: optional ready model (train form) instead of building ``config.model``.

    Extension points, without subclassing: the factories :meth:`get_model`, :meth:`get_dataloader` and
    :meth:`get_validator`, and callbacks ``trainer.add_callback(event, fn)``: ``fn(trainer)`` is called on every
    process (``trainer.info.main`` tells the main one) at each event of ``CALLBACK_EVENTS``, in this order:
    ``on_train_start`` (set up, before the first epoch), per epoch ``on_epoch_start``, ``on_batch_end`` (after
    each optimizer-step batch, ``trainer.batch_i`` / ``trainer.loss_items`` set) and ``on_epoch_end`` (after the
    epoch is validated and saved, ``trainer.epoch`` / ``trainer.metrics`` set), then ``on_fit_end``
    (``trainer.result`` set). Every message goes through :meth:`log`.
    """

    def __init__(self, config: TrainConfig | dict, energy=None, model: nn.Module | None = None):
        cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
        last = resolve_resume(cfg.resume).resolve() if cfg.resume else None
        self.resume_ckpt = read_checkpoint(last) if last else None
        self.cfg = cfg = resolve_config(cfg, last, self.resume_ckpt)  # the one resolved config: never rewritten
        self.energy = energy if energy is not None else EnergyMeter(synops=False)  # results.csv's snn/* columns
        self.given_model = model
        self.callbacks: dict[str, list[Callable[[Trainer], None]]] = {e: [] for e in CALLBACK_EVENTS}
        self.info = ddp.env_info()  # the process's rank (set again from the real process group in train())
        self.device: torch.device | None = None
        self.save_dir: Path | None = None
        self.csv_path: Path | None = None
        self.weights: Path | None = None
        # data, model and optimization (setup() fills them)
        self.names: list[str] = []
        self.train_set = self.train_loader = self.validator = self.tb = None
        self.model: nn.Module | None = None
        self.net: nn.Module | None = None  # the model, or its DDP wrapper
        self.model_settings: dict = {}  # the T and neuron settings the model has (recorded in args.yaml)
        self.optimizer = self.schedule = self.scaler = self.ema = self.criterion = None
        self.weight_decay, self.use_amp = cfg.weight_decay, False
        self.nb = self.nw = 0  # batches per epoch, warm-up iterations
        self.last_step = -1
        # progress of the run
        self.t_start = self.t_epoch = time.time()
        self.start_epoch, self.epoch, self.epochs_done = 0, 0, 0
        self.batch_i, self.loss_items = 0, torch.zeros(3)
        self.metrics: dict = {}
        self.best_fitness, self.best_metrics, self.last_metrics = -math.inf, None, None
        self.stopped: str | None = None
        self.early_stopped: str | None = None
        self.mosaic_closed = False
        self.result: dict | None = None

    # -- extension points ------------------------------------------------------------------------------------
    def add_callback(self, event: str, fn: Callable[[Trainer], None]) -> None:
        """Call ``fn(trainer)`` at ``event`` (one of ``CALLBACK_EVENTS``), after those added before it."""
        if event not in self.callbacks:
            raise ValueError(f"unknown trainer event {event!r}; one of {', '.join(CALLBACK_EVENTS)}")
        self.callbacks[event].append(fn)

    def run_callbacks(self, event: str) -> None:
        for fn in self.callbacks[event]:
            fn(self)

    def log(self, msg: str, warning: bool = False) -> None:
        """The trainer's one logger: on the main process, ``msg`` on stdout unless ``verbose`` is off (``--quiet``);
        a ``warning`` always, on stderr."""
        if not self.info.main:
            return
        if warning:
            print(f"warning: {msg}", file=sys.stderr)
        elif self.cfg.verbose:
            print(msg)

    def train_args(self) -> dict:
        """The settings of this run as recorded in args.yaml and checkpoints: the config, with the T and neuron
        settings the model really has."""
        return plain({**dataclasses.asdict(self.cfg), **self.model_settings})

    def get_model(self, names: list[str], in_channels: int = 3, T: int | None = None) -> nn.Module:
        """The model to train; ``T``: the timesteps an event dataset brings (``None`` for images). Every
        setting given is applied or refused: a flag is never recorded without being used."""
        cfg = self.cfg
        T = T or cfg.T
        if self.given_model is not None:
            return self.given_model
        src = str(cfg.model)
        if src.endswith(".pt"):
            fixed = [f"--{k.replace('_', '-')} {getattr(cfg, k)}" for k in ("width", "depth", "decay", "input_gain")
                     if getattr(cfg, k) is not None]
            if fixed:
                raise InputError(f"{' and '.join(fixed)}: fixed by the checkpoint {src} (its layer sizes and "
                                 "neuron); leave the flag out, or start from a scale or model YAML")
            model = load(src, **{k: v for k, v in (("T", T), ("D", cfg.D)) if v is not None}).train()
            check_class_names(model.names, names, src, cfg.data)
            model.config["names"] = list(names)
            return model
        return build_model(src, nc=len(names), T=T or 1, neuron=cfg.neuron, names=list(names),
                           in_channels=in_channels, width=cfg.width, depth=cfg.depth, imgsz=cfg.imgsz)

    def get_dataloader(self, data_cfg: dict, split: str = "train") -> EpochDataLoader:
        """The loader of ``split`` (``train``: augmented, shuffled, this process's shard; ``val``: plain, in
        order, twice the batch); its dataset is ``loader.dataset``. Workers are capped at the CPUs and the
        batches there are (said once)."""
        cfg, info, train = self.cfg, self.info, split == "train"
        local_batch = max(cfg.batch // info.world_size, 1)
        if cfg.window_us is not None and data_cfg["type"] != "gen1":
            raise InputError(f"window_us {cfg.window_us}: a setting of gen1 event data, not of {data_cfg['type']}")
        event_args = {k: getattr(cfg, k) for k in ("T", "window_us")
                      if data_cfg["type"] == "gen1" and getattr(cfg, k) is not None}
        if cfg.single_cls or cfg.cache == "ram":
            event_args.update(single_cls=cfg.single_cls, cache_ram=cfg.cache == "ram")
        if data_cfg["type"] not in ("gen1", "gen4"):  # image datasets: the pipeline, crowd boxes, the disk cache
            event_args.update(pipeline=cfg.pipeline, cache_disk=cfg.cache == "disk",
                              mosaic_buffer=min(8 * local_batch, 1000))  # official: 8 x the batch per process
            if train:  # validation keeps crowd boxes apart (ignore regions or objects, by the protocol)
                event_args["crowd_targets"] = cfg.crowd_targets
        dataset = build_dataset(data_cfg, split, imgsz=cfg.imgsz, augment=train, hyp=dict(cfg.hyp) if train else None,
                                seed=cfg.seed, progress=cfg.progress, **event_args)
        if train and dataset.stats.get("boxes", 1) == 0 and not cfg.allow_no_boxes:
            raise SpikeYOLOError(f"{data_cfg.get('yaml_file') or 'the data'}: the train split has no box in any of "
                                 f"its {len(dataset)} images (label files missing or empty?); pass "
                                 "--allow-no-boxes to train on background only")
        batch = local_batch if train else max(local_batch * 2, 1)
        workers, note = capped_workers(cfg.workers, math.ceil(len(dataset) / batch))
        if note and train:
            self.log(note)
        rank, world = (info.rank, info.world_size) if train else (0, 1)
        if not train:  # the protocol decides the val batches (rectangular for ultralytics)
            return protocol_loader(dataset, batch, workers, cfg.protocol, seed=cfg.seed)
        return build_dataloader(dataset, batch_size=batch, workers=workers, shuffle=True, seed=cfg.seed,
                                rank=rank, world_size=world)

    def get_validator(self, loader) -> Validator:
        """The validator run after epochs (on the EMA model) over ``loader``."""
        cfg = self.cfg
        return Validator(loader, names=self.names, device=self.device, conf=cfg.conf, iou=cfg.iou,
                         max_det=cfg.max_det, save_dir=self.save_dir, half=self.use_amp, energy=self.energy,
                         progress=cfg.progress, protocol=cfg.protocol)

    # -- the run (YOLOX style: setup, then per epoch train_epoch -> train_step per batch, end_epoch) -----------
    def train(self) -> dict:
        device = select_device(self.cfg.device)
        info = ddp.setup(device)
        try:
            self.setup(ddp.process_device(device, info), info)
            self.run_callbacks("on_train_start")
            for epoch in range(self.start_epoch, self.cfg.epochs):
                mean_loss = self.train_epoch(epoch)
                if mean_loss is None:
                    break
                self.epochs_done = epoch + 1
                self.end_epoch(epoch, mean_loss)
                if self.early_stopped:
                    break
            self.result = self.finish()
            self.run_callbacks("on_fit_end")
            return self.result
        except BaseException:
            if self.info.main and self.save_dir is not None and self.resume_ckpt is None:
                remove_if_unused(self.save_dir)  # a run that failed before its first checkpoint leaves no folder
            raise
        finally:
            ddp.cleanup()

    def setup(self, device: torch.device, info: ddp.DistInfo | None = None) -> None:
        """Run folder, data, model, optimizer, schedule, EMA, loss, validator, resumed state, results.csv."""
        cfg, ckpt = self.cfg, self.resume_ckpt
        self.device, self.info = device, info or ddp.DistInfo()
        self.t_start = time.time()
        self.save_dir = self._run_folder()
        self.csv_path, self.weights = self.save_dir / "results.csv", self.save_dir / "weights"
        seed_everything(cfg.seed + self.info.rank, cfg.deterministic)
        data_cfg = load_data_config(cfg.data)
        self.names = single_class_names(data_cfg["names"]) if cfg.single_cls else list(data_cfg["names"])
        self.train_loader = self.get_dataloader(data_cfg, "train")
        self.train_set = self.train_loader.dataset
        # event datasets bring their input channels and timesteps (their EventInput, which took --T when given)
        T = self.train_set.events.T if is_event_dataset(self.train_set) else cfg.T or 1
        self.model = self.net = self.get_model(self.names, self.train_set.in_channels, T).to(device).train()
        config = unwrap(self.model).config
        self.model_settings = {k: config[k] for k in ("T", "D", "decay", "input_gain", "detach_reset") if k in config}
        record_event_settings(self.model, self.train_set)
        if cfg.freeze:
            self.log(f"froze the first {freeze_layers(self.model, cfg.freeze)} layers")
        self._build_optimization()
        if ckpt is not None:
            self._load_train_state(ckpt)
        if self.info.enabled:
            ids = [device.index] if device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if cfg.val and self.info.main and data_cfg.get("val"):
            self.validator = self.get_validator(self.get_dataloader(data_cfg, "val"))
        self.nb = len(self.train_loader)
        self.nw = warmup_iters(cfg.warmup_epochs, self.nb, cfg.warmup_min_iters)
        self.last_step = self.nb * self.start_epoch - 1
        if self.info.main:
            self._start_files(ckpt is not None)
        if ckpt is not None:
            rng = ckpt["train_state"]["rng"]
            set_rng_state(rng[self.info.rank if self.info.rank < len(rng) else 0])
            self.log(f"resuming {self.save_dir} at epoch {self.start_epoch + 1}/{cfg.epochs}")
        self.last_metrics, self.epochs_done = self.best_metrics, self.start_epoch
        self.tb = open_tensorboard(self.save_dir, self.log) if (self.info.main and cfg.tensorboard) else None

    def train_epoch(self, epoch: int) -> torch.Tensor | None:
        """One pass over the training data; the mean ``[box, cls, dfl]`` loss, or None when it stopped on a
        non-finite loss (``self.stopped`` says why)."""
        cfg, nb = self.cfg, self.nb
        self.epoch, self.t_epoch = epoch, time.time()
        self._set_epoch(self.train_set, self.train_loader, epoch)
        self.schedule.set_epoch(epoch)
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)  # official: drops the last epoch's unstepped accumulation
        if cfg.pipeline != "official":  # official: the count runs on over epochs (set once in setup)
            self.last_step = nb * epoch - 1  # ours: every epoch ends with an optimizer step
        self.run_callbacks("on_epoch_start")
        mean_loss = torch.zeros(3)
        bar = tqdm(total=nb, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=cfg.verbose,
                   disable=not (self.info.main and cfg.progress))
        try:
            for i, batch in zip(range(nb), self.train_loader):
                if i < TRAIN_BATCH_PLOTS and epoch == self.start_epoch and self.info.main and cfg.plots:
                    plot_train_batch(batch, self.names, self.save_dir / f"train_batch{i}.jpg")
                self.batch_i, self.loss_items = i, self.train_step(batch, i + nb * epoch)
                mean_loss = (mean_loss * i + self.loss_items) / (i + 1)
                bar.set_postfix_str(f"box {mean_loss[0]:.3f} cls {mean_loss[1]:.3f} dfl {mean_loss[2]:.3f} "
                                    f"inst {len(batch['cls'])} size {batch['img'].shape[-1]}", refresh=False)
                bar.update()
                self.run_callbacks("on_batch_end")
        except NonFiniteLossError as e:
            self.stopped = str(e)
            return None
        finally:
            bar.close()
        return mean_loss

    def train_step(self, batch: dict, ni: int) -> torch.Tensor:
        """Batch ``ni`` (counted over the whole run): warm-up, forward (AMP: see TrainConfig.amp), loss, backward, the
        optimizer step (clip, EMA) when ``nbs`` images have accumulated or the epoch ends. Returns the loss
        items ``[box, cls, dfl]`` (CPU)."""
        cfg, nb = self.cfg, self.nb
        epoch, i = divmod(ni, nb)
        if ni <= self.nw and self.nw > 0:
            apply_warmup(self.optimizer, ni, self.nw, self.schedule.factor(epoch), cfg.warmup_bias_lr,
                         cfg.warmup_momentum, cfg.momentum)
            accumulate = max(1, round(float(np.interp(ni, [0, self.nw], [1, cfg.nbs / cfg.batch]))))
        else:
            accumulate = accumulate_steps(cfg.batch, cfg.nbs)
        x = to_input(batch["img"], self.device)
        targets = {k: batch[k].to(self.device) for k in ("cls", "bboxes", "batch_idx")}
        with torch.autocast(self.device.type, enabled=self.use_amp):
            preds = self.net(x)
        loss, items = self.criterion(preds, targets)
        if not ddp.all_true(bool(torch.isfinite(loss).item()), self.info, self.device):
            raise NonFiniteLossError(f"training loss is {loss.item()} (items {items.tolist()}) at epoch {epoch + 1}, "
                                     f"batch {i + 1}/{nb}")
        self.scaler.scale(loss * self.info.world_size).backward()
        if ni - self.last_step >= accumulate or (i == nb - 1 and cfg.pipeline != "official"):
            self._step(self.model, self.optimizer, self.scaler, self.ema)
            self.last_step = ni
        return items.detach().float().cpu()

    def end_epoch(self, epoch: int, mean_loss: torch.Tensor) -> None:
        """Validate (main process), write results.csv and the checkpoints, log; then the ``on_epoch_end`` hook
        and callbacks."""
        metrics = {}
        if self.info.main:
            metrics = self._validate(epoch)
            fit = fitness(metrics) if metrics else -float(mean_loss.sum())
            improved = fit > self.best_fitness and (bool(metrics) or self.validator is None)
            if improved:
                self.best_fitness, self.best_metrics = fit, {**plain(metrics), "epoch": epoch + 1}
            self.last_metrics = metrics or self.last_metrics
            row = self._write_row(self.csv_path, epoch, mean_loss, metrics, _lr_columns(self.optimizer))
            if self.tb is not None:
                self.tb.log(row, epoch + 1)
            self._save_checkpoints(epoch, metrics, fit, improved)
            self._log_epoch(epoch, mean_loss, metrics)
        else:
            self._gather_rng(self.info)
        ddp.barrier(self.info)
        self.metrics = metrics
        self.on_epoch_end(epoch, metrics)
        self.run_callbacks("on_epoch_end")
        early = _patience_out(self.cfg.patience, epoch, self.best_metrics) if self.info.main else None
        self.early_stopped = ddp.broadcast(early, self.info)
        if self.early_stopped:
            self.log(self.early_stopped)

    def finish(self) -> dict:
        """The run's summary (and results.png, the best epoch's table)."""
        cfg, weights, stopped = self.cfg, self.weights, self.stopped
        best_pt, last_pt = weights / "best.pt", weights / "last.pt"
        result = {"save_dir": str(self.save_dir), "last": str(last_pt) if last_pt.exists() else None,
                  "best": str(best_pt) if best_pt.exists() else None,
                  "epochs": cfg.epochs, "epochs_done": self.epochs_done, "time_s": time.time() - self.t_start,
                  "best_fitness": self.best_fitness, "best_metrics": self.best_metrics,
                  "last_metrics": plain(self.last_metrics) if self.last_metrics else None, "stopped": stopped,
                  "early_stopped": self.early_stopped}
        if self.tb is not None:
            self.tb.close()
        if not self.info.main:
            return result
        if stopped:
            kept = "weights/last.pt keeps the last good epoch" if (weights / "last.pt").exists() else \
                "no epoch finished, so no checkpoint was written"
            self.log(f"STOPPED: {stopped}. Nothing was written for this epoch; {kept} ({self.save_dir}). "
                     "Try a lower --lr0, a longer warm-up, or check the data.", warning=True)
        if cfg.plots and self.csv_path.exists():
            try:
                plot_results(self.csv_path)
            except Exception as e:  # plotting must never lose a finished run
                self.log(f"results.png not written: {e}", warning=True)
        best = self.best_metrics
        self.log(f"\n{result['epochs_done'] - self.start_epoch} epochs completed in {result['time_s'] / 60:.1f} min.")
        if best and "map50" in best:
            self.log(f"Best epoch {best['epoch']} ({weights / 'best.pt'}):")
            self.log(summary_table(best, self.names))
        self.log(f"Results saved to {self.save_dir}")
        return result

    # -- set-up and end-of-epoch pieces ----------------------------------------------------------------------
    def _run_folder(self) -> Path:
        """The run folder: the resumed run's, or a new ``project/name`` (made by the main process)."""
        if self.resume_ckpt is not None:
            return Path(self.cfg.resume).parent.parent
        cfg, info = self.cfg, self.info
        save_dir = increment_path(Path(cfg.project) / cfg.name, cfg.exist_ok) if info.main else None
        return Path(ddp.broadcast(str(save_dir) if save_dir else None, info))

    def _build_optimization(self) -> None:
        cfg, model = self.cfg, self.model
        wd = scaled_weight_decay(cfg.weight_decay, cfg.batch, cfg.nbs)
        self.weight_decay = wd
        self.optimizer = build_optimizer(model, cfg.optimizer, cfg.lr0, cfg.momentum, wd)
        self.schedule = LRSchedule(self.optimizer, cfg.epochs, cfg.lrf, cfg.cos_lr)
        cuda = self.device.type == "cuda"
        self.use_amp = (cuda if cfg.amp is None else cfg.amp) and self.device.type in ("cuda", "cpu")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and cuda)  # bf16 on CPU needs no scaling
        self.ema = ModelEMA(model, cfg.ema_decay, cfg.ema_tau) if self.info.main else None
        self.criterion = DetectionLoss(model, box=cfg.box, cls=cfg.cls, dfl=cfg.dfl)

    def _load_train_state(self, ckpt: dict) -> None:
        st = ckpt["train_state"]
        self.model.load_state_dict(st["model"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.schedule.load_state_dict(st["schedule"])
        if st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        if self.ema is not None:
            self.ema.ema.load_state_dict(ckpt["state_dict"])
            self.ema.load_state_dict(st["ema"])
        self.start_epoch, self.best_fitness = int(st["epoch"]) + 1, float(st["best_fitness"])
        self.best_metrics = st.get("best_metrics")
        self.epoch = self.start_epoch

    def _start_files(self, resumed: bool) -> None:
        """weights/, args.yaml and results.csv (a resumed run keeps the rows of the epochs its checkpoint saw)."""
        cfg = self.cfg
        self.weights.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.weights)
        (self.save_dir / "args.yaml").write_text(yaml.safe_dump(self.train_args(), sort_keys=False))
        rows = []
        if resumed and self.csv_path.exists():
            with open(self.csv_path, newline="") as f:
                rows = [r for r in list(csv.reader(f))[1:] if r and int(r[0]) <= self.start_epoch]
        write_csv_atomic(self.csv_path, [RESULTS_COLUMNS, *rows])
        self._first_plots()
        model, params = unwrap(self.model), sum(p.numel() for p in self.model.parameters())
        grads = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self.log(f"{type(model).__name__} summary: {len(model.layers)} layers, {params:,} parameters, "
                 f"{grads:,} gradients, T={model.config.get('T')}, D={model.config.get('D')}, "
                 f"{len(self.names)} classes")
        self.log(f"training on {self.device} x{self.info.world_size}: {len(self.train_set)} train images, {self.nb} "
                 f"batches/epoch, accumulate {accumulate_steps(cfg.batch, cfg.nbs)}, weight decay "
                 f"{self.weight_decay:.3g}, {cfg.epochs} epochs; results in {self.save_dir}")
        per_gpu, ws = max(cfg.batch // self.info.world_size, 1), self.info.world_size
        self.log(f"{f'recipe {cfg.recipe}, ' if cfg.recipe else ''}batch {cfg.batch} = {ws} process(es) x {per_gpu} "
                 f"images: BatchNorm statistics over {per_gpu} images per process")

    def _validate(self, epoch: int) -> dict:
        cfg = self.cfg
        final = epoch == cfg.epochs - 1
        if self.validator is None or not ((epoch + 1) % max(cfg.val_period, 1) == 0 or final):
            return {}
        self.validator.plots = cfg.plots and final
        return self.validator(self.ema.ema)

    def _save_checkpoints(self, epoch: int, metrics: dict, fit: float, improved: bool) -> None:
        state = {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.use_amp else {},
            "ema": self.ema.state_dict(),
            "epoch": epoch,
            "best_fitness": self.best_fitness,
            "best_metrics": self.best_metrics,
            "rng": self._gather_rng(self.info),
        }
        common = {"train_args": self.train_args(), "epoch": epoch, "metrics": plain(metrics),
                  "fitness": fit}
        if improved:  # best before last: a kill in between never leaves last.pt ahead of a missing best.pt
            atomic_torch_save(checkpoint_dict(self.ema.ema, **common), self.weights / "best.pt")
        atomic_torch_save(checkpoint_dict(self.ema.ema, train_state=state, **common), self.weights / "last.pt")
        if self.cfg.save_period > 0 and (epoch + 1) % self.cfg.save_period == 0:
            atomic_torch_save(checkpoint_dict(self.ema.ema, **common), self.weights / f"epoch{epoch + 1}.pt")

    def _log_epoch(self, epoch: int, mean_loss: torch.Tensor, metrics: dict) -> None:
        box, cls, dfl = mean_loss.tolist()
        msg = (f"epoch {epoch + 1}/{self.cfg.epochs} done in {time.time() - self.t_epoch:.1f}s: "
               f"box {box:.3f} cls {cls:.3f} dfl {dfl:.3f}")
        if metrics:
            msg += (f" | P {metrics['precision']:.3f} R {metrics['recall']:.3f} "
                    f"mAP50 {metrics['map50']:.3f} mAP50-95 {metrics['map']:.3f} ({metrics['protocol']})")
        self.log(msg)

    # -- pieces ----------------------------------------------------------------------------------------------
    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        """Called on every rank after an epoch is saved (0-based ``epoch``), before the ``on_epoch_end``
        callbacks; a hook for subclasses (without subclassing: :meth:`add_callback`)."""

    def _set_epoch(self, dataset, loader, epoch: int) -> None:
        """Tell the sampler and dataset the epoch (shuffling and augmentation depend on seed and epoch only),
        and switch mosaic off for the last ``close_mosaic`` epochs."""
        loader.set_epoch(epoch)  # an EpochDataLoader (build_dataloader): sampler and dataset both
        if self.cfg.close_mosaic and epoch >= self.cfg.epochs - self.cfg.close_mosaic:
            if isinstance(dataset, DetectionItems) and not self.mosaic_closed:
                mosaic_ran = epoch > 0 and dataset.mosaic  # else there is nothing to say
                dataset.close_mosaic()
                self.mosaic_closed = True
                if mosaic_ran:
                    self.log(f"mosaic off for the last {self.cfg.epochs - epoch} epochs")

    def _step(self, model: nn.Module, optimizer, scaler, ema: ModelEMA | None) -> None:
        scaler.unscale_(optimizer)
        norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm=self.cfg.clip_grad)
        if torch.isfinite(norm) or scaler.is_enabled():
            scaler.step(optimizer)  # with AMP the scaler itself skips steps with inf/nan gradients
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(model)

    @staticmethod
    def _gather_rng(info: ddp.DistInfo) -> list:
        """RNG states of all ranks (collected on rank 0)."""
        state = get_rng_state()
        if not info.enabled:
            return [state]
        out = [None] * info.world_size
        torch.distributed.all_gather_object(out, state)
        return out

    def _first_plots(self) -> None:
        """labels.jpg before the first epoch (when plots are on and the dataset exposes its labels)."""
        if not self.cfg.plots or not isinstance(self.train_set, DetectionItems):
            return
        try:
            plot_dataset_labels(self.train_set, self.names, self.save_dir / "labels.jpg")
        except Exception as e:  # a picture must never stop a run
            self.log(f"labels.jpg not written: {e}", warning=True)

    @staticmethod
    def _write_row(path: Path, epoch: int, loss: torch.Tensor, metrics: dict, lrs: list[float]) -> dict:
        """Append one results.csv row; returns it as ``{column: value or None}``."""
        def num(x):
            return "" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{float(x):.6g}"

        m = metrics or {}
        row = [epoch + 1, *[num(v) for v in loss.tolist()],
               num(m.get("precision")), num(m.get("recall")), num(m.get("map50")), num(m.get("map")),
               num(m.get("box_loss")), num(m.get("cls_loss")), num(m.get("dfl_loss")),
               *[num(v) for v in (lrs + [None] * 3)[:3]],
               *[num(m.get(k)) for k in SNN_KEYS], m.get("protocol", "")]
        with open(path, "a", newline="") as f:
            csv.writer(f).writerow(row)
        return {k: (float(v) if v != "" else None) for k, v in zip(RESULTS_COLUMNS[:-1], row[:-1])}


def _patience_out(patience: int, epoch: int, best_metrics: dict | None) -> str | None:
    """The early-stop message when ``patience`` epochs (0-based ``epoch`` just done) brought no better fitness."""
    if patience <= 0 or not best_metrics or "epoch" not in best_metrics:
        return None
    if epoch + 1 - int(best_metrics["epoch"]) < patience:
        return None
    return (f"early stop: no better fitness in the {epoch + 1 - int(best_metrics['epoch'])} epochs since epoch "
            f"{best_metrics['epoch']} (--patience {patience}); best.pt is that epoch")


def freeze_layers(model: nn.Module, n: int) -> int:
    """Stop training the first ``n`` layers (``requires_grad = False``); returns how many were frozen."""
    layers = getattr(unwrap(model), "layers", None)
    if layers is None:
        raise ValueError(f"--freeze needs a model with .layers; {type(unwrap(model)).__name__} has none")
    if n > len(layers):
        raise ValueError(f"--freeze {n}: the model has only {len(layers)} layers")
    for layer in list(layers)[:n]:
        layer.requires_grad_(False)
    return n


def train(**kwargs) -> dict:
    """``Trainer(TrainConfig(**kwargs)).train()``."""
    energy = kwargs.pop("energy", None)
    return Trainer(TrainConfig.from_dict(kwargs), energy=energy).train()
