"""``--write`` is atomic: temp file + rename, verification failures write nothing, SIGKILL loses nothing."""

from __future__ import annotations

import builtins
import os
import signal
import subprocess
import threading
import time
from functools import lru_cache
from pathlib import Path

import pytest
from conftest import FIXTURES, child_env

from migrator import cli
from migrator.engine import migrate_source
from migrator.options import Options
from migrator.results import Status

from ._support import cli_command

EXIT_INTERNAL = 123


def scripts() -> dict[str, str]:
    """The realistic training scripts shipped as fixtures: name -> source."""
    found = {p.name: p.read_text(encoding="utf-8") for p in sorted((FIXTURES / "scripts").glob("*.py"))}
    assert len(found) >= 4, f"expected the fixture training scripts under {FIXTURES / 'scripts'}"
    return found


@lru_cache(maxsize=64)  # the SIGKILL attempts reuse the same scripts: compute each once
def migrated(source: str, path: str) -> str:
    """The fully migrated text, as the engine computes it; the script must need migrating."""
    result = migrate_source(source, path, Options())
    assert result.status is Status.CHANGED, f"{path}: the engine did not migrate it ({result.status}, {result.reason})"
    return result.output


def test_write_replaces_through_a_new_inode_keeping_permissions(tmp_path: Path, monkeypatch) -> None:
    """The file is replaced by a rename from a temp file in the same directory, mode kept."""
    name, source = next(iter(scripts().items()))
    target = tmp_path / name
    target.write_text(source, encoding="utf-8")
    target.chmod(0o751)
    inode = target.stat().st_ino
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src, dst, *args, **kwargs):
        renames.append((os.fspath(src), os.fspath(dst)))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", spy)
    monkeypatch.chdir(tmp_path)
    code = cli.main(["--write", "--jobs", "1", name])
    assert code == 0
    assert target.read_text(encoding="utf-8") == migrated(source, name)
    assert [Path(dst).resolve() for _, dst in renames] == [target.resolve()], renames
    temp = Path(renames[0][0])
    assert temp.parent.resolve() == tmp_path.resolve() and temp.name != name, "temp file not beside the target"
    assert not temp.exists(), "temporary file left behind"
    assert target.stat().st_ino != inode, "file rewritten in place (same inode): a reader could see half of it"
    assert target.stat().st_mode & 0o7777 == 0o751, oct(target.stat().st_mode)


