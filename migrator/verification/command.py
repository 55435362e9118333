"""Click plumbing and terminal output of `migrate verify`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from migrator.verification.runs import LAUNCHERS

EXIT_PASS, EXIT_FAIL = 0, 1


@click.command(
    name="verify",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Exit status: 0 every check passed; 1 a check failed; 2 usage error. Docs: docs/verify.md.",
)
@click.argument("script", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
@click.option("--target", type=click.Choice(LAUNCHERS), default="runtime", show_default=True,
              help="Target to migrate to, and whose launcher starts the N processes.")
@click.option("--form", type=click.Choice(["wrapper", "module"]), default="wrapper", show_default=True)
@click.option("--migrated", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Check this existing port instead of migrating SCRIPT.")
@click.option("--devices", type=click.IntRange(min=2), default=2, show_default=True,
              help="Processes of the N-process run.")
@click.option("--simulate-gpus", is_flag=True,
              help="Every process believes it owns N CUDA devices; device misuse fails.")
@click.option("--timeout", type=click.FloatRange(min=1), default=300, show_default=True,
              help="Seconds each run may take; past it the run is a hang (stacks reported).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--keep", is_flag=True, help="Keep the runs' folders (path printed).")
def verify_command(script: Path, script_args: tuple[str, ...], target: str, form: str,
                   migrated: Path | None, devices: int, simulate_gpus: bool, timeout: float,
                   fmt: str, keep: bool) -> int:
    """Run SCRIPT, its port on 1 process and on N processes, and check the port (-- SCRIPT_ARGS)."""
    from migrator.verification.pipeline import Request, verify

    req = Request(script.resolve(), target, form, migrated.resolve() if migrated else None, devices,
                  simulate_gpus, timeout, keep, tuple(script_args), Path.cwd())
    report = verify(req, _progress if sys.stderr.isatty() else None)
    if fmt == "json":
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        for check in report.checks:
            click.echo(f"{check.status.upper()} {check.name}: {check.evidence}")
            if check.details and not check.passed:
                click.echo("\n".join("    " + line for line in check.details.rstrip().splitlines()))
        failed = sum(not c.passed for c in report.checks)
        na = sum(c.status == "n/a" for c in report.checks)
        click.echo(f"verify: {len(report.checks) - failed - na} passed, {failed} failed, {na} n/a "
                   f"({report.seconds:.1f}s)" + (f"; runs kept in {report.workdir}" if keep else ""))
    return EXIT_PASS if report.passed else EXIT_FAIL


def _progress(label: str, run) -> None:
    if run is None:
        sys.stderr.write(f"\rverify: running {label} ...\033[K")
    else:
        state = "hang" if run.hung else f"exit {run.returncode}"
        sys.stderr.write(f"\rverify: {label} {state} in {run.seconds:.1f}s\033[K\n")
    sys.stderr.flush()
