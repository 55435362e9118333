"""runtime.Trainer over plain iterables (range, count, enumerate, lists, generators) and
``trainer.should_stop`` set mid-epoch: the module form's shape for a plain training loop."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT, torchrun
from trainer_workers.models import Regression, loaders

from runtime import Callback, TrainModule, Trainer

WORKER = ROOT / "tests" / "runtime" / "trainer_workers" / "iterables.py"


class Recorder(TrainModule):
    """Manual optimization; records ``(batch_idx, batch)`` and stops once ``stop(batch_idx,
    batch)`` is true, like a generated loop's ``break``."""

    def __init__(self, stop=lambda idx, batch: False) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.net = torch.nn.Linear(2, 1)
        self.stop = stop
        self.seen: list[tuple[int, object]] = []
        self.epoch_ends: list[int] = []

    def training_step(self, batch, batch_idx):
        self.seen.append((batch_idx, batch))
        opt = self.optimizers()
        loss = self.net(torch.ones(1, 2)).pow(2).sum()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        if self.stop(batch_idx, batch):
            self.trainer.should_stop = True
        return loss

    def on_train_epoch_end(self) -> None:
        self.epoch_ends.append(self.current_epoch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class EpochEnds(Callback):
    def __init__(self) -> None:
        self.epochs: list[int] = []

    def on_train_epoch_end(self, trainer, module) -> None:
        self.epochs.append(trainer.current_epoch)


def _trainer(root: Path, **kw) -> Trainer:
    kw.setdefault("enable_progress_bar", False)
    kw.setdefault("logger", False)
    kw.setdefault("enable_checkpointing", False)
    return Trainer(default_root_dir=root, **kw)


def _squares():
    yield from (i * i for i in range(4))


ITERABLES = {  # name: (make the iterable, the batches one epoch passes)
    "range": (lambda: range(3, 8), [3, 4, 5, 6, 7]),
    "list": (lambda: [7, "a", (1, 2), None], [7, "a", (1, 2), None]),
    "enumerate": (lambda: enumerate(range(10, 13)), [(0, 10), (1, 11), (2, 12)]),
    "generator": (_squares, [0, 1, 4, 9]),
}


@pytest.mark.parametrize("kind", ITERABLES)
def test_plain_iterables_pass_their_items_unchanged(tmp_path, kind):
    make, expected = ITERABLES[kind]
    module = Recorder()
    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(module, make())
    assert module.seen == list(enumerate(expected))
    assert [type(b) for _, b in module.seen] == [type(b) for b in expected]  # ints stay ints
    assert trainer.global_step == len(expected) and trainer.current_epoch == 1
    assert module.epoch_ends == [0]


def test_tensors_in_a_list_arrive_as_batches(tmp_path):
    items = [torch.full((2,), float(i)) for i in range(3)]
    module = Recorder()
    _trainer(tmp_path, max_epochs=1).fit(module, items)
    assert [i for i, _ in module.seen] == [0, 1, 2]
    for (_, got), want in zip(module.seen, items):
        assert torch.equal(got, want)


def test_range_restarts_every_epoch(tmp_path):
    module = Recorder()
    _trainer(tmp_path, max_epochs=2).fit(module, range(3))
    assert module.seen == [(0, 0), (1, 1), (2, 2)] * 2
    assert module.epoch_ends == [0, 1]


def test_count_with_max_epochs_1_ends_on_should_stop(tmp_path):
    module = Recorder(stop=lambda idx, batch: batch == 5)
    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(module, itertools.count(1))  # returns: nothing else would end this epoch
    assert module.seen == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    assert trainer.global_step == 5 and trainer.current_epoch == 1 and trainer.should_stop


def test_count_with_max_steps_fetches_no_item_past_the_last_step(tmp_path):
    counter = itertools.count(1)
    module = Recorder()
    trainer = _trainer(tmp_path, max_steps=4)  # max_epochs=None: only max_steps ends it
    trainer.fit(module, counter)
    assert module.seen == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert trainer.global_step == 4 and trainer.current_epoch == 1
    assert next(counter) == 5  # the loop stopped before drawing item 5


def test_count_with_limit_train_batches(tmp_path):
    module = Recorder()
    _trainer(tmp_path, max_epochs=2, limit_train_batches=2).fit(module, itertools.count(1))
    # count(1) is its own iterator: the second epoch continues where the first stopped
    assert module.seen == [(0, 1), (1, 2), (0, 3), (1, 4)]


def test_should_stop_mid_epoch_ends_the_epoch_and_fit(tmp_path):
    module = Recorder(stop=lambda idx, batch: idx == 2)
    ends = EpochEnds()
    trainer = _trainer(tmp_path, max_epochs=5, callbacks=[ends])
    trainer.fit(module, range(10))
    assert module.seen == [(0, 0), (1, 1), (2, 2)]  # nothing after the stopping batch
    assert module.epoch_ends == [0] and ends.epochs == [0]  # the epoch end still ran
    assert trainer.current_epoch == 1 and trainer.global_step == 3


def test_should_stop_in_a_later_epoch(tmp_path):
    module = Recorder(stop=lambda idx, batch: module.current_epoch == 1 and idx == 1)
    trainer = _trainer(tmp_path, max_epochs=5)
    trainer.fit(module, range(3))
    assert module.seen == [(0, 0), (1, 1), (2, 2), (0, 0), (1, 1)]
    assert module.epoch_ends == [0, 1] and trainer.current_epoch == 2


class StopAt(Regression):
    def __init__(self, stop_idx: int) -> None:
        super().__init__(interval="epoch", dropout=0.0)
        self.stop_idx = stop_idx

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        if batch_idx == self.stop_idx:
            self.trainer.should_stop = True
        return loss


def test_should_stop_mid_epoch_validates_schedules_and_checkpoints(tmp_path):
    train, val = loaders(shuffle=False)
    module = StopAt(stop_idx=2)
    trainer = Trainer(max_epochs=4, default_root_dir=tmp_path, enable_progress_bar=False,
                      log_every_n_steps=1)
    trainer.fit(module, train, val)
    assert module.lrs == [0.05] * 3  # three batches of twelve ran
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.025)  # epoch step
    assert "val_loss" in trainer.callback_metrics and "train_loss_epoch" in trainer.callback_metrics
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert (ckpt["global_step"], ckpt["resume_epoch"]) == (3, 1)
    assert (tmp_path / "logs" / "version_0" / "metrics.csv").exists()


