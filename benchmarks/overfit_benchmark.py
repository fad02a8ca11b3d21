"""Can each detector family learn at all? The one-batch overfit check, timed, for all four families.

    python benchmarks/overfit_benchmark.py                      # 4 images, up to 400 steps each
    python benchmarks/overfit_benchmark.py --families gfl --images 8

For each family: ``train(TrainConfig(overfit_batch=N, stop_at_ap50=0.9))`` on the committed
``data/synthetic/val`` (its first N images that hold a gt, 320 x 320, no augmentation), AdamW at
the family's default rate, an evaluation on the batch itself every 10 steps, stopping at the first
evaluation with AP50 >= 0.9. Printed (stdout): per family the step that reached it (or "not
reached"), the training seconds to get there (evaluations left out) and the wall seconds, the
AP50 and mAP on the batch at the end, and the first logged loss with its terms. No time is asserted.
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from detviz.engine.families import FAMILIES
from detviz.engine.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
TARGET = 0.9


def first_losses(log: Path) -> str:
    with log.open(newline="") as file:
        row = next(csv.DictReader(file))
    return ", ".join(f"{k} {float(v):.4g}" for k, v in row.items() if k not in ("step", "lr"))


def run_family(name: str, args, folder: Path) -> dict:
    config = TrainConfig(model=name, data=str(args.data), out=str(folder / name), steps=args.steps,
                         input_size=args.input_size, overfit_batch=args.images, stop_at_ap50=TARGET,
                         seed=args.seed, progress=False)
    start = time.perf_counter()
    result = train(config)
    wall = time.perf_counter() - start
    last = result["metrics"][-1]
    return {"family": name, "reached": result["reached_ap50"], "step": result["step"], "train_s": result["seconds"],
            "wall_s": wall, "AP50": last["AP50"], "mAP": last["mAP"], "first_loss": first_losses(result["log"]),
            "curve": " ".join(f"{m['step']}:{m['AP50']:.2f}" for m in result["metrics"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--images", type=int, default=4, help="images in the batch (default 4)")
    parser.add_argument("--steps", type=int, default=400, help="most steps per family (default 400)")
    parser.add_argument("--input-size", type=int, default=320)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=REPO / "data" / "synthetic" / "val")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads, "
          f"Python {platform.python_version()}; {args.images} images of {args.data}, input {args.input_size}, "
          f"AdamW at each family's default rate, evaluation on the batch every 10 steps, at most {args.steps} steps")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.families:
            print(f"{name} ...", file=sys.stderr, flush=True)
            rows.append(run_family(name, args, Path(tmp)))
    print(f"\n{'family':12s} {'AP50 >= 0.9 at':>16s} {'train s':>8s} {'wall s':>8s} {'AP50':>6s} {'mAP':>6s}  "
          f"first logged loss")
    for r in rows:
        at = f"step {r['step']}" if r["reached"] else f"not in {r['step']}"
        print(f"{r['family']:12s} {at:>16s} {r['train_s']:8.1f} {r['wall_s']:8.1f} {r['AP50']:6.3f} {r['mAP']:6.3f}  "
              f"{r['first_loss']}")
    print("\nAP50 on the batch at each evaluation (step:AP50):")
    for r in rows:
        print(f"  {r['family']:12s} {r['curve']}")


if __name__ == "__main__":
    main()
