"""Downloads on N processes (MIG405) and state dicts of a set-up model reached through returns (MIG210)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from migrator.batch import Job, run
from migrator.engine import migrate_source
from migrator.files import discover
from migrator.options import Options

ROOT = Path(__file__).resolve().parents[2]

TRAIN = """
model = torch.nn.Linear(2, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(2):
    optimizer.zero_grad()
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
"""


def _port(source: str, target: str = "runtime") -> str:
    result = migrate_source(source, "train.py", Options(target=target))
    assert not result.internal_error, result.traceback
    again = migrate_source(result.output, "train.py", Options(target=target))
    assert again.output == result.output, "not a fixed point"
    return result.output


# ---------------------------------------------------------------- six.moves.urllib


@pytest.mark.parametrize(
    "imports,call",
    [
        ("from six.moves import urllib", "urllib.request.urlretrieve(URL, 'bsds.tgz')"),
        ("from six.moves.urllib.request import urlretrieve", "urlretrieve(URL, 'bsds.tgz')"),
        ("import six", "six.moves.urllib.request.urlretrieve(URL, 'bsds.tgz')"),
    ],
)
def test_six_moves_urlretrieve_is_a_download(imports, call):
    source = f"import torch\n{imports}\n\nURL = 'https://example.org/bsds.tgz'\n{call}\n{TRAIN}"
    out = _port(source)
    assert f"if rt.is_global_zero:\n    {call}\nrt.barrier()\n" in out, out


# ---------------------------------------------------------------- rank 0 alone or first

STREAMED = """import tarfile
import requests
import torch

with requests.get("https://example.org/cora.tgz", stream=True) as tgz_file:
    with tarfile.open(fileobj=tgz_file.raw, mode="r:gz") as tgz:
        tgz.extractall()
"""


@pytest.mark.parametrize("target", ["runtime", "fabric", "accelerate"])
def test_an_unconditional_extraction_runs_on_rank_zero_alone(target):
    out = _port(STREAMED + TRAIN, target)
    zero, barrier = {
        "runtime": ("rt.is_global_zero", "rt.barrier()"),
        "fabric": ("fabric.is_global_zero", "fabric.barrier()"),
        "accelerate": ("accelerator.is_main_process", "accelerator.wait_for_everyone()"),
    }[target]
    assert f"if {zero}:\n    with requests.get(" in out, out
    assert f"        tgz.extractall()\n{barrier}\n" in out, out
    assert "rank_zero_first" not in out and "main_process_first" not in out


@pytest.mark.parametrize(
    "tail",
    [
        "n = 1\nprint(tgz.getnames())\n",  # a name the block binds is read after it
        "archives = []\n",  # (the change below: an outside list filled inside)
    ],
)
def test_what_the_others_need_keeps_rank_zero_first(tail):
    source = STREAMED + tail + TRAIN
    if tail.startswith("archives"):
        source = source.replace("import torch\n", "import torch\n\narchives = []\n", 1).replace(
            "        tgz.extractall()\n",
            "        tgz.extractall()\n        archives.append(tgz.name)\n",
        )
    out = _port(source)
    assert "with rt.rank_zero_first():\n    with requests.get(" in out, out
    assert "rt.is_global_zero" not in out


def test_a_data_set_download_keeps_rank_zero_first():
    source = (
        "import torch\nfrom torchvision import datasets\n\n"
        "train_set = datasets.MNIST('../data', train=True, download=True)\n" + TRAIN
    )
    out = _port(source)
    assert "with rt.rank_zero_first():\n    train_set = datasets.MNIST(" in out, out


def test_an_attribute_store_keeps_rank_zero_first():
    source = (
        "import torch\nimport urllib.request\n\nclass C:\n    pass\n\ncfg = C()\n"
        "cfg.path, _ = urllib.request.urlretrieve('https://example.org/a.txt', 'a.txt')\n" + TRAIN
    )
    out = _port(source)
    assert "with rt.rank_zero_first():\n    cfg.path, _ = urllib" in out, out


def test_a_download_in_the_else_of_an_exists_test_takes_the_whole_if():
    source = (
        "import os\nimport tarfile\nimport requests\nimport torch\n\n"
        "if os.path.isfile('cora/cora.content'):\n"
        "    print('cached')\n"
        "else:\n"
        "    with requests.get('https://example.org/cora.tgz', stream=True) as f:\n"
        "        with tarfile.open(fileobj=f.raw, mode='r:gz') as tgz:\n"
        "            tgz.extractall()\n" + TRAIN
    )
    out = _port(source)
    assert "if rt.is_global_zero:\n    if os.path.isfile('cora/cora.content'):\n" in out, out
    assert "            tgz.extractall()\nrt.barrier()\n" in out, out


# ---------------------------------------------------------------- program: super_resolution's shape

DATA = '''from os import makedirs
from os.path import exists, join
from six.moves import urllib
from torchvision.transforms import ToTensor


def download(dest="dataset"):
    out = join(dest, "images")
    if not exists(out):
        makedirs(dest)
        urllib.request.urlretrieve("https://example.org/images.tgz", join(dest, "images.tgz"))
    return out


def get_training_set():
    return download(), ToTensor()
'''

MAIN = '''import torch
from data import get_training_set

root = get_training_set()
''' + TRAIN


@pytest.mark.parametrize("target", ["runtime", "fabric"])
def test_a_helper_modules_download_borrows_the_wrapper(tmp_path, target):
    (tmp_path / "data.py").write_text(DATA)
    (tmp_path / "main.py").write_text(MAIN)
    found = list(discover([str(tmp_path)], root=tmp_path))
    job = Job(Options(target=target), keep_output=True)
    outs = {Path(o.path).name: o for o in run(found, job, jobs=1)}
    name = {"runtime": "rt", "fabric": "fabric"}[target]
    data, main = outs["data.py"].output, outs["main.py"].output
    assert f"def download({name}, dest=\"dataset\"):" in data, data
    assert f"    if {name}.is_global_zero:\n        if not exists(out):" in data, data
    assert f"def get_training_set({name}):\n    return download({name}), ToTensor()" in data, data
    assert f"root = get_training_set({name})" in main, main


# ---------------------------------------------------------------- MIG210: the value, not the spelling


def test_a_state_dict_of_a_returned_model_is_unwrapped_on_accelerate():
    source = (ROOT / "fixtures/rules/MIG210_unwrap_returned_model/input.py").read_text()
    out = _port(source, "accelerate")
    assert "weights = accelerator.unwrap_model(self.net).state_dict()" in out, out
    for target in ("runtime", "fabric"):  # their set-up models answer the module's state dict
        assert "unwrap" not in _port(source, target)


# ---------------------------------------------------------------- the scoreboard migrates programs


def test_the_scoreboard_migrates_the_script_with_the_modules_it_imports(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from real_world.program import program_files
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "layers.py").write_text("import os\n")
    (tmp_path / "data.py").write_text("from dataset import Folder\nimport numpy\n")
    (tmp_path / "dataset.py").write_text("import torch\n")
    (tmp_path / "model.py").write_text("from pkg import layers\n")
    (tmp_path / "unused.py").write_text("")
    (tmp_path / "main.py").write_text("import torch\nfrom data import get\nimport model as m\n")
    files = program_files(tmp_path, "main.py")
    assert files[0] == "main.py"
    assert sorted(files) == sorted(
        ["main.py", "data.py", "dataset.py", "model.py", "pkg/__init__.py", "pkg/layers.py"]
    )


# ---------------------------------------------------------------- MIG403: GPU 0 on every rank

PICKLED = TRAIN + """torch.save(model, "full.pt")
with open("full.pt", "rb") as f:
    net = torch.load(f, weights_only=False)
net.eval()
"""
DEVICE = {"runtime": "rt.device", "fabric": "fabric.device", "accelerate": "accelerator.device"}


@pytest.mark.parametrize("target", list(DEVICE))
def test_a_whole_model_read_back_maps_gpu_0_to_the_process_device(target):
    out = _port("import torch\n" + PICKLED, target)
    mapping = f'map_location={{"cuda:0": str({DEVICE[target]})}}'
    want = f"net = torch.load(f, weights_only=False, {mapping})"
    assert want in out, out


def test_a_state_dict_kept_on_torch_load_maps_gpu_0_to_the_process_device():
    source = "import torch\n" + TRAIN + 'model.load_state_dict(torch.load("w.pt"))\n'
    out = _port(source, "accelerate")  # accelerate has no load of its own for a file
    want = 'load_state_dict(torch.load("w.pt", map_location={"cuda:0": str(accelerator.device)}))'
    assert want in out, out


@pytest.mark.parametrize(
    "load",
    [
        'data = torch.load("traindata.pt")\nprint(data.shape)\n',  # data: the script's own load
        'net = torch.load("full.pt", "cpu")\nnet.eval()\n',  # its own map_location, by position
        'net = torch.load("full.pt", map_location=None)\nnet.eval()\n',
    ],
)
def test_loads_that_are_not_models_or_choose_their_location_stay(load):
    out = _port("import torch\n" + TRAIN + load)
    assert "cuda:0" not in out, out
    assert load.split("\n")[0] in out
