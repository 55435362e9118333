"""The Trainer's parts: optimizer config parsing, metric reduction, loggers, bar, profilers."""

from __future__ import annotations

import csv
import io
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, child_env
from trainer_workers.models import Regression, loaders

from runtime import ModelCheckpoint, Runtime, Trainer, loggers
from runtime.loggers import CSVLogger
from runtime.module import MetricStore, parse_optimizers
from runtime.progress import ProgressBar


def _opt():
    return torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)


def test_parse_optimizers_accepts_the_lightning_forms():
    opt, opt2 = _opt(), _opt()
    step = torch.optim.lr_scheduler.StepLR(opt, 1)
    assert parse_optimizers(opt) == ([opt], [])
    assert parse_optimizers([opt, opt2])[0] == [opt, opt2]
    opts, scheds = parse_optimizers(([opt], [step]))
    assert opts == [opt] and scheds[0].scheduler is step and scheds[0].interval == "epoch"
    _, scheds = parse_optimizers({"optimizer": opt, "lr_scheduler": step})
    assert scheds[0].scheduler is step
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
    _, scheds = parse_optimizers({"optimizer": opt, "monitor": "val_loss",
                                  "lr_scheduler": {"scheduler": plateau, "interval": "step",
                                                   "frequency": 2}})
    cfg = scheds[0]
    assert (cfg.interval, cfg.frequency, cfg.monitor, cfg.needs_metric) == (
        "step", 2, "val_loss", True)
    opts, scheds = parse_optimizers([{"optimizer": opt}, {"optimizer": opt2,
                                                          "lr_scheduler": step}])
    assert opts == [opt, opt2] and len(scheds) == 1


@pytest.mark.parametrize(("config", "error", "match"), [
    (None, ValueError, "returned None"),
    ("sgd", TypeError, "expected an optimizer"),
    ({"lr_scheduler": 1}, ValueError, "no 'optimizer'"),
])
def test_parse_optimizers_rejects_bad_returns(config, error, match):
    with pytest.raises(error, match=match):
        parse_optimizers(config)


