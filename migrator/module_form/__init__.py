"""The module form: rewrite the training loop as a LightningModule-style class plus a Trainer, or fall back."""

from __future__ import annotations

import dataclasses

import libcst as cst

from migrator.options import Options
from migrator.results import FileResult, Finding, Status


def migrate_module(module: cst.Module, source: str, path: str, options: Options, suppressed) -> FileResult:
    """Migrate the parsed ``module`` to ``options.target``'s module form.

    A script whose loop does not fit falls back to the wrapper form (of
    ``ModuleVocabulary.fallback_target``) with a MIG5xx finding saying why; the file is either
    converted whole or not at all.
    """
    from migrator.analysis import analyse
    from migrator.module_form.amp import strip_amp, uses_amp
    from migrator.module_form.shape import Misfit, NoFit, analyse_shape
    from migrator.targets import MODULE_VOCABULARIES

    vocab = MODULE_VOCABULARIES[options.target]
    facts = analyse(module)
    if _already_module(facts, vocab):
        return FileResult(path=path, source=source, output=source, status=Status.UNCHANGED)
    pos = facts.ix.pos
    try:
        precision = None
        if uses_amp(facts):  # autocast / GradScaler: analysed without them, the Trainer's precision
            stripped, precision = strip_amp(facts)
            facts = analyse(stripped)
            pos = _original_pos(facts.ix.pos, source, stripped.code)
        shape = analyse_shape(facts)
        if precision is not None:
            shape.trainer_args.insert(0, ("precision", precision))
        from migrator.module_form.edit import convert

        output, class_name = convert(facts, shape, vocab)
    except NoFit as exc:
        converted = _as_steps(facts, vocab, exc.misfit) if precision is None else None
        if converted is not None and not isinstance(converted, Misfit):
            # a script the wrapper form refuses (already distributed: tensor parallel, a
            # process group of its own; unsafe on N processes) is refused here too
            wrapper = _fallback(source, path, options, vocab, pos, exc.misfit)
            if any(f.code.startswith("MIG9") for f in wrapper.findings):
                return wrapper
            return _steps_result(converted, source, path, options, vocab, pos, suppressed)
        if converted is not None:  # say why neither form fits
            exc.misfit = dataclasses.replace(exc.misfit, reason=(
                f"{exc.misfit.reason}; nor as one training step per pass of the loop: {converted.reason}"))
        if options.role is not None and (options.role.library or not options.role.trains):
            # a helper module or a script that does not train: no training loop here to
            # convert, so nothing "fell back" (it gets the wrapper form's helper treatment, as
            # under --form wrapper)
            return _fallback(source, path, options, vocab, pos, None)
        return _fallback(source, path, options, vocab, pos, exc.misfit)
    _verify(output, path, vocab)
    line, col = pos(shape.epoch_loop)
    findings = [Finding(line, col, "MIG501", (
        f"training loop converted to {class_name}({vocab.base_class}) + {vocab.trainer}: "
        f"checkpoints/last.ckpt is written every epoch and resumed; run with {vocab.launch_hint}"
    ))]
    findings = [f for f in findings if options.wants(f.code) and not suppressed(f.code, f.line)]
    return FileResult(path=path, source=source, output=output, status=Status.CHANGED, findings=tuple(findings))


# Misfits of the batch-loop form that a loop of steps can still express: no DataLoader batch
# loop (full-batch epochs, episodes, synthetic batches), LBFGS closures, manual updates,
# stops and skips inside the loop.
_STEPS_CODES = ("MIG502", "MIG503", "MIG504", "MIG505", "MIG506")


def _as_steps(facts, vocab, misfit):
    """The file converted as one training step per pass of its training loop, or None."""
    from migrator.module_form.shape import NoFit
    from migrator.module_form.steps import analyse_steps, convert_steps

    if misfit.code not in _STEPS_CODES or not facts.backwards:
        return None
    try:
        steps = analyse_steps(facts)
        output, class_name = convert_steps(facts, steps, vocab)
    except NoFit as exc:
        return exc.misfit
    return steps, output, class_name


def _steps_result(converted, source, path, options, vocab, pos, suppressed) -> FileResult:
    steps, output, class_name = converted
    _verify(output, path, vocab, steps=True)
    line, col = pos(steps.loop)
    findings = [Finding(line, col, "MIG501", (
        f"training loop converted to {class_name}({vocab.base_class}) + {vocab.trainer}, one training step per "
        f"pass of the loop (manual optimization); every process runs every pass (nothing to shard), no checkpoint "
        f"is written; run with {vocab.launch_hint}"
    ))]
    findings = [f for f in findings if options.wants(f.code) and not suppressed(f.code, f.line)]
    return FileResult(path=path, source=source, output=output, status=Status.CHANGED, findings=tuple(findings))


def _already_module(facts, vocab) -> bool:
    """A file holding a subclass of the target's module base is already migrated (fixed point)."""
    ix = facts.ix
    for cls in ix.classes:
        for base in cls.bases:
            if ix.imported_qname(base.value) in vocab.base_qnames:
                return True
    return False


def _original_pos(pos, source: str, stripped: str):
    """Positions in the file without its AMP lines mapped back to the original lines (the
    stripped file only lost lines and dedented autocast blocks)."""
    import difflib

    old, new = source.splitlines(), stripped.splitlines()
    lines: dict[int, int] = {}
    matcher = difflib.SequenceMatcher(None, [ln.strip() for ln in old], [ln.strip() for ln in new], autojunk=False)
    for a, b, size in matcher.get_matching_blocks():
        lines.update({b + k + 1: a + k + 1 for k in range(size)})

    def mapped(node):
        line, col = pos(node)
        orig = lines.get(line, line)
        shift = len(old[orig - 1]) - len(old[orig - 1].lstrip()) - (len(new[line - 1]) - len(new[line - 1].lstrip())) \
            if orig <= len(old) and line <= len(new) else 0
        return orig, col + shift

    return mapped


def _fallback(source, path, options, vocab, pos, misfit) -> FileResult:
    from migrator.engine import migrate_source

    wrapper = dataclasses.replace(options, form="wrapper", target=vocab.fallback_target)
    result = migrate_source(source, path, wrapper)
    if misfit is None:
        return result
    line, col = pos(misfit.node)
    note = Finding(line, col, misfit.code, (
        f"not converted to the module form: {misfit.reason}; migrated in the wrapper form "
        f"(--target {vocab.fallback_target}) instead"
    ), fixed=False)
    if not options.wants(misfit.code):
        return result
    return dataclasses.replace(result, findings=tuple(sorted((*result.findings, note))))


def _verify(output: str, path: str, vocab, steps: bool = False) -> None:
    """The output parses, compiles, keeps no bare backward, and is recognised as migrated."""
    from migrator.analysis import analyse
    from migrator.verify import VerifyError

    try:
        again = cst.parse_module(output)
        compile(output, path, "exec", dont_inherit=True)
    except (cst.ParserSyntaxError, SyntaxError) as exc:
        raise VerifyError(f"module-form output does not parse/compile: {exc}") from exc
    facts = analyse(again)
    # (steps: the file's functions the step calls keep theirs, inside the module's forward)
    if any(not (steps and facts.ix.class_of(b.call) is None) for b in facts.backwards):
        raise VerifyError("module-form output keeps a bare .backward()")
    if not _already_module(facts, vocab):
        raise VerifyError("module-form output is not recognised as migrated (not a fixed point)")
