"""--form module end to end (runtime and lightning): 1-process parity, 2 processes, resume, early stopping, fallbacks."""

from __future__ import annotations

import re
import shutil
import sys
from functools import cache
from pathlib import Path

import pytest
from conftest import FIXTURES, child_env, run_cmd, torchrun  # tests/conftest.py

from ._harness import (
    DIST_TIMEOUT,
    SINGLE_TIMEOUT,
    Run,
    check_ranks_started,
    describe,
    fresh_dir,
    original_train,
    probed_env,
    rank_stdout,
    read_probe,
    reports_match,
    run_distributed,
    run_single,
    writers,
)
from ._specs import SPECS

TARGETS = ("runtime", "lightning")
BIN = Path(sys.executable).parent

# Every whole script that fits the module form, with the lines that report its numbers. Of
# fixtures/scripts notebook_style, mnist_cnn, dcgan and vae fit (mnist_cnn: its `--dry-run` break becomes
# limit_train_batches, the LR printed after scheduler.step() sees the stepped scheduler; dcgan:
# two optimizers, three backward passes per batch: manual optimization, the per-epoch sample
# grid and state_dict saves written by rank 0; class_trainer: loops in methods; see
# test_scripts_that_do_not_fit_fall_back);
# from fixtures/module, inline_classifier adds a function-local loop with StepLR and clipping,
# train_keyword the pytorch/examples shape (train()/test() helpers taking the device, MNIST(train=True),
# enumerate(loader, 1), prints before training); vae:
# module-level model and optimizer, train(epoch)/test(epoch) reading globals under
# `if __name__ == "__main__":`, a frozen module in the loss (moved in on_fit_start), per-epoch
# samples saved by rank 0 after the test print; dataparallel_classifier: `acc1 = validate(...)`
# (the helper's returned value) and `best_acc1` tracked across epochs as module state, read
# back from the module after fit for the final print (rank 0); sensor_regression: the epoch's mean
# loss returned by train_epoch() (reduced over processes), printed, and `if ...: break` ending
# the epoch becoming the Trainer's should_stop (2 processes train on a doubled global batch, so
# only the stop line is compared by count).
FITTING = {
    "mnist_cnn": (
        FIXTURES / "scripts" / "mnist_cnn.py", ("--epochs", "2", "--save-model"),
        re.compile(r"Train Epoch: \d+ \[\d+/\d+ \(\d+%\)\]\tLoss: [\d.]+|Test set: Average loss: [\d.]+, "
                   r"Accuracy: \d+/\d+|Learning rate: [\d.]+"),
    ),
    "dcgan": (
        FIXTURES / "scripts" / "dcgan.py", ("--epochs", "2"),
        re.compile(r"\[Epoch \d+/\d+\] \[Batch \d+/\d+\] \[D loss: [\d.]+\] \[G loss: [\d.]+\]"),
    ),
    "vae": (
        FIXTURES / "scripts" / "vae.py", ("--epochs", "2"),
        re.compile(r"Train Epoch: \d+ \[\d+/\d+ \(\d+%\)\]\tLoss: [\d.]+|====> (?:Epoch: \d+ Average|Test set) loss: [\d.]+"),
    ),
    "dataparallel_classifier": (
        FIXTURES / "scripts" / "dataparallel_classifier.py", ("--epochs", "2"),
        re.compile(r"Epoch: \[\d+\]\[\d+/\d+\]\tLoss [\d.]+| \* Acc@1 [\d.]+ Loss [\d.]+ \(\d+/\d+\)"
                   r"|saved best model \(Acc@1 [\d.]+\)|best Acc@1 [\d.]+ \(classifier weight norm [\d.]+\)"),
    ),
    "sensor_regression": (
        FIXTURES / "scripts" / "sensor_regression.py", ("--epochs", "40"),
        re.compile(r"epoch +\d+ train loss [\d.]+|early stop: train loss below [\d.]+ after \d+ epochs"),
    ),
    "notebook_style": (
        FIXTURES / "scripts" / "notebook_style.py", ("--epochs", "2"),
        re.compile(r"loss: +[\d.]+ +\[ *\d+/ *\d+\]|Accuracy: [\d.]+% \(\d+/\d+\)"),
    ),
    # AMP on CUDA (fp32 on CPU: precision 32-true there), accumulation over 4 of 16 batches per
    # epoch (accumulate_grad_batches; the step returns the undivided loss, both Trainers divide it
    # exactly as the script did), clipping after unscale_ and a per-step warmup LambdaLR
    "amp_accumulation": (
        FIXTURES / "module" / "amp_accumulation" / "input.py", ("--epochs", "2"),
        re.compile(r"epoch \d+ batch \d+ loss [\d.]+ lr [\d.]+|epoch \d+ val_loss [\d.]+ correct \d+/\d+"),
    ),
    # issue #6: a per-step LambdaLR warm-up whose lambda alone reads the function-local `args`,
    # comprehension / generator expression in the step reading function locals
    "lambda_locals": (
        FIXTURES / "module" / "lambda_locals" / "input.py", ("--epochs", "1"),
        re.compile(r"epoch \d+ mean loss [\d.]+ lr [\d.]+|done"),
    ),
    "train_keyword": (
        FIXTURES / "module" / "train_keyword" / "input.py", ("--epochs", "2"),
        re.compile(r"Train Epoch: \d+ \[\d+/\d+\]\tLoss: [\d.]+|Test set: Average loss: [\d.]+, Accuracy: \d+/\d+"),
    ),
    "inline_classifier": (
        FIXTURES / "module" / "inline_classifier" / "input.py", ("--epochs", "2"),
        re.compile(r"epoch \d+ (?:batch \d+ loss [\d.]+|val_loss [\d.]+ correct \d+/\d+)"),
    ),
}
CASES = [pytest.param(n, t, id=f"{n}-{t}") for n in FITTING for t in TARGETS]


