"""What each whole script under fixtures/scripts is run with, what it writes, and how its files load into the original code."""

from __future__ import annotations

import argparse
import ast
import pickle
import types
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from conftest import FIXTURES  # tests/conftest.py

SCRIPTS = FIXTURES / "scripts"
TARGETS = ("runtime", "fabric")


@cache
def definitions(name: str) -> dict:
    """The original script's imports, classes, functions and UPPER_CASE constants, without running it.

    Top-level scripts (notebook, PyTorch-GAN, word_language_model) train at import time, so
    the module cannot simply be imported; executing only its definitions gives the original
    model classes to load checkpoints into.
    """
    path = SCRIPTS / f"{name}.py"
    tree = ast.parse(path.read_text(), filename=str(path))

    def keep(node: ast.stmt) -> bool:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.ClassDef, ast.FunctionDef)):
            return True
        return (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and all(isinstance(t, ast.Name) and t.id.isupper() for t in node.targets)
        )

    tree.body = [node for node in tree.body if keep(node)]
    namespace: dict = {"__name__": f"e2e_original_{name}", "__file__": str(path)}
    exec(compile(tree, str(path), "exec"), namespace)  # noqa: S102 - our own fixture, definitions only
    return namespace


def _torch():
    import torch  # imported lazily: collecting the tests must not need torch

    return torch


def load_state(path: Path):
    return _torch().load(path, map_location="cpu", weights_only=True)


def load_pickled_model(path: Path, namespace: dict):
    """``torch.load`` a whole-model pickle saved from ``__main__``, resolving ``__main__`` names
    to the original script's classes (as the original script's own reload would)."""

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if module == "__main__":
                return namespace[name]
            return super().find_class(module, name)

    shim = types.ModuleType("main_mapping_pickle")
    shim.__dict__.update({k: getattr(pickle, k) for k in dir(pickle) if not k.startswith("__")})
    shim.Unpickler = Unpickler
    return _torch().load(path, map_location="cpu", weights_only=False, pickle_module=shim)


def _state_dict_into(model_factory: Callable[[], object]) -> Callable[[Path], None]:
    def check(path: Path) -> None:
        model_factory().load_state_dict(load_state(path))  # strict: same keys, same shapes

    return check


def _check_mnist(path: Path) -> None:
    _state_dict_into(lambda: definitions("mnist_cnn")["Net"]())(path)


def _dcgan_ns() -> dict:
    ns = definitions("dcgan")
    # The PyTorch-GAN classes read the module-global ``opt``: give them the script's defaults.
    ns["opt"] = argparse.Namespace(img_size=8, latent_dim=16, channels=1)
    return ns


def _check_dcgan(path: Path) -> None:
    cls = "Generator" if path.name.startswith("netG") else "Discriminator"
    _state_dict_into(lambda: _dcgan_ns()[cls]())(path)


def _check_pgm(path: Path) -> None:
    lines = path.read_text().split("\n")
    assert lines[0] == "P2" and lines[1] == "32 32" and lines[2] == "255", lines[:3]
    pixels = [int(v) for line in lines[3:] for v in line.split()]
    assert len(pixels) == 32 * 32 and all(0 <= v <= 255 for v in pixels), "bad PGM pixel data"


def _check_transformer(path: Path) -> None:
    ns, torch = definitions("transformer_lm"), _torch()
    ckpt = load_state(path)
    model = ns["TinyLM"]()
    model.load_state_dict(ckpt["model"])
    # The original --resume path restores all of these.
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scheduler.load_state_dict(ckpt["scheduler"])
    torch.amp.GradScaler("cuda", enabled=False).load_state_dict(ckpt["scaler"])
    for key in ("epoch", "global_step", "batches_done"):
        assert isinstance(ckpt[key], int), f"{key} should be an int, got {ckpt[key]!r}"


def _check_class_trainer(path: Path) -> None:
    ns, torch = definitions("class_trainer"), _torch()
    state = load_state(path)
    model = ns["MLP"]()
    model.load_state_dict(state["model"])
    torch.optim.AdamW(model.parameters(), lr=1e-3).load_state_dict(state["optimizer"])
    assert isinstance(state["epoch"], int), state["epoch"]


def _check_lbfgs(path: Path) -> None:
    _state_dict_into(lambda: definitions("lbfgs_fit")["CurveNet"]())(path)


