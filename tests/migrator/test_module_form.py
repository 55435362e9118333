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
        assert ("def training_step(self, batch, batch_idx):" in out) == converted, folder
        assert (".backward(" in out) is False or not converted, folder
        if not converted:
            assert "Fabric()" in out or "Runtime()" in out, folder


def test_fallback_message_names_the_reason_and_the_wrapper_target() -> None:
    src = (MODULE / "fallback_loss_break" / "input.py").read_text()
    result = migrate_source(src, "train.py", Options(target="lightning", form="module"))
    (note,) = [f for f in result.findings if f.code == "MIG503"]
    assert "`break` inside the training loop" in note.message
    assert "--target fabric" in note.message
    assert note.fixed is False


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
    [("lbfgs_fit", "MIG503"), ("lstm_lm", "MIG504"), ("dcgan", "MIG504"), ("mnist_cnn", "MIG503"),
     ("class_trainer", "MIG502"), ("transformer_lm", "MIG507"), ("notebook_style", "MIG501")],
)
def test_whole_scripts_convert_or_say_why(script: str, code: str) -> None:
    src = (MODULE.parent / "scripts" / f"{script}.py").read_text()
    for target in TARGETS:
        result = migrate_source(src, f"{script}.py", Options(target=target, form="module"))
        assert not result.internal_error, result.traceback
        assert code in {f.code for f in result.findings}, (target, result.findings)