def test_parse_optimizers_rejects_bad_scheduler_configs():
    opt = _opt()
    step = torch.optim.lr_scheduler.StepLR(opt, 1)
    with pytest.raises(ValueError, match="interval 'batch'"):
        parse_optimizers({"optimizer": opt, "lr_scheduler": {"scheduler": step,
                                                             "interval": "batch"}})
    with pytest.raises(ValueError, match="needs 'monitor'"):
        parse_optimizers({"optimizer": opt,
                          "lr_scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(opt)})


def _log(store: MetricStore, name: str, value: float, **kw) -> None:
    opts = {"prog_bar": False, "logger": True, "on_step": None, "on_epoch": None,
            "sync_dist": False, "reduce_fx": "mean", "batch_size": None}
    opts.update(kw)
    store.log(name, value, **opts)


def test_metric_store_reductions_weight_by_batch_size():
    store = MetricStore(phase="val")
    for batch, loss in ((torch.zeros(4, 3), 1.0), (torch.zeros(2, 3), 4.0)):
        store.batch = (batch, batch)
        _log(store, "loss", loss)
        _log(store, "total", loss, reduce_fx="sum")
        _log(store, "worst", loss, reduce_fx="max")
        _log(store, "best", loss, reduce_fx="min")
    store.batch = None
    out = store.reduce_epoch(Runtime())
    assert out == {"loss": (4 * 1.0 + 2 * 4.0) / 6, "total": 5.0, "worst": 4.0, "best": 1.0}


def test_metric_store_step_and_epoch_names():
    store = MetricStore(phase="train")
    store.batch = torch.zeros(3)
    _log(store, "a", 2.0)  # training default: per step only
    _log(store, "b", 3.0, on_epoch=True)  # both: suffixed names
    assert store.take_step_values() == {"a": 2.0, "b_step": 3.0}
    assert set(store.epoch) == {"b_epoch"}
    with pytest.raises(ValueError, match="reduce_fx='median'"):
        _log(store, "c", 1.0, reduce_fx="median")
    with pytest.raises(ValueError, match="needs a scalar"):
        _log(store, "d", torch.ones(2))


def test_csv_logger_adds_columns_and_versions(tmp_path):
    first = CSVLogger(tmp_path)
    first.log_metrics({"epoch": 0, "loss": 1.5}, step=1)
    first.save()
    first.log_metrics({"epoch": 0, "acc": 0.5}, step=2)
    first.save()
    with open(tmp_path / "logs" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows == [{"epoch": "0", "step": "1", "acc": "", "loss": "1.5"},
                    {"epoch": "0", "step": "2", "acc": "0.5", "loss": ""}]
    assert CSVLogger(tmp_path).version == 1


def test_tensorboard_missing_leaves_a_one_line_note(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(loggers, "tensorboard_available", lambda: False)
    made = loggers.default_loggers(tmp_path)
    assert [type(lg).__name__ for lg in made] == ["CSVLogger"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install tensorboard" in err


def test_tensorboard_logger_writes_the_logged_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    made = loggers.default_loggers(tmp_path / "probe")
    assert [type(lg).__name__ for lg in made] == ["CSVLogger", "TensorBoardLogger"]
    train, val = loaders()
    trainer = Trainer(max_epochs=2, default_root_dir=tmp_path, enable_checkpointing=False,
                      enable_progress_bar=False)
    trainer.fit(Regression(), train, val)
    runs = sorted((tmp_path / "tensorboard").glob("version_*"))
    assert [r.name for r in runs] == ["version_0"]
    events = EventAccumulator(str(runs[0]))
    events.Reload()
    val_loss = [e.value for e in events.Scalars("val_loss")]
    with open(tmp_path / "logs" / "version_0" / "metrics.csv") as f:
        csv_val = [float(r["val_loss"]) for r in csv.DictReader(f) if r.get("val_loss")]
    assert len(val_loss) == 2 and val_loss == pytest.approx(csv_val, rel=1e-6)


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_on_a_tty_only():
    quiet = io.StringIO()
    bar = ProgressBar(stream=quiet)
    bar.start("Epoch 0", 4)
    bar.update(2, {"loss": 0.5}, force=True)
    bar.finish(4, {"loss": 0.25})
    assert quiet.getvalue() == ""
    tty = _TTY()
    bar = ProgressBar(stream=tty, width=4)
    bar.start("Epoch 0", 4)
    bar.update(2, {"loss": 0.5}, force=True)
    bar.finish(4, {"loss": 0.25})
    assert tty.getvalue() == "\rEpoch 0 [##..] 2/4  loss=0.5\rEpoch 0 [####] 4/4  loss=0.25\n"


def test_prog_bar_metrics_reach_the_bar(tmp_path, capsys):
    train, val = loaders()
    Trainer(max_epochs=1, default_root_dir=tmp_path, enable_progress_bar=True,
            logger=False).fit(Regression(), train, val)
    err = capsys.readouterr().err
    assert "Epoch 0 [" in err and "train_loss_step=" in err and "val_loss=" in err
    Trainer(max_epochs=1, default_root_dir=tmp_path / "q", logger=False).fit(Regression(), train)
    assert "Epoch 0" not in capsys.readouterr().err  # stderr is not a TTY under pytest


def test_simple_profiler_times_every_hook(tmp_path, capsys):
    train, _ = loaders()
    Trainer(max_epochs=1, default_root_dir=tmp_path, profiler="simple", logger=False,
            enable_checkpointing=False).fit(Regression(), train)
    summary = (tmp_path / "profiler" / "simple.txt").read_text()
    for hook in ("training_step", "backward", "optimizer_step"):
        (row,) = [line for line in summary.splitlines() if line.startswith(hook + " ")]
        assert int(row.split()[1]) == len(train)  # calls
    assert "fit total" in capsys.readouterr().out


def test_pytorch_profiler_writes_a_trace(tmp_path):
    train, _ = loaders()
    Trainer(max_epochs=1, default_root_dir=tmp_path, profiler="pytorch", logger=False,
            enable_checkpointing=False).fit(Regression(), train)
    traces = list((tmp_path / "profiler").glob("trace_rank0_*.json"))
    assert len(traces) == 1 and "training_step" in traces[0].read_text()
    assert "backward" in (tmp_path / "profiler" / "key_averages.txt").read_text()


def test_unknown_profiler_and_clip_algorithm_list_the_choices():
    with pytest.raises(ValueError, match="'simple', 'pytorch'"):
        Trainer(profiler="fancy")
    with pytest.raises(ValueError, match="'norm' or 'value'"):
        Trainer(gradient_clip_algorithm="l1")


def test_checkpoint_filename_names_unknown_metrics():
    ckpt = ModelCheckpoint(filename="{epoch}-{acc:.2f}")
    assert ckpt.format_name(3, 10, {"acc": 0.91234}) == "epoch=3-acc=0.91"
    with pytest.raises(KeyError, match="acc.*available: epoch, step"):
        ckpt.format_name(3, 10, {})


def test_import_runtime_stays_cheap():
    code = ("import sys, runtime; print('runtime.trainer' in sys.modules, "
            "'runtime.callbacks' in sys.modules); print(runtime.Trainer.__name__)")
    out = subprocess.run([sys.executable, "-c", code], env=child_env(), cwd=ROOT, timeout=120,
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "Trainer"]
    with pytest.raises(AttributeError, match="no attribute 'Trainerr'"):
        import runtime

        runtime.Trainerr  # noqa: B018


def test_learning_rate_monitor_logs_each_step(tmp_path):
    from runtime import LearningRateMonitor

    train, _ = loaders()
    trainer = Trainer(max_epochs=1, default_root_dir=tmp_path, enable_checkpointing=False,
                      log_every_n_steps=100, callbacks=[LearningRateMonitor("step")],
                      accumulate_grad_batches=3)
    trainer.fit(Regression(interval="step"), train)
    with open(trainer.log_dir + "/metrics.csv") as f:
        lrs = [float(r["lr-SGD"]) for r in csv.DictReader(f) if r["lr-SGD"]]
    # one row per batch; the LR halves after every third batch (an optimizer step)
    assert lrs == pytest.approx([0.05 * 0.5 ** ((i + 1) // 3) for i in range(len(train))])


def test_lr_scheduler_step_hook_steps_every_scheduler(tmp_path):
    """As in Lightning, the Trainer steps schedulers through ``module.lr_scheduler_step``
    (epoch ones after on_train_epoch_end; plateau ones with the monitored value)."""

    class Recorded(Regression):
        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            self.seen: list[tuple[str, float, float | None]] = []

        def on_train_epoch_end(self):
            self.seen.append(("epoch_end", self.lr_schedulers().get_last_lr()[0], None))

        def lr_scheduler_step(self, scheduler, metric):
            super().lr_scheduler_step(scheduler, metric)
            self.seen.append(("stepped", scheduler.get_last_lr()[0], metric))

    train, val = loaders()
    module = Recorded(interval="epoch")
    Trainer(max_epochs=2, default_root_dir=tmp_path, logger=False, enable_checkpointing=False).fit(module, train, val)
    assert module.seen == [("epoch_end", 0.05, None), ("stepped", 0.025, None),
                           ("epoch_end", 0.025, None), ("stepped", 0.0125, None)]
    plateau = Recorded(interval="epoch", scheduler="plateau")
    trainer = Trainer(max_epochs=1, default_root_dir=tmp_path / "p", logger=False, enable_checkpointing=False)
    trainer.fit(plateau, train, val)
    (stepped,) = [s for s in plateau.seen if s[0] == "stepped"]
    assert stepped[2] == pytest.approx(trainer.callback_metrics["val_loss"])