@cache
def migrated(name: str, target: str) -> Path:
    """The module-form migration of a fitting script (MIG501 required)."""
    from migrator.engine import migrate_source
    from migrator.options import Options

    path = FITTING[name][0]
    result = migrate_source(path.read_text(), str(path), Options(target=target, form="module"))
    codes = {f.code for f in result.findings}
    assert "MIG501" in codes, (result.reason, result.traceback, result.findings)
    out = fresh_dir(f"module-{name}-{target}") / f"{name}.py"
    out.write_text(result.output)
    return out


@cache
def original(name: str) -> Run:
    path, args, _ = FITTING[name]
    run = original_train(name) if name in SPECS and SPECS[name].train_args == args else run_single(path, args, f"orig-{name}")
    run.check_ok(f"original {name}")
    return run


def report(text: str, name: str) -> list[str]:
    # the lines that carry the numbers (the whole stdout is compared too, where it must match)
    return FITTING[name][2].findall(text)


@pytest.mark.parametrize(("name", "target"), CASES)
def test_one_process_reproduces_the_original_losses(name: str, target: str) -> None:
    """Same operations in the same order (shuffling, dropout, clipping, scheduler): exact equality."""
    script = migrated(name, target)
    run = run_single(script, FITTING[name][1], f"mod1-{name}-{target}")
    run.check_ok(f"module-form {name} ({target})")
    expected = report(original(name).proc.stdout, name)
    assert expected, "the original printed no report lines"
    assert report(run.proc.stdout, name) == expected
    # and nothing else: the generated Trainer draws no progress bar on stdout
    run.check_same_stdout(original(name))
    assert (run.cwd / "checkpoints" / "last.ckpt").exists()
    for rel in SAME_FILES.get(name, ()):  # the script's own saves hold the same tensors
        assert _tensors(run.cwd / rel) == _tensors(original(name).cwd / rel), rel


# files a fitting script writes whose tensors must equal the original's on 1 process
SAME_FILES = {
    "dataparallel_classifier": ("best_model.pt",), "sensor_regression": ("regressor.pt",),
    "vae": ("vae.pt", "results/sample_1.pt", "results/sample_2.pt", "results/reconstruction_2.pt"),
}


def _tensors(path: Path) -> list[tuple[str, list]]:
    import torch

    state = torch.load(path, map_location="cpu")
    items = state.items() if isinstance(state, dict) else [("", state)]
    return [(k, v.tolist()) for k, v in items]


@cache
def _original_dry_run() -> Run:
    run = run_single(FITTING["mnist_cnn"][0], ("--epochs", "2", "--dry-run"), "orig-mnist-dry")
    run.check_ok("original mnist_cnn --dry-run")
    return run


@pytest.mark.parametrize("target", TARGETS)
def test_dry_run_break_is_one_batch_per_epoch(target: str) -> None:
    """mnist_cnn --dry-run: `if args.dry_run: break` became limit_train_batches=1 if args.dry_run else None."""
    args = ("--epochs", "2", "--dry-run")
    run = run_single(migrated("mnist_cnn", target), args, f"mod-dry-{target}")
    run.check_ok(f"module-form mnist_cnn --dry-run ({target})")
    expected = report(_original_dry_run().proc.stdout, "mnist_cnn")
    assert len([x for x in expected if x.startswith("Train")]) == 2  # one batch per epoch
    assert report(run.proc.stdout, "mnist_cnn") == expected


