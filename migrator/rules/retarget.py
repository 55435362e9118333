"""MIG904: a file already migrated to another target (or form) is reported, not migrated again."""

from __future__ import annotations

import libcst as cst

from migrator import anchors_spec as A
from migrator.rules.base import Rule
from migrator.targets import MODULE_VOCABULARIES, VOCABULARIES


class AlreadyMigrated(Rule):
    """A script already migrated to another target is reported and left unchanged.

    **What**: migrating a file that has another target's wrapper object at module level
    (`rt = Runtime()`, `fabric = Fabric()`, `accelerator = Accelerator()`), or a module-form
    class (`L.LightningModule`, `runtime.TrainModule`) when the wrapper form is asked for,
    changes nothing and reports where that object or class is. Migrating it again with its
    own target stays a no-op (incremental use of the wrapper the file has).

    **Why**: the rules treat the other target's calls as plain code: a second wrapper would
    wrap the first one's results (`fabric.strategy.reduce_boolean_decision(rt.reduce_...)`),
    set up models twice, or drive a Trainer's module from a hand-written loop. Translating
    one target's calls into another's is not a migration the rules can prove right (the
    targets treat evaluation data and metrics differently), so the original script is the
    one to migrate.

    **Before**: `rt = Runtime()` ... migrated with `--target fabric`  **After**: unchanged;
    finding: migrate the original script, or use `--target runtime`
    """

    code = "MIG904"
    # a wrapper object built at module level, or a module-form class's base
    anchors = A.Any(A.Call("Runtime", "Fabric", "Accelerator"), A.Ident("LightningModule", "TrainModule"))
    name = "already-migrated"
    summary = "already migrated to another target: migrate the original script, or keep its target"

    def plan(self, ctx) -> None:
        found = other_target(ctx.facts, ctx.vocab.name, "wrapper")
        if found is not None:
            ctx.finding(self.code, found[0], found[1], fixed=False)


def other_target(facts, target: str, form: str) -> tuple[cst.CSTNode, str] | None:
    """Where ``facts``' file shows it was migrated to something other than ``target`` in
    ``form`` (its wrapper object, or its module-form class), and what to tell the user."""
    w = facts.wrapper
    if w is not None and (form != "wrapper" or w.target != target):
        cls = VOCABULARIES[w.target].wrapper_class
        return w.stmt, (
            f"file already migrated to target {w.target} ({w.name} = {cls}()); migrate the "
            f"original script, or use --target {w.target}"
        )
    ix = facts.ix
    for node in ix.classes:
        for base in node.bases:
            q = ix.imported_qname(base.value)
            for name, vocab in MODULE_VOCABULARIES.items():
                if q in vocab.base_qnames and (form != "module" or name != target):
                    return node, (
                        f"file already migrated to the module form ({node.name.value} subclasses "
                        f"{ix.code(base.value)}); migrate the original script, or use "
                        f"--target {name} --form module"
                    )
    return None
