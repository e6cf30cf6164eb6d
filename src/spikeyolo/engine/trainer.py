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
on a ``.dat`` (``spikeyolo.engine.stream.predict_recording``) feeds the model the inputs it was trained on.
``resume`` continues a run from its ``last.pt`` at the next epoch and ends as if it had never stopped.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn
from tqdm import tqdm

from ..checkpoint import atomic_torch_save, checkpoint_dict, load, read_checkpoint
from ..data import build_dataloader, build_dataset, load_data_config
from ..energy import EnergyMeter
from ..model import build_model
from ..plots import plot_results
from ..runs import get_rng_state, increment_path, plain, seed_everything, select_device, set_rng_state
from . import distributed as ddp
from .ema import ModelEMA, unwrap
from .loss import DetectionLoss
from .optim import LRSchedule, accumulate_steps, apply_warmup, build_optimizer, scaled_weight_decay, warmup_iters
from .stream import event_settings
from .validator import Validator, fitness, summary_table, to_input

RESULTS_COLUMNS = [
    "epoch",
    "train/box_loss", "train/cls_loss", "train/dfl_loss",
    "metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)",
    "val/box_loss", "val/cls_loss", "val/dfl_loss",
    "lr/pg0", "lr/pg1", "lr/pg2",
    "snn/firing_rate", "snn/synops", "snn/energy_mJ",
]  # fmt: skip
SNN_KEYS = ("snn/firing_rate", "snn/synops", "snn/energy_mJ")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainConfig:
    """Every training setting (saved as args.yaml and inside each checkpoint)."""

    data: str | None = None
    model: str = "s"  # scale n/s/m/l, a model YAML, or a checkpoint .pt to start from
    epochs: int = 100
    imgsz: int = 640
    batch: int = 16  # total over all processes
    device: str | None = None  # cpu, 0, 0,1, cuda:1; None = CUDA if available
    workers: int = 8
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
    amp: bool = True  # used on CUDA only
    ema_decay: float = 0.9999
    ema_tau: float = 2000.0
    clip_grad: float = 10.0
    box: float = 7.5
    cls: float = 0.5
    dfl: float = 1.5
    hyp: dict = field(default_factory=dict)  # augmentation overrides: mosaic, translate, scale, hsv_*, fliplr
    T: int = 1
    D: int = 4
    neuron: str = "ilif"  # "relu"/"silu": the ANN twin (same blocks and head, real-valued activations, T = 1)
    width: float | None = None  # override the scale's width multiplier (tiny models)
    depth: float | None = None
    val: bool = True
    val_period: int = 1  # validate every this many epochs (and after the last)
    conf: float = 0.001
    iou: float = 0.7
    max_det: int = 300
    plots: bool = True
    project: str = "runs/detect"
    name: str = "train"
    exist_ok: bool = False
    resume: str | None = None
    progress: bool = True
    verbose: bool = True

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


def _lr_columns(optimizer) -> list[float]:
    return [g["lr"] for g in optimizer.param_groups]


def record_event_settings(model: nn.Module, dataset) -> None:
    """Write the dataset's event settings into ``model.config["events"]`` (saved with every checkpoint, used by
    ``spikeyolo.engine.stream.predict_recording``), or drop a stale entry when training on images."""
    config = getattr(unwrap(model), "config", None)
    if not isinstance(config, dict):
        return
    settings = event_settings(dataset)
    if settings is None:
        config.pop("events", None)
    else:
        config["events"] = settings


