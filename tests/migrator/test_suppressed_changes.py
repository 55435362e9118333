"""A suppressed or deselected finding has no effect at all: not its edits, not what it feeds
other rules (wrapper defaults, imports it frees, rewrites that rely on it)."""

from __future__ import annotations

import textwrap

import pytest

from migrator.engine import migrate_source
from migrator.options import Options
from migrator.results import Status

AUTOCAST = textwrap.dedent(
    """\
    import torch
    import torch.nn.functional as F
    from torch.cuda.amp import autocast

    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)


    def train_step(x, y):
        optimizer.zero_grad()
        with autocast(){first}
            loss = F.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()


    def evaluate(x):
        with autocast(){second}
            return model(x)
    """
)
IGNORE = ":  # migrate: ignore[MIG205]"

SCALER = textwrap.dedent(
    """\
    import torch
    import torch.nn.functional as F
    from torch.cuda.amp import GradScaler

    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = GradScaler(){on_scaler}


    def train_step(x, y):
        optimizer.zero_grad()
        loss = F.mse_loss(model(x), y)
        scaler.scale(loss).backward(){on_backward}
        scaler.step(optimizer)
        scaler.update()
    """
)


def migrated(source: str, **options) -> str:
    result = migrate_source(source, path="train.py", options=Options(**options))
    assert result.status is Status.CHANGED, result.reason
    again = migrate_source(result.output, path="train.py", options=Options(**options))
    assert again.status is Status.UNCHANGED, again.reason  # still a fixed point
    return result.output


def test_suppressed_autocast_keeps_it_and_sets_no_precision():
    out = migrated(AUTOCAST.format(first=IGNORE, second=IGNORE))
    assert "Runtime()" in out and "precision" not in out
    assert out.count("with autocast():  # migrate: ignore[MIG205]") == 2
    assert "from torch.cuda.amp import autocast" in out


@pytest.mark.parametrize(
    "options", [{"ignore": ("MIG205",)}, {"select": ("MIG201", "MIG202", "MIG204")}]
)
def test_deselected_autocast_sets_no_precision(options):
    out = migrated(AUTOCAST.format(first=":", second=":"), **options)
    assert "precision" not in out and out.count("with autocast():") == 2


def test_one_of_two_autocasts_suppressed_keeps_the_import_it_uses():
    # The kept autocast still sets the precision; the import is still read by the other one.
    out = migrated(AUTOCAST.format(first=IGNORE, second=":"))
    assert 'Runtime(precision="16-mixed" if torch.cuda.is_available() else "32-true")' in out
    assert "from torch.cuda.amp import autocast" in out
    assert "with autocast():  # migrate: ignore[MIG205]" in out
    assert "    return model(x)" in out and out.count("autocast()") == 1


def test_import_suppressed_autocasts_rewritten():
    src = AUTOCAST.format(first=":", second=":").replace(
        "import autocast", "import autocast  # migrate: ignore[MIG205]"
    )
    out = migrated(src)
    assert "from torch.cuda.amp import autocast  # migrate: ignore[MIG205]" in out
    assert "with autocast()" not in out and "precision=" in out


def test_suppressed_scaled_backward_keeps_the_scaler():
    # MIG205 removing the scaler relies on MIG204 rewriting scaler.scale(loss).backward().
    src = SCALER.format(on_scaler="", on_backward="  # migrate: ignore[MIG204]")
    out = migrated(src)
    assert "scaler = GradScaler()" in out and "from torch.cuda.amp import GradScaler" in out
    assert "scaler.scale(loss).backward()  # migrate: ignore[MIG204]" in out
    assert "scaler.step(optimizer)" in out and "scaler.update()" in out


def test_suppressed_scaler_keeps_the_loss_scaled():
    # The user keeps the GradScaler: scaler.step() unscales, so the loss must stay scaled.
    src = SCALER.format(on_scaler="  # migrate: ignore[MIG205]", on_backward="")
    result = migrate_source(src, path="train.py")
    out = result.output
    assert "    rt.backward(scaler.scale(loss))\n" in out
    assert "scaler.step(optimizer)" in out and "scaler.update()" in out
    msg = next(f.message for f in result.findings if f.code == "MIG204")
    assert msg.endswith("rt.backward(scaler.scale(loss))")
    assert migrate_source(out, path="train.py").status is Status.UNCHANGED


def test_unsuppressed_scaler_still_fully_removed():
    out = migrated(SCALER.format(on_scaler="", on_backward=""))
    assert "scaler" not in out and "GradScaler" not in out and "rt.backward(loss)" in out


BACKWARD_INPUT = """import torch

model = torch.nn.Linear(2, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(2):
    optimizer.zero_grad()
    model(torch.ones(4, 2)).sum().backward(){suffix}
    optimizer.step()
"""


def test_edits_inside_a_backward_expression_compose_with_its_rewrite():
    # MIG204 builds rt.backward(...) from the loss as the other rules left it: the CPU input
    # MIG102 moves inside the loss expression reaches the device (it was dropped before).
    out = migrated(BACKWARD_INPUT.format(suffix=""))
    assert "    rt.backward(model(torch.ones(4, 2, device=rt.device)).sum())\n" in out
    # Suppressing MIG102 on that line leaves the tensor alone; the backward is still rewritten.
    out = migrated(BACKWARD_INPUT.format(suffix="  # migrate: ignore[MIG102]"))
    assert "    rt.backward(model(torch.ones(4, 2)).sum())  # migrate: ignore[MIG102]\n" in out
