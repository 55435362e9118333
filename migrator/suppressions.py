"""Parse `# migrate: ignore[...]` and `# migrate: skip-file` comments out of a source text."""

from __future__ import annotations

import io
import re
import tokenize
from dataclasses import dataclass, field

# `# migrate: ignore`, `# migrate: ignore[MIG201]`, `# migrate: ignore[MIG2, MIG401]`,
# `# migrate: skip-file`. Case-insensitive on the keywords so `# Migrate: Ignore` works too.
_DIRECTIVE = re.compile(
    r"#\s*migrate\s*:\s*(?P<kind>ignore|skip-file)\b(?:\[(?P<codes>[^\]]*)\])?", re.IGNORECASE
)
_CODE = re.compile(r"^MIG\d{0,3}$")
ALL = "*"  # marker for a bare `# migrate: ignore`


@dataclass(frozen=True)
class Suppressions:
    """What a file's comments switch off.

    ``lines`` maps a physical line number (1-based) to the code prefixes suppressed there
    (``"*"`` = every code). A comment anywhere in a multi-line statement covers every line
    of that statement. ``invalid`` lists ``(line, text)`` of entries that are not a code.
    """

    skip_file: bool = False
    lines: dict[int, frozenset[str]] = field(default_factory=dict)
    invalid: tuple[tuple[int, str], ...] = ()

    def suppressed(self, code: str, line: int) -> bool:
        """True when a finding ``code`` reported on ``line`` is switched off by a comment.

        Entries are exact codes (``MIG201``) or code prefixes (``MIG2`` = the whole
        family, ``MIG`` = everything); matching is case-insensitive.
        """
        entries = self.lines.get(line)
        if not entries:
            return False
        code = code.upper()
        return ALL in entries or any(code.startswith(e) for e in entries)


EMPTY = Suppressions()


def parse(source: str) -> Suppressions:
    """Collect the suppressions of ``source``; never raises (bad tokens fall back to lines)."""
    if "migrate" not in source.lower():
        return EMPTY  # cheap path: the common file has no directive at all
    try:
        comments, statements = _tokenize(source)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        comments, statements = _scan_lines(source), {}
    skip_file = False
    lines: dict[int, set[str]] = {}
    invalid: list[tuple[int, str]] = []
    header_end = _header_end(source, statements)
    for lineno, text in comments:
        for m in _DIRECTIVE.finditer(text):
            if m.group("kind").lower() == "skip-file":
                skip_file = skip_file or lineno <= header_end
                continue
            entries = _entries(m.group("codes"), lineno, invalid)
            for covered in statements.get(lineno, (lineno,)):
                lines.setdefault(covered, set()).update(entries)
    return Suppressions(
        skip_file=skip_file,
        lines={k: frozenset(v) for k, v in lines.items()},
        invalid=tuple(invalid),
    )


def _entries(codes: str | None, lineno: int, invalid: list[tuple[int, str]]) -> set[str]:
    if codes is None:
        return {ALL}
    entries = set()
    for raw in codes.split(","):
        item = raw.strip().upper()
        if not item:
            continue
        if _CODE.match(item):
            entries.add(item)
        else:
            invalid.append((lineno, raw.strip()))
    # `ignore[]` or only invalid entries: suppress nothing rather than everything (explicit
    # lists are meant to be narrow).
    return entries


def _tokenize(source: str) -> tuple[list[tuple[int, str]], dict[int, tuple[int, ...]]]:
    """Comments with their line, and for every physical line the lines of its statement."""
    comments: list[tuple[int, str]] = []
    statements: dict[int, tuple[int, ...]] = {}
    start: int | None = None
    readline = io.StringIO(source).readline
    for tok in tokenize.generate_tokens(readline):
        kind = tok.type
        if kind == tokenize.COMMENT:
            comments.append((tok.start[0], tok.string))
        if kind in (tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT):
            continue
        if kind in (tokenize.NEWLINE, tokenize.ENDMARKER):
            if start is not None:
                span = tuple(range(start, tok.start[0] + 1))
                for n in span:
                    statements[n] = span
            start = None
            continue
        if start is None:
            start = tok.start[0]
    return comments, statements


def _scan_lines(source: str) -> list[tuple[int, str]]:
    """Fallback for text tokenize rejects: every `#...` tail of every line."""
    out = []
    for n, line in enumerate(source.splitlines(), 1):
        i = line.find("#")
        if i >= 0:
            out.append((n, line[i:]))
    return out


def _header_end(source: str, statements: dict[int, tuple[int, ...]]) -> int:
    """Last line of the file header: comments, blank lines and a module docstring.

    `# migrate: skip-file` counts only there, so a directive quoted deep inside code (or in
    an example) does not switch the whole file off.
    """
    lines = source.splitlines()
    n = 0
    seen_docstring = False
    while n < len(lines):
        stripped = lines[n].strip()
        if not stripped or stripped.startswith("#"):
            n += 1
            continue
        if not seen_docstring and stripped[:1] in "\"'rRbBuU" and _is_string_start(stripped):
            seen_docstring = True
            span = statements.get(n + 1, (n + 1,))
            n = span[-1]
            continue
        break
    return n


def _is_string_start(text: str) -> bool:
    return bool(re.match(r"^[rRuUbB]{0,2}(\"|')", text))
