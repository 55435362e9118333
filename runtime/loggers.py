"""Metric loggers for the Trainer: CSV always, TensorBoard when it is installed."""

from __future__ import annotations

import csv
import io
import os
import re
import sys
from pathlib import Path
from typing import Any


class Logger:
    """Base class. The trainer calls loggers on global rank 0 only."""

    @property
    def log_dir(self) -> str | None:
        """Directory this logger writes to (None when it writes nowhere on disk)."""
        return None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Record ``metrics`` at optimizer step ``step``."""
        raise NotImplementedError

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        """Record the run's configuration."""

    def save(self) -> None:
        """Flush buffered records to disk (called at every epoch end)."""

    def finalize(self) -> None:
        """Flush and close (end of ``fit`` / ``validate``)."""
        self.save()


def next_version(root: Path) -> int:
    """The first N for which ``root/version_N`` does not exist yet."""
    taken = [int(m.group(1)) for p in root.glob("version_*")
             if (m := re.fullmatch(r"version_(\d+)", p.name))]
    return max(taken, default=-1) + 1


class CSVLogger(Logger):
    """Write ``<save_dir>/<name>/version_N/metrics.csv``: one row per ``log_metrics`` call.

    Columns are ``epoch``, ``step`` and every metric ever logged (sorted); a row leaves the
    metrics it does not have empty. The file is rewritten atomically on every ``save``, so
    it is always complete and readable by ``csv.DictReader`` or pandas.
    """

    FILE_NAME = "metrics.csv"

    def __init__(self, save_dir: str | os.PathLike, name: str = "logs",
                 version: int | None = None) -> None:
        self.root = Path(save_dir) / name if name else Path(save_dir)
        self.version = next_version(self.root) if version is None else version
        self.rows: list[dict[str, Any]] = []
        self.hparams: dict[str, Any] = {}

    @property
    def log_dir(self) -> str:
        return str(self.root / f"version_{self.version}")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.rows.append({"step": step, **metrics})

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        self.hparams.update(params)

    def save(self) -> None:
        directory = Path(self.log_dir)
        directory.mkdir(parents=True, exist_ok=True)
        keys = sorted({k for row in self.rows for k in row} - {"epoch", "step"})
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["epoch", "step", *keys], lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        _write_atomic(directory / self.FILE_NAME, buf.getvalue())
        if self.hparams:
            text = "".join(f"{k}: {v!r}\n" for k, v in sorted(self.hparams.items()))
            _write_atomic(directory / "hparams.yaml", text)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class TensorBoardLogger(Logger):
    """Scalars to ``<save_dir>/<name>/version_N`` through ``torch.utils.tensorboard``.

    Needs the ``tensorboard`` package (``pip install tensorboard``); use
    :func:`tensorboard_available` first.
    """

    def __init__(self, save_dir: str | os.PathLike, name: str = "tensorboard",
                 version: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        root = Path(save_dir) / name
        self.version = next_version(root) if version is None else version
        self._dir = root / f"version_{self.version}"
        self.writer = SummaryWriter(log_dir=str(self._dir))

    @property
    def log_dir(self) -> str:
        return str(self._dir)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            if name != "epoch":
                self.writer.add_scalar(name, value, global_step=step)

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        self.writer.add_text("hparams", "\n".join(f"{k}: {v!r}" for k, v in params.items()))

    def save(self) -> None:
        self.writer.flush()

    def finalize(self) -> None:
        self.writer.close()


def tensorboard_available() -> bool:
    """True when ``torch.utils.tensorboard`` imports (it needs the tensorboard package)."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def default_loggers(root: str | os.PathLike, *, note: bool = True) -> list[Logger]:
    """CSV, plus TensorBoard when installed (else a one-line note on stderr)."""
    loggers: list[Logger] = [CSVLogger(root)]
    if tensorboard_available():
        loggers.append(TensorBoardLogger(root))
    elif note:
        print("runtime.Trainer: TensorBoard logging off (pip install tensorboard to enable); "
              "CSV logging on", file=sys.stderr)
    return loggers
