"""The one frozen options value passed explicitly through the migrator."""

from __future__ import annotations

from dataclasses import dataclass

from migrator.program import Role

TARGETS = ("runtime", "fabric", "accelerate", "lightning")
FORMS = ("wrapper", "module")


@dataclass(frozen=True)
class Options:
    """What to migrate to and which rules run.

    ``select`` / ``ignore`` hold code prefixes (``"MIG2"``, ``"MIG201"``); an empty
    ``select`` means every rule.
    """

    target: str = "runtime"
    form: str = "wrapper"
    select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    # How this file takes part in a program (helper module, calls that pass the wrapper);
    # None: decided from the file alone (migrator.program).
    role: Role | None = None

    def wants(self, code: str) -> bool:
        """True when the rule ``code`` is enabled by select/ignore."""
        if self.select and not any(code.startswith(p) for p in self.select):
            return False
        return not any(code.startswith(p) for p in self.ignore)
