"""Text prefilter: which rules could fire on a source text, decided with regexes before any parse.

Each rule has *anchors*: text that MUST be in the file for the rule to report or change
anything. A rule that finds nothing without an anchor is skipped; a file where no enabled
rule has an anchor is not parsed at all. Anchors are necessary conditions, never
heuristics: a file without them provably gives the rule nothing to do. They come from what
each rule's facts are built on (see docs/performance.md, "Prefilter"):

- a qualified name resolved through imports (``torch.optim.Adam``): every dotted part is
  written in the file (in the import or the attribute chain), so the part's word is enough;
- an attribute or method name (``x.backward()``): the identifier is written in the file;
  identifiers cannot be split, and ``\\b`` word boundaries hold around them;
- a string's *value* (``"cuda"``): written as is, or with a backslash escape
  (``"\\x63uda"``), which the device-string anchor also accepts.

The table below is the only place anchors live, so that deciding needs no rule module (nor
libcst, which they import): a file no anchor reaches costs a few regex searches. A planning
rule missing from the table fails a test (tests/migrator/test_prefilter.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache

# What may separate two tokens: whitespace, backslash continuations, comments (inside
# brackets). Possessive quantifiers keep the regex linear on long comment runs.
_GAP = r"(?:\s|\\\r?\n|#[^\r\n]*+)*+"



# pattern -> plain substrings one of which it needs: ``in`` (memchr speed) rules most files
# out before the slower regex runs (5 ms -> well under 1 ms per corpus file).
_HINTS: dict[str, tuple[str, ...]] = {}


def _hinted(pattern: str, hints: tuple[str, ...]) -> str:
    _HINTS[pattern] = hints
    return pattern


def words(*names: str) -> str:
    """Any of ``names`` as a whole identifier."""
    return _hinted(r"\b(?:" + "|".join(re.escape(n) for n in names) + r")\b", names)


def text(*parts: str) -> str:
    """Any of ``parts`` anywhere (also inside longer identifiers)."""
    return _hinted("|".join(re.escape(p) for p in parts), parts)


def method(name: str) -> str:
    """An attribute access ``.name`` (gaps allowed between the dot and the name)."""
    return _hinted(rf"\.{_GAP}{re.escape(name)}\b", (name,))


BACKWARD = words("backward")  # bare backward sites and the wrapper's own backward
LOADER = words("DataLoader")
# Models are bindings whose parameters reach a torch.optim optimizer, or modules updated by
# hand in a loop over ``.parameters()`` that reads ``.grad``.
MODELS: tuple = (words("optim"), (text("parameters"), text("grad")))
# The value of a device string ("cuda", "cpu:0", ...), written plainly or through escapes.
DEVICE_STRING = _hinted(r"\b(?:cuda|cpu|mps|xpu)\b|\\[xuUN0-7\r\n]", ("cuda", "cpu", "mps", "xpu", "\\"))
# ``x = 0`` (an integer literal, possibly parenthesised) assigned to a name or attribute.
INT_ASSIGN = r"=(?:[\s(]|\\\r?\n|#[^\r\n]*+)*+\d"

# code -> anchors (any one alternative suffices; a tuple alternative needs all its parts).
ANCHORS: dict[str, tuple] = {
    # torch.device / device= / set_device / torch.accelerator; if-chains of device strings;
    # an integer literal used as a device through ``.to(x)`` (``.cuda(x)`` is "cuda").
    "MIG101": (
        words("device", "set_device", "current_accelerator"),
        DEVICE_STRING,
        (method("to"), INT_ASSIGN),
    ),
    "MIG102": MODELS,
    "MIG103": (LOADER,),
    "MIG104": (text("cuda"),),  # .cuda(), "cuda" literals, torch.cuda.set_device
    "MIG105": (words("is_available"),),  # cuda = True if torch.cuda.is_available() else False
    "MIG202": MODELS,
    "MIG203": MODELS,
    "MIG204": (BACKWARD,),
    "MIG205": (words("autocast", "GradScaler"),),
    "MIG206": (BACKWARD,),
    "MIG207": (text("clip_grad_"),),  # clip_grad_norm(_), clip_grad_value_
    "MIG208": (words("DataParallel", "data_parallel"),),
    "MIG209": MODELS,
    "MIG210": MODELS,
    "MIG211": MODELS,
    "MIG213": (words("register_buffer"),),
    "MIG301": (LOADER,),
    "MIG302": (LOADER,),
    "MIG303": (BACKWARD,),
    "MIG401": (words("print"),),
    "MIG402": (words("save"),),
    "MIG403": (words("load"),),
    "MIG404": (words("save"),),
    "MIG405": (
        text("download"),
        words("makedirs", "mkdir", "urlretrieve", "load_dataset", "requests", "extractall",
              "extract", "unpack_archive"),
    ),
    # save_image, savefig, imsave, np.save*, torch.onnx.export, df.to_csv..., open(.., "w")
    "MIG406": (text("save"), words("onnx", "to_csv", "to_json", "to_parquet", "open", "write_text", "write_bytes")),
    "MIG407": (LOADER,),
    "MIG408": (BACKWARD,),  # loops that train: a backward, bare or through the wrapper
    "MIG409": (words("manual_seed"),),
    "MIG901": (
        words(
            "init_process_group", "DistributedDataParallel", "DistributedSampler", "spawn",
            "start_processes", "FullyShardedDataParallel", "fully_shard", "initialize",
            "Accelerator", "distributed",  # torch.distributed.tensor / device_mesh / ... calls
        ),
    ),
    "MIG902": (words("share_memory", "multiprocessing"),),
    "MIG903": (words("optim"),),
    # a wrapper object built at module level, or a module-form class's base
    "MIG904": (words("Runtime", "Fabric", "Accelerator", "LightningModule", "TrainModule"),),
}


def anchors_of(rule: type) -> tuple | None:
    """The rule's anchors; None: it has none (a test fails for such a planning rule)."""
    return ANCHORS.get(rule.code)


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _holds(alternative, source: str, seen: dict[str, bool]) -> bool:
    parts = (alternative,) if isinstance(alternative, str) else alternative
    for p in parts:
        if p not in seen:  # several rules share anchors: search each pattern once per text
            hints = _HINTS.get(p)
            seen[p] = (hints is None or any(h in source for h in hints)) and (
                _compiled(p).search(source) is not None
            )
        if not seen[p]:
            return False
    return True


def candidate_rules(source: str, rules: Iterable[type]) -> frozenset[str]:
    """Codes of ``rules`` that may report or change something in ``source``."""
    seen: dict[str, bool] = {}
    out = set()
    for rule in rules:
        alternatives = anchors_of(rule)
        if alternatives is None or any(_holds(a, source, seen) for a in alternatives):
            out.add(rule.code)
    return frozenset(out)


def planning_rules() -> list[type]:
    """Every registered rule that plans edits (input-level MIG0xx rules have no ``plan``)."""
    from migrator.rules.base import all_rules

    return [r for r in all_rules() if hasattr(r, "plan")]


def rules_to_run(source: str, options) -> frozenset[str]:
    """Codes of the enabled rules that may fire on ``source``; empty: nothing to do here.

    Read from ``ANCHORS`` alone (every planning rule is there): no rule module is imported.
    """
    seen: dict[str, bool] = {}
    return frozenset(
        code
        for code, alternatives in ANCHORS.items()
        if options.wants(code) and any(_holds(a, source, seen) for a in alternatives)
    )
