"""What each process of `migrate run` executes: the script, as `python script.py` would, with a
crash recorded for the launcher (which prints the first failing rank's traceback once) instead
of every rank printing its own."""

import os
import sys

# This file's directory (runtime/) is sys.path[0] until here: give that place to the script's
# directory, as `python script.py` does, before any other import could be shadowed from it.
if __name__ == "__main__" and len(sys.argv) > 1:
    sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[1]))

import json  # noqa: E402 - after the sys.path fix above
import runpy  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

FAILURE_DIR_VAR = "TORCH_MIGRATE_FAILURE_DIR"  # the launcher's directory for failure records
INTERRUPTED = 130  # 128 + SIGINT


def record_path(directory: str, rank: str, attempt: str) -> str:
    """Where rank ``rank`` of restart ``attempt`` records its failure (read by runtime.launch)."""
    return os.path.join(directory, f"failure-attempt{attempt}-rank{rank}.json")


def _record(exit_code: int, text: str) -> bool:
    """Write this rank's failure for the launcher; False when not started by `migrate run`."""
    directory = os.environ.get(FAILURE_DIR_VAR)
    if not directory:
        return False
    rank = os.environ.get("RANK", "0")
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    record = {"rank": int(rank), "time": time.time(), "exit_code": exit_code, "text": text}
    try:
        with open(record_path(directory, rank, attempt), "w", encoding="utf-8") as fh:
            json.dump(record, fh)
    except OSError:
        return False
    return True


def _script_traceback(exc: BaseException) -> str:
    """The traceback from the script's first frame on (this file and runpy left out)."""
    tb = exc.__traceback__
    ours = (__file__, runpy.__file__, "<frozen runpy>")
    while tb is not None and tb.tb_frame.f_code.co_filename in ours:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python launch_worker.py SCRIPT [ARGS...] (started by `migrate run`)")
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    try:
        runpy.run_path(script, run_name="__main__")
    except KeyboardInterrupt as exc:
        sys.last_value = exc
        sys.exit(INTERRUPTED)  # the launcher reports the interruption: no traceback per rank
    except SystemExit as exc:
        code = exc.code
        if code not in (None, 0):
            sys.last_value = exc  # the runtime's exit then does not wait for peers
            number = code if isinstance(code, int) else 1
            _record(number, "" if isinstance(code, int) else str(code))
        raise
    except BaseException as exc:  # noqa: BLE001 - recorded for the launcher, which prints it
        sys.last_value = exc  # the runtime's exit then does not wait for peers
        text = _script_traceback(exc)
        if not _record(1, text):
            sys.stderr.write(text)
        sys.exit(1)


if __name__ == "__main__":
    main()
