"""runtime.Trainer on one process, in-process: parity with plain loops, resume, callbacks."""

from __future__ import annotations

import copy
import csv
import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F
from trainer_workers.models import Regression, Scripted, TinyGAN, loaders, make_data

from runtime import Callback, EarlyStopping, ModelCheckpoint, Trainer


def _trainer(root: Path, **kw) -> Trainer:
    kw.setdefault("enable_progress_bar", False)
    kw.setdefault("log_every_n_steps", 1)
    return Trainer(default_root_dir=root, **kw)


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k, value in a.items():
        assert torch.equal(value, b[k]), k


def _rows(root: Path, version: int = 0) -> list[dict[str, str]]:
    with open(root / "logs" / f"version_{version}" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_accumulation_and_clipping_match_the_plain_loop(tmp_path):
    torch.manual_seed(0)
    module = Regression()
    plain = copy.deepcopy(module)
    train, _ = loaders()
    torch.manual_seed(1)  # the shuffle draws from the global RNG: same state for both runs
    trainer = _trainer(tmp_path, max_epochs=2, accumulate_grad_batches=2, gradient_clip_val=0.5)
    trainer.fit(module, train)

    torch.manual_seed(1)
    opt = torch.optim.SGD(plain.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(2):
        for i, (x, y) in enumerate(train):
            loss = F.mse_loss(plain(x), y)
            losses.append(loss.item())
            (loss / 2).backward()
            if (i + 1) % 2 == 0:
                torch.nn.utils.clip_grad_norm_(plain.parameters(), 0.5)
                opt.step()
                opt.zero_grad()
    _assert_same(_params(module), _params(plain))
    assert trainer.global_step == 2 * len(train) // 2
    logged = [float(r["train_loss_step"]) for r in _rows(tmp_path) if r["train_loss_step"]]
    assert logged == losses  # every step row, exactly the plain loop's losses


def test_csv_log_contents(tmp_path):
    torch.manual_seed(0)
    module = Regression()
    train, val = loaders()
    trainer = _trainer(tmp_path, max_epochs=2, log_every_n_steps=5)
    trainer.fit(module, train, val)
    rows = _rows(tmp_path)
    assert list(rows[0]) == ["epoch", "step", "train_loss_epoch", "train_loss_step",
                             "val_loss", "val_sq_sum"]
    step_rows = [r for r in rows if r["train_loss_step"]]
    epoch_rows = [r for r in rows if r["val_loss"]]
    # 12 batches per epoch, every 5th batch overall is logged: batches 5, 10, 15, 20
    assert [int(r["step"]) for r in step_rows] == [5, 10, 15, 20]
    assert [(int(r["epoch"]), int(r["step"])) for r in epoch_rows] == [(0, 12), (1, 24)]
    # the last validation, recomputed on the whole set with the final weights
    x, y = val.dataset.tensors
    module.eval()
    with torch.no_grad():
        mean = F.mse_loss(module(x), y, reduction="mean").item()
        total = F.mse_loss(module(x), y, reduction="sum").item()
    assert float(epoch_rows[-1]["val_loss"]) == pytest.approx(mean, rel=1e-6)
    assert float(epoch_rows[-1]["val_sq_sum"]) == pytest.approx(total, rel=1e-6)
    assert trainer.callback_metrics["val_loss"] == float(epoch_rows[-1]["val_loss"])
    assert float(epoch_rows[-1]["train_loss_epoch"]) > 0
    assert (tmp_path / "logs" / "version_0" / "hparams.yaml").read_text().count("max_epochs")
    trainer2 = _trainer(tmp_path, max_epochs=1)
    trainer2.fit(Regression(), train)
    assert Path(trainer2.log_dir).name == "version_1"  # a new run never overwrites a log


class _LRs(Callback):
    def __init__(self) -> None:
        self.epoch_lrs: list[float] = []

    def on_train_epoch_start(self, trainer, module):
        self.epoch_lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


@pytest.mark.parametrize("interval", ["epoch", "step"])
def test_scheduler_interval_keeps_the_lr_sequence(tmp_path, interval):
    torch.manual_seed(0)
    module = Regression(interval=interval)
    train, _ = loaders()
    trainer = _trainer(tmp_path, max_epochs=3, accumulate_grad_batches=2)
    trainer.fit(module, train)
    n = len(train)  # 12 batches, 6 optimizer steps per epoch
    if interval == "epoch":
        expected = [0.05 * 0.5**e for e in range(3) for _ in range(n)]
    else:  # halves after every optimizer step, i.e. every 2 batches
        expected = [0.05 * 0.5 ** (i // 2) for i in range(3 * n)]
    assert module.lrs == pytest.approx(expected, rel=1e-12)


def test_plateau_scheduler_reads_the_monitored_metric(tmp_path):
    module = Scripted([5.0, 4.0, 4.5, 4.2, 3.0], interval="epoch", scheduler="plateau",
                      monitor="score")
    train, val = loaders()
    lrs = _LRs()
    _trainer(tmp_path, max_epochs=5, callbacks=[lrs]).fit(module, train, val)
    assert lrs.epoch_lrs == pytest.approx([0.05, 0.05, 0.05, 0.025, 0.0125])


def test_resume_from_last_continues_exactly(tmp_path):
    train, val = loaders()

    def run(root, epochs, resume=False, seed=0):
        torch.manual_seed(seed)
        module = Regression(interval="epoch")
        trainer = _trainer(root, max_epochs=epochs,
                           callbacks=[ModelCheckpoint(monitor="val_loss")])
        trainer.fit(module, train, val, ckpt_path="last" if resume else None)
        return module, trainer

    full, t_full = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    # a different seed: the restore must bring back weights, optimizer, scheduler and RNG
    resumed, t_res = run(tmp_path / "b", 4, resume=True, seed=123)
    _assert_same(_params(full), _params(resumed))
    assert t_res.global_step == t_full.global_step == 4 * len(train)
    assert t_res.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.05 * 0.5**4)
    assert t_res.callback_metrics["val_loss"] == t_full.callback_metrics["val_loss"]
    steps = [int(r["step"]) for r in _rows(tmp_path / "b", version=1) if r["train_loss_step"]]
    assert steps[0] == 2 * len(train) + 1 and steps[-1] == 4 * len(train)
    assert Path(t_res.checkpoint_callback.best_model_path).name == Path(
        t_full.checkpoint_callback.best_model_path).name


def test_resume_last_without_checkpoint_starts_fresh(tmp_path, capsys):
    train, _ = loaders()
    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(Regression(), train, ckpt_path="last")
    assert trainer.global_step == len(train)
    captured = capsys.readouterr()
    assert "no last checkpoint" in captured.err  # a note, not part of the script's output
    assert "no last checkpoint" not in captured.out


def test_rerunning_a_finished_run_says_there_is_nothing_to_train(tmp_path, capsys):
    train, _ = loaders()
    _trainer(tmp_path, max_epochs=2).fit(Regression(), train, ckpt_path="last")
    capsys.readouterr()
    again = _trainer(tmp_path, max_epochs=2)
    module = Regression()
    before = _params(module)
    again.fit(module, train, ckpt_path="last")
    assert again.global_step == 2 * len(train)  # restored, not trained further
    captured = capsys.readouterr()
    assert "the checkpoint is from a finished run (epoch 2 of max_epochs=2): nothing to train" in captured.err
    assert "delete" in captured.err and captured.out == ""
    after = _params(module)  # the finished run's weights were loaded
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_early_stopping_stops_when_the_metric_stalls(tmp_path):
    module = Scripted([5.0, 4.0, 4.5, 4.2, 4.1, 3.0, 2.0, 1.0])
    stopper = EarlyStopping("score", patience=3)
    train, val = loaders()
    trainer = _trainer(tmp_path, max_epochs=8, callbacks=[stopper])
    trainer.fit(module, train, val)
    # best 4.0 at epoch 1; epochs 2, 3, 4 do not improve -> stop after epoch 4
    assert stopper.stopped_epoch == 4 and trainer.current_epoch == 5
    assert stopper.best_score == 4.0


def test_early_stopping_min_delta_and_max_mode(tmp_path):
    module = Scripted([1.0, 1.05, 1.08, 2.0, 3.0])
    stopper = EarlyStopping("score", mode="max", patience=2, min_delta=0.1)
    train, val = loaders()
    trainer = _trainer(tmp_path, max_epochs=5, callbacks=[stopper])
    trainer.fit(module, train, val)
    assert stopper.stopped_epoch == 2  # +0.05 and +0.08 are below min_delta


def test_early_stopping_names_missing_metric(tmp_path):
    train, val = loaders()
    trainer = _trainer(tmp_path, max_epochs=2, callbacks=[EarlyStopping("nope")])
    with pytest.raises(KeyError, match="nope.*val_loss"):
        trainer.fit(Regression(), train, val)


class _Snapshots(Callback):
    def __init__(self) -> None:
        self.params: list[dict[str, torch.Tensor]] = []

    def on_train_epoch_end(self, trainer, module):
        self.params.append(_params(module))


def test_best_checkpoint_is_chosen_by_the_monitored_metric(tmp_path):
    module = Scripted([3.0, 1.0, 2.0, 0.5, 4.0])
    ckpt = ModelCheckpoint(monitor="score", save_top_k=2, filename="{epoch}-{score:.1f}")
    snaps = _Snapshots()
    train, val = loaders()
    trainer = _trainer(tmp_path, max_epochs=5, callbacks=[snaps, ckpt])
    trainer.fit(module, train, val)
    files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert files == ["epoch=1-score=1.0.ckpt", "epoch=3-score=0.5.ckpt", "last.ckpt"]
    assert Path(ckpt.best_model_path).name == "epoch=3-score=0.5.ckpt"
    assert ckpt.best_model_score == 0.5
    best = trainer.runtime.load(ckpt.best_model_path)
    assert best["epoch"] == 3 and best["global_step"] == 4 * len(train)
    _assert_same(best["model"], snaps.params[3])
    last = trainer.runtime.load(tmp_path / "checkpoints" / "last.ckpt")
    _assert_same(last["model"], snaps.params[4])


def test_checkpoint_without_monitor_keeps_the_newest(tmp_path):
    train, _ = loaders()
    ckpt = ModelCheckpoint(save_last=False)
    _trainer(tmp_path, max_epochs=3, callbacks=[ckpt]).fit(Regression(), train)
    names = [p.name for p in (tmp_path / "checkpoints").iterdir()]
    assert names == [f"epoch=2-step={3 * len(train)}.ckpt"]


def test_manual_optimization_gan_step_matches_the_plain_loop(tmp_path):
    torch.manual_seed(0)
    module = TinyGAN()
    plain = copy.deepcopy(module)
    data = torch.utils.data.DataLoader(make_data(16, 3), batch_size=4)
    torch.manual_seed(5)
    trainer = _trainer(tmp_path, max_epochs=2)
    trainer.fit(module, data)
    assert trainer.global_step == 2 * len(data)

    torch.manual_seed(5)
    opt_g = torch.optim.Adam(plain.gen.parameters(), lr=0.01)
    opt_d = torch.optim.Adam(plain.disc.parameters(), lr=0.01)
    for _ in range(2):
        for (real, _y) in data:
            fake = plain.gen(torch.randn(real.shape[0], 2))
            ones, zeros = torch.ones(real.shape[0], 1), torch.zeros(real.shape[0], 1)
            opt_d.zero_grad()
            F.binary_cross_entropy_with_logits(plain.disc(real), ones).backward()
            F.binary_cross_entropy_with_logits(plain.disc(fake.detach()), zeros).backward()
            opt_d.step()
            opt_g.zero_grad()
            F.binary_cross_entropy_with_logits(plain.disc(fake), ones).backward()
            opt_g.step()
    _assert_same(_params(module), _params(plain))


def test_validate_reports_the_whole_set_mean(tmp_path):
    torch.manual_seed(0)
    module = Regression()
    _, val = loaders()
    (metrics,) = _trainer(tmp_path).validate(module, val)
    assert module.training  # validation puts the module back in training mode
    x, y = val.dataset.tensors
    module.eval()
    with torch.no_grad():
        assert metrics["val_loss"] == pytest.approx(F.mse_loss(module(x), y).item(), rel=1e-6)


def test_limits_and_max_steps(tmp_path):
    train, val = loaders()
    trainer = _trainer(tmp_path, max_epochs=5, max_steps=7, limit_train_batches=0.5,
                       limit_val_batches=1)
    trainer.fit(Regression(), train, val)
    assert trainer.global_step == 7 and trainer.current_epoch == 2  # 6 + 1 step


def test_nan_metric_never_becomes_best(tmp_path):
    module = Scripted([2.0, math.nan, 1.0])
    ckpt = ModelCheckpoint(monitor="score")
    train, val = loaders()
    _trainer(tmp_path, max_epochs=3, callbacks=[ckpt]).fit(module, train, val)
    assert ckpt.best_model_score == 1.0


def test_several_optimizers_need_manual_optimization(tmp_path):
    class Two(Regression):
        def configure_optimizers(self):
            return [torch.optim.SGD(self.parameters(), lr=0.1)] * 2

    train, _ = loaders()
    with pytest.raises(ValueError, match="manual optimization"):
        _trainer(tmp_path, max_epochs=1).fit(Two(), train)


def test_monitors_ignore_epochs_without_validation(tmp_path):
    module = Scripted([9.0, 5.0, 9.0, 6.0, 9.0, 7.0])
    stopper = EarlyStopping("score", patience=1)
    ckpt = ModelCheckpoint(monitor="score", save_top_k=-1, save_last=False)
    train, val = loaders()
    trainer = _trainer(tmp_path, max_epochs=6, check_val_every_n_epoch=2,
                       callbacks=[stopper, ckpt])
    trainer.fit(module, train, val)
    # validated at epochs 1 and 3 only: epoch 2 must not count the stale 5.0 again
    assert stopper.stopped_epoch == 3
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "checkpoints").iterdir()) == [
        "epoch=1", "epoch=3"]
