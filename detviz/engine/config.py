"""The settings of a training run (:class:`TrainConfig`), their checks, and the default data.

``TrainConfig`` is read only by :func:`detviz.engine.train.train`; :func:`check_config` refuses
settings that cannot run and :func:`check_resume` settings that would change a resumed run's
batches.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

from detviz._io import write_atomic
from detviz.engine.families import Family, _tuples
from detviz.engine.optim import SCHEDULES

__all__ = ["TrainConfig", "DEFAULT_LR", "OVERFIT_EVAL_EVERY", "OVERFIT_NAME", "RUN_FILES", "check_config",
           "check_resume", "check_out", "check_val_data", "synthetic_train_dir", "overfit_config",
           "write_overfit_batch"]

DEFAULT_LR = {"sgd": 0.01, "adamw": 1e-3}
OVERFIT_EVAL_EVERY = 10
OVERFIT_NAME = "overfit_batch.json"


@dataclass
class TrainConfig:
    """Settings of one run.

    ``data=None`` trains on a generated synthetic split cached in ``cache_dir``
    (``synthetic_images`` images of ``synthetic_size`` px, seed ``synthetic_seed``).
    ``batch_size`` is per process. ``time_budget`` (seconds of training, evaluations left out)
    ends the run when it is spent, ``steps`` then being an upper bound, and drives the schedule
    by elapsed time.
    ``ema_decay=0`` keeps no average. ``amp``/``channels_last`` None: on exactly on CUDA;
    ``amp=True`` on the CPU is bfloat16 autocast.
    ``overfit_batch=N`` (> 0) is the "can it learn at all?" check: the first N images of ``data``
    that hold a gt become one fixed batch (``batch_size`` = N), trained on without augmentation and
    evaluated on itself every ``eval_every`` steps (10 when 0); ``val_data`` must then be None.
    ``stop_at_ap50`` ends the run at the first evaluation whose AP50 reaches it.
    An ``out`` that already holds a run (its checkpoint, weights or log) is refused unless the run
    is resumed or ``overwrite`` is set.
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
    ema_ramp: float = 2000.0  # updates over which the average's decay rises towards ema_decay
    warp_scale: tuple[float, float] = (0.6, 1.4)  # NanoDetWarp's random zoom range
    warp_translate: float = 0.2  # NanoDetWarp's largest shift, a fraction of the image side
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
    overfit_batch: int = 0  # 0: a normal run
    stop_at_ap50: float | None = None  # None: run all steps
    overwrite: bool = False  # replace a run already in ``out`` (else only ``resume`` may continue it)


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


def check_config(config: TrainConfig, family: Family) -> None:
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
    if not (config.ema_ramp > 0 and math.isfinite(config.ema_ramp)):
        raise ValueError(f"ema_ramp must be a positive number of updates, got {config.ema_ramp!r}")
    scale = tuple(config.warp_scale)
    if len(scale) != 2 or not (0 < scale[0] <= scale[1] and math.isfinite(scale[1])):
        raise ValueError(f"warp_scale must be (low, high) with 0 < low <= high, got {config.warp_scale!r}")
    if not 0.0 <= config.warp_translate <= 0.5:
        raise ValueError(f"warp_translate must be a fraction of the image side in [0, 0.5], got "
                         f"{config.warp_translate!r}")
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
    if config.overfit_batch < 0:
        raise ValueError(f"overfit_batch must be >= 0 (0: off), got {config.overfit_batch!r}")
    if config.overfit_batch and config.val_data:
        raise ValueError(f"overfit_batch evaluates on its own batch; give no val_data (got {config.val_data!r})")
    if config.stop_at_ap50 is not None and not 0 < config.stop_at_ap50 <= 1:
        raise ValueError(f"stop_at_ap50 must be in (0, 1], got {config.stop_at_ap50!r}")
    if config.stop_at_ap50 is not None and not (config.val_data or config.overfit_batch):
        raise ValueError("stop_at_ap50 needs evaluations: give val_data (or overfit_batch)")


