"""A file migrated to one target and migrated again: the same target changes nothing, another
target (or form) is refused with MIG904 and changes nothing either."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from migrator.engine import migrate_source
from migrator.options import Options
from migrator.results import Status

SCRIPTS = Path(__file__).resolve().parents[2] / "fixtures" / "scripts"
# Loop exits decided collectively (the reported fabric.strategy.reduce_boolean_decision(rt...)),
# AMP + accumulation, a module-form fit.
NAMES = ("lbfgs_fit", "transformer_lm", "sensor_regression")
WRAPPERS = ("runtime", "fabric", "accelerate")
MODULES = ("lightning", "runtime")


@cache
def migrated(name: str, target: str, form: str = "wrapper") -> str:
    source = (SCRIPTS / f"{name}.py").read_text()
    result = migrate_source(source, path=f"{name}.py", options=Options(target=target, form=form))
    assert result.status is Status.CHANGED, result.reason
    return result.output


def again(text: str, target: str, form: str = "wrapper"):
    result = migrate_source(text, path="migrated.py", options=Options(target=target, form=form))
    assert not result.internal_error, result.traceback
    assert result.output == text
    return result


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("first", WRAPPERS)
@pytest.mark.parametrize("second", WRAPPERS)
def test_wrapper_form_to_wrapper_form(name, first, second):
    text = migrated(name, first)
    result = again(text, second)
    codes = [f.code for f in result.findings]
    if first == second:  # a fixed point, nothing for a human either
        assert result.status is Status.UNCHANGED and not any(c.startswith("MIG9") for c in codes)
        return
    assert codes == ["MIG904"]
    wrapper = {
        "runtime": "rt = Runtime", "fabric": "fabric = Fabric", "accelerate": "accelerator = Accelerator"
    }
    finding = result.findings[0]
    assert finding.message == (
        f"file already migrated to target {first} ({wrapper[first]}()); migrate the original "
        f"script, or use --target {first}"
    )
    assert text.splitlines()[finding.line - 1].startswith(wrapper[first] + "(") and not finding.fixed


@pytest.mark.parametrize("module_target", MODULES)
@pytest.mark.parametrize("second", WRAPPERS)
def test_module_form_to_wrapper_form(module_target, second):
    text = migrated("sensor_regression", module_target, "module")
    result = again(text, second)
    assert [f.code for f in result.findings] == ["MIG904"]
    assert f"use --target {module_target} --form module" in result.findings[0].message


@pytest.mark.parametrize(
    "first", [*(("wrapper", t) for t in WRAPPERS), *(("module", t) for t in MODULES)]
)
@pytest.mark.parametrize("module_target", MODULES)
def test_anything_to_module_form_changes_nothing(first, module_target):
    form, target = first
    text = migrated("sensor_regression", target, form)
    result = again(text, module_target, "module")
    codes = {f.code for f in result.findings}
    fallback = {"lightning": "fabric", "runtime": "runtime"}[module_target]
    if (form, target) == ("module", module_target):
        assert not codes
    elif (form, target) != ("wrapper", fallback):
        # the module form falls back to its wrapper target, which refuses any other
        assert "MIG904" in codes


def test_suppressing_the_refusal_is_the_users_call():
    text = migrated("lbfgs_fit", "runtime")
    text = text.replace("rt = Runtime()", "rt = Runtime()  # migrate: ignore[MIG904]")
    result = migrate_source(text, path="migrated.py", options=Options(target="fabric"))
    assert "MIG904" not in {f.code for f in result.findings}
