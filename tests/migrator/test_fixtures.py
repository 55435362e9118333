"""Every fixture folder x every target: output, findings, compilability and fixed point."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrator.engine import migrate_source
from migrator.options import Options
from migrator.results import Status
from migrator.targets import VOCABULARIES

RULES = Path(__file__).resolve().parents[2] / "fixtures" / "rules"
TARGETS = tuple(VOCABULARIES)


def _cases():
    for folder in sorted(p for p in RULES.iterdir() if (p / "input.py").exists()):
        for target in TARGETS:  # every target with a vocabulary (accelerate included)
            if (folder / f"expected.{target}.py").exists():
                yield pytest.param(folder, target, id=f"{folder.name}-{target}")


def _expected_findings(folder: Path, target: str) -> list[str]:
    path = folder / f"findings.{target}.txt"
    if not path.exists():
        path = folder / "findings.txt"
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("folder,target", list(_cases()))
def test_fixture(folder: Path, target: str) -> None:
    source = (folder / "input.py").read_text()
    expected = (folder / f"expected.{target}.py").read_text()
    options = Options(target=target)
    result = migrate_source(source, path=str(folder / "input.py"), options=options)
    assert not result.internal_error, result.traceback
    assert result.status in (Status.CHANGED, Status.UNCHANGED), result.reason
    assert result.output == expected
    got = sorted(f"{f.line}:{f.col} {f.code}" for f in result.findings)
    assert got == sorted(_expected_findings(folder, target))
    compile(result.output, "expected.py", "exec")
    again = migrate_source(result.output, path="again.py", options=options)
    assert not again.internal_error, again.traceback
    assert again.output == result.output


def test_every_fixture_folder_has_expectations() -> None:
    for folder in RULES.iterdir():
        if folder.is_dir():
            assert (folder / "input.py").exists(), folder
            assert any(folder.glob("expected.*.py")), folder
            assert any(folder.glob("findings*.txt")), folder
            tail = (folder / "input.py").read_text()
            assert "# --- should not trigger ---" in tail, folder
