"""One training loop for every model family (:mod:`detviz.families`).

``train(TrainConfig(model="gfl"))`` runs, for each step:

1. the step's images (:mod:`detviz.train_data`: fixed by the seed and the step number),
   each warped to ``input_size`` x ``input_size`` by :class:`detviz.augment.NanoDetWarp`
   (random scale, flip and shift; boxes follow), built by ``workers`` DataLoader processes;
2. the family's losses, summed; a NaN or Inf stops the run with the step and the losses;
3. backward, gradient-norm clipping at 35 (NanoDet's), an SGD or AdamW step at the rate of
   :func:`detviz.optim.learning_rate` (warm-up, then cosine), and the EMA update;
4. a row of ``OUT/log.csv`` (step, rate, losses); every ``eval_every`` steps (and at the end)
   the COCO metrics of the EMA weights on ``val_data``, appended to ``OUT/metrics.json``;
   every ``checkpoint_every`` steps and at the end ``OUT/checkpoint.pt``, written atomically,
   and at the end ``OUT/model.pt``, the EMA weights alone for inference.

Resuming restores the weights, the optimizer, the EMA, the step and the global random state;
the data needs nothing more, so a run stopped and resumed gives the same weights as one
that never stopped (not so with ``time_budget``, whose schedule follows the clock).

Devices: CPU by default; on CUDA the forward pass runs under float16 autocast with a
gradient scaler (``amp``) and the model and images are channels-last (``channels_last``).
Under ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in DistributedDataParallel
(NCCL on CUDA, gloo on CPU), each process takes its share of every global batch, and only
rank 0 writes logs, metrics and checkpoints.
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from detviz.augment import NanoDetWarp
from detviz.checkpoints import (CHECKPOINT_FORMAT, CHECKPOINT_NAME, MODEL_NAME, build_model_from_checkpoint,
                                load_checkpoint, save_atomic)
from detviz.datasets.coco import open_dataset
from detviz.distributed import Processes, training_device
from detviz.families import Family, get_family
from detviz.inference import dumps_metrics, evaluate_checkpoint, evaluate_model, finite_metrics, predict_dataset
from detviz.optim import SCHEDULES, ModelEMA, learning_rate
from detviz.train_data import AugmentedSamples, StepBatches, collate_square, derived_seed

# the checkpoint and evaluation helpers a training script needs come with it
__all__ = ["TrainConfig", "train", "synthetic_train_dir", "DEFAULT_LR", "LOG_NAME", "METRICS_NAME",
           "load_checkpoint", "build_model_from_checkpoint", "open_dataset", "predict_dataset", "evaluate_model",
           "evaluate_checkpoint", "finite_metrics", "dumps_metrics", "CHECKPOINT_NAME", "MODEL_NAME"]

LOG_NAME, METRICS_NAME = "log.csv", "metrics.json"
GRAD_CLIP = 35.0  # NanoDet's grad_clip
DEFAULT_LR = {"sgd": 0.01, "adamw": 1e-3}


@dataclass
class TrainConfig:
    """Settings of one run.

    ``data=None`` trains on a generated synthetic split cached in ``cache_dir``
    (``synthetic_images`` images of ``synthetic_size`` px, seed ``synthetic_seed``).
    ``batch_size`` is per process. ``time_budget`` (seconds of training, evaluations left out)
    ends the run when it is spent, ``steps`` then being an upper bound, and drives the schedule
    by elapsed time.
    ``ema_decay=0`` keeps no average. ``amp``/``channels_last`` None: on exactly on CUDA.
    """

    model: str = "gfl"
    data: str | None = None
    val_data: str | None = None
    out: str = "runs/gfl"
    steps: int = 100
    batch_size: int = 8
    input_size: int = 320
    optimizer: str = "adamw"
    lr: float | None = None  # None: DEFAULT_LR[optimizer]
    momentum: float = 0.9
    weight_decay: float = 0.05
    schedule: str = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.05
    ema_decay: float = 0.0
    time_budget: float | None = None
    seed: int = 0
    workers: int = 0
    device: str = "cpu"
    amp: bool | None = None
    channels_last: bool | None = None
    eval_every: int = 0  # 0: only at the end (when val_data is given)
    checkpoint_every: int = 0  # 0: only at the end
    resume: str | None = None
    cache_dir: str | None = None  # None: $XDG_CACHE_HOME/detviz or ~/.cache/detviz
    synthetic_images: int = 64
    synthetic_size: int = 320
    synthetic_seed: int = 1  # the committed val split uses seed 0
    progress: bool = True


# ---------------------------------------------------------------- data

def synthetic_train_dir(config: TrainConfig) -> Path:
    """The cached synthetic split for ``config``, generated on first use."""
    from detviz.datasets.synthetic import write_dataset

    root = Path(config.cache_dir) if config.cache_dir else (
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "detviz")
    folder = root / f"synthetic-train-n{config.synthetic_images}-s{config.synthetic_size}-seed{config.synthetic_seed}"
    if not (folder / "annotations.json").is_file():
        write_dataset(folder, overwrite=True, num_images=config.synthetic_images, seed=config.synthetic_seed,
                      size=config.synthetic_size)
    return folder


# ---------------------------------------------------------------- the loop

def _check_config(config: TrainConfig, family: Family) -> None:
    if config.optimizer not in DEFAULT_LR:
        raise ValueError(f"optimizer must be one of {tuple(DEFAULT_LR)}, got {config.optimizer!r}")
    if config.schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {config.schedule!r}")
    for name in ("steps", "batch_size", "input_size"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)!r}")
    for name in ("workers", "warmup_steps", "eval_every", "checkpoint_every"):
        if getattr(config, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(config, name)!r}")
    if config.input_size % family.size_multiple:
        raise ValueError(f"input_size must be a multiple of {family.size_multiple}, got {config.input_size}")
    if not 0.0 <= config.ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {config.ema_decay!r}")
    if config.time_budget is not None and not (config.time_budget > 0 and math.isfinite(config.time_budget)):
        raise ValueError(f"time_budget must be a positive number of seconds, got {config.time_budget!r}")
    if config.lr is not None and not (config.lr > 0 and math.isfinite(config.lr)):
        raise ValueError(f"lr must be a positive number, got {config.lr!r}")
    if not config.weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {config.weight_decay!r}")
    if not 0.0 <= config.min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {config.min_lr_ratio!r}")
    if config.seed < 0:
        raise ValueError(f"seed must be >= 0, got {config.seed!r}")


def _check_resume(config: TrainConfig, checkpoint: dict, world_size: int) -> None:
    """A resumed run must draw the same batches: refuse changed settings that would change them."""
    stored = checkpoint["train_config"]
    for name in ("batch_size", "seed", "input_size"):
        if stored[name] != getattr(config, name):
            raise ValueError(f"{config.resume} was trained with {name}={stored[name]!r}; resume with the same "
                             f"value, not {getattr(config, name)!r}")
    if checkpoint.get("world_size", 1) != world_size:
        raise ValueError(f"{config.resume} was trained by {checkpoint.get('world_size', 1)} processes; resume "
                         f"with the same number, not {world_size}")
    if checkpoint["step"] >= config.steps:
        raise ValueError(f"{config.resume} is already at step {checkpoint['step']}; give steps > "
                         f"{checkpoint['step']} to train on")


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    lr = config.lr if config.lr is not None else DEFAULT_LR[config.optimizer]
    # no weight decay on BatchNorm weights and on biases (1-d tensors), as is usual for detectors
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=lr)


def _progress_bar(config: TrainConfig, start: int):
    """tqdm.auto's bar (a widget in Jupyter, text in a terminal), or None when unwanted."""
    if not config.progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=config.steps, initial=start, desc=f"train {config.model}", dynamic_ncols=True)


