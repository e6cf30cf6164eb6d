"""DDP on CPU (gloo): two processes train one short epoch; only rank 0 writes; weights stay in sync."""

import os
import socket

import torch
import torch.multiprocessing as mp

from _train_data import make_dataset
from spikeyolo.engine.trainer import TrainConfig, Trainer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RecordingTrainer(Trainer):
    """Saves each rank's raw weights after the epoch (what DDP must keep identical)."""

    def __init__(self, cfg, out):
        super().__init__(cfg)
        self.out = out

    def _dump(self, model, name):  # not _save: that is the trainer's checkpoint writer
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, f"{self.out}/{name}.pt")

    def get_model(self, *args):
        model = super().get_model(*args)
        self._dump(model, f"init{os.environ['RANK']}")
        return model

    def on_epoch_end(self, epoch, metrics):
        self._dump(self.model, f"rank{os.environ['RANK']}")


def _worker(rank: int, world: int, port: int, cfg: dict, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    RecordingTrainer(TrainConfig(**cfg), out).train()


def test_two_process_gloo_epoch(tmp_path):
    data = make_dataset(tmp_path / "ds", n_train=4, n_val=2)
    cfg = dict(data=str(data), model="n", width=0.0625, imgsz=64, batch=4, nbs=4, workers=0, device="cpu",
               epochs=1, warmup_epochs=0, close_mosaic=0, project=str(tmp_path / "runs"), name="ddp",
               progress=False, verbose=False, plots=False)
    mp.start_processes(_worker, args=(2, free_port(), cfg, str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    run = tmp_path / "runs"
    assert [p.name for p in run.iterdir()] == ["ddp"]  # one run folder, made by rank 0 only
    assert (run / "ddp" / "weights" / "last.pt").is_file() and (run / "ddp" / "results.csv").is_file()
    ck = torch.load(run / "ddp" / "weights" / "last.pt", weights_only=True)
    assert len(ck["train_state"]["rng"]) == 2  # both ranks' RNG states, for resume
    w0, w1, init = (torch.load(tmp_path / f"{n}.pt") for n in ("rank0", "rank1", "init0"))
    per_process = ("running_mean", "running_var", "num_batches_tracked")  # plain BN, no SyncBN (as the reference)
    params = [k for k in w0 if not k.endswith(per_process)]
    assert all(torch.equal(w0[k], w1[k]) for k in params)  # DDP kept the ranks in step
    assert any(not torch.equal(w0[k], init[k]) for k in params)  # and they did train
    assert all(torch.equal(w0[k], ck["train_state"]["model"][k]) for k in w0)  # rank 0 saved its weights