def test_no_checkpoint_and_no_logger_write_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = Recorder(stop=lambda idx, batch: batch == 3)
    trainer = Trainer(max_epochs=1, enable_checkpointing=False, logger=False,
                      enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(module, itertools.count(1))
    assert len(module.seen) == 3
    assert list(tmp_path.iterdir()) == []


def test_progress_bar_without_a_length_shows_the_count(tmp_path, capsys):
    module = Recorder(stop=lambda idx, batch: batch == 3)
    _trainer(tmp_path, max_epochs=1, enable_progress_bar=True).fit(module, itertools.count(1))
    err = capsys.readouterr().err
    assert "Epoch 0 3" in err and "/" not in err  # no total to show


def test_two_processes_over_count_stop_together_and_stay_identical(tmp_path):
    proc = torchrun(WORKER, "6", nproc=2, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = [json.loads(line.removeprefix("RESULT ")) for line in proc.stdout.splitlines()
               if line.startswith("RESULT ")]
    assert sorted(r["rank"] for r in results) == [0, 1], proc.stdout + proc.stderr
    for r in results:
        assert r["world"] == 2
        assert r["seen"] == [1, 2, 3, 4, 5, 6]  # count(1) replicated, not sharded
        assert (r["step"], r["epoch"], r["epoch_ends"]) == (6, 1, 1)
        assert r["changed"]
    a, b = results
    assert a["params"] == b["params"]  # the ranks' data differ: gradients were averaged
    assert a["loss_epoch"] == b["loss_epoch"]  # reduced across ranks at the epoch end
    # the "not sharded" warning came from the worker's custom-sampler DataLoader only
    assert proc.stderr.count("not sharded") == 1, proc.stderr
    assert list(tmp_path.iterdir()) == []  # enable_checkpointing=False, logger=False