class _CsvLog:
    """``log.csv``: one row per step; a resume keeps the rows up to its step and drops the rest."""

    def __init__(self, path: Path, resumed_step: int):
        self.path, self.rows, self.file, self.writer = path, [], None, None
        if resumed_step and path.is_file():
            with path.open(newline="") as f:
                self.rows = [row for row in csv.DictReader(f) if int(row["step"]) <= resumed_step]

    def write(self, row: dict) -> None:
        if self.writer is None:
            self.file = self.path.open("w", newline="")
            self.writer = csv.DictWriter(self.file, fieldnames=list(row))
            self.writer.writeheader()
            self.writer.writerows(self.rows)
        self.writer.writerow(row)
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _metrics_history(path: Path, resumed_step: int) -> list[dict]:
    if resumed_step and path.is_file():
        return [m for m in json.loads(path.read_text()) if m["step"] <= resumed_step]
    return []


def train(config: TrainConfig) -> dict:
    """Train ``config.model`` for ``config.steps`` steps in total (a resumed run continues its count).

    Returns:
        ``dict(step=int, losses=[{name: float} per step run now], metrics=[{step, mAP, ...}],
        checkpoint=Path, model=Path, log=Path, seconds=float, images_per_second=float,
        module=the trained model, ema_module=its average or None)``.

    Raises:
        ValueError: bad settings, or ``resume`` names a checkpoint of another model family
            or class count.
        FloatingPointError: a loss became NaN or Inf.
        OSError: an image could not be read (the message names the file).
    """
    family = get_family(config.model)
    _check_config(config, family)
    device = training_device(config.device)
    world = Processes(device)
    try:
        return _train(config, family, device, world)
    finally:
        world.close()


