"""Collects per-file outcomes, counts them, and owns the exit status of a run."""

from __future__ import annotations

from dataclasses import dataclass, field

from migrator.batch import Outcome
from migrator.results import Status

EXIT_OK = 0  # nothing to do, or done
EXIT_FINDINGS = 1  # --check: something would change or is reported; any mode: a MIG9xx finding
EXIT_USAGE = 2  # bad command line, bad configuration, or an input that cannot be migrated
EXIT_INTERNAL = 123  # a bug in the migrator (verification failed, a rule raised)


def needs_human(code: str) -> bool:
    """MIG9xx: reported, never rewritten; the run fails so a person looks at it."""
    return code.startswith("MIG9")


def severity(code: str, fixed: bool) -> str:
    """How much a finding asks of a person, for every format (SARIF levels, GitHub commands,
    json): ``error`` the file was not migrated and needs a human (MIG9xx) or could not be read
    or migrated (MIG0xx); ``warning`` the migration left the reported code as it was, so a
    person should look (replicated data, a GradScaler call without an equivalent, a module-
    form fallback); ``note`` the migration rewrites it (advice the diff carries out)."""
    if needs_human(code) or code.startswith("MIG0"):
        return "error"
    return "note" if fixed else "warning"


@dataclass
class Report:
    """Every outcome of a run; ``exit_code`` is the only place exit statuses are decided."""

    check: bool = False
    write: bool = False
    outcomes: list[Outcome] = field(default_factory=list)
    usage_error: bool = False

    def add(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def count(self, status: Status) -> int:
        return sum(1 for o in self.outcomes if o.status is status)

    @property
    def findings(self) -> int:
        return sum(len(o.findings) for o in self.outcomes)

    @property
    def human(self) -> int:
        return sum(1 for o in self.outcomes for f in o.findings if needs_human(f.code))

    @property
    def internal_errors(self) -> int:
        return sum(1 for o in self.outcomes if o.internal_error)

    @property
    def bad_inputs(self) -> int:
        return sum(1 for o in self.outcomes if o.status is Status.FAILED and not o.internal_error)

    @property
    def exit_code(self) -> int:
        """123 internal error > 2 usage/bad input > 1 findings > 0.

        Under ``--check`` any change or finding gives 1. In every mode a MIG9xx finding
        (needs a human) gives 1, so scripts and CI notice a file left for a person.
        """
        if self.internal_errors:
            return EXIT_INTERNAL
        if self.usage_error or self.bad_inputs:
            return EXIT_USAGE
        if self.human:
            return EXIT_FINDINGS
        if self.check and any(o.changed or o.findings for o in self.outcomes):
            return EXIT_FINDINGS
        return EXIT_OK

    def summary(self) -> str:
        """One line: what changed (or would), what was skipped or failed, findings."""
        changed = self.count(Status.CHANGED)
        verb = "migrated" if self.write else "would be migrated"
        parts = [f"{_n(changed, 'file')} {verb}"]
        unchanged = self.count(Status.UNCHANGED)
        if unchanged:
            parts.append(f"{unchanged} unchanged")
        skipped = self.count(Status.SKIPPED)
        if skipped:
            parts.append(f"{skipped} skipped")
        if self.bad_inputs:
            parts.append(f"{_n(self.bad_inputs, 'file')} could not be read or parsed")
        if self.internal_errors:
            parts.append(f"{self.internal_errors} internal error(s)")
        fell_back = sum(1 for o in self.outcomes if any(_fallback(f.code) for f in o.findings))
        if fell_back:  # asked for the module form, got the wrapper form: say so where it is seen
            parts.append(f"{fell_back} in the wrapper form: the module form did not fit (MIG502-MIG507)")
        text = ", ".join(parts) + f"; {_n(self.findings, 'finding')}"
        if self.human:
            text += f" ({self.human} need a human: MIG9xx)"
        return text + "."


def _fallback(code: str) -> bool:
    """A module-form finding that sent the file to the wrapper form (MIG501 is the conversion)."""
    return code.startswith("MIG50") and code not in ("MIG500", "MIG501")


def _n(k: int, word: str) -> str:
    return f"{k} {word}" if k == 1 else f"{k} {word}s"
