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


# --- the module form: a helper module that downloads (pytorch/examples super_resolution's shape)
MODULE_TARGETS = ("runtime", "lightning")


def _download_helper(tmp_path: Path) -> Path:
    """download_helper's program files only (its expected.<target>/ outputs stay behind)."""
    folder = tmp_path / "download_helper"
    folder.mkdir()
    for name in ("train.py", "samples.py"):
        shutil.copy(PROGRAMS / "download_helper" / name, folder / name)
    return folder


@pytest.mark.parametrize("target", MODULE_TARGETS)
def test_download_helper_converts_in_the_module_form(target, tmp_path):
    """The helper's download runs under a file lock, local rank 0 first (no wrapper exists to
    borrow before fit): the program converts (MIG501), the helper is not refused (MIG908)."""
    expected = PROGRAMS / "download_helper"
    folder = _download_helper(tmp_path)
    options = Options(target=target, form="module")
    out = {Path(o.path).name: o for o in run(list(discover([str(folder)], root=folder)), Job(options, keep_output=True), jobs=1)}
    for name, o in out.items():
        assert o.output == (expected / f"expected.{target}" / name).read_text(), name
        compile(o.output, name, "exec")
    found = sorted(f"{name}:{f.line}:{f.col} {f.code}" for name, o in out.items() for f in o.findings)
    assert found == (expected / f"findings.{target}.txt").read_text().splitlines()
    for name, o in out.items():  # a fixed point, as a program and each file alone
        (folder / name).write_text(o.output)
    again = run(list(discover([str(folder)], root=folder)), Job(options, keep_output=True), jobs=1)
    assert all(o.status is Status.UNCHANGED and o.findings == () for o in again), [(o.path, o.findings) for o in again]
    alone = migrate_source((folder / "samples.py").read_text(), "samples.py", options)
    assert alone.status is Status.UNCHANGED and alone.findings == (), alone.findings


def test_download_helper_keeps_the_wrapper_form(tmp_path):
    """--form wrapper is unchanged: the helper borrows the wrapper (rank 0 alone, then a
    barrier) with its caller, and is refused alone; no file lock."""
    folder = _download_helper(tmp_path)
    out = _migrate_dir(folder, "runtime")
    samples = out["samples.py"].output
    assert "def fetch(rt, url" in samples and "if rt.is_global_zero:" in samples and "rt.barrier()" in samples
    assert "FileLock" not in samples and "FileLock" not in out["train.py"].output
    source = (folder / "samples.py").read_text()
    alone = migrate_source(source, "samples.py", Options(target="runtime"))
    assert alone.output == source and [f.code for f in alone.findings] == ["MIG908"]


_HELPER = '''import os
import tarfile
import urllib.request

import torch
{extra}

{body}
'''


@pytest.mark.parametrize(("body", "extra", "expect"), [
    # no `if not exists(...)` around it: the lock alone, whoever comes first fetches
    ('def fetch(url):\n    urllib.request.urlretrieve(url, "a.tgz")\n', "",
     ['with FileLock(os.path.join(tempfile.gettempdir(), f"torch-migrate-download-{__name__}.fetch.lock")):\n'
      '        urllib.request.urlretrieve(url, "a.tgz")\n'], ),
    # a method (it cannot take a wrapper): locked all the same, its lock named after the class
    ('class Samples:\n    def __init__(self, url):\n        if not os.path.isdir("s"):\n'
     '            with tarfile.open(url) as tar:\n                tar.extractall("s")\n', "",
     ['        for _ in range(60):', 'or os.path.isdir("s"):\n',
      'f"torch-migrate-download-{__name__}.Samples.__init__.lock"']),
    # gettext's `_`: the wait loop takes another name
    ('def fetch(url):\n    if not os.path.exists("d") and _("x"):\n        urllib.request.urlretrieve(url, "d")\n',
     "from gettext import gettext as _",
     ['    for _wait in range(60):', 'or not (not os.path.exists("d") and _("x")):\n']),
])
def test_module_form_helper_download_lock(body, extra, expect):
    source = _HELPER.format(extra=extra, body=body)
    result = migrate_source(source, "helper.py", Options(target="lightning", form="module"))
    assert [f.code for f in result.findings] == ["MIG405"], result.findings
    for text in expect:
        assert text in result.output, result.output
    assert "from filelock import FileLock\n" in result.output and "import tempfile\n" in result.output
    again = migrate_source(result.output, "helper.py", Options(target="lightning", form="module"))
    assert again.status is Status.UNCHANGED and again.findings == ()


def test_module_form_helper_whose_names_clash_is_refused():
    """``from time import time`` binds ``time`` to a function: the lock's wait cannot use it,
    so the helper is refused as before (MIG908) rather than broken."""
    source = _HELPER.format(extra="from time import time", body=(
        'def fetch(url):\n    start = time()\n    if not os.path.exists("d"):\n'
        '        urllib.request.urlretrieve(url, "d")\n    return time() - start\n'))
    result = migrate_source(source, "helper.py", Options(target="runtime", form="module"))
    assert result.output == source and [f.code for f in result.findings] == ["MIG908"]


def test_module_form_helper_download_inside_a_locked_statement_takes_one_lock():
    """A bare ``os.makedirs(root)`` under ``if not exists(...)`` locks the whole ``if``; the
    downloads inside it are covered by that lock (a second lock on the same file inside it
    would wait for itself)."""
    source = _HELPER.format(extra="", body=(
        'def fetch(url, root="data"):\n    folder = os.path.join(root, "s")\n'
        '    if not os.path.exists(folder):\n        os.makedirs(root)\n'
        '        print("fetching", url.rsplit("/", 1)[-1])\n'
        '        urllib.request.urlretrieve(url, "s.tgz")\n'
        '        with tarfile.open("s.tgz") as tar:\n            tar.extractall(root)\n'
        '    return folder\n'))
    result = migrate_source(source, "helper.py", Options(target="runtime", form="module"))
    assert result.output.count("with FileLock(") == 1, result.output
    assert "    with FileLock(" in result.output and "        if not os.path.exists(folder):" in result.output
    assert [f.code for f in result.findings] == ["MIG405"] * 3
    compile(result.output, "helper.py", "exec")
