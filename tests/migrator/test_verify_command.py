"""`migrate verify`: usage, output shape, the checks on recorded runs, and no torch in the migrate process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, child_env

from migrator.cli import main
from migrator.verification import checks
from migrator.verification.runs import Run


def _run(tmp_path: Path, label: str = "r", **kw) -> Run:
    run = Run(label, ["x"], tmp_path, tmp_path, returncode=0)
    for key, value in kw.items():
        setattr(run, key, value)
    return run


def test_usage_errors_exit_2(tmp_path: Path, capsys) -> None:
    script = tmp_path / "train.py"
    script.write_text("print(1)\n")
    assert main(["verify", str(tmp_path / "missing.py")]) == 2
    assert main(["verify", str(script), "--devices", "1"]) == 2
    assert main(["verify", str(script), "--target", "lightning"]) == 2
    err = capsys.readouterr().err
    assert "missing.py" in err and "'runtime', 'fabric', 'accelerate'" in err


def test_help_lists_the_options(capsys) -> None:
    assert main(["verify", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--target", "--migrated", "--devices", "--simulate-gpus", "--timeout", "--format", "--keep"):
        assert option in out


def test_normalise_timings_and_timestamps_only() -> None:
    assert checks.normalise("epoch 1 took 3.52s at 12:01:02, 40.1 it/s") == \
        "epoch 1 took <DURATION> at <TIME>, <RATE>"
    assert checks.normalise("[2026-01-02 10:11:12,345] loss 0.25 (time: 12.5)") == \
        "[<TIMESTAMP>] loss 0.25 (time: <DURATION>)"
    assert checks.normalise("accuracy 97/101 (96%)") == "accuracy 97/101 (96%)"


def test_stdout_check_names_the_first_differing_line() -> None:
    ok = checks.same_stdout("s", "a\nb 1.0s\n", "a\nb 2.0s\n")
    assert ok.passed
    bad = checks.same_stdout("s", "a\nloss 0.5\nc\n", "a\nloss 0.25\nc\n")
    assert not bad.passed and bad.evidence == "line 2: expected 'loss 0.5', got 'loss 0.25'"
    short = checks.same_stdout("s", "a\nb\n", "a\n")
    assert short.evidence == "missing line 2: 'b' (1 lines instead of 2)"


def test_rank_checks_on_recorded_runs(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"x")
    writes = [{"kind": "write", "rank": r, "path": "model.pt"} for r in ("0", "1")]
    run = _run(tmp_path, records=writes, rank_stdout={"0": "hi\n", "1": "hi\n"})
    assert checks.rank_silent("s", run).evidence == "rank 1 printed 1 line(s), first: 'hi'"
    assert checks.files_once("f", run, _run(tmp_path)).evidence == "model.pt written by ranks 0, 1"
    params = [{"kind": "params", "rank": "0", "params": [[[2], 1.0, 2.0]]},
              {"kind": "params", "rank": "1", "params": [[[2], 1.5, 2.0]]}]
    synced = checks.ranks_in_sync("p", _run(tmp_path, records=params))
    assert not synced.passed and "parameter #0 (shape [2]) differs between rank 0 and rank 1" in synced.evidence
    placed = checks.placement("g", _run(tmp_path, records=[
        {"kind": "placement", "rank": "1", "ok": False, "site": "train.py:9", "message": "uses cuda:0"}]))
    assert placed.evidence == "rank 1 at train.py:9: uses cuda:0"


def test_torch_free_script_passes_and_migrate_process_never_imports_torch(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(
        "import os, random, time\n"
        "if os.environ.get('RANK', '0') == '0':\n"
        "    print(f'step 1 took {random.random():.3f}s at {time.strftime(\"%H:%M:%S\")}')\n"
        "    with open('out.txt', 'w') as fh:\n"
        "        fh.write('x')\n"
    )
    code = ("import json, sys\nfrom migrator.cli import main\n"
            f"rc = main(['verify', {str(script)!r}, '--migrated', {str(script)!r}, '--format', 'json', "
            "'--timeout', '120'])\n"
            "print(json.dumps({'rc': rc, 'torch': 'torch' in sys.modules}))\n")
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=200,
                          cwd=ROOT, env=child_env())
    *report, last = proc.stdout.strip().splitlines()
    result, report = json.loads(last), json.loads("\n".join(report))
    assert result == {"rc": 0, "torch": False}, (report, proc.stderr[-2000:])
    assert [c["name"] for c in report["checks"]][:4] == [
        "original exits 0 on 1 process", "port exits 0 on 1 process",
        "1-process stdout same as original", "1-process files same as original"]
    assert report["checks"][3]["evidence"] == "same 1 file(s): out.txt"