class Trainer:
    """Train a SpikeYOLO detector. ``Trainer(config).train()`` returns a summary dict.

    Args:
        config: a :class:`TrainConfig` or a dict of its fields.
        energy: monitor for the validator (see :mod:`spikeyolo.engine.validator`), an
            :class:`~spikeyolo.energy.EnergyMeter` by default; its ``snn/...`` results fill the SNN columns of
            results.csv.
        model: optional ready model (train form) instead of building ``config.model``.
    """

    def __init__(self, config: TrainConfig | dict, energy=None, model: nn.Module | None = None):
        self.cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
        if energy is None:
            energy = EnergyMeter(synops=False)  # fills results.csv's snn/* columns at every validation
        self.energy = energy
        self.given_model = model
        self.save_dir: Path | None = None
        self.log = print
        self._mosaic_closed = False

    # -- set-up ----------------------------------------------------------------------------------------------
    def _build_model(self, names: list[str], in_channels: int = 3, T: int | None = None) -> nn.Module:
        cfg = self.cfg
        if self.given_model is not None:
            return self.given_model
        src = str(cfg.model)
        if src.endswith(".pt"):
            model = load(src).train()
            if model.nc != len(names):
                raise ValueError(f"{src} has nc={model.nc} but the data has {len(names)} classes")
            model.config["names"] = list(names)
            return model
        return build_model(src, nc=len(names), T=cfg.T if T is None else T, D=cfg.D, names=list(names),
                           in_channels=in_channels, width=cfg.width, depth=cfg.depth, imgsz=cfg.imgsz,
                           neuron=cfg.neuron)

    def _loaders(self, data_cfg: dict, info: ddp.DistInfo):
        cfg = self.cfg
        hyp = dict(cfg.hyp)
        local_batch = max(cfg.batch // info.world_size, 1)
        train_set = build_dataset(data_cfg, "train", imgsz=cfg.imgsz, augment=True, hyp=hyp, seed=cfg.seed,
                                  progress=cfg.progress)
        train_loader = build_dataloader(train_set, batch_size=local_batch, workers=cfg.workers, shuffle=True,
                                        seed=cfg.seed, rank=info.rank, world_size=info.world_size)
        val_loader = None
        if cfg.val and info.main and data_cfg.get("val"):
            val_set = build_dataset(data_cfg, "val", imgsz=cfg.imgsz, augment=False, seed=cfg.seed,
                                    progress=cfg.progress)
            val_loader = build_dataloader(val_set, batch_size=max(local_batch * 2, 1), workers=cfg.workers,
                                          shuffle=False, seed=cfg.seed, rank=0, world_size=1)
        return train_set, train_loader, val_loader

    # -- the run ---------------------------------------------------------------------------------------------
    def train(self) -> dict:
        device = select_device(self.cfg.device)
        info = ddp.setup(device)
        try:
            return self._train(ddp.process_device(device, info), info)
        finally:
            ddp.cleanup()

    def _train(self, device: torch.device, info: ddp.DistInfo) -> dict:
        t_start = time.time()
        resume_ckpt = None
        if self.cfg.resume:
            last = resolve_resume(self.cfg.resume)
            resume_ckpt = read_checkpoint(last)
            saved = dict(resume_ckpt["train_args"])
            saved.update(resume=str(last), device=self.cfg.device if self.cfg.device is not None else saved["device"])
            self.cfg = TrainConfig.from_dict(saved)
            save_dir = last.parent.parent
        else:
            save_dir = increment_path(Path(self.cfg.project) / self.cfg.name, self.cfg.exist_ok) if info.main else None
        self.save_dir = Path(ddp.broadcast(str(save_dir) if save_dir else None, info))
        cfg = self.cfg
        say = self.log if (info.main and cfg.verbose) else (lambda *a, **k: None)

        seed_everything(cfg.seed + info.rank, cfg.deterministic)
        data_cfg = load_data_config(cfg.data)
        names = list(data_cfg["names"])
        train_set, train_loader, val_loader = self._loaders(data_cfg, info)
        # event datasets bring their own input channels and timesteps (frames arrive as [B, T, C, H, W])
        model = self._build_model(names, int(getattr(train_set, "in_channels", 3)),
                                  int(getattr(train_set, "T", cfg.T))).to(device).train()
        record_event_settings(model, train_set)
        self.model = model

        accumulate = accumulate_steps(cfg.batch, cfg.nbs)
        wd = scaled_weight_decay(cfg.weight_decay, cfg.batch, cfg.nbs)
        optimizer = build_optimizer(model, cfg.optimizer, cfg.lr0, cfg.momentum, wd)
        schedule = LRSchedule(optimizer, cfg.epochs, cfg.lrf, cfg.cos_lr)
        use_amp = cfg.amp and device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        ema = ModelEMA(model, cfg.ema_decay, cfg.ema_tau) if info.main else None
        criterion = DetectionLoss(model, box=cfg.box, cls=cfg.cls, dfl=cfg.dfl)

        start_epoch, best_fitness, best_metrics = 0, -math.inf, None
        if resume_ckpt is not None:
            st = resume_ckpt["train_state"]
            model.load_state_dict(st["model"])
            optimizer.load_state_dict(st["optimizer"])
            schedule.load_state_dict(st["schedule"])
            if st.get("scaler"):
                scaler.load_state_dict(st["scaler"])
            if ema is not None:
                ema.ema.load_state_dict(resume_ckpt["state_dict"])
                ema.load_state_dict(st["ema"])
            start_epoch, best_fitness = int(st["epoch"]) + 1, float(st["best_fitness"])
            best_metrics = st.get("best_metrics")
            if start_epoch >= cfg.epochs:
                say(f"{self.save_dir} already finished its {cfg.epochs} epochs; nothing to resume")

        net = model
        if info.enabled:
            ids = [device.index] if device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        validator = None
        if val_loader is not None:
            validator = Validator(val_loader, names=names, device=device, conf=cfg.conf, iou=cfg.iou,
                                  max_det=cfg.max_det, save_dir=self.save_dir, half=use_amp, energy=self.energy,
                                  progress=cfg.progress)

        nb = len(train_loader)
        nw = warmup_iters(cfg.warmup_epochs, nb, cfg.warmup_min_iters)
        csv_path = self.save_dir / "results.csv"
        weights = self.save_dir / "weights"
        if info.main:
            weights.mkdir(parents=True, exist_ok=True)
            (self.save_dir / "args.yaml").write_text(yaml.safe_dump(plain(dataclasses.asdict(cfg)), sort_keys=False))
            rows = []
            if resume_ckpt is not None and csv_path.exists():  # keep the epochs the checkpoint has seen
                with open(csv_path, newline="") as f:
                    rows = [r for r in list(csv.reader(f))[1:] if r and int(r[0]) <= start_epoch]
            with open(csv_path, "w", newline="") as f:
                csv.writer(f).writerows([RESULTS_COLUMNS, *rows])
            say(f"training {type(unwrap(model)).__name__} ({sum(p.numel() for p in model.parameters()):,} params) "
                f"on {device} x{info.world_size}, {len(train_set)} train images, {nb} batches/epoch, "
                f"accumulate {accumulate}, weight decay {wd:.3g}, results in {self.save_dir}")
        if resume_ckpt is not None:
            set_rng_state(resume_ckpt["train_state"]["rng"][info.rank if info.rank < len(
                resume_ckpt["train_state"]["rng"]) else 0])
            say(f"resuming {self.save_dir} at epoch {start_epoch + 1}/{cfg.epochs}")

        stopped, last_metrics = None, best_metrics
        epoch = start_epoch - 1
        for epoch in range(start_epoch, cfg.epochs):
            t_epoch = time.time()
            self._set_epoch(train_set, train_loader, epoch)
            schedule.set_epoch(epoch)
            net.train()
            optimizer.zero_grad(set_to_none=True)
            mean_loss = torch.zeros(3)
            last_step = nb * epoch - 1  # every epoch ends with an optimizer step (below)
            bar = range(nb)
            it = iter(train_loader)
            if info.main and cfg.progress:
                bar = tqdm(bar, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=cfg.verbose)
            try:
                for i in bar:
                    batch = next(it)
                    ni = i + nb * epoch
                    if ni <= nw and nw > 0:
                        apply_warmup(optimizer, ni, nw, schedule.factor(epoch), cfg.warmup_bias_lr,
                                     cfg.warmup_momentum, cfg.momentum)
                        accumulate = max(1, round(float(np.interp(ni, [0, nw], [1, cfg.nbs / cfg.batch]))))
                    else:
                        accumulate = accumulate_steps(cfg.batch, cfg.nbs)
                    x = to_input(batch["img"], device)
                    targets = {k: batch[k].to(device) for k in ("cls", "bboxes", "batch_idx")}
                    with torch.autocast(device.type, enabled=use_amp):
                        preds = net(x)
                    loss, items = criterion(preds, targets)
                    finite = ddp.all_true(bool(torch.isfinite(loss).item()), info, device)
                    if not finite:
                        raise NonFiniteLossError(
                            f"training loss is {loss.item()} (items {items.tolist()}) at epoch {epoch + 1}, "
                            f"batch {i + 1}/{nb}")
                    scaler.scale(loss * info.world_size).backward()
                    if ni - last_step >= accumulate or i == nb - 1:
                        self._step(model, optimizer, scaler, ema)
                        last_step = ni
                    mean_loss = (mean_loss * i + items.detach().float().cpu()) / (i + 1)
                    if hasattr(bar, "set_postfix_str"):
                        bar.set_postfix_str(
                            f"box {mean_loss[0]:.3f} cls {mean_loss[1]:.3f} dfl {mean_loss[2]:.3f} "
                            f"inst {len(batch['cls'])} size {x.shape[-1]}")
            except NonFiniteLossError as e:
                stopped = str(e)
                if hasattr(bar, "close"):
                    bar.close()
                break
            lrs = _lr_columns(optimizer)

            metrics = {}
            if info.main:
                final = epoch == cfg.epochs - 1
                if validator is not None and ((epoch + 1) % max(cfg.val_period, 1) == 0 or final):
                    validator.plots = cfg.plots and final
                    metrics = validator(ema.ema)
                fit = fitness(metrics) if metrics else -float(mean_loss.sum())
                improved = fit > best_fitness and (bool(metrics) or validator is None)
                if improved:
                    best_fitness, best_metrics = fit, {**plain(metrics), "epoch": epoch + 1}
                last_metrics = metrics or last_metrics
                self._write_row(csv_path, epoch, mean_loss, metrics, lrs)
                state = {
                    "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "scaler": scaler.state_dict() if use_amp else {},
                    "ema": ema.state_dict(),
                    "epoch": epoch,
                    "best_fitness": best_fitness,
                    "best_metrics": best_metrics,
                    "rng": self._gather_rng(info),
                }
                common = {"train_args": plain(dataclasses.asdict(cfg)), "epoch": epoch,
                          "metrics": plain(metrics), "fitness": fit}
                atomic_torch_save(checkpoint_dict(ema.ema, train_state=state, **common), weights / "last.pt")
                if improved:
                    atomic_torch_save(checkpoint_dict(ema.ema, **common), weights / "best.pt")
                if cfg.verbose:
                    msg = f"epoch {epoch + 1}/{cfg.epochs} done in {time.time() - t_epoch:.1f}s"
                    if metrics:
                        msg += (f": P {metrics['precision']:.3f} R {metrics['recall']:.3f} "
                                f"mAP50 {metrics['map50']:.3f} mAP50-95 {metrics['map']:.3f}")
                    say(msg)
            else:
                self._gather_rng(info)
            ddp.barrier(info)
            self.on_epoch_end(epoch, metrics)

        result = {"save_dir": str(self.save_dir), "last": str(weights / "last.pt"), "best": str(weights / "best.pt"),
                  "epochs": cfg.epochs, "epochs_done": epoch + 1 if stopped is None else epoch,
                  "time_s": time.time() - t_start, "best_fitness": best_fitness, "best_metrics": best_metrics,
                  "last_metrics": plain(last_metrics) if last_metrics else None, "stopped": stopped}
        if info.main:
            if stopped:
                kept = "weights/last.pt keeps the last good epoch" if (weights / "last.pt").exists() else \
                    "no epoch finished, so no checkpoint was written"
                self.log(f"STOPPED: {stopped}. Nothing was written for this epoch; {kept} ({self.save_dir}). "
                         "Try a lower --lr0, a longer warm-up, or check the data.")
            if cfg.plots and csv_path.exists():
                try:
                    plot_results(csv_path)
                except Exception as e:  # plotting must never lose a finished run
                    self.log(f"warning: results.png not written: {e}")
            if cfg.verbose and best_metrics and "map50" in best_metrics:
                self.log(f"\n{result['epochs_done']} epochs in {result['time_s'] / 60:.1f} min. "
                         f"Best epoch {best_metrics['epoch']} ({weights / 'best.pt'}):")
                self.log(summary_table(best_metrics, names))
                self.log(f"results: {self.save_dir}")
        return result

    # -- pieces ----------------------------------------------------------------------------------------------
    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        """Called on every rank after an epoch is saved (0-based ``epoch``); a hook for subclasses."""

    def _set_epoch(self, dataset, loader, epoch: int) -> None:
        """Tell the sampler and dataset the epoch (shuffling and augmentation depend on seed and epoch only),
        and switch mosaic off for the last ``close_mosaic`` epochs."""
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        else:
            for obj in (getattr(loader, "sampler", None), dataset):
                if hasattr(obj, "set_epoch"):
                    obj.set_epoch(epoch)
        if self.cfg.close_mosaic and epoch >= self.cfg.epochs - self.cfg.close_mosaic:
            if hasattr(dataset, "close_mosaic") and not self._mosaic_closed:
                dataset.close_mosaic()
                self._mosaic_closed = True
                if self.cfg.verbose and ddp.env_info().main:
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

    @staticmethod
    def _write_row(path: Path, epoch: int, loss: torch.Tensor, metrics: dict, lrs: list[float]) -> None:
        def num(x):
            return "" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{float(x):.6g}"

        m = metrics or {}
        row = [epoch + 1, *[num(v) for v in loss.tolist()],
               num(m.get("precision")), num(m.get("recall")), num(m.get("map50")), num(m.get("map")),
               num(m.get("box_loss")), num(m.get("cls_loss")), num(m.get("dfl_loss")),
               *[num(v) for v in (lrs + [None] * 3)[:3]],
               *[num(m.get(k)) for k in SNN_KEYS]]
        with open(path, "a", newline="") as f:
            csv.writer(f).writerow(row)


def train(**kwargs) -> dict:
    """``Trainer(TrainConfig(**kwargs)).train()``."""
    energy = kwargs.pop("energy", None)
    return Trainer(TrainConfig.from_dict(kwargs), energy=energy).train()
