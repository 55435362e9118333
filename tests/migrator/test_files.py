"""Tests for file discovery, decoding, atomic writes and git-compatible diffs."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from migrator.fileio import InputError, Skip, decode, read_bytes, write_atomic, write_new
from migrator.files import DEFAULT_EXCLUDE, discover
from migrator.formats.diff import unified_diff

TORCH = "import torch\n"


def _tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def _found(root: Path, paths=(".",), **kw) -> list[str]:
    old = os.getcwd()
    os.chdir(root)
    try:
        return [c.display for c in discover(list(paths), root=root, **kw)]
    finally:
        os.chdir(old)


def test_directories_recursive_sorted_only_py(tmp_path):
    _tree(tmp_path, {"b.py": TORCH, "a/z.py": TORCH, "a/y.py": TORCH, "notes.txt": "torch"})
    assert _found(tmp_path) == ["b.py", "a/y.py", "a/z.py"]


def test_gitignore_root_nested_and_negation(tmp_path):
    (tmp_path / ".git").mkdir()
    _tree(tmp_path, {
        ".gitignore": "gen_*.py\nout/\n",
        "sub/.gitignore": "!gen_keep.py\nlocal.py\n",
        "gen_a.py": TORCH, "ok.py": TORCH, "out/x.py": TORCH,
        "sub/gen_keep.py": TORCH, "sub/gen_b.py": TORCH, "sub/local.py": TORCH, "sub/m.py": TORCH,
    })
    assert _found(tmp_path) == ["ok.py", "sub/gen_keep.py", "sub/m.py"]
    # walking a subdirectory still honours the repository root's .gitignore
    assert _found(tmp_path, ["sub"]) == ["sub/gen_keep.py", "sub/m.py"]


def test_git_info_exclude_and_default_excludes(tmp_path):
    (tmp_path / ".git" / "info").mkdir(parents=True)
    (tmp_path / ".git" / "info" / "exclude").write_text("secret.py\n")
    _tree(tmp_path, {"secret.py": TORCH, "m.py": TORCH, ".venv/lib/t.py": TORCH,
                     "build/g.py": TORCH, "pkg.egg-info/x.py": TORCH})
    assert _found(tmp_path) == ["m.py"]


def test_exclude_patterns_apply_to_walks_and_with_force_exclude_to_named_files(tmp_path):
    _tree(tmp_path, {"keep.py": TORCH, "legacy/old.py": TORCH, "gen/x_pb2.py": TORCH})
    excl = (*DEFAULT_EXCLUDE, "legacy/", "*_pb2.py")
    assert _found(tmp_path, exclude=excl) == ["keep.py"]
    named = ["legacy/old.py", "keep.py", "gen/x_pb2.py", "legacy"]
    assert _found(tmp_path, named, exclude=excl) == named[:3]  # named paths are migrated (ruff)
    assert _found(tmp_path, named, exclude=excl, force_exclude=True) == ["keep.py"]
    # replacing the defaults (exclude = []) lets build/ in again
    _tree(tmp_path, {"build/b.py": TORCH})
    assert "build/b.py" in _found(tmp_path, exclude=())


def test_named_directory_under_gitignore_and_excludes_is_walked_its_contents_filtered(tmp_path):
    (tmp_path / ".git").mkdir()
    site = ".venv/lib/python3.11/site-packages/torch"
    _tree(tmp_path, {".gitignore": ".venv/\n*_gen.py\n", f"{site}/nn/linear.py": TORCH,
                     f"{site}/__pycache__/linear.py": TORCH, f"{site}/build/x.py": TORCH,
                     f"{site}/a_gen.py": TORCH, "m.py": TORCH})
    assert _found(tmp_path) == ["m.py"]
    assert _found(tmp_path, [site]) == [f"{site}/nn/linear.py"]
    assert _found(tmp_path, [f"{site}/a_gen.py"]) == [f"{site}/a_gen.py"]
    assert _found(tmp_path, [site], force_exclude=True) == []


def test_each_file_once_and_missing_path_reported(tmp_path, monkeypatch):
    _tree(tmp_path, {"a.py": TORCH})
    monkeypatch.chdir(tmp_path)
    cands = list(discover(["a.py", ".", "nope.py"], root=tmp_path))
    assert [c.display for c in cands] == ["a.py", "nope.py"]
    assert cands[1].error == "no such file or directory"


def test_symlink_loop_and_directory_symlink_cycle(tmp_path):
    _tree(tmp_path, {"real.py": TORCH})
    os.symlink("loop_b.py", tmp_path / "loop_a.py")
    os.symlink("loop_a.py", tmp_path / "loop_b.py")
    os.symlink(".", tmp_path / "again")  # a directory cycle: never followed
    found = _found(tmp_path)
    assert found == ["loop_a.py", "loop_b.py", "real.py"]
    with pytest.raises(InputError) as err:
        read_bytes(tmp_path / "loop_a.py")
    assert err.value.code == "MIG003" and "symbolic link loop" in err.value.message


def test_thousands_of_files(tmp_path):
    for i in range(3000):
        d = tmp_path / f"d{i % 30}"
        d.mkdir(exist_ok=True)
        (d / f"f{i}.py").write_text("x = 1\n")
    assert len(_found(tmp_path)) == 3000


def test_decode_utf8_bom_and_pep263_cookie():
    assert decode(b"import torch\nx = '\xc3\xa9'\n").text.endswith("'\u00e9'\n")
    bom = decode(b"\xef\xbb\xbfimport torch\n")
    assert bom.encoding == "utf-8-sig" and bom.text == "import torch\n"
    latin = decode(b"# -*- coding: latin-1 -*-\nimport torch\ns = '\xe9'\n")
    assert latin.encoding == "iso-8859-1" and "'\u00e9'" in latin.text


def test_decode_keeps_crlf():
    assert decode(b"import torch\r\nx = 1\r\n").text == "import torch\r\nx = 1\r\n"


@pytest.mark.parametrize(
    ("data", "code", "line", "col", "words"),
    [
        (b"import torch\nx = '\xff'\n", "MIG002", 2, 6, "not valid UTF-8"),
        (b"import torch\nab\0c\n", "MIG002", 2, 3, "NUL bytes"),
        (b"# coding: klingon\nimport torch\n", "MIG002", 1, 1, "encoding"),
    ],
)
def test_decode_errors_name_the_position(data, code, line, col, words):
    with pytest.raises(InputError) as err:
        decode(data)
    assert (err.value.code, err.value.line, err.value.col) == (code, line, col)
    assert words in err.value.message


def test_empty_and_torchless_files_are_skipped():
    with pytest.raises(Skip, match="empty"):
        decode(b"\n\n")
    with pytest.raises(Skip, match="torch"):
        decode(b"import numpy\n")
    assert decode(b"import numpy\n", prefilter=False).text == "import numpy\n"


def test_unreadable_file(tmp_path):
    from robustness._cli import unprivileged  # tests/robustness: drops root's DAC override

    p = tmp_path / "secret.py"
    p.write_text(TORCH)
    p.chmod(0)
    code = ("import sys\nfrom pathlib import Path\nfrom migrator.fileio import InputError, read_bytes\n"
            "try:\n    read_bytes(Path(sys.argv[1]))\nexcept InputError as exc:\n    print(exc)\n")
    proc = subprocess.run(unprivileged([sys.executable, "-c", code, str(p)]), capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "cannot read" in proc.stdout


def test_write_atomic_keeps_mode_encoding_and_symlink(tmp_path):
    real = tmp_path / "real.py"
    real.write_bytes(b"# -*- coding: latin-1 -*-\nimport torch\n")
    real.chmod(0o750)
    link = tmp_path / "link.py"
    os.symlink("real.py", link)
    decoded = decode(link.read_bytes(), os.stat(link))
    write_atomic(link, decoded.text + "s = '\u00e9'\n", decoded)
    assert link.is_symlink()
    assert real.read_bytes().endswith(b"s = '\xe9'\n")
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o750
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.py", "real.py"]  # no temp left


def test_write_atomic_refuses_a_file_changed_meanwhile(tmp_path):
    p = tmp_path / "t.py"
    p.write_text(TORCH)
    decoded = decode(p.read_bytes(), os.stat(p))
    p.write_text(TORCH + "# edited by someone else, longer now\n")
    with pytest.raises(InputError, match="changed on disk"):
        write_atomic(p, "x = 1\n", decoded)
    assert p.read_text().endswith("longer now\n")


def test_write_new_creates_parents(tmp_path):
    write_new(tmp_path / "a" / "b" / "out.py", "x = 1\n")
    assert (tmp_path / "a" / "b" / "out.py").read_text() == "x = 1\n"


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("import torch\nloss.backward()\nprint(1)\n", "import torch\nrt.backward(loss)\nprint(1)\n"),
        ("import torch\nloss.backward()", "import torch\nrt.backward(loss)"),  # no final newline
        ("import torch\r\nloss.backward()\r\n", "import torch\r\nrt.backward(loss)\r\n"),
        ("import torch\n\x0cx = 1\nloss.backward()\n", "import torch\n\x0cx = 1\nrt.backward(loss)\n"),
        ("import torch\n", "import torch\nfrom runtime import Runtime\n"),
    ],
)
def test_diff_applies_with_git_apply(tmp_path, before, after):
    sub = tmp_path / "pkg"
    sub.mkdir()
    (sub / "t.py").write_bytes(before.encode())
    patch = unified_diff(before, after, "pkg/t.py")
    assert patch.startswith("--- a/pkg/t.py\n+++ b/pkg/t.py\n")
    (tmp_path / "fix.patch").write_bytes(patch.encode())
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True, timeout=60)
    done = subprocess.run(["git", "apply", "fix.patch"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert (sub / "t.py").read_bytes() == after.encode()


def test_no_diff_for_identical_text():
    assert unified_diff("a\n", "a\n", "t.py") == ""