def check_resume(config: TrainConfig, checkpoint: dict, world_size: int) -> None:
    """A resumed run must draw the same batches and restore the same optimizer: refuse changed settings
    that would change them (another optimizer's state would not load)."""
    stored = checkpoint["train_config"]
    defaults = TrainConfig()  # what a checkpoint written before a setting existed was trained with
    for name in ("batch_size", "seed", "input_size", "optimizer", "warp_scale", "warp_translate"):
        trained = stored.get(name, getattr(defaults, name))
        if _tuples(trained) != _tuples(getattr(config, name)):  # a checkpoint's config may hold lists
            raise ValueError(f"{config.resume} was trained with {name}={trained!r}; resume with the same "
                             f"value, not {getattr(config, name)!r}")
    if checkpoint.get("world_size", 1) != world_size:
        raise ValueError(f"{config.resume} was trained by {checkpoint.get('world_size', 1)} processes; resume "
                         f"with the same number, not {world_size}")
    if checkpoint["step"] >= config.steps:
        raise ValueError(f"{config.resume} is already at step {checkpoint['step']}; give steps > "
                         f"{checkpoint['step']} to train on")


# ---------------------------------------------------------------- the one-batch check

def overfit_config(config: TrainConfig) -> TrainConfig:
    """``config`` as an overfit run trains it: batch size N, an evaluation every 10 steps unless set."""
    if not config.overfit_batch:
        return config
    return replace(config, batch_size=config.overfit_batch, eval_every=config.eval_every or OVERFIT_EVAL_EVERY)


def write_overfit_batch(dataset, size: int, out: Path) -> Path:
    """``out/overfit_batch.json``: the COCO annotations of the first ``size`` images of ``dataset``
    (a ``CocoDetection``) that hold a gt, with all its categories, written atomically."""
    coco = dataset.coco
    chosen = [i for i in dataset.image_ids if any(not a.get("iscrowd", 0) for a in coco.imgToAnns[i])][:size]
    if len(chosen) < size:
        raise ValueError(f"overfit_batch={size}, but the data has only {len(chosen)} images with a gt")
    document = {"images": [coco.imgs[i] for i in chosen], "categories": list(coco.dataset["categories"]),
                "annotations": [a for i in chosen for a in coco.imgToAnns[i]]}
    path = out / OVERFIT_NAME
    write_atomic(path, json.dumps(document) + "\n")
    return path


RUN_FILES = ("checkpoint.pt", "model.pt", "log.csv", "metrics.json")


def check_out(config: TrainConfig) -> None:
    """Refuse to train into a folder that holds another run, unless resuming or told to overwrite."""
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out {out} is a file, not a folder")
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found and not config.resume and not config.overwrite:
        raise ValueError(f"out {out} already holds a run ({', '.join(found)}); continue it with "
                         f"resume={str(out / 'checkpoint.pt')!r} (--resume), replace it with overwrite=True "
                         "(--overwrite), or give another out")


def check_val_data(dataset, folder) -> None:
    """Read what evaluating ``dataset`` will need before any training: every image's header and every
    annotation's ``area`` (pycocotools needs it), so that a bad val set fails now, not after the run."""
    from PIL import Image, UnidentifiedImageError

    missing = [ann.get("id") for ann in dataset.coco.dataset.get("annotations", []) if "area" not in ann]
    if missing:
        raise ValueError(f"val_data {folder}: {len(missing)} annotations have no 'area' (ids {missing[:5]}); "
                         "COCO evaluation needs it (area = the object's pixel area, w * h for a box)")
    for image_id in dataset.image_ids:
        path = dataset.image_dir / dataset.coco.imgs[image_id]["file_name"]
        try:
            with Image.open(path) as image:
                image.size  # the header alone: cheap, and what fails on a missing or foreign file
        except (OSError, UnidentifiedImageError) as err:
            raise OSError(f"val_data {folder}: cannot read image {path}: {err}") from err
