"""CLI behaviour: modes, exit codes, bad inputs, -o, stdin, select/ignore, suppressions."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from _cli_support import cli, fake_engine  # noqa: F401 - fixture used by name

from tests.conftest import child_env, run_cmd

UNPORTED = "import torch\nloss = model(x)\nloss.backward()\n"
PORTED = "import torch\nloss = model(x)\nrt.backward(loss)\n"


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.usefixtures("fake_engine")
def test_default_mode_prints_diff_and_findings_writes_nothing(work, capsys):
    (work / "t.py").write_text(UNPORTED)
    code, out, err = cli(capsys, "t.py")
    assert code == 0
    assert out.startswith("--- a/t.py\n+++ b/t.py\n") and "+rt.backward(loss)" in out
    assert "t.py:3:1: MIG201 call rt.backward(loss)" in err
    assert "1 file would be migrated" in err
    assert (work / "t.py").read_text() == UNPORTED


@pytest.mark.usefixtures("fake_engine")
def test_check_exit_1_with_findings_then_0_after_write(work, capsys):
    (work / "t.py").write_text(UNPORTED)
    code, out, _ = cli(capsys, "--check", "t.py")
    assert (code, out) == (1, "t.py:3:1: MIG201 call rt.backward(loss)\n")
    assert (work / "t.py").read_text() == UNPORTED
    code, _, err = cli(capsys, "--write", "t.py")
    assert code == 0 and "1 file migrated" in err
    assert (work / "t.py").read_text() == PORTED
    assert cli(capsys, "--check", "t.py")[0] == 0


@pytest.mark.usefixtures("fake_engine")
def test_needs_a_human_finding_fails_every_mode(work, capsys):
    (work / "t.py").write_text("import torch\ndist.init_process_group()  # HUMAN\n")
    for mode in ([], ["--check"], ["--write"]):
        code, out, err = cli(capsys, *mode, "t.py")
        assert code == 1, mode
        assert "t.py:2:1: MIG901 already distributed" in out + err


@pytest.mark.usefixtures("fake_engine")
def test_bad_inputs_one_line_each_others_still_processed(work, capsys):
    (work / "py2.py").write_text('import torch\nprint "hello"\n')
    (work / "bytes.py").write_bytes(b"import torch\nx = '\xff'\n")
    (work / "nul.py").write_bytes(b"import torch\n\0\n")
    (work / "empty.py").write_text("")
    os.symlink("loop.py", work / "loop.py")
    (work / "good.py").write_text(UNPORTED)
    names = ["py2.py", "bytes.py", "nul.py", "empty.py", "loop.py", "missing.py", "good.py"]
    code, out, err = cli(capsys, "--write", *names)
    assert code == 2
    lines = (out + err).splitlines()
    for name, words in [
        ("py2.py:2:", "MIG001 syntax error"),
        ("bytes.py:2:6:", "MIG002 not valid UTF-8"),
        ("nul.py:2:1:", "MIG002 contains NUL bytes"),
        ("empty.py", "empty file"),
        ("loop.py:1:1:", "MIG003 cannot read: symbolic link loop"),
        ("missing.py:1:1:", "MIG003 no such file"),
    ]:
        mine = [ln for ln in lines if ln.startswith(name)]
        assert len(mine) == 1 and words in mine[0], (name, lines)
    assert "Python 2" in next(ln for ln in lines if ln.startswith("py2.py"))
    assert "Traceback" not in out + err
    assert (work / "good.py").read_text() == PORTED
    assert (work / "bytes.py").read_bytes() == b"import torch\nx = '\xff'\n"


@pytest.mark.usefixtures("fake_engine")
def test_internal_error_is_123_and_never_writes(work, capsys):
    (work / "bug.py").write_text("import torch  # BUG\n")
    (work / "broken.py").write_text("import torch\nloss.backward()  # BROKEN\n")
    code, out, _ = cli(capsys, "--write", "bug.py", "broken.py")
    assert code == 123
    assert "bug.py:1:1: MIG009 internal error: boom" in out
    assert "broken.py:1:1: MIG009 internal error: migrated output does not compile" in out
    assert (work / "broken.py").read_text() == "import torch\nloss.backward()  # BROKEN\n"


@pytest.mark.usefixtures("fake_engine")
def test_output_file_and_directory(work, capsys):
    (work / "a.py").write_text(UNPORTED)
    (work / "pkg" / "sub").mkdir(parents=True)
    (work / "pkg" / "sub" / "b.py").write_text(UNPORTED)
    (work / "pkg" / "c.py").write_text("import torch\n")
    assert cli(capsys, "a.py", "-o", "out.py")[0] == 0
    assert (work / "out.py").read_text() == PORTED and (work / "a.py").read_text() == UNPORTED
    assert cli(capsys, "pkg", "-o", "outdir")[0] == 0
    assert (work / "outdir" / "sub" / "b.py").read_text() == PORTED
    assert (work / "outdir" / "c.py").read_text() == "import torch\n"
    code, _, err = cli(capsys, "a.py", "pkg", "-o", "out.py")
    assert code == 2 and "need a directory" in err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--check", "--write", "t.py"], "--check reports and --write rewrites"),
        (["--diff", "--format", "sarif", "t.py"], "--diff cannot be combined"),
        (["--target", "tensorflow", "t.py"], "valid targets: runtime, fabric, accelerate, lightning"),
        (["--target", "lightning", "--form", "wrapper", "t.py"],
         "target 'lightning' has no wrapper form (--form wrapper); it implies --form module"),
        (["--select", "E501", "t.py"], "'E501' is not a rule code"),
        (["--format", "xml", "t.py"], "'xml' is not one of"),
        ([], "no paths given"),
    ],
)
def test_usage_errors_exit_2_with_one_clear_line(work, capsys, args, words):
    (work / "t.py").write_text(UNPORTED)
    code, _, err = cli(capsys, *args)
    assert code == 2 and words in err, err


@pytest.mark.usefixtures("fake_engine")
def test_select_ignore_and_suppression_comments(work, capsys):
    (work / "t.py").write_text(UNPORTED.replace("backward()\n", "backward()  # migrate: ignore[MIG2]\n"))
    assert cli(capsys, "--check", "t.py")[:2] == (1, "")  # suppressed finding, change remains
    (work / "t.py").write_text(UNPORTED)
    assert cli(capsys, "--check", "--ignore", "MIG2", "t.py")[1] == ""
    assert cli(capsys, "--check", "--select", "MIG1,MIG4", "t.py")[1] == ""
    assert "MIG201" in cli(capsys, "--check", "--select", "mig201", "t.py")[1]
    (work / "t.py").write_text("# migrate: skip-file\n" + UNPORTED)
    assert cli(capsys, "--check", "t.py")[0] == 0
    (work / "t.py").write_text("import torch\nx = 1  # migrate: ignore[E501]\n")
    code, out, _ = cli(capsys, "--check", "t.py")
    assert code == 1 and "t.py:2:1: MIG004 'E501'" in out


@pytest.mark.usefixtures("fake_engine")
def test_files_without_torch_are_skipped(work, capsys):
    (work / "util.py").write_text("def f():\n    loss.backward()\n")
    code, out, err = cli(capsys, "--check", "-v", "util.py")
    assert (code, out) == (0, "")
    assert "util.py: skipped: never mentions torch" in err


@pytest.mark.usefixtures("fake_engine")
def test_many_files_in_parallel_keep_input_order(work, capsys):
    for i in range(12):
        (work / f"m{i:02d}.py").write_text(UNPORTED)
    code, out, _ = cli(capsys, "--check", "-j", "2", ".")
    assert code == 1
    assert out.splitlines() == [f"m{i:02d}.py:3:1: MIG201 call rt.backward(loss)" for i in range(12)]


def test_explain_and_version(capsys):
    code, out, _ = cli(capsys, "--explain", "mig001")
    assert code == 0 and out.startswith("MIG001 (syntax-error):") and "Python 2" in out
    code, _, err = cli(capsys, "--explain", "MIG999x")
    assert code == 2 and "known codes: MIG001" in err
    assert cli(capsys, "--version")[1] == "migrate 0.1.0\n"


def _subprocess(args, cwd, stdin=None):
    proc = subprocess.run([sys.executable, "-m", "migrator", *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=120, env=child_env(),
                          check=False)
    return proc


def test_stdin_real_process(tmp_path):
    done = _subprocess(["--check", "--stdin-filename", "train.py", "-"], tmp_path, "import os\n")
    assert done.returncode == 0, done.stderr
    done = _subprocess(["--write", "-"], tmp_path, "import numpy\nx = 1\n")
    assert (done.returncode, done.stdout) == (0, "import numpy\nx = 1\n")


def test_run_dispatches_to_the_launcher(tmp_path):
    done = run_cmd([sys.executable, "-m", "migrator", "run", "--help"], timeout=180, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("usage: migrate run") and "--devices" in done.stdout


def test_python_dash_m_migrator_is_the_console_script(tmp_path):
    assert _subprocess(["--version"], tmp_path).stdout == "migrate 0.1.0\n"
    (tmp_path / "t.py").write_text("import torch\nimport torch.distributed as dist\n"
                                   "dist.init_process_group('gloo')\n")
    done = _subprocess(["--check", "t.py"], tmp_path)
    assert done.returncode == 1 and "t.py:" in done.stdout and "MIG9" in done.stdout, done
    done = _subprocess(["--target", "jax", "t.py"], tmp_path)
    assert done.returncode == 2 and "Usage: migrate" in done.stderr



def _stdin(monkeypatch, text: str) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))


FINDING = "t.py:3:1: MIG201 call rt.backward(loss)"


@pytest.mark.usefixtures("fake_engine")
def test_one_stream_rule_report_on_stdout_unless_stdout_carries_code(work, capsys, monkeypatch):
    """Findings are the product (stdout) unless stdout carries a diff or migrated code."""
    (work / "t.py").write_text(UNPORTED)
    for mode in (["--check"], ["-o", "out.py"], ["--write"]):
        (work / "t.py").write_text(UNPORTED)
        code, out, err = cli(capsys, *mode, "t.py")
        assert out == FINDING + "\n" and FINDING not in err, mode
    (work / "t.py").write_text(UNPORTED)
    for mode in ([], ["--diff"], ["--check", "--diff"]):
        code, out, err = cli(capsys, *mode, "t.py")
        assert out.startswith("--- a/t.py") and FINDING not in out and FINDING in err, mode
    for fmt, words in (("text", "-:3:1: MIG201"), ("github", "::notice file=-,line=3"),
                       ("json", '"code": "MIG201"')):
        _stdin(monkeypatch, UNPORTED)
        code, out, err = cli(capsys, "--write", "--format", fmt, "-")
        assert (code, out) == (0, PORTED), fmt  # an editor's filter gets nothing but the code
        assert words in err, fmt


@pytest.mark.usefixtures("fake_engine")
def test_quiet_keeps_findings_silent_keeps_only_code(work, capsys):
    (work / "pyproject.toml").write_text("[tool.migrate]\ncolour = 1\n")
    (work / "t.py").write_text(UNPORTED)
    code, out, err = cli(capsys, "--check", "t.py")
    assert "warning: " in err and "would be migrated" in err
    assert cli(capsys, "-q", "--check", "t.py") == (1, FINDING + "\n", "")
    for silent in ("-qq", "--silent"):
        assert cli(capsys, silent, "--check", "t.py") == (1, "", "")
        assert cli(capsys, silent, "--check", "--format", "json", "t.py") == (1, "", "")
        code, out, err = cli(capsys, silent, "t.py")
        assert (code, err) == (0, "") and out.startswith("--- a/t.py")


@pytest.mark.usefixtures("fake_engine")
def test_named_paths_are_migrated_even_excluded_and_no_files_is_said(work, capsys):
    (work / ".git").mkdir()
    (work / ".gitignore").write_text(".venv/\n")
    (work / ".venv" / "lib").mkdir(parents=True)
    (work / ".venv" / "lib" / "t.py").write_text(UNPORTED)
    (work / "docs").mkdir()
    for args in ([".venv/lib"], [".venv/lib/t.py"]):
        code, out, _ = cli(capsys, "--check", *args)
        assert (code, out) == (1, ".venv/lib/t.py:3:1: MIG201 call rt.backward(loss)\n"), args
    for args in (["docs"], ["--force-exclude", ".venv/lib/t.py"], ["."]):
        code, out, err = cli(capsys, "--check", *args)
        assert (code, out) == (0, "") and "warning: no Python files found in " in err, args
        assert "would be migrated" not in err
    assert cli(capsys, "-q", "--check", "docs") == (0, "", "")


def test_module_form_fallback_is_said_in_the_summary(work, capsys):
    # a loop over batchified tensors: not a DataLoader, so the module form does not fit
    (work / "t.py").write_text(
        "import torch\n\nmodel = torch.nn.Linear(2, 1)\nopt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "data = torch.randn(8, 2)\nfor epoch in range(2):\n    for i in range(0, 8, 4):\n"
        "        opt.zero_grad()\n        loss = model(data[i:i + 4]).sum()\n        loss.backward()\n"
        "        opt.step()\n"
    )
    code, out, err = cli(capsys, "--target", "lightning", "--write", "t.py")
    assert code == 0, err
    assert "MIG502" in err
    assert "1 file migrated, 1 in the wrapper form: the module form did not fit (MIG502-MIG507)" in err
    assert "fabric" in (work / "t.py").read_text()
    (work / "u.py").write_text("print('no training here')\n")
    code, out, err = cli(capsys, "--target", "lightning", "u.py")
    assert code == 0 and "in the wrapper form" not in err  # nothing to convert: no fallback said
