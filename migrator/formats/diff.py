"""Unified diffs that `git apply` (and `patch -p1`) accept byte for byte."""

from __future__ import annotations

import difflib

NO_EOL = "\\ No newline at end of file\n"


def unified_diff(before: str, after: str, path: str, context: int = 3) -> str:
    """The diff from ``before`` to ``after`` with ``a/PATH`` / ``b/PATH`` headers.

    Line endings are kept as they are (CRLF files give CRLF diff lines, which git applies
    to CRLF files); a last line without a newline gets git's "No newline" marker.
    """
    if before == after:
        return ""
    a = _lines(before)
    b = _lines(after)
    out = []
    for line in difflib.unified_diff(a, b, f"a/{path}", f"b/{path}", n=context, lineterm="\n"):
        if line.endswith("\n"):
            out.append(line)
        else:
            out.append(line + "\n" + NO_EOL)
    return "".join(out)


def _lines(text: str) -> list[str]:
    """Split on "\n" only, as git does (str.splitlines also splits on form feeds etc.)."""
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines
