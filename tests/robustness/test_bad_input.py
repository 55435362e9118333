"""Bad inputs through the real CLI: one clear line each, no traceback, never modified, others still done."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import FIXTURES

from migrator.engine import migrate_source
from migrator.options import Options
from migrator.results import Status

from ._cli import chmod_000_is_unreadable, lines_naming, run_cli, snapshot
from ._support import bare_backward_lines

EXIT_BAD_INPUT = 2  # documented in the MIG001-MIG003 rule docs ("Exit status: 2")
GOOD_NAME = "good_train.py"


def good_source() -> str:
    """A real single-GPU training script the migrator must rewrite."""
    return (FIXTURES / "scripts" / "mnist_cnn.py").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Bad:
    """One kind of bad input: how to make it, and what its one line must say."""

    name: str
    make: Callable[[Path], None]
    reason: str  # regular expression the file's line must match


def _write(data: bytes) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(data)


def _unreadable(p: Path) -> None:
    p.write_text("import torch\nx = torch.zeros(1)\n")
    p.chmod(0)


def _socket(p: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(p))  # the entry stays after close: a socket file named *.py
    sock.close()


def _loop(p: Path) -> None:
    other = p.with_name("loop_b.py")
    other.symlink_to(p.name)
    p.symlink_to(other.name)


BAD = [
    Bad("syntax_error.py", _write(b"import torch\ndef broken(:\n    pass\n"), r"MIG001.*syntax error"),
    Bad("python2.py", _write(b'import torch\nprint "hello"\n'), r"MIG001.*Python 2"),
    Bad("latin1.py", _write(b"import torch\nname = 'caf\xe9'\n"), r"MIG002.*UTF-8"),
    Bad("nul_bytes.py", _write(b"import torch\nx = 1\x00\n"), r"MIG002.*NUL"),
    Bad("unreadable.py", _unreadable, r"MIG003.*(cannot read|[Pp]ermission)"),
    Bad("fifo.py", lambda p: os.mkfifo(p), r"MIG003.*not a regular file"),
    Bad("socket.py", _socket, r"MIG003.*not a regular file"),
    Bad("dangling.py", lambda p: p.symlink_to("missing_target.py"), r"MIG003.*no such file"),
    Bad("loop_a.py", _loop, r"MIG003.*loop"),
]


def build_tree(root: Path) -> dict[str, tuple]:
    """Every bad kind plus one good script and a symlink to it; returns snapshots of the bad ones."""
    root.mkdir()
    (root / GOOD_NAME).write_text(good_source(), encoding="utf-8")
    (root / "link_to_good.py").symlink_to(GOOD_NAME)
    for bad in BAD:
        bad.make(root / bad.name)
    names = [b.name for b in BAD] + ["loop_b.py"]
    return {name: snapshot(root / name) for name in names}


@pytest.fixture(scope="module", params=["directory", "explicit"])
def bad_run(request, tmp_path_factory):
    """One ``migrate --write`` over the tree, given as a directory or as explicit file names."""
    base = tmp_path_factory.mktemp("bad")
    root = base / "tree"
    before = build_tree(root)
    args = ["tree"] if request.param == "directory" else [f"tree/{b.name}" for b in BAD] + [f"tree/{GOOD_NAME}"]
    proc = run_cli(["--write", *args], cwd=base, timeout=300)
    return request.param, root, before, proc


@pytest.mark.parametrize("bad", BAD, ids=[b.name for b in BAD])
def test_bad_file_gets_one_clear_line_and_is_untouched(bad: Bad, bad_run) -> None:
    mode, root, before, proc = bad_run
    if bad.name == "unreadable.py" and not chmod_000_is_unreadable(str(root.parent)):
        pytest.skip("cannot make a file unreadable here (root without a way to drop CAP_DAC_OVERRIDE); "
                    "fifo.py and socket.py still cover unreadable entries")
    output = proc.stdout + proc.stderr
    lines = lines_naming(proc, bad.name)
    assert len(lines) == 1, f"[{mode}] expected exactly one line naming {bad.name}, got {lines}\n{output}"
    assert re.search(bad.reason, lines[0]), f"[{mode}] line for {bad.name} does not say why ({bad.reason}): {lines[0]}"
    assert "Traceback" not in output, f"[{mode}] traceback printed:\n{output}"
    assert snapshot(root / bad.name) == before[bad.name], f"[{mode}] {bad.name} was modified"


def test_other_files_still_processed_and_exit_status(bad_run) -> None:
    mode, root, before, proc = bad_run
    output = proc.stdout + proc.stderr
    assert proc.returncode == EXIT_BAD_INPUT, f"[{mode}] exit {proc.returncode}, documented {EXIT_BAD_INPUT}\n{output}"
    assert "Traceback" not in output, output
    expected = migrate_source(good_source(), GOOD_NAME, Options())
    assert expected.status is Status.CHANGED, f"the good script needs migrating, engine said {expected.status}"
    written = (root / GOOD_NAME).read_text(encoding="utf-8")
    assert written == expected.output, f"[{mode}] {GOOD_NAME} was not migrated next to the bad files\n{output}"
    assert not bare_backward_lines(written)
    assert (root / "link_to_good.py").is_symlink(), "the symlink to the good file was replaced by a file"
    assert snapshot(root / "loop_b.py") == before["loop_b.py"]
    leftovers = [p.name for p in root.iterdir() if p.name.endswith(".tmp")]
    assert not leftovers, f"temporary files left behind: {leftovers}"


def test_empty_file_named_explicitly(tmp_path: Path) -> None:
    """An empty file: one line saying it was skipped, untouched, and not an error (exit 0)."""
    empty = tmp_path / "empty.py"
    empty.write_bytes(b"")
    before = snapshot(empty)
    proc = run_cli(["--write", "empty.py"], cwd=tmp_path, timeout=120)
    lines = lines_naming(proc, "empty.py")
    assert len(lines) == 1 and "empty" in lines[0], proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert snapshot(empty) == before


def test_symlink_to_migratable_file_is_migrated_through_the_link(tmp_path: Path) -> None:
    """A link named on the command line: the target gets the migration, the link stays a link."""
    (tmp_path / "real.py").write_text(good_source(), encoding="utf-8")
    (tmp_path / "alias.py").symlink_to("real.py")
    proc = run_cli(["--write", "alias.py"], cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "alias.py").is_symlink()
    expected = migrate_source(good_source(), "alias.py", Options())
    assert expected.status is Status.CHANGED, f"the good script needs migrating, engine said {expected.status}"
    assert (tmp_path / "real.py").read_text() == expected.output


def test_huge_file_completes(tmp_path: Path) -> None:
    """100,000 lines: finishes under the subprocess timeout and is migrated correctly."""
    filler = "".join(f"def helper_{i}(x):\n    return x + {i}\n\n\n" for i in range(24_990))
    source = good_source().replace("\ndef ", "\n" + filler + "def ", 1)
    assert source.count("\n") >= 100_000
    (tmp_path / "huge.py").write_text(source, encoding="utf-8")
    proc = run_cli(["--write", "huge.py"], cwd=tmp_path, timeout=540)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "Traceback" not in output
    written = (tmp_path / "huge.py").read_text(encoding="utf-8")
    assert written != source, "the 100,000-line script was not migrated"
    compile(written, "huge.py", "exec", dont_inherit=True)
    assert not bare_backward_lines(written)
    assert written.count("def helper_") == 24_990, "filler functions lost or duplicated"


def test_directory_of_thousands_of_files(tmp_path: Path) -> None:
    """2,000 files in 20 packages: bad ones get their line, good ones are migrated, the rest untouched."""
    root = tmp_path / "repo"
    expected = migrate_source(good_source(), GOOD_NAME, Options())
    kinds: dict[Path, str] = {}
    for i in range(2000):
        path = root / f"pkg{i % 20}" / f"mod{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        if i % 100 == 0:
            kinds[path] = "good"
            path.write_text(good_source(), encoding="utf-8")
        elif i % 100 == 50:
            kinds[path] = "bad"
            path.write_bytes(b"import torch\nprint 'python 2'\n")
        elif i % 10 == 5:
            kinds[path] = "plain"
            path.write_text(f"import torch\n\n\ndef f():\n    return torch.zeros({i})\n")
        else:
            kinds[path] = "plain"
            path.write_text(f"def f():\n    return {i}\n")
    before = {p: snapshot(p) for p in kinds}
    proc = run_cli(["--write", "repo"], cwd=tmp_path, timeout=540)
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output[-3000:]
    assert proc.returncode == EXIT_BAD_INPUT, f"exit {proc.returncode}\n{output[-3000:]}"
    problems = []
    if expected.status is not Status.CHANGED:
        problems.append(f"the good script needs migrating, engine said {expected.status}")
    for path, kind in kinds.items():
        rel = path.relative_to(tmp_path).as_posix()
        lines = [line for line in output.splitlines() if line.startswith(rel + ":")]
        if kind == "bad" and (len(lines) != 1 or "MIG001" not in lines[0]):
            problems.append(f"{rel}: expected one MIG001 line, got {lines}")
        if kind == "bad" and snapshot(path) != before[path]:
            problems.append(f"{rel}: bad file modified")
        if kind == "good" and path.read_text(encoding="utf-8") != expected.output:
            problems.append(f"{rel}: not migrated")
        if kind == "plain" and snapshot(path) != before[path]:
            problems.append(f"{rel}: file with nothing to port was modified")
    assert not problems, f"{len(problems)} problems, first: {problems[:5]}\n{output[-2000:]}"