def test_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    """A concurrent reader polling a large file during --write sees only the old or the new text."""
    _, source = max(scripts().items(), key=lambda kv: len(kv[1]))
    filler = "".join(f"def pad_{i}(x):\n    return x * {i}\n\n\n" for i in range(2500))
    source = source.replace("\ndef ", "\n" + filler + "def ", 1)
    target = tmp_path / "big_train.py"
    target.write_text(source, encoding="utf-8")
    expected = migrated(source, "big_train.py")
    seen: set[str] = set()
    bad: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                text = target.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                bad.append(-1)
                seen.add(repr(exc))
                continue
            if text not in (source, expected):
                bad.append(len(text))
            seen.add("new" if text == expected else "old")

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        proc = subprocess.run(cli_command() + ["--write", str(target)], capture_output=True, text=True,
                              timeout=300, env=child_env(), check=False)
    finally:
        stop.set()
        watcher.join(30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not bad, f"reader saw {len(bad)} partial or unreadable versions (lengths {bad[:5]}; {seen})"
    assert "new" in seen and target.read_text(encoding="utf-8") == expected


def test_verification_failure_leaves_the_original_untouched(tmp_path: Path, monkeypatch) -> None:
    """When the migrated text fails to compile, nothing is written and the run says internal error."""
    name, source = next(iter(scripts().items()))
    target = tmp_path / name
    target.write_text(source, encoding="utf-8")
    before = (target.read_bytes(), target.stat().st_mtime_ns, target.stat().st_ino)
    expected = migrated(source, name)
    real_compile = builtins.compile

    def failing_compile(text, *args, **kwargs):
        # Every verification route (compile, ast.parse) rejects the migrated text only.
        if isinstance(text, str) and text == expected:
            raise SyntaxError("forced verification failure", (name, 1, 1, text[:20]))
        return real_compile(text, *args, **kwargs)

    monkeypatch.setattr(builtins, "compile", failing_compile)
    monkeypatch.chdir(tmp_path)
    code = cli.main(["--write", "--jobs", "1", name])
    monkeypatch.undo()
    assert code == EXIT_INTERNAL, f"exit {code}: a verification failure is an internal error"
    assert (target.read_bytes(), target.stat().st_mtime_ns, target.stat().st_ino) == before
    assert not [p for p in tmp_path.iterdir() if p.name != name], list(tmp_path.iterdir())


def test_engine_verify_failure_writes_nothing(tmp_path: Path, monkeypatch) -> None:
    """The engine's own verify step failing (not just compile) is an internal error; no write."""
    import migrator.verify as verify_module

    assert hasattr(verify_module, "verify"), "migrator.verify.verify (the engine's verify step) not found"
    name, source = next(iter(scripts().items()))
    target = tmp_path / name
    target.write_text(source, encoding="utf-8")
    migrated(source, name)
    before = (target.read_bytes(), target.stat().st_mtime_ns, target.stat().st_ino)

    def refuse(*args, **kwargs):
        raise verify_module.VerifyError("forced: not a fixed point")

    monkeypatch.setattr(verify_module, "verify", refuse)
    monkeypatch.chdir(tmp_path)
    code = cli.main(["--write", "--jobs", "1", name])
    assert code == EXIT_INTERNAL, f"exit {code}: a verification failure is an internal error"
    assert (target.read_bytes(), target.stat().st_mtime_ns, target.stat().st_ino) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def _kill_run(tree: Path, originals: dict[Path, str], whole_group: bool, delay: float) -> int:
    """Start ``--write`` over ``tree``; SIGKILL it ``delay`` s after the first file changes."""
    proc = subprocess.Popen(cli_command() + ["--write", "--jobs", "2", "-q", str(tree)], env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if any(_read(p) != text for p, text in originals.items()):
                time.sleep(delay)
                break
            time.sleep(0.002)
        if whole_group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            os.kill(proc.pid, signal.SIGKILL)  # the parent only: pool workers may run on
        proc.wait(timeout=60)
        _wait_group_gone(proc.pid)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return proc.returncode


def _wait_group_gone(pgid: int, timeout: float = 120) -> None:
    """Orphaned workers finish what they hold, then exit; files are checked only after that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.killpg(pgid, signal.SIGKILL)
    pytest.fail(f"processes of the killed run still alive after {timeout}s")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


@pytest.mark.parametrize("attempt", range(4))
def test_sigkill_mid_write_leaves_each_file_original_or_migrated(tmp_path: Path, attempt: int) -> None:
    """Many files, SIGKILL after the first ones are written: nothing half-written, ever."""
    tree = tmp_path / "tree"
    tree.mkdir()
    originals: dict[Path, str] = {}
    expected: dict[str, str] = {}
    for copy in range(6):
        for name, source in scripts().items():
            path = tree / f"c{copy}_{name}"
            path.write_text(source, encoding="utf-8")
            originals[path] = source
            expected.setdefault(source, migrated(source, name))
    whole_group, delay = attempt % 2 == 1, (0.0, 0.0, 0.05, 0.2)[attempt]
    _kill_run(tree, originals, whole_group, delay)
    states = {"original": 0, "migrated": 0}
    broken = []
    for path, source in originals.items():
        text = _read(path)
        if text == source:
            states["original"] += 1
        elif text == expected[source]:
            states["migrated"] += 1
        else:
            broken.append(path.name)
    stray = sorted(p.name for p in tree.iterdir() if p not in originals)
    print(f"attempt {attempt} (kill {'group' if whole_group else 'parent'}, +{delay}s): {states}, "
          f"stray temp files {len(stray)}")
    assert not broken, f"half-written or foreign content in {broken}"
    if delay == 0.0:
        assert states["original"] >= 1, "the run finished before the kill: nothing was interrupted"
    assert states["migrated"] >= 1, "the kill came before any file was written: nothing tested"
    assert not [s for s in stray if s.endswith(".py")], f"stray .py files a later run would migrate: {stray}"
