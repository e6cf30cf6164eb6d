"""Optional TensorBoard logging of results.csv: every column (losses, metrics, learning rates, ``snn/*``) as a
scalar against the epoch, in the run folder. TensorBoard is not a dependency: without the ``tensorboard``
package :func:`open_tensorboard` says so once and returns ``None``.
"""

from __future__ import annotations

import math
from pathlib import Path


class TensorBoardLogger:
    """Writes one results row at a time as scalars (``writer`` is a ``SummaryWriter``)."""

    def __init__(self, writer):
        self.writer = writer

    def log(self, row: dict, epoch: int) -> None:
        """``row``: column -> value (``None`` and non-finite values, e.g. an epoch without validation, skipped)."""
        for key, value in row.items():
            if key != "epoch" and value is not None and math.isfinite(float(value)):
                self.writer.add_scalar(key, float(value), epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open_tensorboard(save_dir: str | Path, log=print) -> TensorBoardLogger | None:
    """A logger writing into ``save_dir`` when ``tensorboard`` is installed, else ``None`` (with a note)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional: needs the tensorboard package
    except ImportError:
        log("note: TensorBoard logging off (pip install tensorboard to get it); results.csv has the same numbers")
        return None
    return TensorBoardLogger(SummaryWriter(log_dir=str(save_dir)))
