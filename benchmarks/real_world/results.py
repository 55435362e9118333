"""What the scoreboard measures: one check's outcome, one row of results, and how two outputs are compared."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from migrator.verification.checks import NORMALISE
from migrator.verification.checks import normalise as _verify_normalise

PASS, FAIL, SKIP = "pass", "fail", "-"


def normalise(text: str) -> str:
    """What may differ between two runs of the same program (wall-clock times and dates),
    masked the way `migrate verify` masks it: one normalisation for the scoreboard and verify.
    Applied to stdout and to the names of written files before comparing."""
    return _verify_normalise(text)


@dataclass
class Check:
    status: str = SKIP  # pass | fail | - (not evaluated)
    reason: str = ""


@dataclass
class Result:
    """Everything measured for one script x target (or the original alone, target "original")."""

    script: str
    target: str
    kind: str
    migrate: Check = field(default_factory=Check)
    codes: list[str] = field(default_factory=list)  # MIG9xx codes reported
    findings: int = 0
    parity: Check = field(default_factory=Check)  # 1 process prints what the original printed
    complete: Check = field(default_factory=Check)  # 2 processes: exit 0, both ranks ran
    silent: Check = field(default_factory=Check)  # 2 processes: rank 1 printed nothing
    files: Check = field(default_factory=Check)  # 2 processes: same files, rank 0 only, loadable
    same_numbers: Check = field(default_factory=Check)  # informational: 2-proc stdout = 1-proc
    seconds: float = 0.0
    log: str = ""  # stderr tail of the first failing run (JSON only)

    CHECKS = ("migrate", "parity", "complete", "silent", "files")

    def first_failure(self) -> str:
        for name in self.CHECKS:
            check = getattr(self, name)
            if check.status == FAIL:
                return f"{name}: {check.reason}"
        return ""

    def to_json(self) -> dict:
        return asdict(self)


def first_difference(expected: str, actual: str) -> str | None:
    exp, act = normalise(expected).splitlines(), normalise(actual).splitlines()
    for i, (e, a) in enumerate(zip(exp, act), 1):
        if e != a:
            return f"line {i}: expected {e[:70]!r}, got {a[:70]!r}"
    if len(exp) != len(act):
        return f"{len(act)} lines instead of {len(exp)}"
    return None
