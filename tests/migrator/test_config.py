"""Tests for [tool.migrate] discovery, validation, unknown keys and flag precedence."""

from __future__ import annotations

import pytest
from _cli_support import cli, fake_engine  # noqa: F401 - fixture used by name

from migrator.config import Config, ConfigError, discover_config, load, resolve_options

UNPORTED = "import torch\nloss.backward()\n"


def _project(tmp_path, body: str):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "pyproject.toml").write_text(body)
    (tmp_path / "src" / "deep").mkdir(parents=True)
    return tmp_path


def test_nearest_pyproject_with_table_wins(tmp_path):
    _project(tmp_path, '[tool.migrate]\ntarget = "fabric"\nselect = ["MIG2"]\n')
    (tmp_path / "src" / "pyproject.toml").write_text("[project]\nname = 'x'\n")  # no table
    cfg = discover_config([str(tmp_path / "src" / "deep")])
    assert cfg.path == tmp_path / "pyproject.toml"
    assert (cfg.target, cfg.select) == ("fabric", ("MIG2",))


def test_unknown_keys_warn_with_the_valid_ones(tmp_path):
    cfg = load(_project(tmp_path, '[tool.migrate]\ntarget = "runtime"\ntargte = "x"\n') / "pyproject.toml")
    assert len(cfg.warnings) == 1
    assert "unknown key 'targte'" in cfg.warnings[0] and "target, form, select" in cfg.warnings[0]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('[tool.migrate]\ntarget = ["fabric"]\n', "target must be a string"),
        ("[tool.migrate]\nselect = [1]\n", "select must be a list of strings"),
        ("[tool.migrate\n", "cannot read configuration"),
    ],
)
def test_bad_values_are_errors(tmp_path, body, words):
    with pytest.raises(ConfigError, match=words):
        load(_project(tmp_path, body) / "pyproject.toml")


def test_flags_override_config_and_defaults_apply():
    cfg = Config(target="fabric", select=("MIG1",), ignore=("MIG4",))
    opts = resolve_options(cfg, target=None, form=None, select=(), ignore=())
    assert (opts.target, opts.form, opts.select, opts.ignore) == ("fabric", "wrapper", ("MIG1",), ("MIG4",))
    opts = resolve_options(cfg, target="runtime", form=None, select=("MIG2,mig401",), ignore=("MIG9",))
    assert (opts.target, opts.select, opts.ignore) == ("runtime", ("MIG2", "MIG401"), ("MIG9",))
    assert resolve_options(Config(), target=None, form=None, select=(), ignore=()).target == "runtime"


def test_bad_configured_target_names_the_file(tmp_path):
    cfg = load(_project(tmp_path, '[tool.migrate]\ntarget = "jax"\n') / "pyproject.toml")
    with pytest.raises(ConfigError, match=r"unknown target 'jax' \(from .*pyproject.toml\); valid targets"):
        resolve_options(cfg, target=None, form=None, select=(), ignore=())


@pytest.mark.usefixtures("fake_engine")
def test_cli_uses_config_ignore_exclude_and_reports_unknown_keys(tmp_path, monkeypatch, capsys):
    _project(tmp_path, '[tool.migrate]\nignore = ["MIG2"]\nextend-exclude = ["legacy/"]\ncolour = 1\n')
    (tmp_path / "src" / "t.py").write_text(UNPORTED)
    (tmp_path / "legacy").mkdir()
    (tmp_path / "legacy" / "old.py").write_text(UNPORTED)
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "--check", ".")
    assert "warning: " in err and "unknown key 'colour'" in err
    assert out == ""  # MIG2 ignored by configuration; legacy/ excluded
    assert code == 1  # the file would still change
    code, out, _ = cli(capsys, "--check", "--ignore", "MIG9", ".")
    assert out == "src/t.py:2:1: MIG201 call rt.backward(loss)\n"  # flag replaced config
    # --exclude replaces the defaults (build/ is back) but extend-exclude still adds legacy/
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "b.py").write_text(UNPORTED)
    code, out, _ = cli(capsys, "--check", "--ignore", "MIG9", "--exclude", "src/", ".")
    assert out == "build/b.py:2:1: MIG201 call rt.backward(loss)\n"


def test_lightning_target_implies_the_module_form(tmp_path):
    def form(cfg, **flags):
        return resolve_options(cfg, target=flags.get("target"), form=flags.get("form"),
                               select=(), ignore=()).form

    assert form(Config(), target="lightning") == "module"
    assert form(Config(target="lightning")) == "module"  # from [tool.migrate] too
    assert form(Config(form="wrapper"), target="lightning") == "module"  # the flag wins
    assert form(Config(target="lightning", form="wrapper"), form="module") == "module"
    assert form(Config(), target="fabric") == "wrapper"
    cfg = load(_project(tmp_path, '[tool.migrate]\ntarget = "lightning"\nform = "wrapper"\n')
               / "pyproject.toml")
    with pytest.raises(ConfigError, match=r"has no wrapper form \(form = 'wrapper' \(from .*"
                       r"pyproject.toml\)\); it implies --form module"):
        form(cfg)


@pytest.mark.usefixtures("fake_engine")
def test_force_exclude_from_config(tmp_path, monkeypatch, capsys):
    _project(tmp_path, '[tool.migrate]\nextend-exclude = ["legacy/"]\nforce-exclude = true\n')
    (tmp_path / "legacy").mkdir()
    (tmp_path / "legacy" / "old.py").write_text(UNPORTED)
    (tmp_path / "t.py").write_text(UNPORTED)
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli(capsys, "--check", "legacy/old.py", "t.py")
    assert (code, out) == (1, "t.py:2:1: MIG201 call rt.backward(loss)\n")
    with pytest.raises(ConfigError, match="force-exclude must be true or false"):
        load(_project(tmp_path / "other", '[tool.migrate]\nforce-exclude = "yes"\n') / "pyproject.toml")
