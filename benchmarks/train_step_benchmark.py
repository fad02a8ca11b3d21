"""Where a GFL (NanoDet-m) training step spends its time, and what the CPU's options change.

    python benchmarks/train_step_benchmark.py --data runs/benchmark/train-n3000-seed1
    python benchmarks/train_step_benchmark.py --variants fp32,bf16 --steps 8

One step of ``python -m detviz train --model gfl`` split into its phases, in milliseconds per
step (medians over ``--steps`` measured steps after ``--warmup``, the variants interleaved
step by step so a busy machine slows them alike):

* ``data``: the step's batch from the loader (read, decode, NanoDetWarp, collate);
* ``forward``: normalisation and the network;
* ``loss``: the head's loss (ATSS assignment, QFL, DFL, GIoU);
* ``backward``: ``loss.backward()``;
* ``optimizer``: gradient clipping, the AdamW step and the EMA update.

Variants (``--variants``): ``fp32`` (training without ``--amp``), ``channels_last`` (model and
images in channels-last memory), ``bf16`` (``--amp``: the forward under bfloat16 autocast on the
CPU, outputs back to float32 before the loss, the six strided depthwise convolutions in float32),
``bf16_all`` (the same with those six in bfloat16 too) and ``bf16_channels_last``.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
import types

import torch
from torch import nn

from detviz.datasets.augment import NanoDetWarp
from detviz.datasets.coco import open_dataset
from detviz.engine.batches import AugmentedSamples, StepBatches, collate_square
from detviz.engine.families import _float, get_family
from detviz.engine.optim import ModelEMA
from detviz.engine.train import GRAD_CLIP, TrainConfig, _optimizer
from detviz.gfl.model import CPUFloat32Conv2d, normalize_images

VARIANTS = {"fp32": (False, False), "channels_last": (False, True), "bf16": (True, False), "bf16_all": (True, False),
            "bf16_channels_last": (True, True)}
PHASES = ("data", "forward", "loss", "backward", "optimizer")


class Variant:
    """One model, optimizer and EMA trained in a given precision and memory format."""

    def __init__(self, name: str, num_classes: int, input_size: int, lr: float):
        self.name = name
        self.bf16, self.channels_last = VARIANTS[name]
        self.family = get_family("gfl")
        torch.manual_seed(0)
        self.model = self.family.build(num_classes, input_size)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if name == "bf16_all":  # the strided depthwise convolutions as plain nn.Conv2d again
            for module in self.model.modules():
                if isinstance(module, CPUFloat32Conv2d):
                    module.forward = types.MethodType(nn.Conv2d.forward, module)
        self.model.train()
        self.optimizer = _optimizer(TrainConfig(lr=lr), self.model)
        self.ema = ModelEMA(self.model, 0.9998)
        self.times = {phase: [] for phase in PHASES}

    def step(self, images, boxes, labels, data_seconds: float) -> float:
        clock = time.perf_counter
        t0 = clock()
        inputs = normalize_images(images)
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        precision = torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with precision:
            cls_scores, bbox_preds = self.model(inputs)
        cls_scores, bbox_preds = _float(cls_scores), _float(bbox_preds)
        t1 = clock()
        losses = self.model.loss(cls_scores, bbox_preds, boxes, labels)
        loss = sum(losses.values())
        t2 = clock()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t3 = clock()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
        self.optimizer.step()
        self.ema.update(self.model)
        t4 = clock()
        for phase, seconds in zip(PHASES, (data_seconds, t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            self.times[phase].append(seconds * 1000)  # milliseconds
        return float(loss.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a COCO folder (images/ + annotations.json)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=320)
    parser.add_argument("--steps", type=int, default=12, help="measured steps per variant")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=6e-3)
    args = parser.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")

    torch.set_num_threads(args.threads)
    dataset = open_dataset(args.data)
    size = (args.input_size, args.input_size)
    samples = AugmentedSamples(dataset, NanoDetWarp(size), 0)
    total = args.warmup + args.steps
    batches = iter(StepBatches(len(dataset), args.batch_size, 0, 0, total))
    variants = [Variant(n, len(dataset.label_to_category_id), args.input_size, args.lr) for n in names]
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch_size}, input {args.input_size}, "
          f"{args.warmup} + {args.steps} steps per variant, interleaved", flush=True)
    for step in range(total):
        start = time.perf_counter()
        images, boxes, labels = collate_square([samples[key] for key in next(batches)])
        data_seconds = time.perf_counter() - start
        for variant in variants:
            variant.step(images, boxes, labels, data_seconds)
        if step + 1 == args.warmup:
            for variant in variants:
                variant.times = {phase: [] for phase in PHASES}

    print(f"\nms per step (median){'':4s}" + "".join(f"{p:>10s}" for p in PHASES) + f"{'total':>10s}{'img/s':>8s}")
    base = None
    for variant in variants:
        medians = {p: statistics.median(v) for p, v in variant.times.items()}
        total_ms = sum(medians.values())
        base = base or total_ms
        print(f"{variant.name:24s}" + "".join(f"{medians[p]:10.1f}" for p in PHASES) +
              f"{total_ms:10.1f}{args.batch_size / total_ms * 1000:8.1f}  ({total_ms / base:.2f}x)")


if __name__ == "__main__":
    sys.exit(main())
