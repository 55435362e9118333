"""The tests' own subprocess helper: a timeout fails fast even when workers left the session."""

from __future__ import annotations

import sys
import time

import pytest
from conftest import run_cmd

# A launcher whose worker runs in a session of its own and holds the output pipes, as torch
# elastic's workers do: killing the launcher's process group alone left communicate() waiting.
ESCAPED_WORKER = (
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True); "
    "time.sleep(120)"
)


def test_timeout_kills_workers_in_their_own_sessions():
    start = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match="timed out after 2s"):
        run_cmd([sys.executable, "-c", ESCAPED_WORKER], timeout=2)
    assert time.monotonic() - start < 40