def _check_dataparallel(path: Path) -> None:
    _state_dict_into(lambda: definitions("dataparallel_classifier")["SmallConvNet"]())(path)


def _check_lstm(path: Path) -> None:
    ns = definitions("lstm_lm")
    model = load_pickled_model(path, ns)
    assert type(model) is ns["RNNModel"], (
        f"pickled object is a {type(model).__qualname__}, not the RNNModel"
    )
    fresh = ns["RNNModel"](50, 32, 64, 2, 0.2, False)
    fresh.load_state_dict(model.state_dict())  # strict: no wrapper prefixes, same shapes


def _check_notebook(path: Path) -> None:
    _state_dict_into(lambda: definitions("notebook_style")["NeuralNetwork"]())(path)


def _check_vae(path: Path) -> None:
    _state_dict_into(lambda: definitions("vae")["VAE"]())(path)


def _check_vae_images(path: Path) -> None:
    images = load_state(path)
    assert tuple(images.shape) == (16, 1, 8, 8), f"image tensor of shape {tuple(images.shape)}"
    assert 0.0 <= images.min().item() and images.max().item() <= 1.0, "pixel values outside [0, 1]"


def _check_reinforce(path: Path) -> None:
    _state_dict_into(lambda: definitions("reinforce")["Policy"]())(path)


def _check_sensor(path: Path) -> None:
    nn = _torch().nn
    _state_dict_into(lambda: nn.Sequential(nn.Linear(3, 32), nn.Tanh(), nn.Linear(32, 1)))(path)


@dataclass(frozen=True)
class Spec:
    """How the e2e tests drive one script.

    ``files`` maps every file the training run writes (relative to its working directory) to a
    check that loads it with the original script's code. ``eval_args`` evaluate a fixed model:
    the file ``eval_input`` written by the original training run is copied into the working
    directory first, so 1 and 2 processes must report the same numbers.
    """

    name: str
    train_args: tuple[str, ...]
    files: dict[str, Callable[[Path], None]]
    eval_args: tuple[str, ...] = ()
    eval_input: str = ""

    @property
    def path(self) -> Path:
        return SCRIPTS / f"{self.name}.py"


SPECS = {
    s.name: s
    for s in [
        Spec(
            "mnist_cnn",
            ("--epochs", "2", "--save-model"),
            {"mnist_cnn.pt": _check_mnist},
            ("--eval-only", "--load-model", "mnist_cnn.pt"),
            "mnist_cnn.pt",
        ),
        Spec(
            "dcgan",
            ("--epochs", "2"),
            {
                **{f"net{m}_epoch_{e}.pth": _check_dcgan for m in "GD" for e in (0, 1)},
                "images/epoch_000.pgm": _check_pgm,
                "images/epoch_001.pgm": _check_pgm,
            },
        ),
        Spec(
            "transformer_lm",
            ("--epochs", "2"),
            {"ckpt.pt": _check_transformer},
            ("--eval-only", "--resume", "ckpt.pt"),
            "ckpt.pt",
        ),
        Spec(
            "class_trainer",
            ("--epochs", "2"),
            {"last.pt": _check_class_trainer},
            ("--eval-only", "--checkpoint", "last.pt"),
            "last.pt",
        ),
        Spec("lbfgs_fit", ("--epochs", "10"), {"curve_net.pt": _check_lbfgs}),
        Spec(
            "dataparallel_classifier",
            ("--epochs", "2"),
            {"best_model.pt": _check_dataparallel},
            ("-e", "--resume", "best_model.pt"),
            "best_model.pt",
        ),
        Spec("lstm_lm", ("--epochs", "2"), {"model.pt": _check_lstm}, ("--eval-only",), "model.pt"),
        Spec("notebook_style", ("--epochs", "2"), {"model.pth": _check_notebook}),
        Spec(
            "vae",
            ("--epochs", "2"),
            {
                "vae.pt": _check_vae,
                **{
                    f"results/{kind}_{e}.pt": _check_vae_images
                    for kind in ("sample", "reconstruction")
                    for e in (1, 2)
                },
            },
        ),
        Spec("reinforce", ("--epochs", "300"), {"policy.pt": _check_reinforce}),
        # Sharded without shuffling, rank 0 gets the noisy sensor and rank 1 the precise one:
        # their epoch losses cross --stop-loss at different epochs (a per-rank loop exit).
        Spec("sensor_regression", ("--epochs", "40"), {"regressor.pt": _check_sensor}),
    ]
}
