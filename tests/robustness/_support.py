"""Helpers shared by the robustness tests: targets, the CLI command, AST checks, result checks."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

from migrator.engine import migrate_source
from migrator.options import TARGETS, Options
from migrator.program import Role
from migrator.results import FileResult, Status

# Names a target module might use to list its targets; the first one found wins. The
# contract (docs/internals.md) names the module, not the attribute, so accept the likely ones.
_TARGET_LISTINGS = ("available_targets", "target_names", "names", "TARGETS", "VOCABULARIES", "REGISTRY")


def implemented_targets() -> tuple[list[str], str | None]:
    """The targets ``migrator.targets`` says exist, and an error text when it cannot say."""
    try:
        module = importlib.import_module("migrator.targets")
    except Exception as exc:  # noqa: BLE001 - any import failure is reported the same way
        return [], f"cannot import migrator.targets to list the implemented targets: {exc!r}"
    for attr in _TARGET_LISTINGS:
        value = getattr(module, attr, None)
        if value is None:
            continue
        names = value() if callable(value) else value
        names = [n for n in names if isinstance(n, str)]
        if names:
            unknown = sorted(set(names) - set(TARGETS))
            if unknown:
                return [], f"migrator.targets.{attr} lists targets Options does not know: {unknown}"
            return names, None
    public = sorted(n for n in dir(module) if not n.startswith("_"))
    return [], f"migrator.targets lists no targets under any of {_TARGET_LISTINGS}; it has {public}"


def target_params() -> list[str]:
    """Names to parametrise tests with; a placeholder that fails clearly when none can be listed."""
    names, error = implemented_targets()
    return names or [f"<no targets: {error}>"]


def require_target(target: str) -> None:
    """Fail (never skip) when the parametrised target is the no-targets placeholder."""
    import pytest

    if target.startswith("<no targets"):
        pytest.fail(target)


def cli_command() -> list[str]:
    """The real ``migrate`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("migrate")
    if script.exists():
        return [str(script)]
    # Not installed as a console script (plain checkout on PYTHONPATH): same entry point.
    return [sys.executable, "-c", "import sys; from migrator.cli import main; sys.exit(main())"]


def bare_backward_lines(source: str) -> list[int]:
    """Lines of ``.backward()`` calls that bypass the wrapper.

    The wrapper API is ``wrapper.backward(loss)`` (one positional argument); the tensor API is
    ``loss.backward()`` / ``scaler.scale(loss).backward()`` (no positional argument). Lightning's
    ``self.manual_backward(loss)`` is not named ``backward`` and so never matches.
    """
    bare = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr != "backward":
                continue
            receiver = node.func.value
            if not node.args or isinstance(receiver, ast.Call):
                bare.append(node.lineno)
    return bare


def describe(result: FileResult) -> str:
    """A short, readable summary of a result for assertion messages."""
    lines = [f"status={result.status.value} reason={result.reason!r} internal={result.internal_error}"]
    lines += [f.render(result.path) for f in result.findings[:10]]
    if result.traceback:
        lines.append(result.traceback.rstrip()[-3000:])
    return "\n".join(lines)


def check_output(source: str, path: str, target: str) -> tuple[FileResult, list[str]]:
    """Migrate ``source`` and check the invariants every output keeps; returns the problems.

    Invariants: ``migrate_source`` returns (never raises) a FileResult; no internal error; the
    status agrees with the text (CHANGED iff output differs); anything not CHANGED comes back
    byte-identical; a CHANGED output parses, compiles and is a fixed point; a file the
    prefilters skipped gives the rules nothing to do when they run anyway.

    Every file is migrated as a training script (``Role()``), whatever it is: most corpus
    files are helper modules or scripts that do not train, which alone get (almost) no rule's
    rewrite, and the sweep is here to exercise the rules (tests/migrator/test_program.py
    covers the roles).
    """
    options = Options(target=target, role=Role())
    result = migrate_source(source, path, options)
    problems: list[str] = []
    if not isinstance(result, FileResult):
        return result, [f"migrate_source returned {type(result).__name__}, not FileResult"]
    if result.internal_error or result.traceback:
        problems.append(f"internal error:\n{describe(result)}")
    if result.status is Status.CHANGED:
        if result.output == source:
            problems.append("status CHANGED but the output equals the source")
        problems += _check_migrated(result.output, path, options)
    elif result.output != source:
        problems.append(f"status {result.status.value} but the output differs from the source")
    if result.status is Status.FAILED and not result.reason:
        problems.append("FAILED without a reason")
    if result.status is Status.UNCHANGED and (result.reason or "").endswith("prefilter)"):
        problems += _skipped_soundly(source, path, options, result.reason)
    return result, problems


def _skipped_soundly(source: str, path: str, options: Options, reason: str) -> list[str]:
    """A file the prefilters (text, code) skipped: without them the rules must find nothing."""
    from tests.conftest import prefilters_off

    with prefilters_off(options):
        full = migrate_source(source, path, options)
    if full.findings or full.status is Status.CHANGED:
        codes = sorted({f.code for f in full.findings})
        return [f"skipped ({reason}), but without the prefilters the rules report {codes}"]
    return []


def _check_migrated(output: str, path: str, options: Options) -> list[str]:
    """A rewritten text must compile and survive a second run unchanged."""
    try:
        compile(output, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return [f"output does not compile: {exc}"]
    again = migrate_source(output, path, options)
    if again.internal_error or again.traceback:
        return [f"internal error on the second run:\n{describe(again)}"]
    if again.output != output or again.status is Status.CHANGED:
        return [f"not a fixed point: second run returned {again.status.value}\n" + _first_diff(output, again.output)]
    return []


def _first_diff(a: str, b: str) -> str:
    import difflib

    diff = difflib.unified_diff(a.splitlines(), b.splitlines(), "first run", "second run", lineterm="", n=1)
    return "\n".join(list(diff)[:40])
