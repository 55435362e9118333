"""A failed N-process run's evidence is the failing rank's traceback, not torchrun's summary."""

from __future__ import annotations

from pathlib import Path

from migrator.verification import checks
from migrator.verification.failures import failure_tail
from migrator.verification.runs import Run

# the shape of `fabric run` / torchrun stderr when both workers raise (trimmed from a real run)
TORCHRUN_STDERR = """\
Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/2
[rank1]: Traceback (most recent call last):
[rank0]: Traceback (most recent call last):
[rank0]:   File "/tmp/x/port-2/main.py", line 144, in <module>
[rank1]:   File "/tmp/x/port-2/main.py", line 144, in <module>
[rank0]:     main()
[rank1]:     main()
[rank0]:   File "/work/torch/nn/functional.py", line 2854, in _verify_batch_size
[rank0]:     raise ValueError(
[rank0]: ValueError: Expected more than 1 value per channel when training, got input size [1, 64]
[rank1]:   File "/work/torch/nn/functional.py", line 2854, in _verify_batch_size
[rank1]:     raise ValueError(
[rank1]: ValueError: rank one's own message
E1206 06:28:12.718000 10294 api.py:1002] failed (exitcode: 1) local_rank: 0 (pid: 10297)
Traceback (most recent call last):
  File "/venv/bin/fabric", line 8, in <module>
    sys.exit(_main())
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
/tmp/x/port-2/main.py FAILED
------------------------------------------------------------
Failures:
[1]:
  time      : 2026-12-06_06:27:44
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : 1 (pid: 9890)
  error_file: <N/A>
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-06_06:27:44
  host      : localhost
  rank      : ROOT (local_rank: ROOT)
  exitcode  : 1 (pid: 9889)
  error_file: <N/A>
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
============================================================
"""


def _run(stderr: str) -> Run:
    return Run("port-2", ["fabric", "run"], Path("/tmp/x/port-2"), Path("/tmp/x/port-2.audit"),
               returncode=1, seconds=7.5, stderr=stderr)


def test_evidence_is_the_root_cause_ranks_traceback_tail() -> None:
    check = checks.exited("port exits 0 on 2 processes", _run(TORCHRUN_STDERR.replace("ROOT", "0")), 60)
    assert not check.passed
    assert check.evidence == (
        "exit 1 after 7.5s: rank 0: "
        '  File "/work/torch/nn/functional.py", line 2854, in _verify_batch_size | '
        "    raise ValueError( | "
        "ValueError: Expected more than 1 value per channel when training, got input size [1, 64]")
    assert check.details.startswith("Traceback (most recent call last):\n")
    assert "rank one's own message" not in check.details and "error_file" not in check.details


def test_the_rank_named_as_root_cause_wins() -> None:
    _, details = failure_tail(TORCHRUN_STDERR.replace("ROOT", "1"))
    assert details.endswith("ValueError: rank one's own message")


def test_without_rank_prefixes_the_last_lines_of_stderr_stay_the_evidence() -> None:
    stderr = "Traceback (most recent call last):\n  File \"main.py\", line 3\nSystemExit: boom\n"
    assert failure_tail(stderr) is None
    check = checks.exited("port exits 0 on 2 processes", _run(stderr), 60)
    assert check.evidence.endswith('File "main.py", line 3 | SystemExit: boom')
    assert check.details == stderr[-3000:]
