"""Which lines of a failed N-process run's stderr say why it failed.

torchrun (``fabric run`` and accelerate's launch go through it) prints each worker's stderr with
a ``[rankN]:`` prefix, then its own ChildFailedError summary, whose last lines
(``error_file: <N/A>``, ``traceback : To enable traceback see ...``) say nothing about the cause.
The cause is the tail of the failing rank's own traceback: the rank torchelastic names as the
root cause (``Root Cause (first observed failure)`` ... ``rank : N``), else the first rank that
printed a traceback.
"""

from __future__ import annotations

import re

_RANK_LINE = re.compile(r"^\[rank(\d+)\]:(.*)$")
_ROOT_CAUSE = re.compile(r"Root Cause \(first observed failure\):.*?^\s*rank\s*:\s*(\d+)",
                         re.DOTALL | re.MULTILINE)


def rank_outputs(stderr: str) -> dict[str, list[str]]:
    """rank -> its ``[rankN]:``-prefixed lines (prefix removed), in order."""
    out: dict[str, list[str]] = {}
    for row in stderr.splitlines():
        m = _RANK_LINE.match(row)
        if m:
            out.setdefault(m.group(1), []).append(m.group(2)[1:] if m.group(2).startswith(" ")
                                                  else m.group(2))
    return out


def failing_rank(stderr: str) -> tuple[str, list[str]] | None:
    """The failing rank and its traceback (from its last ``Traceback`` line on), or None when
    no rank printed one with a ``[rankN]:`` prefix."""
    ranks = rank_outputs(stderr)
    with_traceback = {r: rows for r, rows in ranks.items()
                      if any(x.startswith("Traceback (most recent call last)") for x in rows)}
    if not with_traceback:
        return None
    root = _ROOT_CAUSE.search(stderr)
    rank = root.group(1) if root and root.group(1) in with_traceback else \
        min(with_traceback, key=int)
    rows = with_traceback[rank]
    start = max(i for i, x in enumerate(rows) if x.startswith("Traceback (most recent call last)"))
    return rank, rows[start:]


def failure_tail(stderr: str, lines: int = 3) -> tuple[str, str] | None:
    """(one-line evidence, details) from the failing rank's traceback, or None (see failing_rank)."""
    found = failing_rank(stderr)
    if found is None:
        return None
    rank, rows = found
    shown = [r for r in rows if r.strip()]
    return f"rank {rank}: " + " | ".join(shown[-lines:]), "\n".join(rows)[-3000:]
