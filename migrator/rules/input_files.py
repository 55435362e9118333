"""MIG0xx: problems with an input file itself, found before any rule can run."""

from __future__ import annotations

from migrator.rules.base import Rule


class SyntaxErrorRule(Rule):
    """The file is not valid Python 3 source, so it cannot be migrated.

    **What**: the file does not parse (a syntax error, or Python 2 code such as
    `print "x"` or `except E, e:`). It is reported on one line with the position and the
    parser's reason, and left untouched; the other files are still processed.

    **Why**: the migrator rewrites the syntax tree; without one there is nothing safe to do.

    **Fix**: make the file parse (`python -m py_compile FILE`); port Python 2 code to
    Python 3 first (for example with `pyupgrade` or `2to3`).

    Exit status: 2.
    """

    code = "MIG001"
    name = "syntax-error"
    summary = "File does not parse as Python 3; fix the syntax (or port Python 2 code) first"


class UndecodableRule(Rule):
    """The file's bytes are not text in its declared encoding.

    **What**: the file contains NUL bytes (a binary file with a `.py` name), bytes that are
    not valid UTF-8 (or not valid in the codec its PEP 263 `# -*- coding: ... -*-` line
    declares), or an encoding declaration naming an unknown codec. The line and column of
    the first bad byte are reported.

    **Why**: rewriting a file that was decoded wrongly would corrupt it.

    **Fix**: save the file as UTF-8, or declare its real encoding on line 1 or 2.

    Exit status: 2.
    """

    code = "MIG002"
    name = "undecodable"
    summary = "File is not text in its declared encoding; save it as UTF-8 or declare the encoding"


class UnreadableRule(Rule):
    """The file cannot be read (or written back).

    **What**: the path does not exist, is not a regular file, cannot be opened (permissions),
    is a symbolic link loop, or changed on disk while it was being migrated (in which case
    the new content is not written).

    **Why**: the file is left exactly as it is; the rest of the run goes on.

    **Fix**: check the path and its permissions; re-run when nothing else writes the file.

    Exit status: 2.
    """

    code = "MIG003"
    name = "unreadable"
    summary = "File cannot be read or written; check the path and its permissions"


class InvalidSuppressionRule(Rule):
    """A `# migrate: ignore[...]` comment names something that is not a MIG code.

    **What**: entries inside `ignore[...]` must be codes (`MIG201`) or code prefixes
    (`MIG2`, a whole family). Anything else (`E501`, `backward`) is reported and ignored.

    **Why**: a typo in a suppression would otherwise silently suppress nothing.

    **Before**:

    ```python
    loss.backward()  # migrate: ignore[MIG-201]
    ```

    **After**:

    ```python
    loss.backward()  # migrate: ignore[MIG201]
    ```
    """

    code = "MIG004"
    name = "invalid-suppression"
    summary = "Suppression comment names no MIG code; write ignore[MIGnnn] or a prefix like ignore[MIG2]"


class InternalErrorRule(Rule):
    """The migrator failed on this file: a bug in torch-migrate, not in your code.

    **What**: a rule raised, or the rewritten file did not re-parse, compile, or stay the
    same when migrated again (verification). The file is never written in that case.
    Run with `--verbose` to see the traceback, and please report it with the input file.

    Exit status: 123.
    """

    code = "MIG009"
    name = "internal-error"
    summary = "The migrator failed on this file (a bug); the file was left untouched, please report it"
