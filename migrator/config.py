"""Load `[tool.migrate]` from the nearest pyproject.toml; command-line flags override it."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# key -> expected type; "list" values accept a string too (one item).
KEYS: dict[str, str] = {
    "target": "str",
    "form": "str",
    "select": "list",
    "ignore": "list",
    "exclude": "list",
    "extend-exclude": "list",
    "force-exclude": "bool",
}


class ConfigError(Exception):
    """A configuration file that cannot be used (bad TOML, wrong value type): exit 2."""


@dataclass(frozen=True)
class Config:
    """Settings read from a pyproject.toml; ``None`` / empty means "not set there"."""

    path: Path | None = None
    target: str | None = None
    form: str | None = None
    select: tuple[str, ...] | None = None
    ignore: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None
    extend_exclude: tuple[str, ...] = ()
    force_exclude: bool | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def root(self) -> Path | None:
        """The directory exclude patterns are relative to."""
        return self.path.parent if self.path else None


def find_pyproject(start: Path) -> Path | None:
    """The nearest pyproject.toml at or above ``start`` that has a ``[tool.migrate]`` table."""
    start = start.resolve()
    for directory in (start, *start.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file() and _mentions_table(candidate):
            return candidate
    return None


def _mentions_table(path: Path) -> bool:
    # A text test first: parsing every pyproject.toml on the way up costs more than reading.
    try:
        return "tool.migrate" in path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def load(path: Path) -> Config:
    """Read ``[tool.migrate]`` of ``path``; unknown keys become warnings naming the valid ones."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc}") from None
    table = data.get("tool", {}).get("migrate", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.migrate] must be a table")
    values: dict[str, Any] = {}
    warnings = []
    for key, value in table.items():
        kind = KEYS.get(key)
        if kind is None:
            valid = ", ".join(KEYS)
            warnings.append(f"{path}: unknown key '{key}' in [tool.migrate] (valid keys: {valid})")
            continue
        values[key.replace("-", "_")] = _coerce(path, key, value, kind)
    return Config(path=path, warnings=tuple(warnings), **values)


def _coerce(path: Path, key: str, value: Any, kind: str) -> Any:
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{path}: [tool.migrate] {key} must be a string, got {value!r}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: [tool.migrate] {key} must be true or false, got {value!r}")
        return value
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{path}: [tool.migrate] {key} must be a list of strings, got {value!r}")
    return tuple(value)


def discover_config(paths: list[str], explicit: Path | None = None) -> Config:
    """The configuration for a run over ``paths`` (``explicit`` = ``--config`` wins)."""
    if explicit is not None:
        return load(explicit)
    found = find_pyproject(common_base(paths))
    return load(found) if found else Config()


def common_base(paths: list[str]) -> Path:
    """The deepest directory containing every path (the current directory for stdin)."""
    dirs = []
    for p in paths:
        if p == "-":
            dirs.append(os.getcwd())
            continue
        absolute = os.path.abspath(p)
        dirs.append(absolute if os.path.isdir(absolute) else os.path.dirname(absolute))
    if not dirs:
        return Path.cwd()
    return Path(os.path.commonpath(dirs))


def implemented_targets(form: str) -> tuple[str, ...]:
    """Targets the pipeline can emit in ``form`` right now (asked of ``migrator.targets``)."""
    try:
        from migrator import targets
    except ImportError:
        return ("runtime",) if form == "wrapper" else ()
    names = "VOCABULARIES" if form == "wrapper" else "MODULE_VOCABULARIES"
    return tuple(getattr(targets, names, {}) or ())


def _implied_form(target: str) -> str | None:
    """The only form ``target`` exists in (lightning: module), or None when it has several."""
    forms = [f for f in ("wrapper", "module") if target in implemented_targets(f)]
    return forms[0] if len(forms) == 1 else None


def resolve_options(
    config: Config,
    *,
    target: str | None,
    form: str | None,
    select: tuple[str, ...],
    ignore: tuple[str, ...],
):
    """Options from the command line over the configuration over the defaults.

    Raises ``ConfigError`` naming the valid choices for an unknown or unimplemented
    target / form or a selector that is not a code prefix.
    """
    from migrator.options import FORMS, TARGETS, Options

    origin = f" (from {config.path})" if config.path else ""
    target_from_flag = target is not None
    target = target or config.target or "runtime"
    src = "" if target_from_flag or target != config.target else origin
    if target not in TARGETS:
        raise ConfigError(f"unknown target {target!r}{src}; valid targets: {', '.join(TARGETS)}")
    implied = _implied_form(target)
    # A flag beats the configuration: `--target lightning` overrides a configured form.
    form_from_flag = form is not None
    form = form or (implied if target_from_flag else None) or config.form or implied or "wrapper"
    form_src = "" if form_from_flag or form != config.form else origin
    if form not in FORMS:
        raise ConfigError(f"unknown form {form!r}{form_src}; valid forms: {', '.join(FORMS)}")
    ready = implemented_targets(form)
    if target not in ready:
        if implied:
            given = f"--form {form}" if form_from_flag else f"form = {form!r}{form_src}"
            raise ConfigError(
                f"target {target!r} has no {form} form ({given}); it implies --form {implied}: "
                f"drop the form, or pick a {form} target: {', '.join(ready)}"
            )
        listed = ", ".join(ready) if ready else "none yet"
        raise ConfigError(
            f"target {target!r} is not implemented for the {form} form yet{src}; "
            f"implemented: {listed}"
        )
    chosen_select = _codes(select) if select else _codes(config.select or ())
    chosen_ignore = _codes(ignore) if ignore else _codes(config.ignore or ())
    return Options(target=target, form=form, select=chosen_select, ignore=chosen_ignore)


def _codes(values: tuple[str, ...]) -> tuple[str, ...]:
    """Split ``"MIG1,MIG201"`` style values, upper-case, and check each is a code prefix."""
    import re

    out = []
    for value in values:
        for item in value.split(","):
            item = item.strip().upper()
            if not item:
                continue
            if not re.fullmatch(r"MIG\d{0,3}", item):
                raise ConfigError(f"{item!r} is not a rule code or prefix (e.g. MIG201, MIG2)")
            out.append(item)
    return tuple(out)


def exclude_patterns(config: Config, exclude: tuple[str, ...], extend: tuple[str, ...]):
    """``--exclude`` replaces configured/default excludes; extend-exclude values add to them."""
    from migrator.files import DEFAULT_EXCLUDE

    base = exclude or config.exclude or DEFAULT_EXCLUDE
    return tuple(base) + tuple(config.extend_exclude) + tuple(extend)