def _train(config: TrainConfig, family: Family, device: torch.device, world: Processes) -> dict:
    out = Path(config.out)
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
        if not config.data:
            synthetic_train_dir(config)  # generated once, by one process
    world.barrier()
    dataset = open_dataset(config.data if config.data else synthetic_train_dir(config))
    num_classes = len(dataset.label_to_category_id)
    val_dataset = open_dataset(config.val_data) if config.val_data else None
    if val_dataset is not None and val_dataset.label_to_category_id != dataset.label_to_category_id:
        raise ValueError(f"val_data {config.val_data} has the categories {val_dataset.label_to_category_id}, the "
                         f"training data {dataset.label_to_category_id} (label: category id)")
    amp = device.type == "cuda" if config.amp is None else config.amp and device.type == "cuda"
    channels_last = device.type == "cuda" if config.channels_last is None else config.channels_last

    torch.manual_seed(config.seed)  # the same initial weights in every process
    module = family.build(num_classes, config.input_size).to(device)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    if world.world_size > 1:  # but each process its own draws (e.g. the R-CNN samplers)
        torch.manual_seed(derived_seed(config.seed, 2, world.rank))
    optimizer = _optimizer(config, module)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    step, elapsed_before, checkpoint = 0, 0.0, None
    if config.resume:
        checkpoint = load_checkpoint(config.resume, model_family=config.model, num_classes=num_classes,
                                     for_resume=True)
        _check_resume(config, checkpoint, world.world_size)
        module.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint["scaler"] and amp:  # a run without AMP saved an empty scaler state
            scaler.load_state_dict(checkpoint["scaler"])
        step, elapsed_before = checkpoint["step"], checkpoint.get("seconds", 0.0)
        # exact for one process; under DDP every process restores rank 0's state
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if device.type == "cuda" and checkpoint["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(checkpoint["rng"]["cuda"], device)
    ema = ModelEMA(module, config.ema_decay) if config.ema_decay else None
    if ema is not None and checkpoint is not None and checkpoint.get("ema"):
        ema.load_state_dict(checkpoint["ema"])
    model = module
    if world.world_size > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(module, device_ids=device_ids)

    warp = NanoDetWarp((config.input_size, config.input_size))
    batches = StepBatches(len(dataset), config.batch_size, config.seed, step, config.steps, rank=world.rank,
                          world_size=world.world_size)
    loader = DataLoader(AugmentedSamples(dataset, warp, config.seed), batch_sampler=batches,
                        num_workers=config.workers, collate_fn=collate_square, pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(config.seed))  # leaves the global RNG alone
    base_lr = config.lr if config.lr is not None else DEFAULT_LR[config.optimizer]
    checkpoint_path, model_path = out / CHECKPOINT_NAME, out / MODEL_NAME
    log = _CsvLog(out / LOG_NAME, step) if world.main else None
    metrics = _metrics_history(out / METRICS_NAME, step) if world.main else []
    bar = _progress_bar(config, step) if world.main else None
    losses_run: list[dict] = []
    images_run = 0

    def checkpoint_dict(full: bool) -> dict:
        state = {"format": CHECKPOINT_FORMAT, "model_family": config.model, "num_classes": num_classes,
                 "model_config": family.model_config(module), "train_config": asdict(config),
                 "label_to_category_id": dict(dataset.label_to_category_id), "step": step,
                 "seconds": elapsed_before + train_seconds,  # training time, evaluations left out
                 "world_size": world.world_size}
        if full:
            return {**state, "model": module.state_dict(), "ema": ema.state_dict() if ema else None,
                    "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                    "rng": {"torch": torch.get_rng_state(),
                            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}}
        return {**state, "model": (ema.module if ema else module).state_dict()}

    def evaluate_now() -> None:
        if val_dataset is None or not world.main:
            return
        scored = ema.module if ema else module
        was_training = scored.training
        scored.eval()
        result = evaluate_model(family, scored, val_dataset, config.input_size)
        scored.train(was_training)
        metrics.append({"step": step, **finite_metrics(result)})
        (out / METRICS_NAME).write_text(json.dumps(metrics, indent=1, allow_nan=False) + "\n")
        if bar is not None:
            bar.write(f"step {step}: mAP {result['mAP']:.4f} AP50 {result['AP50']:.4f}")

    start_time, eval_seconds, train_seconds = time.perf_counter(), 0.0, 0.0
    module.train()
    try:
        for images, boxes, labels in loader:
            elapsed = time.perf_counter() - start_time - eval_seconds
            progress = step / config.steps
            if config.time_budget is not None:
                progress = world.from_main((elapsed_before + elapsed) / config.time_budget)
                if progress >= 1.0:
                    break
            lr = learning_rate(base_lr, step, progress, warmup_steps=config.warmup_steps,
                               schedule=config.schedule, min_ratio=config.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            boxes = [b.to(device) for b in boxes]
            labels = [lab.to(device) for lab in labels]
            loss_dict = family.loss(model, module, images, boxes, labels, amp)
            loss = sum(loss_dict.values())
            if world.any(not bool(torch.isfinite(loss))):  # every process stops, none waits in backward
                raise FloatingPointError(f"step {step + 1}: loss is {float(loss.detach())} "
                                         f"({ {k: float(v.detach()) for k, v in loss_dict.items()} })")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(module.parameters(), GRAD_CLIP)
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update(module)
            step += 1
            images_run += images.shape[0] * world.world_size

            values = world.mean(torch.stack([loss.detach(), *(v.detach() for v in loss_dict.values())]).float())
            row = dict(zip(["loss", *loss_dict], values.tolist()))
            losses_run.append(row)
            if world.main:
                log.write({"step": step, "lr": lr, **row})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{lr:.2e}")
            train_seconds = time.perf_counter() - start_time - eval_seconds
            evaluating = bool(config.eval_every) and step % config.eval_every == 0 and step < config.steps
            saving = bool(config.checkpoint_every) and step % config.checkpoint_every == 0
            if evaluating:
                eval_start = time.perf_counter()
                evaluate_now()
                eval_seconds += time.perf_counter() - eval_start
            if saving and world.main:
                save_atomic(checkpoint_dict(full=True), checkpoint_path)
            if evaluating or saving:  # the other processes wait for rank 0
                world.barrier()
        seconds = train_seconds
        if not metrics or metrics[-1]["step"] != step:
            evaluate_now()
        if world.main:
            save_atomic(checkpoint_dict(full=True), checkpoint_path)
            save_atomic(checkpoint_dict(full=False), model_path)
        world.barrier()
    finally:
        if log is not None:
            log.close()
        if bar is not None:
            bar.close()
    return {"step": step, "losses": losses_run, "metrics": metrics, "checkpoint": checkpoint_path,
            "model": model_path, "log": out / LOG_NAME, "seconds": seconds,
            "images_per_second": images_run / seconds if seconds > 0 else math.nan,
            "module": module, "ema_module": ema.module if ema else None}

