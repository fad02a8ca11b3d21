"""The learning-rate schedule and the weight average (EMA) of the training loop.

Schedule: a linear warm-up over the first ``warmup_steps`` steps, times a cosine decay
from ``base_lr`` to ``base_lr * min_ratio`` over the run's progress (the fraction of steps
done, or of the time budget used when the run is bounded by time), or a constant rate.

EMA: after every step, ``ema = d * ema + (1 - d) * weights`` for every floating-point
parameter and buffer (BatchNorm's running statistics included; integer buffers are copied),
with ``d = decay * (1 - exp(-updates / ramp))``, the ramp of YOLOX and NanoDet, so the
average follows the fast-moving weights of the first steps and settles later.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

__all__ = ["SCHEDULES", "learning_rate", "ModelEMA"]

SCHEDULES = ("cosine", "constant")


def learning_rate(base_lr: float, step: int, progress: float, *, warmup_steps: int = 0, schedule: str = "cosine",
                  min_ratio: float = 0.05) -> float:
    """The learning rate of one step.

    Args:
        base_lr: the peak rate. step: 0-based step number (drives the warm-up).
        progress: fraction of the run done, in [0, 1] (drives the cosine; clamped).
        warmup_steps: steps of linear warm-up (0: none). schedule: "cosine" or "constant".
        min_ratio: the cosine's final rate as a fraction of ``base_lr``.
    Returns:
        ``base_lr * warmup * cosine``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    warmup = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if schedule == "constant":
        return base_lr * warmup
    progress = min(max(progress, 0.0), 1.0)
    return base_lr * warmup * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class ModelEMA:
    """An exponential moving average of a model's weights (a full copy, kept in eval mode).

    Args:
        model: the model being trained (not a DistributedDataParallel wrapper).
        decay: the final decay d (0.9998 for ~5000-step horizons; smaller for short runs).
        ramp: updates over which d rises from 0 towards ``decay``.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998, ramp: float = 2000.0):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay!r}")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.ramp, self.updates = decay, ramp, 0

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.ramp))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        current = model.state_dict()
        for name, average in self.module.state_dict().items():
            value = current[name].detach()
            if average.dtype.is_floating_point:
                average.mul_(d).add_(value.to(average.dtype), alpha=1 - d)
            else:
                average.copy_(value)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay, "ramp": self.ramp}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates, self.decay, self.ramp = state["updates"], state["decay"], state["ramp"]