def run_two(script: Path, args: tuple[str, ...], target: str, label: str) -> Run:
    """2 CPU processes under torchrun; lightning takes its device count from PL_TRAINER_DEVICES."""
    if target == "runtime":
        return run_distributed("torchrun", script, args, label)
    cwd, probe_dir = fresh_dir(label), fresh_dir(f"probe-{label}")
    env = probed_env(probe_dir)
    env["PL_TRAINER_DEVICES"] = "2"  # Lightning under torchrun needs devices == --nproc-per-node
    proc = torchrun(script, *args, timeout=DIST_TIMEOUT, cwd=cwd, env=env)
    return Run(proc, cwd, probe_dir, read_probe(probe_dir))


@pytest.mark.parametrize(("name", "target"), CASES)
def test_two_processes_complete_print_once_write_once(name: str, target: str) -> None:
    script = migrated(name, target)
    run = run_two(script, FITTING[name][1], target, f"mod2-{name}-{target}")
    run.check_ok(f"module-form {name} ({target}) on 2 processes")
    check_ranks_started(run, script)
    lines = report(run.proc.stdout, name)
    one = report(original(name).proc.stdout, name)
    # every report line once (rank 0); the per-batch lines halve: each rank sees half the batches
    def summaries(found: list[str]) -> list[str]:
        return [x for x in found if "ccura" in x or "val_loss" in x or x.startswith(("====>", " * Acc@1", "best Acc@1", "early stop"))]

    assert len(summaries(lines)) == len(summaries(one))
    assert rank_stdout(run, "1") == ""  # nothing at all: prints before fit are rank 0's too
    written = writers(run)
    assert "checkpoints/last.ckpt" in written, sorted(written)
    # checkpoints, logs and the script's own saves: rank 0 only
    assert {p: r for p, r in written.items() if r != {"0"}} == {}
    if name == "notebook_style":  # 80 test samples: every one counted once over both ranks
        assert all(line.endswith("/80)") for line in lines if "ccura" in line), lines


def _checkpoint(path: Path, target: str):
    import torch

    state = torch.load(path, map_location="cpu", weights_only=False)
    weights = state["model"] if target == "runtime" else state["state_dict"]
    return state["global_step"], weights


@pytest.mark.parametrize("target", TARGETS)
def test_resume_from_last_checkpoint_matches_uninterrupted_run(target: str) -> None:
    """inline_classifier: 4 epochs at once vs 2 epochs then a re-run to 4 (ckpt_path="last")."""
    script = migrated("inline_classifier", target)
    whole = fresh_dir(f"resume-whole-{target}")
    parts = fresh_dir(f"resume-parts-{target}")
    env = child_env()
    runs = [
        run_cmd([sys.executable, str(script), "--epochs", epochs], timeout=SINGLE_TIMEOUT, cwd=cwd, env=env)
        for cwd, epochs in ((whole, "4"), (parts, "2"), (parts, "4"))
    ]
    for proc in runs:
        assert proc.returncode == 0, describe(proc)
    val = re.compile(r"epoch (\d+) val_loss [\d.]+")
    full = val.findall(runs[0].stdout)
    first, resumed = val.findall(runs[1].stdout), val.findall(runs[2].stdout)
    assert (full, first, resumed) == (["1", "2", "3", "4"], ["1", "2"], ["3", "4"])
    assert re.findall(r"epoch 4 val_loss [\d.]+", runs[2].stdout) == re.findall(r"epoch 4 val_loss [\d.]+", runs[0].stdout)
    step_a, weights_a = _checkpoint(whole / "checkpoints" / "last.ckpt", target)
    step_b, weights_b = _checkpoint(parts / "checkpoints" / "last.ckpt", target)
    assert step_a == step_b == 4 * 16  # 256 samples / batch 16, 4 epochs: the step count continued
    import torch

    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


_EARLY_STOP_IMPORT = {
    "runtime": "from runtime import EarlyStopping\n",
    "lightning": "from lightning.pytorch.callbacks import EarlyStopping\n",
}


@pytest.mark.parametrize("target", TARGETS)
def test_early_stopping_on_the_logged_validation_metric(target: str) -> None:
    """With lr=0 the logged `val_loss` never improves: patience=2 stops after epoch 3 of 10."""
    text = migrated("inline_classifier", target).read_text()
    assert 'self.log("val_loss", self.val_loss, sync_dist=True)' in text
    text = text.replace("callbacks=[", 'callbacks=[EarlyStopping(monitor="val_loss", patience=2), ', 1)
    text = text.replace("\n\n\nclass Classifier(", "\n" + _EARLY_STOP_IMPORT[target] + "\n\nclass Classifier(", 1)
    script = fresh_dir(f"early-{target}") / "early.py"
    script.write_text(text)
    run = run_single(script, ("--epochs", "10", "--lr", "0"), f"early-run-{target}")
    run.check_ok(f"early stopping ({target})")
    epochs = re.findall(r"epoch (\d+) val_loss ([\d.]+)", run.proc.stdout)
    assert [e for e, _ in epochs] == ["1", "2", "3"]
    assert len({v for _, v in epochs}) == 1  # the metric really stalled


