"""`migrate verify` runs a script in a subfolder from a copy of the user's working directory,
not of the script's own folder. Torch-free scripts: fast."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, child_env

from migrator.verification.pipeline import Request, layout

STDOUT, FILES = "1-process stdout same as original", "1-process files same as original"


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
