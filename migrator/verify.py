"""Verification of a migrated text: it parses, compiles, keeps no bare backward, and is a fixed point."""

from __future__ import annotations

import libcst as cst


class VerifyError(Exception):
    """The migrated output is broken: an internal error of the migrator, never written out."""


def verify(output: str, path: str, replan) -> None:
    """Raise ``VerifyError`` unless ``output`` compiles and ``replan(module)`` plans no edit.

    ``replan`` runs analysis + planning on the parsed output and returns
    ``(edits, bare_backward_lines)``; bare backward lines are those not suppressed by the user.
    """
    try:
        module = cst.parse_module(output)
    except cst.ParserSyntaxError as exc:
        raise VerifyError(f"migrated output does not parse: {exc}") from exc
    try:
        compile(output, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise VerifyError(f"migrated output does not compile: {exc}") from exc
    edits, bare = replan(module)
    if bare:
        raise VerifyError(f"bare .backward() left on line(s) {', '.join(map(str, bare))}")
    if edits:
        raise VerifyError("migrating the output again would change it (not a fixed point)")
