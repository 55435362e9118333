"""Helper modules and multi-file programs: the entry script owns the wrapper, helpers borrow it."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from migrator.batch import Job, run
from migrator.engine import migrate_source
from migrator.files import discover
from migrator.options import Options
from migrator.program import is_library, trains
from migrator.results import Status

PROGRAMS = Path(__file__).resolve().parents[2] / "fixtures" / "programs"
WRAPPER = {"runtime": ("rt", "Runtime()"), "fabric": ("fabric", "Fabric()"), "accelerate": ("accelerator", "Accelerator()")}


def _migrate_dir(folder: Path, target: str) -> dict[str, object]:
    cands = list(discover([str(folder)], root=folder))
    return {Path(o.path).name: o for o in run(cands, Job(Options(target=target), keep_output=True), jobs=1)}


def _copy(tmp_path: Path, name: str) -> Path:
    dest = tmp_path / name
    shutil.copytree(PROGRAMS / name, dest)
    return dest


@pytest.mark.parametrize("name", ["models.py", "data.py", "infer.py", "make_samples.py"])
def test_files_that_do_not_train_get_no_wrapper_and_no_finding_alone(name):
    source = (PROGRAMS / "repository" / name).read_text()
    result = migrate_source(source, name, Options())
    assert result.status is Status.UNCHANGED and result.findings == (), result.findings


def test_a_training_helper_alone_is_refused_not_given_a_wrapper_of_its_own():
    source = (PROGRAMS / "engine_layout" / "engine.py").read_text()
    result = migrate_source(source, "engine.py", Options())
    assert result.output == source
    codes = [f.code for f in result.findings]
    assert codes == ["MIG908"], result.findings
    assert "train_one_epoch()" in result.findings[0].message
    assert "MIG204" in result.findings[0].message


@pytest.mark.parametrize("target", list(WRAPPER))
def test_engine_layout_migrates_as_one_program(target, tmp_path):
    name, ctor = WRAPPER[target]
    out = _migrate_dir(_copy(tmp_path, "engine_layout"), target)
    engine, train = out["engine.py"].output, out["train.py"].output
    assert ctor not in engine, "a helper module must not create a wrapper of its own"
    assert f"def train_one_epoch({name}, model, loader" in engine
    assert f"def evaluate({name}, model, loader, device)" in engine
    assert ".backward()" not in engine and f"{name}.backward(loss)" in engine
    assert train.count(f"{name} = {ctor}") == 1
    assert f"train_one_epoch({name}, model, train_loader" in train
    assert f"evaluate({name}, model, test_loader, device)" in train
    # the evaluation loader goes to engine.evaluate, whose sums this file cannot reduce:
    # it stays whole on every rank (exact numbers) instead of being sharded
    assert "setup_dataloaders(test_loader" not in train and "prepare(test_loader" not in train
    for o in out.values():
        compile(o.output, o.path, "exec")


@pytest.mark.parametrize("target", list(WRAPPER))
def test_program_migration_is_a_fixed_point(target, tmp_path):
    folder = _copy(tmp_path, "engine_layout")
    for name, o in _migrate_dir(folder, target).items():
        (folder / name).write_text(o.output)
    again = _migrate_dir(folder, target)
    assert all(o.status is Status.UNCHANGED for o in again.values()), {k: o.findings for k, o in again.items()}
    for name in again:  # and each file alone (pre-commit passes only the changed ones)
        alone = migrate_source((folder / name).read_text(), name, Options(target=target))
        assert alone.status is Status.UNCHANGED and alone.findings == (), (name, alone.findings)


def test_repository_helpers_keep_their_semantics(tmp_path):
    out = _migrate_dir(_copy(tmp_path, "repository"), "runtime")
    for name in ("data.py", "infer.py", "make_samples.py"):  # data.py's torch.load stays
        assert out[name].status is Status.UNCHANGED, (name, out[name].findings)
    models = out["models.py"].output
    assert "Runtime()" not in models and "def describe(rt, model)" in models
    assert "rt.print(" in models
    assert "describe(rt, model)" in out["train.py"].output


def test_a_helper_used_other_than_by_a_call_is_refused(tmp_path):
    folder = _copy(tmp_path, "engine_layout")
    train = folder / "train.py"
    train.write_text(train.read_text().replace(
        "    for epoch in range(args.epochs):",
        "    steps = [train_one_epoch]\n    for epoch in range(args.epochs):",
    ))
    out = _migrate_dir(folder, "runtime")
    engine = out["engine.py"]
    assert engine.output == (folder / "engine.py").read_text()
    refused = [f for f in engine.findings if f.code == "MIG908"]
    assert len(refused) == 1 and "other than by a direct call" in refused[0].message, engine.findings
    # evaluate() is only called, so it still borrows the wrapper; train.py passes it there only
    assert "train_one_epoch(rt," not in out["train.py"].output


def test_module_alias_calls_pass_the_wrapper(tmp_path):
    folder = _copy(tmp_path, "engine_layout")
    train = folder / "train.py"
    text = train.read_text().replace("from engine import evaluate, train_one_epoch", "import engine as eng")
    text = text.replace("        train_one_epoch(", "        eng.train_one_epoch(").replace("        evaluate(", "        eng.evaluate(")
    train.write_text(text)
    out = _migrate_dir(folder, "fabric")
    assert "eng.train_one_epoch(fabric, model" in out["train.py"].output
    assert "def train_one_epoch(fabric, model" in out["engine.py"].output


@pytest.mark.parametrize(("code", "library"), [
    ('"""Doc."""\nimport torch\nX = 3\nlog = logging.getLogger(__name__)\ndef f(): pass\nclass A: pass\n', True),
    ("import torch\ntry:\n    import apex\nexcept ImportError:\n    apex = None\n", True),
    ('import torch\nif __name__ == "__main__":\n    main()\n', False),
    ("import torch\nmain()\n", False),
    ("import torch\nmodel = Net()\n", False),
    ("import torch\nfor i in range(3):\n    pass\n", False),
    ("import torch\ndef main():\n    opt = torch.optim.SGD(p)\n", False),  # builds its own training
])
def test_is_library(code, library):
    assert is_library(ast.parse(code)) is library


@pytest.mark.parametrize(("code", "training"), [
    ("loss.backward()\n", True),
    ("opt = torch.optim.SGD(p)\n", True),
    ("from torch import optim\n", True),
    ("from torch.utils.data import DataLoader as DL\nloader = DL(ds)\n", True),
    ("model = Net().to(device)\nprint(model(x))\n", False),
    ("torch.save(x, 'a.pt')\n", False),
])
def test_trains(code, training):
    assert trains(ast.parse(code)) is training
