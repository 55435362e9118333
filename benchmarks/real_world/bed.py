"""The scoreboard's bed: which public scripts run, with which arguments, inputs and expectations."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

RUN, DISTRIBUTED, NOT_RUNNABLE = "run", "already distributed", "not runnable here"


@dataclass(frozen=True)
class Spec:
    """One script of the bed.

    ``folder`` (inside checkout ``repo``) is copied afresh for every run and is the working
    directory; ``script`` is relative to it. ``setup`` writes the run's input files into the copy
    before the run (the same for the original and the ports). ``kind`` says what is expected:
    RUN (original runs, every check applies), DISTRIBUTED (already distributed or unsafe to port:
    migrate must refuse with MIG9xx), NOT_RUNNABLE (migrated only; ``note`` says why).
    ``accel``: the arguments that let the script use an accelerator (pytorch/examples'
    ``--accel``); `migrate verify --simulate-gpus` adds them, so that the original runs on the
    (simulated) GPU like the port, whose device comes from the launcher. The CPU scoreboard
    leaves them out (fast_neural_style exits 1 on ``--accel`` without an accelerator).
    """

    name: str
    repo: str  # "examples" (pytorch/examples) or "lightning" (Lightning-AI/pytorch-lightning)
    folder: str
    script: str
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None
    kind: str = RUN
    note: str = ""
    accel: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        """The script's path inside its repository."""
        return f"{self.folder}/{self.script}" if self.folder else self.script


def tiny_corpus(cwd: Path) -> None:
    """data/tiny/{train,valid,test}.txt: a few hundred words of deterministic text."""
    words = "the a model loss data train test batch epoch layer grad step rank device".split()
    r = random.Random(0)
    out = cwd / "data" / "tiny"
    out.mkdir(parents=True, exist_ok=True)
    for split, lines in (("train", 120), ("valid", 30), ("test", 30)):
        text = "\n".join(" ".join(r.choice(words) for _ in range(10)) for _ in range(lines))
        (out / f"{split}.txt").write_text(text + "\n")


