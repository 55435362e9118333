"""Where setup goes (issue 11 #2, #3): an optimizer built on some paths only, a module that
builds its own optimizer, and scripts already split with tensor parallelism."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import libcst as cst
import pytest

from migrator.engine import migrate_source
from migrator.options import Options
from migrator.results import Status
from tests.conftest import child_env, run_cmd

RULES = Path(__file__).resolve().parents[2] / "fixtures" / "rules"
OPTIONAL = RULES / "MIG202_optional_optimizer" / "input.py"
OWN = RULES / "MIG903_own_optimizer" / "input.py"
TARGETS = ("runtime", "fabric", "accelerate")
SETUP = {"runtime": "rt.setup", "fabric": "fabric.setup", "accelerate": "accelerator.prepare"}


def _port(source: str, target: str, **options):
    result = migrate_source(source, path="train.py", options=Options(target=target, **options))
    assert not result.internal_error, result.traceback
    return result


def _setups(node: cst.CSTNode, target: str) -> list[str]:
    """Code of every setup call inside ``node`` (the target's spelling)."""
    found = []

    class Calls(cst.CSTVisitor):
        def visit_Call(self, call: cst.Call) -> None:
            text = cst.Module([]).code_for_node(call)
            if text.startswith(SETUP[target] + "("):
                found.append(text)

    node.visit(Calls())
    return found


def _if_on(module: cst.Module, test: str) -> cst.If:
    for stmt in module.body:
        if isinstance(stmt, cst.If) and module.code_for_node(stmt.test) == test:
            return stmt
    raise AssertionError(f"no top-level `if {test}:`")


@pytest.mark.parametrize("target", TARGETS)
def test_the_model_is_set_up_on_the_path_that_builds_no_optimizer(target):
    """`if args.adam: optimizer = ...` with manual SGD otherwise: each path sets the model up
    once (with the optimizer in the branch, alone on the other); without it the default path
    trains an unwrapped model (gradients never averaged)."""
    result = _port(OPTIONAL.read_text(), target)
    branch = _if_on(cst.parse_module(result.output), "args.adam")
    assert _setups(branch.body, target) == [f"{SETUP[target]}(model, optimizer)"]
    assert branch.orelse is not None, "the path without an optimizer is never set up"
    assert _setups(branch.orelse, target) == [f"{SETUP[target]}(model)"]


@pytest.mark.parametrize("target", ["runtime", "fabric"])
def test_clipping_never_names_an_optimizer_that_may_not_exist(target):
    """runtime and fabric clip through an optimizer; the clip runs on both paths, so torch's
    clip_grad_norm_ stays (a warning says why) instead of a NameError on the default path."""
    result = _port(OPTIONAL.read_text(), target)
    train = next(s for s in cst.parse_module(result.output).body if isinstance(s, cst.FunctionDef))
    code = cst.Module([]).code_for_node(train)
    assert "torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)" in code
    assert "clip_gradients" not in code
    [clip] = [f for f in result.findings if f.code == "MIG207" and f.line == 40]
    assert not clip.fixed and "some paths only" in clip.message


def test_accelerate_clips_through_the_wrapper_without_naming_the_optimizer():
    result = _port(OPTIONAL.read_text(), "accelerate")
    assert "accelerator.clip_grad_norm_(model.parameters(), max_norm=0.5)" in result.output


def _run(cmd: list[str], cwd: Path) -> str:
    proc = run_cmd(cmd, cwd=cwd, env=child_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_both_paths_of_the_runtime_port_run_and_print_the_original_numbers(tmp_path):
    """Before: `rt.clip_gradients(model, optimizer, ...)` on the default (no --adam) path
    raised NameError on 1 process."""
    source = OPTIONAL.read_text()
    original, port = tmp_path / "original.py", tmp_path / "port.py"
    original.write_text(source)
    port.write_text(_port(source, "runtime").output)
    for flags in ([], ["--adam"]):
        expected = _run([sys.executable, str(original), *flags], tmp_path)
        assert _run([sys.executable, str(port), *flags], tmp_path) == expected


def test_an_optimizer_built_in_an_elif_is_left_to_a_human():
    src = textwrap.dedent(
        """
        import torch
        import torch.nn as nn

        model = nn.Linear(4, 4)
        mode = "sgd"
        if mode == "none":
            pass
        elif mode == "sgd":
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        model(torch.randn(2, 4)).sum().backward()
        """
    )
    result = _port(src, "runtime")
    [setup] = [f for f in result.findings if f.code == "MIG202"]
    assert not setup.fixed and "by hand" in setup.message
    assert "rt.setup" not in result.output


@pytest.mark.parametrize("target", TARGETS)
def test_a_module_building_its_own_optimizer_is_refused_not_rebound(target):
    """`self.optim = SGD(self.parameters())` in a layer's `__init__` (layers in a plain list):
    setup cannot rebind `self`. Refused with MIG903 on every target (accelerate used to fail
    with an internal error: a rewrite that was not a fixed point)."""
    source = OWN.read_text()
    result = _port(source, target)
    assert result.status is Status.UNCHANGED
    assert result.output == source
    assert [(f.code, f.fixed) for f in result.findings] == [("MIG903", False)]
    assert "cannot rebind self" in result.findings[0].message


@pytest.mark.parametrize("target", TARGETS)
def test_with_the_refusal_ignored_self_is_still_never_rebound(target):
    result = _port(OWN.read_text(), target, ignore=("MIG903",))
    assert "self, self.optim =" not in result.output
    assert "(self, self.optim)" not in result.output
    [setup] = [f for f in result.findings if f.code == "MIG202" and f.line == 14]
    assert not setup.fixed and "by hand" in setup.message


def test_the_cli_refuses_the_own_optimizer_module_cleanly_on_accelerate(tmp_path):
    script = tmp_path / "forward_forward.py"
    script.write_text(OWN.read_text())
    cmd = [sys.executable, "-m", "migrator", "--target", "accelerate", str(script)]
    proc = run_cmd(cmd, cwd=tmp_path, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "MIG903" in out and "internal error" not in out
    assert script.read_text() == OWN.read_text()


TP = textwrap.dedent(
    """
    import torch
    import torch.nn as nn
    import torch.distributed.tensor.parallel as shard
    from torch.distributed import device_mesh

    mesh = device_mesh.init_device_mesh("cpu", (2,))
    model = shard.parallelize_module(nn.Linear(4, 4), mesh, shard.ColwiseParallel())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    """
)


@pytest.mark.parametrize("target", TARGETS)
def test_tensor_parallel_is_recognised_by_its_imports(target):
    """Aliased module imports, no telling file name: the calls resolve into
    torch.distributed.device_mesh / torch.distributed.tensor.parallel."""
    result = _port(TP, target)
    assert result.status is Status.UNCHANGED and result.output == TP
    codes = [(f.line, f.code, f.fixed) for f in result.findings]
    assert codes == [(7, "MIG901", False), (8, "MIG901", False), (8, "MIG901", False)]
    assert any("parallelize_module" in f.message for f in result.findings)


def test_a_local_function_named_like_the_tensor_parallel_api_is_not_refused():
    src = textwrap.dedent(
        """
        import torch
        import torch.nn as nn


        def parallelize_module(module, mesh):
            return module


        def init_device_mesh(kind, shape):
            return None


        model = parallelize_module(nn.Linear(4, 4), init_device_mesh("cpu", (2,)))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        model(torch.randn(2, 4)).sum().backward()
        optimizer.step()
        """
    )
    result = _port(src, "runtime")
    assert "MIG901" not in {f.code for f in result.findings}
    assert result.status is Status.CHANGED