# (lbfgs_fit and lstm_lm convert now: one training step per pass of their loops,
# tests/e2e/test_module_steps.py; class_trainer's loops are methods)
@pytest.mark.parametrize(("name", "code", "args"), [("class_trainer", "MIG502", ("--epochs", "2"))])
@pytest.mark.parametrize("target", TARGETS)
def test_scripts_that_do_not_fit_fall_back(name: str, code: str, args: tuple[str, ...], target: str) -> None:
    """The CLI reports why and writes the wrapper form, which still prints the original's numbers."""
    out = fresh_dir(f"fallback-{name}-{target}") / f"{name}.py"
    proc = run_cmd(
        [str(BIN / "migrate"), str(FIXTURES / "scripts" / f"{name}.py"), "--target", target, "--form", "module", "-o", str(out)],
        timeout=SINGLE_TIMEOUT, env=child_env(),
    )
    assert proc.returncode == 0, describe(proc)
    assert f"{code} not converted to the module form" in proc.stdout + proc.stderr
    text = out.read_text()
    assert "training_step" not in text and ("Runtime()" in text or "Fabric()" in text)
    run = run_single(out, args, f"fallback-run-{name}-{target}")
    run.check_ok(f"fallback {name} ({target})")
    orig = run_single(FIXTURES / "scripts" / f"{name}.py", args, f"fallback-orig-{name}-{target}")
    orig.check_ok(f"original {name}")
    diff = reports_match(orig.proc.stdout, run.proc.stdout)
    assert diff is None, diff


# fixtures/programs/download_helper: train.py takes its splits from samples.py, a helper module
# that downloads and unpacks an archive when data/samples is missing (pytorch/examples
# super_resolution's shape). No wrapper reaches the helper in the module form: its download
# runs under a file lock, local rank 0 first, so rank 0 alone fetches, prints and writes.
PROGRAM = FIXTURES / "programs" / "download_helper"


@cache
def _samples_url() -> str:
    """A file:// URL of a small archive shaped as the helper expects (samples/{train,test}.csv)."""
    import io
    import random
    import tarfile

    rng = random.Random(0)
    archive = fresh_dir("download-helper-archive") / "samples.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split, count in (("train", 48), ("test", 16)):
            lines = []
            for _ in range(count):
                x = [round(rng.uniform(-1, 1), 3) for _ in range(4)]
                y = round(0.5 * x[0] - x[1] + 0.25 * x[2] + 2 * x[3] + rng.uniform(-0.1, 0.1), 3)
                lines.append(",".join(map(str, [*x, y])))
            data = ("\n".join(lines) + "\n").encode()
            info = tarfile.TarInfo(f"samples/{split}.csv")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive.as_uri()


@cache
def _original_download_helper() -> Run:
    run = run_single(PROGRAM / "train.py", ("--url", _samples_url()), "orig-download-helper")
    run.check_ok("original download_helper")
    return run


@cache
def _migrated_download_helper(target: str) -> Path:
    work = fresh_dir(f"download-helper-{target}")
    for name in ("train.py", "samples.py"):
        shutil.copy(PROGRAM / name, work / name)
    cmd = [str(BIN / "migrate"), "-w", "train.py", "samples.py", "--target", target, "--form", "module"]
    proc = run_cmd(cmd, timeout=SINGLE_TIMEOUT, cwd=work, env=child_env())
    assert proc.returncode == 0, describe(proc)
    said = proc.stdout + proc.stderr
    assert "MIG501" in said and "MIG908" not in said, said
    return work / "train.py"


@pytest.mark.parametrize("target", TARGETS)
def test_helper_module_download_runs_on_rank_zero_first(target: str) -> None:
    """1 process prints exactly what the original printed; on 2 processes rank 0 alone fetches
    and unpacks (rank 1 prints nothing, every file is written by rank 0 only)."""
    script = _migrated_download_helper(target)
    args = ("--url", _samples_url())
    one = run_single(script, args, f"download-helper-1-{target}")
    one.check_ok(f"module-form download_helper ({target})")
    one.check_same_stdout(_original_download_helper())
    two = run_two(script, args, target, f"download-helper-2-{target}")
    two.check_ok(f"module-form download_helper ({target}) on 2 processes")
    check_ranks_started(two, script)
    assert rank_stdout(two, "1") == ""
    assert two.proc.stdout.count("fetching the samples") == 1, two.proc.stdout
    written = writers(two)
    assert {"data/samples/train.csv", "data/samples/test.csv", "regressor.pt"} <= set(written), sorted(written)
    assert {p: r for p, r in written.items() if r != {"0"}} == {}