def sine_waves(cwd: Path) -> None:
    """traindata.pt as generate_sine_wave.py writes it, 8 waves of 100 steps instead of 100 x 1000."""
    code = (
        "import numpy as np, torch\n"
        "np.random.seed(2); T, L, N = 20, 100, 8\n"
        "x = np.empty((N, L), 'int64')\n"
        "x[:] = np.array(range(L)) + np.random.randint(-4 * T, 4 * T, N).reshape(N, 1)\n"
        "torch.save(np.sin(x / 1.0 / T).astype('float64'), open('traindata.pt', 'wb'))\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=cwd, check=True)


MNIST_ARGS = (
    "--epochs",
    "1",
    "--batch-size",
    "16",
    "--test-batch-size",
    "32",
    "--log-interval",
    "1",
)
RL_ENV = {"RW_GYM_REWARD_THRESHOLD": "15"}
WLM = (
    "--data",
    "data/tiny",
    "--epochs",
    "1",
    "--emsize",
    "16",
    "--nhid",
    "16",
    "--nlayers",
    "1",
    "--batch_size",
    "4",
    "--bptt",
    "8",
    "--log-interval",
    "10",
)

BED: list[Spec] = [
    Spec("mnist", "examples", "mnist", "main.py", (*MNIST_ARGS, "--save-model")),
    Spec("mnist_rnn", "examples", "mnist_rnn", "main.py", (*MNIST_ARGS, "--save-model")),
    Spec(
        "mnist_forward_forward",
        "examples",
        "mnist_forward_forward",
        "main.py",
        (
            "--epochs",
            "4",
            "--train_size",
            "64",
            "--test_size",
            "32",
            "--log-interval",
            "1",
            "--save-model",
        ),
        kind=DISTRIBUTED,
        note="each layer builds its own optimizer in its own __init__ (per-layer training): "
        "refused with MIG903",
    ),
    Spec(
        "vae",
        "examples",
        "vae",
        "main.py",
        ("--epochs", "1", "--batch-size", "16", "--log-interval", "1"),
    ),
    Spec(
        "dcgan",
        "examples",
        "dcgan",
        "main.py",
        (
            "--dataset",
            "fake",
            "--niter",
            "1",
            "--dry-run",
            "--batchSize",
            "8",
            "--ngf",
            "8",
            "--ndf",
            "8",
            "--workers",
            "0",
            "--manualSeed",
            "1",
        ),
        accel=("--accel",),
    ),
    Spec(
        "word_language_model (LSTM)",
        "examples",
        "word_language_model",
        "main.py",
        WLM,
        setup=tiny_corpus,
        accel=("--accel",),
    ),
    Spec(
        "word_language_model (Transformer)",
        "examples",
        "word_language_model",
        "main.py",
        (*WLM, "--model", "Transformer", "--nhead", "2"),
        setup=tiny_corpus,
        accel=("--accel",),
    ),
    Spec(
        "super_resolution",
        "examples",
        "super_resolution",
        "main.py",
        (
            "--upscale_factor",
            "2",
            "--batchSize",
            "4",
            "--testBatchSize",
            "4",
            "--nEpochs",
            "1",
            "--threads",
            "0",
        ),
    ),
    Spec(
        "fast_neural_style",
        "examples",
        "fast_neural_style",
        "neural_style/neural_style.py",
        (
            "train",
            "--dataset",
            "unused-fake-images",
            "--save-model-dir",
            "models",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--image-size",
            "32",
            "--style-size",
            "32",
            "--log-interval",
            "1",
            "--checkpoint-interval",
            "1000",
        ),
        env={"RW_FAKE_TRAIN_SIZE": "8"},
        accel=("--accel",),
    ),
    Spec(
        "reinforce",
        "examples",
        "reinforcement_learning",
        "reinforce.py",
        ("--log-interval", "1"),
        env=RL_ENV,
    ),
    Spec(
        "actor_critic",
        "examples",
        "reinforcement_learning",
        "actor_critic.py",
        ("--log-interval", "1"),
        env=RL_ENV,
    ),
    Spec(
        "time_sequence_prediction",
        "examples",
        "time_sequence_prediction",
        "train.py",
        (
            "--steps",
            "2",
        ),
        env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"},
        setup=sine_waves,
        note="traindata.pt is a numpy pickle: torch>=2.6 needs TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1",
    ),
    Spec("regression", "examples", "regression", "main.py"),
    Spec(
        "siamese_network", "examples", "siamese_network", "main.py", (*MNIST_ARGS, "--save-model")
    ),
    Spec("gcn", "examples", "gcn", "main.py", ("--epochs", "3", "--val-every", "1")),
    Spec(
        "gat",
        "examples",
        "gat",
        "main.py",
        ("--epochs", "3", "--val-every", "1", "--num-heads", "2", "--hidden-dim", "8"),
    ),
    Spec(
        "ddp-tutorial single_gpu",
        "examples",
        "distributed/ddp-tutorial-series",
        "single_gpu.py",
        ("2", "1", "--batch_size", "256"),
        note="hard-codes device = 0 (cuda:0): the original cannot run on a CPU machine",
    ),
    Spec(
        "lightning image_classifier",
        "lightning",
        "examples/fabric/image_classifier",
        "train_torch.py",
        ("--epochs", "1", "--batch-size", "16", "--log-interval", "1", "--save-model"),
    ),
    Spec(
        "lightning dcgan",
        "lightning",
        "examples/fabric/dcgan",
        "train_torch.py",
        env={"RW_FAKE_TRAIN_SIZE": "16"},
    ),
    Spec(
        "language_translation",
        "examples",
        "language_translation",
        "main.py",
        kind=NOT_RUNNABLE,
        note="needs torchtext's Multi30k and spaCy's de/en models (no torchtext for torch 2.13)",
    ),
    Spec(
        "legacy snli",
        "examples",
        "legacy/snli",
        "train.py",
        kind=NOT_RUNNABLE,
        note="needs torchtext.legacy (removed from torchtext) and GloVe vectors",
    ),
    # Already distributed (or unsafe to port): migrate must refuse them with a MIG9xx finding.
    *[
        Spec(name, repo, folder, script, kind=DISTRIBUTED)
        for name, repo, folder, script in [
            ("mnist_hogwild", "examples", "mnist_hogwild", "main.py"),
            ("imagenet", "examples", "imagenet", "main.py"),
            ("ddp-tutorial multigpu", "examples", "distributed/ddp-tutorial-series", "multigpu.py"),
            (
                "ddp-tutorial multigpu_torchrun",
                "examples",
                "distributed/ddp-tutorial-series",
                "multigpu_torchrun.py",
            ),
            (
                "ddp-tutorial multinode",
                "examples",
                "distributed/ddp-tutorial-series",
                "multinode.py",
            ),
            ("distributed/ddp example", "examples", "distributed/ddp", "example.py"),
            ("minGPT-ddp", "examples", "distributed/minGPT-ddp/mingpt", "main.py"),
            ("FSDP T5", "examples", "distributed/FSDP", "T5_training.py"),
            ("FSDP2", "examples", "distributed/FSDP2", "example.py"),
            (
                "tensor_parallel",
                "examples",
                "distributed/tensor_parallelism",
                "tensor_parallel_example.py",
            ),
            ("rpc ddp_rpc", "examples", "distributed/rpc/ddp_rpc", "main.py"),
            (
                "lightning meta_learning",
                "lightning",
                "examples/fabric/meta_learning",
                "train_torch.py",
            ),
            (
                "lightning reinforcement_learning",
                "lightning",
                "examples/fabric/reinforcement_learning",
                "train_torch.py",
            ),
        ]
    ],
]
