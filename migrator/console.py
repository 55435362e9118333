"""The ``migrate`` console script: start-up and exit tuned for a pre-commit hook's latency."""

from __future__ import annotations

import gc
import os
import sys


def entry() -> None:
    """``migrator.cli.main()`` with the collector paused while modules load, and an exit that
    skips the interpreter's teardown once the output is flushed.

    Start-up builds long-lived objects only (modules, classes, click's commands): collecting
    while it runs finds nothing (~5 ms). Freeing libcst's ~400 node classes, every module and
    the last file's tree at exit is ~15-20 ms of a single-file ``--check``. A migration has
    nothing left to clean up once its output is flushed: files are written atomically and
    closed, and the worker pool is shut down. ``migrate run`` exits normally (the launcher's
    libraries clean up at exit). See docs/performance.md.
    """
    gc.disable()
    from migrator import command  # noqa: F401 - what main() needs, loaded with the collector paused
    from migrator.cli import main

    gc.enable()  # files are migrated with it paused per file (migrator.batch), collected between
    args = sys.argv[1:]
    code = main(args)
    if args[:1] == ["run"]:
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (``migrate ... | head``): nothing to save
            pass
    os._exit(code)
