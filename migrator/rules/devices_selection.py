"""MIG101/MIG105: device selection becomes the wrapper's device; GAN-style `cuda` flags follow it."""

from __future__ import annotations

import libcst as cst

from migrator import anchors_spec as A
from migrator.plan import PlanContext
from migrator.rules.base import Rule


class DeviceSelectionRule(Rule):
    """Take the device from the wrapper, keeping the variable as an alias.

    **What**: `device = torch.device("cuda" if use_cuda else "cpu")`, `device = "cuda:0"`,
    `device = 0` (used as a device), `torch.accelerator.current_accelerator()` and
    `if torch.cuda.is_available(): ... elif mps ...: ... else: ...` chains become
    `device = rt.device`; so does `device = 0 if torch.cuda.is_available() else "cpu"`.
    Everything that receives `device` (function parameters, `self.device`, globals) keeps
    working unchanged. CLI flags such as `--no-cuda` still parse; the launcher now picks the
    accelerator. Where the device is printed (`f"Using {device}"`, `print(device)`), the
    port prints what the original printed: `device.type` for a device chosen without an index
    (`"cuda"`, not the wrapper's `cuda:0`), the process's local rank for an integer id
    (`f"[GPU{self.gpu_id}]"` -> `f"[GPU{rt.local_rank}]"`).

    **Why**: each process must use its own device (`cuda:<local_rank>`), which only the
    wrapper knows.

    **Before**: `device = torch.device("cuda" if use_cuda else "cpu")`
    **After**: `device = rt.device`
    """

    code = "MIG101"
    # torch.device / device= / set_device / torch.accelerator; if-chains of device strings;
    # an integer literal used as a device through ``.to(x)`` (``.cuda(x)`` is "cuda").
    anchors = A.Any(
        A.Call("device", "set_device", "current_accelerator"),
        A.DEVICE_STRING_VALUE,
        A.Custom(
            text=(A.method("to"), A.INT_ASSIGN),
            code='s.int_assigned and s.uses("to", "cuda", "device", "set_device")',
        ),
    )
    name = "device-selection"
    summary = "Take the device from the wrapper: device = rt.device"

    def plan(self, ctx: PlanContext) -> None:
        # A printed name two selections reach (`DEVICE = ...` at the top and again in main())
        # is rewritten once, by the first, and only when they agree on what it printed.
        printed: dict[cst.CSTNode, set[str]] = {}
        shown = []  # per selection: what its printed loads showed, and those loads
        for d in ctx.facts.devices:
            kind = ctx.facts.printed_kind(d) if d.target is not None else None
            refs = ctx.facts.printed_refs(d) if kind is not None else []
            shown.append((kind, refs))
            for ref in refs:
                printed.setdefault(ref, set()).add(kind)
        claimed: set[cst.CSTNode] = set()
        for d, (kind, refs) in zip(ctx.facts.devices, shown):
            change = ctx.finding(self.code, d.stmt, "")
            device = change.code_text(ctx.vocab.device)
            if d.target is None:
                change.replace(d.stmt, cst.parse_expression(device))
                change.message = f"the wrapper picks each process's device: pass {device}"
                continue
            if d.assign is not None:
                change.replace(d.assign.value, cst.parse_expression(device))
            else:
                new = cst.parse_statement(f"{ctx.ix.code(d.target)} = {device}\n")
                change.replace(d.stmt, new.with_changes(leading_lines=d.stmt.leading_lines))
            change.message = (
                f"the wrapper picks each process's device: {ctx.ix.code(d.target)} = {device} "
                "(device flags still parse but no longer choose it; the launcher does)"
            )
            _keep_printed(ctx, kind, refs, change, printed, claimed)


def _keep_printed(ctx: PlanContext, kind: str | None, refs: list, change, printed: dict, claimed: set) -> None:
    """Printed devices keep printing what they printed: ``"cuda"`` (not the wrapper's
    ``cuda:0``) for a device chosen without an index, the process's GPU index for an integer id.
    ``kind``/``refs``: the selection's ``printed_kind`` and printed loads."""
    refs = [r for r in refs if r not in claimed and len(printed.get(r, ())) == 1]
    claimed.update(refs)
    for ref in refs:
        text = ctx.ix.code(ref)
        if kind == "type":
            new = f"{text}.type"
        else:
            rank = change.code_text(ctx.vocab.local_rank)
            q = _quote_inside(ctx, ref)
            new = rank if kind == "index" else f"({rank} if {text}.type == {q}cuda{q} else {text}.type)"
        change.replace(ref, cst.parse_expression(new))
    if refs:
        change.message += "; printed devices print what they printed"


def _quote_inside(ctx: PlanContext, ref) -> str:
    """A quote character a string literal inside the f-strings around ``ref`` may use."""
    quote = '"'
    for a in ctx.ix.ancestors(ref):
        if isinstance(a, cst.FormattedString):
            quote = "'" if a.quote == '"' else '"' if a.quote == "'" else quote
    return quote


class CudaFlagRule(Rule):
    """Derive a PyTorch-GAN style `cuda` flag from the wrapper's device.

    **What**: `cuda = True if torch.cuda.is_available() else False`, when it selects tensor
    types (`Tensor = torch.cuda.FloatTensor if cuda else torch.FloatTensor`), becomes
    `cuda = rt.device.type == "cuda"`.

    **Why**: tensors built from `Tensor(...)` must live where the wrapped model runs.

    **Before**: `cuda = True if torch.cuda.is_available() else False`
    **After**: `cuda = rt.device.type == "cuda"`
    """

    code = "MIG105"
    # cuda = True if torch.cuda.is_available() else False, selecting torch.cuda.*Tensor types
    anchors = A.Custom(
        text=A.words("is_available"),
        code='s.calls("is_available") and any(n.endswith("Tensor") for n in s.idents)',
    )
    name = "cuda-flag"
    summary = 'Derive the cuda flag from the wrapper: cuda = rt.device.type == "cuda"'

    def plan(self, ctx: PlanContext) -> None:
        for flag in ctx.facts.cuda_flags:
            change = ctx.finding(self.code, flag.assign, "")
            text = change.code_text(ctx.vocab.device) + '.type == "cuda"'
            change.replace(flag.assign.value, cst.parse_expression(text))
            change.message = f"follow the wrapper's device: {flag.target.value} = {text}"
