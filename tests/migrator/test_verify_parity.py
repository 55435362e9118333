"""`migrate verify`'s 1-process parity on real-world shapes of scripts: an original that is not
deterministic (n/a, not a failure of the port), files under timestamped folders, a script run
from the user's working directory rather than its own folder. Torch-free scripts: fast."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, child_env

from migrator.verification import checks
from migrator.verification.pipeline import Request, layout, verify
from migrator.verification.runs import Run

STDOUT, FILES = "1-process stdout same as original", "1-process files same as original"


def _run(folder: Path, **kw) -> Run:
    run = Run("r", ["x"], folder, folder, returncode=0)
    for key, value in kw.items():
        setattr(run, key, value)
    return run


def _ckpt(folder: Path, path: str, **sums: float) -> Run:
    (folder / path).parent.mkdir(parents=True, exist_ok=True)
    (folder / path).write_bytes(b"x")
    keys = {k: [[2], v, "float32"] for k, v in sums.items()}
    return _run(folder, records=[{"kind": "write", "rank": "0", "path": path},
                                 {"kind": "checkpoint", "rank": "0", "path": path, "ok": True, "keys": keys}])


def test_stdout_differences_only_where_the_original_moves_are_not_applicable() -> None:
    original, again = "device cpu\nloss 0.25\ndone\n", "device cpu\nloss 0.75\ndone\n"
    na = checks.same_stdout("s", original, "device cpu\nloss 0.5\ndone\n", again)
    assert na.passed and na.status == "n/a", na
    assert na.evidence.startswith("the original is not deterministic (run twice, it printed 'loss 0.25' "
                                  "then 'loss 0.75' on line 2)"), na.evidence
    # a difference on a line the original prints the same on every run is the port's
    stable = checks.same_stdout("s", original, "device cuda:0\nloss 0.5\ndone\n", again)
    assert stable.status == "fail" and stable.evidence == "line 1: expected 'device cpu', got 'device cuda:0'"
    assert checks.same_stdout("s", original, "device cpu\nloss 0.5\n", again).status == "fail"
    # a stable original: the failure stands
    assert checks.same_stdout("s", original, "device cpu\nloss 0.5\ndone\n", original).status == "fail"
    # line counts that change run to run: comparable up to the original's first change only
    assert checks.same_stdout("s", "a\nstep 1\n", "a\nstep 1\nstep 2\nstep 3\n", "a\nstep 1\nstep 2\n").status == "n/a"
    assert checks.same_stdout("s", "a\nstep 1\n", "b\nstep 1\nstep 2\n", "a\nstep 1\nstep 2\n").status == "fail"


def test_checkpoint_values_of_an_unstable_original_are_not_applicable_keys_stay_hard(tmp_path: Path) -> None:
    dirs = {name: tmp_path / name for name in ("original", "again", "port", "stable")}
    for d in dirs.values():
        d.mkdir()
    original = _ckpt(dirs["original"], "ckpt.pt", weight=1.0, bias=0.5)
    again = _ckpt(dirs["again"], "ckpt.pt", weight=1.5, bias=0.25)
    port = _ckpt(dirs["port"], "ckpt.pt", weight=2.0, bias=0.5)
    assert checks.same_files("f", original, port).status == "fail"  # no second run: the values differ
    na = checks.same_files("f", original, port, again)
    assert na.passed and na.status == "n/a", na
    assert "its ckpt.pt had bias sum 0.5 then 0.25" in na.evidence and "cannot be compared" in na.evidence, na
    # the original's values repeat: the port's difference is a failure
    stays = checks.same_files("f", original, port, _ckpt(dirs["stable"], "ckpt.pt", weight=1.0, bias=0.5))
    assert stays.status == "fail" and stays.evidence == \
        "ckpt.pt: weight differs from the original's (sum 2 vs 1)", stays
    # keys do not depend on a seed
    renamed = _ckpt(dirs["port"], "ckpt.pt", w=1.0, bias=0.5)
    keys = checks.same_files("f", original, renamed, again)
    assert keys.status == "fail" and "keys differ from the original's" in keys.evidence, keys


def test_files_in_timestamped_folders_pair_between_runs(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    first = _ckpt(tmp_path / "a", "outputs/20261206-055204/model.pt", weight=1.0)
    second = _ckpt(tmp_path / "b", "outputs/20261206-055211/model.pt", weight=1.0)
    same = checks.same_files("f", first, second)
    assert same.passed and same.evidence == "same 1 file(s): outputs/<TIMESTAMP>/model.pt", same
    assert checks.files_once("o", second, first).passed
    assert checks.modules_saved(_run(tmp_path / "a", records=[
        {"kind": "checkpoint", "rank": "0", "path": "runs/2026-12-06_05-52-04/m.pt", "ok": True, "keys": {},
         "modules": {"": "Net"}}])) == {"runs/<TIMESTAMP>/m.pt": {"": "Net"}}
    for stamped in ("20261206-055204", "2026-12-06_05-52-04", "2026-12-06T05:52:04.5", "1733460000", "v_20261206"):
        assert "<TIMESTAMP>" in checks.pair_path(f"out/{stamped}/x.png"), stamped
    for plain in ("checkpoint-1000.pt", "fake-0004.png", "epoch_12/x.pt", "20261306-000000/x"):
        assert checks.pair_path(plain) == plain
    # printed paths: stdout masks a date with a time in these forms too
    assert checks.normalise("saved at models/epoch_1_2026-12-06_06-32-08_1.0.model") == \
        "saved at models/epoch_1_<TIMESTAMP>_1.0.model"
    assert checks.normalise("run 20261206-055204, step 20261206") == "run <TIMESTAMP>, step 20261206"


# Torch-free scripts run for real (original, port on 1 and on 2 processes): a few seconds each.
UNSEEDED = '''\
import os, random
if os.environ.get("RANK", "0") == "0":
    print("start")
    print(f"loss {random.random():.6f}")
'''

STAMPED = '''\
import os, datetime
stamp = datetime.datetime.fromtimestamp(1_700_000_000 + os.getpid()).strftime("%Y%m%d-%H%M%S")
if os.environ.get("RANK", "0") == "0":
    os.makedirs(f"outputs/{stamp}")
    with open(f"outputs/{stamp}/sample.txt", "w") as fh:
        fh.write("x")
'''


def _verify(tmp_path: Path, original: str, port: str | None = None) -> tuple[dict, list[str]]:
    (tmp_path / "train.py").write_text(original)
    (tmp_path / "port.py").write_text(port or original)
    report = verify(Request(tmp_path / "train.py", migrated=tmp_path / "port.py", timeout=120))
    return {c.name: c for c in report.checks}, [r.label for r in report.runs]


def test_an_unseeded_original_is_not_applicable_a_seeded_one_still_fails(tmp_path: Path) -> None:
    (tmp_path / "unseeded").mkdir()
    found, runs = _verify(tmp_path / "unseeded", UNSEEDED)
    assert found[STDOUT].status == "n/a", found[STDOUT]
    assert found[STDOUT].evidence.startswith("the original is not deterministic (run twice, it printed 'loss "), \
        found[STDOUT].evidence
    assert runs == ["original", "port-1", "original-again", "port-2"]
    (tmp_path / "seeded").mkdir()
    seeded = UNSEEDED.replace("import os, random\n", "import os, random\nrandom.seed(0)\n")
    found, runs = _verify(tmp_path / "seeded", seeded, seeded.replace("random.random()", "random.random() / 2"))
    assert found[STDOUT].status == "fail" and found[STDOUT].evidence.startswith("line 2: expected 'loss "), \
        found[STDOUT]
    assert runs == ["original", "port-1", "original-again", "port-2"]
    # parity that holds costs no second run
    found, runs = _verify(tmp_path / "seeded", seeded)
    assert found[STDOUT].status == "pass" and runs == ["original", "port-1", "port-2"]


def test_files_under_a_timestamped_folder_pair_up_on_every_run(tmp_path: Path) -> None:
    found, _ = _verify(tmp_path, STAMPED)
    assert found[FILES].passed and found[FILES].evidence == "same 1 file(s): outputs/<TIMESTAMP>/sample.txt", \
        found[FILES]
    once = found["2 processes: every file written once, by rank 0"]
    assert once.passed, once


READS_CWD = '''\
import os, sys
print(open(sys.argv[1]).read().strip(), os.path.basename(os.getcwd()) != "tool")
with open("result.txt", "w") as fh:
    fh.write("ok")
'''


def test_script_in_a_subfolder_runs_from_a_copy_of_the_working_directory(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "tool").mkdir(parents=True)
    (project / "images").mkdir()
    (project / "images" / "style.txt").write_text("mosaic\n")
    (project / "tool" / "run.py").write_text(READS_CWD)
    assert layout(Request(project / "tool" / "run.py", cwd=project)) == (project, "tool/run.py")
    assert layout(Request(project / "tool" / "run.py", cwd=tmp_path / "elsewhere")) == (project / "tool", "run.py")
    assert layout(Request(project / "tool" / "run.py")) == (project / "tool", "run.py")
    cmd = [sys.executable, "-m", "migrator", "verify", "tool/run.py", "--migrated", "tool/run.py",
           "--format", "json", "--timeout", "120", "--", "images/style.txt"]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, cwd=project,
                          env=child_env(PYTHONPATH=str(ROOT)))
    report = json.loads(proc.stdout)
    found = {c["name"]: c for c in report["checks"]}
    assert found["original exits 0 on 1 process"]["passed"], (found, proc.stderr[-2000:])
    assert found[STDOUT]["status"] == "pass" and found["port exits 0 on 2 processes (runtime launcher)"]["passed"]
    assert found[FILES]["evidence"] == "same 1 file(s): result.txt", found[FILES]
    original = next(r for r in report["runs"] if r["label"] == "original")
    assert original["cmd"][-2:] == [str(Path(original["folder"]) / "tool" / "run.py"), "images/style.txt"]
