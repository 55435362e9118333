"""torchrun worker: fit or validate a test TrainModule with runtime.Trainer, report results."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import Regression, Scripted, TinyGAN, loaders, make_data

from runtime import EarlyStopping, ModelCheckpoint, Trainer


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["fit", "validate", "early", "gan"])
    p.add_argument("--root", required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--strategy", default="auto")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--accumulate", type=int, default=1)
    p.add_argument("--clip", type=float, default=None)
    args = p.parse_args()

    torch.manual_seed(0)  # identical initial weights on every rank
    rank = int(os.environ.get("RANK", "0"))
    if args.mode == "gan":
        gan(args)
        return
    if args.mode == "early":
        module = Scripted([5.0, 4.0, 4.5, 4.2, 4.1, 3.0, 2.0, 1.0])
        callbacks = [EarlyStopping("score", patience=3), ModelCheckpoint(monitor="score")]
    else:
        module, callbacks = Regression(interval="epoch"), [ModelCheckpoint(monitor="val_loss")]
    trainer = Trainer(max_epochs=args.epochs, strategy=args.strategy, default_root_dir=args.root,
                      callbacks=callbacks, log_every_n_steps=1, enable_progress_bar=False,
                      accumulate_grad_batches=args.accumulate, gradient_clip_val=args.clip)
    train, val = loaders()
    if args.mode == "validate":
        (metrics,) = trainer.validate(module, val)
        trainer.runtime.print("VALIDATE " + json.dumps(metrics, sort_keys=True))
        return
    trainer.fit(module, train, val, ckpt_path="last" if args.resume else None)
    trainer.runtime.print(f"DONE epoch={trainer.current_epoch} step={trainer.global_step} "
                          f"val_loss={trainer.callback_metrics['val_loss']!r}")
    # every rank reports where it stopped: early stopping must stop them together
    print(f"RANK {rank} STOPPED_AT {trainer.current_epoch}", flush=True)
    if args.out and trainer.is_global_zero:
        state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        torch.save({"params": state, "step": trainer.global_step,
                    "best": trainer.checkpoint_callback.best_model_path}, args.out)


def gan(args: argparse.Namespace) -> None:
    """Manual optimization, three backward passes per batch; ranks must stay identical."""
    module = TinyGAN()
    trainer = Trainer(max_epochs=args.epochs, default_root_dir=args.root,
                      enable_progress_bar=False, find_unused_parameters=True)
    trainer.fit(module, torch.utils.data.DataLoader(make_data(32, 3), batch_size=4))
    flat = torch.cat([p.detach().flatten() for p in module.parameters()])
    same = bool(torch.equal(*trainer.runtime.all_gather(flat)))
    trainer.runtime.print(f"GAN step={trainer.global_step} same_on_ranks={same}")


if __name__ == "__main__":
    main()
