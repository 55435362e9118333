"""--form module: every fixtures/module folder per target (output == expected, findings, compiles, fixed point), plus API facts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from migrator.engine import migrate_source
from migrator.options import Options
from migrator.results import Status

MODULE = Path(__file__).resolve().parents[2] / "fixtures" / "module"
TARGETS = ("runtime", "lightning")
CASES = [(folder, t) for folder in sorted(p for p in MODULE.iterdir() if (p / "input.py").exists()) for t in TARGETS]


def _findings(folder: Path, target: str) -> list[str]:
    return (folder / f"findings.{target}.txt").read_text().split("\n")[:-1]


@pytest.mark.parametrize(("folder", "target"), CASES, ids=[f"{f.name}-{t}" for f, t in CASES])
def test_module_fixture(folder: Path, target: str) -> None:
    options = Options(target=target, form="module")
    source = (folder / "input.py").read_text()
    result = migrate_source(source, path="input.py", options=options)
    assert not result.internal_error, result.traceback
    assert result.output == (folder / f"expected.{target}.py").read_text()
    assert sorted(f"{f.line}:{f.col} {f.code}" for f in result.findings) == sorted(_findings(folder, target))
    compile(result.output, "expected.py", "exec")
    again = migrate_source(result.output, path="again.py", options=options)
    assert not again.internal_error, again.traceback
    assert again.output == result.output


@pytest.mark.parametrize("target", TARGETS)
def test_converted_or_fell_back_never_half(target: str) -> None:
    """Every fixture either holds the generated class (MIG501) or is the wrapper form with a MIG5xx reason."""
    for folder in sorted(MODULE.iterdir()):
        out = (folder / f"expected.{target}.py").read_text()
        codes = {line.split()[1] for line in _findings(folder, target)}
        module_codes = {c for c in codes if c.startswith("MIG5")}
        assert len(module_codes) == 1, (folder, codes)
        converted = module_codes == {"MIG501"}
        assert ("def training_step(self, " in out) == converted, folder
        if converted:  # the step's backward passes go through the module (the file's helper
            # functions a one-step-per-pass step calls keep theirs: fixtures/module/steps_*)
            step = out[out.index("def training_step(self, "):]
            step = step[: step.find("\n    def ", 1)] if "\n    def " in step[1:] else step
            assert ".backward(" not in step.split("\ntrainer")[0], folder
        if not converted:
            assert "Fabric()" in out or "Runtime()" in out, folder


def test_fallback_message_names_the_reason_and_the_wrapper_target() -> None:
    src = (MODULE / "fallback_loss_break" / "input.py").read_text()
    result = migrate_source(src, "train.py", Options(target="lightning", form="module"))
    (note,) = [f for f in result.findings if f.code == "MIG503"]
    assert "`break` inside the training loop" in note.message
    assert "--target fabric" in note.message
    assert note.fixed is False


def test_continue_in_the_batch_loop_falls_back_saying_why() -> None:
    """A skipped batch would be ``return None`` from training_step, which hangs DDP: the file
    falls back to the wrapper form, and the note says so (not "cannot end its epoch early")."""
    src = (MODULE / "write_before_fit" / "input.py").read_text().replace(
        "            optimizer.zero_grad()\n",
        "            if y.sum() < 0:\n                continue\n            optimizer.zero_grad()\n",
    )
    assert "continue" in src
    result = migrate_source(src, "train.py", Options(target="lightning", form="module"))
    (note,) = [f for f in result.findings if f.code == "MIG503"]
    assert "`continue` inside the training loop" in note.message and "hang" in note.message
    assert "def training_step" not in result.output and "fabric.backward(loss)" in result.output


def test_already_module_form_file_is_unchanged() -> None:
    src = (MODULE / "inline_classifier" / "expected.lightning.py").read_text()
    result = migrate_source(src, "m.py", Options(target="lightning", form="module"))
    assert result.status is Status.UNCHANGED and result.findings == ()


def test_deselected_fallback_code_drops_only_the_note() -> None:
    src = (MODULE / "fallback_hidden_state" / "input.py").read_text()
    result = migrate_source(src, "m.py", Options(target="runtime", form="module", ignore=("MIG505",)))
    assert result.changed and not any(f.code == "MIG505" for f in result.findings)


def test_wrapper_form_does_not_import_black_or_jinja2() -> None:
    """The generator imports black/jinja2 lazily: the wrapper form's hot path never does."""
    import subprocess

    code = (
        "import sys; from migrator.engine import migrate_source; from migrator.options import Options;"
        f"migrate_source(open({str(MODULE / 'step_scheduler' / 'input.py')!r}).read(), 'x.py', Options());"
        "assert 'black' not in sys.modules and 'jinja2' not in sys.modules, 'imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_templates_ship_as_package_data() -> None:
    import importlib.resources

    names = {p.name for p in importlib.resources.files("migrator.templates").iterdir()}
    assert {"module_class.py.j2", "fit_call.py.j2"} <= names


@pytest.mark.parametrize(
    ("script", "code"),
    [("lbfgs_fit", "MIG501"), ("lstm_lm", "MIG501"), ("dcgan", "MIG501"), ("mnist_cnn", "MIG501"),
     ("class_trainer", "MIG502"), ("transformer_lm", "MIG507"), ("notebook_style", "MIG501"),
     ("dataparallel_classifier", "MIG501"), ("sensor_regression", "MIG501")],
)
def test_whole_scripts_convert_or_say_why(script: str, code: str) -> None:
    src = (MODULE.parent / "scripts" / f"{script}.py").read_text()
    for target in TARGETS:
        result = migrate_source(src, f"{script}.py", Options(target=target, form="module"))
        assert not result.internal_error, result.traceback
        assert code in {f.code for f in result.findings}, (target, result.findings)


_STOP_LOOP = '''import argparse
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

args = argparse.Namespace(dry_run=True, every=2)
loader = DataLoader(TensorDataset(torch.randn(64, 3), torch.randn(64, 1)), batch_size=8)
model = nn.Linear(3, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(3):
    for i, (x, y) in enumerate(loader):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
{tail}
'''


@pytest.mark.parametrize(("tail", "limit"), [
    ("        if args.dry_run: break", "limit_train_batches=1 if args.dry_run else None"),
    ("        if i == 0:\n            print(loss.item())\n            if not args.dry_run:\n                break",
     "limit_train_batches=1 if not args.dry_run else None"),
    ("        if args.every > 1 if args.dry_run else False:\n            break",
     "limit_train_batches=1 if (args.every > 1 if args.dry_run else False) else None"),
])
def test_trailing_flag_break_becomes_a_batch_limit(tail: str, limit: str) -> None:
    for target in TARGETS:
        result = migrate_source(_STOP_LOOP.format(tail=tail), "m.py", Options(target=target, form="module"))
        assert "MIG501" in {f.code for f in result.findings}, (target, result.findings)
        assert limit in result.output and "break" not in result.output


@pytest.mark.parametrize("tail", [
    "        if i > 2: break",  # reads the loop index
    "        if loss.item() < 0.1 and args.dry_run: break",  # reads a loop value
    "        if args.dry_run: break\n        print(i)",  # not the last statement
    "        if args.dry_run:\n            break\n        else:\n            pass",  # an else branch
    "        if args.dry_run:\n            print(i)\n            break",  # more than the break
    "        if getattr(args, 'dry_run'): break",  # a call
    "        if i % args.every == 1:\n            print(i)\n            if args.dry_run:\n                break",  # not batch 0
    "        if i % 2 == 0:\n            if args.dry_run:\n                break",  # nothing else in the guard
    "        args.dry_run = i > 2\n        if args.dry_run: break",  # the loop changes the flag
    "        if args.dry_run: break\n    args = argparse.Namespace(dry_run=False)",  # the epoch loop rebinds it
])
def test_other_breaks_still_fall_back(tail: str) -> None:
    for target in TARGETS:
        result = migrate_source(_STOP_LOOP.format(tail=tail), "m.py", Options(target=target, form="module"))
        assert not result.internal_error, result.traceback
        assert "MIG503" in {f.code for f in result.findings}, (tail, target, result.findings)


_GAN_LOOP = """import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

loader = DataLoader(TensorDataset(torch.randn(64, 4)), batch_size=8)
gen, disc = nn.Linear(2, 4), nn.Linear(4, 1)
opt_g = torch.optim.Adam(gen.parameters())
opt_d = torch.optim.Adam(disc.parameters())
for epoch in range(2):
    for i, (real,) in enumerate(loader):
        fake = gen(torch.randn(8, 2))
        opt_d.zero_grad()
        d_loss = disc(real).mean() - disc(fake.detach()).mean()
{d_step}
        opt_g.zero_grad()
        g_loss = -disc(fake).mean()
        g_loss.backward()
        opt_g.step()
"""


def test_gan_loop_becomes_manual_optimization() -> None:
    src = _GAN_LOOP.format(d_step="        d_loss.backward()\n        opt_d.step()")
    for target in TARGETS:
        result = migrate_source(src, "gan.py", Options(target=target, form="module"))
        assert "MIG501" in {f.code for f in result.findings}, (target, result.findings)
        out = result.output
        assert "self.automatic_optimization = False" in out
        assert "opt_g, opt_d = self.optimizers()" in out  # the script's names, in creation order
        assert out.count("self.manual_backward(") == 2 and ".backward(" not in out
        assert "return [opt_g, opt_d]" in out and "def forward(" not in out
        assert "TrainingModule(gen, disc)" in out


@pytest.mark.parametrize(("d_step", "code", "words"), [
    # gradient accumulation: the discriminator steps every other batch
    ("        d_loss.backward()\n        if i % 2 == 1:\n            opt_d.step()", "MIG503", "gradient accumulation"),
    # a critic trained only on some batches: a backward under a condition
    ("        if i % 5 == 0:\n            d_loss.backward()\n            opt_d.step()", "MIG503", "conditionally"),
    ("        d_loss.backward(retain_graph=True)\n        opt_d.step()", "MIG504", "retain_graph"),
    ("        for _ in range(2):\n            d_loss.backward(retain_graph=True)\n        opt_d.step()", "MIG502", "DataLoader"),  # the first backward's own loop is no batch loop
])
def test_gan_loops_the_step_cannot_express_fall_back(d_step: str, code: str, words: str) -> None:
    for target in TARGETS:
        result = migrate_source(_GAN_LOOP.format(d_step=d_step), "gan.py", Options(target=target, form="module"))
        assert not result.internal_error, result.traceback
        notes = [f for f in result.findings if f.code == code and "not converted to the module form" in f.message]
        assert notes and words in notes[0].message, (target, result.findings)
        assert "training_step" not in result.output


_AMP_LOOP = '''import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

use_amp = torch.cuda.is_available()
loader = DataLoader(TensorDataset(torch.randn(64, 3), torch.randn(64, 1)), batch_size=8)
model = nn.Linear(3, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scaler = torch.cuda.amp.GradScaler(enabled=use_amp)
for epoch in range(3):
    for x, y in loader:
        optimizer.zero_grad()
        with {autocast}:
            loss = nn.functional.mse_loss(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
{tail}
'''


@pytest.mark.parametrize(("autocast", "precision"), [
    ("torch.autocast('cuda')", '"16-mixed" if torch.cuda.is_available() else "32-true"'),
    ("torch.autocast('cuda', enabled=use_amp)", '"16-mixed" if torch.cuda.is_available() else "32-true"'),
    ("torch.autocast('cpu', dtype=torch.bfloat16)", '"bf16-mixed"'),
    ("torch.autocast('cuda', enabled=epoch > 0 and use_amp)", None),
])
def test_amp_becomes_the_trainer_precision(autocast: str, precision: str | None) -> None:
    src = _AMP_LOOP.format(autocast=autocast, tail="")
    for target in TARGETS:
        result = migrate_source(src, "train.py", Options(target=target, form="module"))
        codes = {f.code for f in result.findings}
        if precision is None:  # the switch reads the epoch: not known when the Trainer is made
            (note,) = [f for f in result.findings if f.code == "MIG507"]
            assert "epoch, which the loop changes" in note.message and note.line == 13
            continue
        assert codes == {"MIG501"}, result.findings
        assert f"precision={precision}," in result.output
        assert "scaler" not in result.output and "autocast" not in result.output


@pytest.mark.parametrize(("tail", "words"), [
    ("    torch.save({'scaler': scaler.state_dict()}, 'ckpt.pt')", "own checkpoint/resume code"),
    ("    print(scaler.get_scale())", "has no equivalent"),
    ("with torch.autocast('cuda'):\n    print(model(torch.zeros(1, 3)))", "not a statement of a batch loop's body"),
])
def test_amp_the_trainer_cannot_express_falls_back(tail: str, words: str) -> None:
    src = _AMP_LOOP.format(autocast="torch.autocast('cuda')", tail=tail)
    result = migrate_source(src, "train.py", Options(target="runtime", form="module"))
    (note,) = [f for f in result.findings if f.code == "MIG507"]
    assert words in note.message, note.message
    assert "def training_step" not in result.output and "Runtime(" in result.output


def test_transformer_lm_falls_back_naming_its_checkpoint_resume_code() -> None:
    src = (MODULE.parent / "scripts" / "transformer_lm.py").read_text()
    result = migrate_source(src, "transformer_lm.py", Options(target="lightning", form="module"))
    (note,) = [f for f in result.findings if f.code == "MIG507"]
    assert "own checkpoint/resume code" in note.message and "scaler.load_state_dict" in note.message
    assert src.splitlines()[note.line - 1].strip().startswith("scaler.load_state_dict(")


_ACCUM_LOOP = '''import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

K = 4
loader = DataLoader(TensorDataset(torch.randn({n}, 3), torch.randn({n}, 1)), batch_size=8)
model = nn.Linear(3, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(3):
    for i, (x, y) in enumerate(loader):
        loss = nn.functional.mse_loss(model(x), y) / {k}
        loss.backward()
        if (i + 1) % {k} == 0:
            optimizer.step()
{inner}
{after}
'''


def test_accumulation_becomes_accumulate_grad_batches_returning_the_undivided_loss() -> None:
    src = _ACCUM_LOOP.format(n=64, k="K", inner="            optimizer.zero_grad()", after="")
    for target in TARGETS:
        result = migrate_source(src, "train.py", Options(target=target, form="module"))
        assert {f.code for f in result.findings} == {"MIG501"}, result.findings
        assert "accumulate_grad_batches=K," in result.output
        assert "step_loss = nn.functional.mse_loss(self.model(x), y)\n" in result.output
        assert "loss = step_loss / K\n        return step_loss\n" in result.output


@pytest.mark.parametrize(("n", "k", "inner", "after", "words"), [
    (64, "K", "            optimizer.zero_grad()\n            print(i)", "", "per-step work in the accumulation `if`"),
    (64, "K", "            pass", "", "without both the optimizer's step and zero_grad"),
    (64, "K", "            optimizer.zero_grad()", "        print(model.weight.sum())", "reads `model` after the accumulation step"),
    (72, "K", "            optimizer.zero_grad()", "", "with 9 batches per epoch"),
    (64, "(len(loader) // 4)", "            optimizer.zero_grad()", "", "is not a constant of the file"),
])
def test_accumulation_the_trainer_cannot_express_falls_back(n: int, k: str, inner: str, after: str, words: str) -> None:
    src = _ACCUM_LOOP.format(n=n, k=k, inner=inner, after=after)
    result = migrate_source(src, "train.py", Options(target="lightning", form="module"))
    (note,) = [f for f in result.findings if f.code == "MIG503"]
    assert words in note.message, note.message
    assert "def training_step" not in result.output


def test_accumulation_needs_the_loss_divided_by_k() -> None:
    src = _ACCUM_LOOP.format(n=64, k="K", inner="            optimizer.zero_grad()", after="").replace(") / K\n", ")\n")
    result = migrate_source(src, "train.py", Options(target="runtime", form="module"))
    (note,) = [f for f in result.findings if f.code == "MIG503"]
    assert "the loss is not divided by `K`" in note.message


_LOCALS_LOOP = """import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def main(scale=2.0):
    loader = DataLoader(TensorDataset(torch.randn(8, 4), torch.randn(8, 1)), batch_size=4)
    model = nn.Linear(4, 1)
{before}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(2):
        for x, y in loader:
            optimizer.zero_grad()
{body}
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            optimizer.step()
"""


@pytest.mark.parametrize(("before", "body", "present", "absent"), [
    # a lambda parameter shadows the function local of the same name
    ("    k = 3", "            x = (lambda k: k * x)(2) + k", "(lambda k: k * x)(2) + self.k", "self.k * x"),
    # comprehension variables shadow; the first iterable is read in the step
    ("    k = [1.0]", "            x = x * sum(k for k in k)", "sum(k for k in self.k)", "for self.k"),
])
def test_names_read_in_nested_scopes_are_captured_and_shadowing_kept(before: str, body: str, present: str,
                                                                      absent: str) -> None:
    src = _LOCALS_LOOP.format(before=before, body=body)
    for target in TARGETS:
        result = migrate_source(src, "m.py", Options(target=target, form="module"))
        assert "MIG501" in {f.code for f in result.findings}, (target, result.findings)
        flat = " ".join(result.output.split())
        assert present in flat and absent not in flat, result.output


@pytest.mark.parametrize(("before", "body", "words"), [
    # a nested function in the function holding the loop (MIG502, checked before any renaming)
    ("    k = 3", "            def f(v, k=1):\n                return v * scale * k\n            x = f(x)",
     "a nested function in the function holding the loop"),
    ("", "            class Box:\n                value = scale", "the class `Box` is defined in code that moves"),
])
def test_nested_scopes_that_cannot_move_fall_back(before: str, body: str, words: str) -> None:
    src = _LOCALS_LOOP.format(before=before, body=body)
    for target in TARGETS:
        result = migrate_source(src, "m.py", Options(target=target, form="module"))
        found = [f for f in result.findings if f.code in ("MIG502", "MIG503")]
        assert found and words in found[0].message, (target, result.findings)


def test_scheduler_lambda_reading_a_value_the_loop_rebinds_falls_back() -> None:
    src = _LOCALS_LOOP.format(
        before="    warm = 2\n    sched = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD(model.parameters()), lambda s: s / warm)",
        body="            warm = x.sum()",
    ).replace("    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n", "")
    src = src.replace("    sched = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD(model.parameters()), lambda s: s / warm)",
                      "    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
                      "    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: s / warm)")
    src = src.replace("            optimizer.step()\n", "            optimizer.step()\n            sched.step()\n")
    for target in TARGETS:
        result = migrate_source(src, "m.py", Options(target=target, form="module"))
        found = [f for f in result.findings if f.code == "MIG505"]
        assert found and "reads `warm`, which the training loop re-binds" in found[0].message, (target, result.findings)


_OWN_MESH = '''import torch
import torch.nn as nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor.parallel import ColwiseParallel, parallelize_module

torch.manual_seed(0)
mesh = init_device_mesh("cpu", (2,))
model = parallelize_module(nn.Linear(4, 4), mesh, ColwiseParallel())
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(5):
    optimizer.zero_grad()
    loss = model(torch.randn(8, 4)).sum()
    loss.backward()
    optimizer.step()
    print(step, loss.item())
'''


@pytest.mark.parametrize("target", TARGETS)
def test_already_distributed_loop_without_a_loader_is_refused_not_converted(target: str) -> None:
    """A loop of steps would convert this loop, but the script runs its own tensor parallelism:
    the module form refuses it as the wrapper form does (pytorch/examples tensor_parallelism)."""
    result = migrate_source(_OWN_MESH, "tp.py", Options(target=target, form="module"))
    codes = {f.code for f in result.findings}
    assert "MIG901" in codes and "MIG501" not in codes, result.findings
    assert "training_step" not in result.output
