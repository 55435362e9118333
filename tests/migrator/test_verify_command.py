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
    # word_language_model's per-batch time, written before its value, and time.ctime()
    assert checks.normalise("| lr 20.00 | ms/batch 26.12 | loss  3.47 | ppl    32.01") == \
        "| lr 20.00 | ms/batch <DURATION> | loss  3.47 | ppl    32.01"
    assert checks.normalise("saved at Sun Dec  6 07:14:05 2026") == "saved at <TIMESTAMP>"


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


def _lines(rank_texts: list[tuple[str, list[float]]]) -> list[dict]:
    return [{"kind": "line", "rank": "0", "text": t, "fp": fp} for t, fp in rank_texts]


def test_metrics_compared_only_for_eval_lines_of_an_identical_model(tmp_path: Path) -> None:
    same, trained = [1.0, 2.5], [1.25, 2.0]
    single = _run(tmp_path, stdout="loss 0.6931\neval sum 12.3456 acc 40/64\nloss 0.4012\neval sum 9.5\n",
                  records=_lines([("eval sum 12.3456 acc 40/64", same), ("eval sum 9.5", same)]))
    # rank 0's own shard: training losses differ (informational), the first evaluation is of the
    # same model (before training) and must agree; the second is of a model trained on shards.
    many = _run(tmp_path, rank_stdout={"0": "loss 0.7012\neval sum 12.3457 acc 40/64\nloss 0.5301\neval sum 9.1\n"},
                records=_lines([("eval sum 12.3457 acc 40/64", same), ("eval sum 9.1", trained)]))
    ok = checks.metrics_equal("m", single, many, 2)
    assert ok.passed and ok.status == "pass", ok
    assert ok.evidence.startswith("1 eval-mode line(s) of an identical model equal"), ok.evidence
    assert "3 of 4 numeric line(s) differ overall (informational" in ok.evidence
    unreduced = _run(tmp_path, rank_stdout={"0": "eval sum 6.1702 acc 21/64\n"},
                     records=_lines([("eval sum 6.1702 acc 21/64", same)]))
    bad = checks.metrics_equal("m", single, unreduced, 2)
    assert not bad.passed and "6.1702 vs 12.3456" in bad.evidence, bad.evidence
    sharded = _run(tmp_path, rank_stdout={"0": "eval sum 6.1702 acc 21/64\n"},
                   records=_lines([("eval sum 6.1702 acc 21/64", trained)]))
    na = checks.metrics_equal("m", single, sharded, 2)
    assert na.passed and na.status == "n/a" and na.evidence.startswith("no line printed in eval mode"), na


def test_last_digit_tolerance_and_number_masking() -> None:
    assert checks.within_last_digit("0.1234", "0.1235") and not checks.within_last_digit("0.1234", "0.1236")
    assert checks.within_last_digit("97", "98") and not checks.within_last_digit("97", "99")
    assert checks.within_last_digit("1.5e-03", "1.6e-03") and not checks.within_last_digit("1.5e-03", "1.7e-03")
    assert checks.shape("conv1 on cuda:1 loss 0.25 (98%)") == "conv1 on cuda:1 loss # (#%)"


def test_checkpoint_of_the_wrapped_model_names_the_prefix(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"x")
    want = {"weight": [[2, 4], 1.0, "float32"], "bias": [[2], 0.5, "float32"]}
    original = _run(tmp_path, records=[{"kind": "checkpoint", "rank": "0", "path": "model.pt", "ok": True,
                                        "keys": want, "modules": {"": "torch.nn.modules.linear.Linear"}}])
    assert checks.modules_saved(original) == {"model.pt": {"": "torch.nn.modules.linear.Linear"}}

    def port(keys, into=None):
        return _run(tmp_path, records=[{"kind": "checkpoint", "rank": "0", "path": "model.pt", "ok": True,
                                        "keys": keys, "into": into or {}}])

    wrapped = checks.checkpoints_load("c", port({f"module.{k}": v for k, v in want.items()}), original)
    assert not wrapped.passed and "keys carry the wrapper prefix 'module.'" in wrapped.evidence, wrapped
    half = checks.checkpoints_load("c", port({k: [v[0], v[1], "float16"] for k, v in want.items()}), original)
    assert not half.passed and "is float16 instead of float32" in half.evidence, half
    refused = port(want, {"": {"class": "Net", "ok": False, "error": "RuntimeError: size mismatch"}})
    assert "does not load into the original's Net" in checks.checkpoints_load("c", refused, original).evidence
    loaded = checks.checkpoints_load("c", port(want, {"": {"class": "Net", "ok": True, "error": ""}}), original)
    assert loaded.passed and "load_state_dict(strict=True): model.pt into Net" in loaded.evidence


def test_verify_migrates_the_program_the_script_imports(tmp_path: Path) -> None:
    import shutil

    from conftest import FIXTURES

    from migrator.verification.program import migrate_program

    folder = tmp_path / "project"
    shutil.copytree(FIXTURES / "programs" / "engine_layout", folder)
    # another training script of the folder: `migrate DIR` would port it, but SCRIPT never runs it
    (folder / "other.py").write_text((folder / "train.py").read_text())
    texts, message = migrate_program(folder / "train.py", "runtime", "wrapper")
    assert texts is not None and set(texts) == {"train.py", "engine.py"}, message
    assert message == "migrated to --target runtime (changed, with engine.py)"
    assert "def train_one_epoch(rt, model," in texts["engine.py"]
    assert "train_one_epoch(rt, model," in texts["train.py"]
