"""Click plumbing for `migrate PATH...`, `migrate --explain CODE` and `migrate run ...`."""

from __future__ import annotations

import sys

import click

from migrator import __version__

EXIT_INTERNAL = 123


def _explain(ctx: click.Context, _param: click.Parameter, code: str | None) -> None:
    if code is None or ctx.resilient_parsing:
        return
    from migrator.docs import explain, known_codes

    text = explain(code)
    if text is None:
        raise click.BadParameter(
            f"unknown rule code {code!r}; known codes: {', '.join(known_codes())}",
            param_hint="--explain",
        )
    click.echo(text, nl=False)
    ctx.exit(0)


@click.command(
    name="migrate",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Exit status: 0 nothing to do or done; 1 changes or findings under --check, or a "
    "MIG9xx finding (needs a human) in any mode; 2 usage error or an input that cannot be "
    "read or parsed; 123 internal error. 'migrate run ...' launches a migrated script "
    "(see 'migrate run --help'); 'migrate verify SCRIPT' runs and checks a port (see "
    "'migrate verify --help'). Docs: docs/cli.md.",
)
@click.argument("paths", nargs=-1, metavar="PATH...")
@click.option("--target", metavar="NAME", help="runtime (default), fabric, accelerate or lightning.")
@click.option("--form", metavar="FORM", help="wrapper (default) or module.")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if anything would change or is reported.")
@click.option("--diff", is_flag=True, help="Print a unified diff (git apply-able); write nothing.")
@click.option("-w", "--write", is_flag=True, help="Rewrite the files in place (atomically).")
@click.option("-o", "--output", metavar="OUT", help="Write results to OUT (a file, or a directory for several inputs).")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json", "github", "sarif"]), default="text",
    show_default=True, help="Report format.",
)
@click.option("--select", multiple=True, metavar="CODES", help="Only these code prefixes (MIG2,MIG401).")
@click.option("--ignore", multiple=True, metavar="CODES", help="Skip these code prefixes.")
@click.option("--exclude", multiple=True, metavar="PATTERN", help="gitwildmatch pattern; replaces configured excludes.")
@click.option("--extend-exclude", multiple=True, metavar="PATTERN", help="gitwildmatch pattern added to the excludes.")
@click.option("--force-exclude", is_flag=True,
              help="Apply the excludes to paths named on the command line too (pre-commit).")
@click.option("--config", metavar="FILE", help="pyproject.toml to read [tool.migrate] from.")
@click.option("--stdin-filename", metavar="NAME", help="Name shown for '-' (stdin) in reports.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="Worker processes (default: CPU count).")
@click.option("-q", "--quiet", count=True,
              help="Findings (and code) only: no summary, warnings or progress. -qq: code only.")
@click.option("--silent", is_flag=True, help="Same as -qq: nothing but the diff or code; "
              "the exit status tells.")
@click.option("-v", "--verbose", is_flag=True, help="Also list skipped files and internal tracebacks.")
@click.option(
    "--explain", metavar="CODE", callback=_explain, expose_value=False, is_eager=True,
    help="Print the documentation of rule CODE and exit.",
)
@click.version_option(__version__, "--version", prog_name="migrate", message="%(prog)s %(version)s")
def migrate_command(paths: tuple[str, ...], **flags: object) -> int:
    """Migrate single-GPU PyTorch training scripts to distributed-ready ones.

    By default prints a unified diff and the findings, and writes nothing.
    """
    from migrator.command import Request, UsageError, execute

    if flags.pop("silent"):
        flags["quiet"] = 2
    try:
        return execute(Request(paths=paths, **flags))  # type: ignore[arg-type]
    except UsageError as exc:
        raise click.UsageError(str(exc)) from None


@click.command(
    name="run",
    context_settings={
        "ignore_unknown_options": True,
        "allow_extra_args": True,
        "help_option_names": [],
    },
    add_help_option=False,
)
@click.pass_context
def run_command(ctx: click.Context) -> int:
    """Launch a migrated script on N processes (forwards to runtime.launch; needs torch)."""
    try:
        from runtime import launch  # torch lives behind this import, never on the migrate path
    except ImportError as exc:
        raise click.ClickException(
            f"'migrate run' needs the runtime and torch ({exc}); "
            "install them with: pip install 'torch-migrate[runtime]'"
        ) from None
    return launch.main(list(ctx.args))


def main(argv: list[str] | None = None) -> int:
    """Console-script entry: `migrate run ...` goes to the launcher, anything else migrates."""
    args = sys.argv[1:] if argv is None else list(argv)
    command, args, prog = (
        (run_command, args[1:], "migrate run") if args[:1] == ["run"] else (migrate_command, args, "migrate")
    )
    if args[:1] == ["verify"]:  # its own click command (migrator/verification/command.py)
        from migrator.verification.command import verify_command

        command, args, prog = verify_command, args[1:], "migrate verify"
    try:
        result = command.main(args, prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted!", err=True)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: one line plus a hint, never a bare traceback
        click.echo(f"migrate: internal error: {type(exc).__name__}: {exc}", err=True)
        if "-v" in args or "--verbose" in args:
            import traceback

            traceback.print_exc()
        return EXIT_INTERNAL
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    from migrator.console import entry

    entry()
