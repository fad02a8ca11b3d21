"""A small training loop for NanoDet-m (the GFL head) on a COCO folder, and its evaluation.

``train(TrainConfig(...))`` runs, for each step:

1. take the next ``batch_size`` images of a shuffled epoch (a new permutation each epoch);
2. warp each image and its boxes to ``input_size`` x ``input_size`` with
   :class:`detviz.augment.NanoDetWarp` (random scale, flip, shift; boxes follow);
3. normalise, run the model, sum the GFL losses (QFL + GIoU + DFL), stop on a NaN/Inf;
4. clip the gradient norm (35, as NanoDet) and take an SGD or AdamW step, the learning rate
   warmed up linearly over ``warmup_steps``;
5. append the losses to ``OUT/log.csv``; every ``checkpoint_every`` steps and at the end,
   write ``OUT/checkpoint.pt`` atomically (temp file, then ``os.replace``).

Every random draw of the loop comes from two torch generators: the global one (model
initialisation) and a data generator (epoch permutations and warps). The checkpoint keeps
both states, the epoch permutation and its cursor, so ``resume`` continues exactly as an
uninterrupted run would.
"""
from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import Tensor

from detviz.augment import NanoDetWarp
from detviz.datasets.coco import CocoDetection
from detviz.models.nanodet import NanoDet, NanoDetConfig, build_nanodet
from detviz.predict import normalize_images

__all__ = ["MODEL_FAMILIES", "TrainConfig", "train", "load_checkpoint", "build_model_from_checkpoint",
           "open_dataset", "synthetic_train_dir", "evaluate_checkpoint", "finite_metrics", "dumps_metrics",
           "CHECKPOINT_NAME", "LOG_NAME"]

MODEL_FAMILIES = ("gfl",)  # NanoDet-m; the only family this loop trains
CHECKPOINT_NAME, LOG_NAME = "checkpoint.pt", "log.csv"
LOSS_NAMES = ("loss_qfl", "loss_bbox", "loss_dfl")
GRAD_CLIP = 35.0  # NanoDet's grad_clip
DEFAULT_LR = {"sgd": 0.01, "adamw": 1e-3}
CHECKPOINT_FORMAT = 1


@dataclass
class TrainConfig:
    """Settings of one run. ``data=None`` trains on a generated synthetic split cached in
    ``cache_dir`` (``synthetic_images`` images of ``synthetic_size`` px, seed ``synthetic_seed``)."""

    model: str = "gfl"
    data: str | None = None
    out: str = "runs/gfl"
    steps: int = 100
    batch_size: int = 8
    input_size: int = 320
    optimizer: str = "sgd"
    lr: float | None = None  # None: DEFAULT_LR[optimizer]
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    seed: int = 0
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


def open_dataset(folder: str | Path) -> CocoDetection:
    """``folder/images`` + ``folder/annotations.json`` with dense-head labels 0..C-1."""
    folder = Path(folder)
    return CocoDetection(folder / "images", folder / "annotations.json", label_offset=0)


class _Batches:
    """Shuffled epochs of indices, drawn with ``generator``; the last partial batch of an epoch is dropped."""

    def __init__(self, num_items: int, batch_size: int, generator: torch.Generator):
        if batch_size > num_items:
            raise ValueError(f"batch_size ({batch_size}) must not exceed the number of images ({num_items})")
        self.num_items, self.batch_size, self.generator = num_items, batch_size, generator
        self.order: list[int] = []
        self.cursor = 0

    def next(self) -> list[int]:
        if self.cursor + self.batch_size > len(self.order):
            self.order = torch.randperm(self.num_items, generator=self.generator).tolist()
            self.cursor = 0
        batch = self.order[self.cursor:self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return batch


def _warped_batch(dataset: CocoDetection, indices: list[int], warp: NanoDetWarp, generator: torch.Generator
                  ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """images [B, 3, S, S] normalised, and per image boxes [M, 4] xyxy input pixels and labels [M]."""
    images, boxes, labels = [], [], []
    for index in indices:
        image, target = dataset[index]
        image, target, _ = warp(image, {"boxes": target["boxes"], "labels": target["labels"]}, generator)
        images.append(image)
        boxes.append(target["boxes"])
        labels.append(target["labels"])
    return normalize_images(torch.stack(images)), boxes, labels  # B x [3, S, S] -> [B, 3, S, S]


# ---------------------------------------------------------------- checkpoints

def _save_atomic(obj: dict, path: Path) -> None:
    """torch.save to a temp file in the same folder, then os.replace: a crash never leaves half a file."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, *, model_family: str = "gfl", num_classes: int | None = None) -> dict:
    """Read a checkpoint written by :func:`train` and check what it holds.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a detviz training checkpoint, another model family, or (when
            ``num_classes`` is given) another number of classes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a detviz training checkpoint (format {CHECKPOINT_FORMAT})")
    if checkpoint["model_family"] != model_family:
        raise ValueError(f"{path} holds a model of family {checkpoint['model_family']!r}, expected {model_family!r}")
    if num_classes is not None and checkpoint["num_classes"] != num_classes:
        raise ValueError(f"{path} holds a model for num_classes={checkpoint['num_classes']}, but the data has "
                         f"{num_classes} classes")
    return checkpoint


def build_model_from_checkpoint(checkpoint: dict) -> NanoDet:
    """NanoDet-m built from the checkpoint's config, with its weights loaded."""
    names = {f.name for f in fields(NanoDetConfig)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in checkpoint["model_config"].items() if k in names}
    model = build_nanodet(NanoDetConfig(**values))
    model.load_state_dict(checkpoint["model"])
    return model


# ---------------------------------------------------------------- the loop

def _optimizer(config: TrainConfig, model: NanoDet) -> torch.optim.Optimizer:
    lr = config.lr if config.lr is not None else DEFAULT_LR[config.optimizer]
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay)


def _check_config(config: TrainConfig) -> None:
    if config.model not in MODEL_FAMILIES:
        raise ValueError(f"model must be one of {MODEL_FAMILIES}, got {config.model!r}")
    if config.optimizer not in DEFAULT_LR:
        raise ValueError(f"optimizer must be one of {tuple(DEFAULT_LR)}, got {config.optimizer!r}")
    for name in ("steps", "batch_size", "input_size"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)!r}")
    if config.input_size % max(NanoDetConfig.strides):
        raise ValueError(f"input_size must be a multiple of {max(NanoDetConfig.strides)}, got {config.input_size}")


def _progress(config: TrainConfig, start: int):
    """tqdm.auto's bar when tqdm is installed and wanted, else None (plain prints)."""
    if not config.progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=config.steps, initial=start, desc="train")


def _open_log(path: Path, resumed_step: int):
    """The CSV log, keeping only rows up to ``resumed_step`` (a resume from an older checkpoint drops the rest)."""
    rows = []
    if resumed_step and path.is_file():
        with path.open(newline="") as f:
            rows = [row for row in csv.DictReader(f) if int(row["step"]) <= resumed_step]
    columns = ["step", "lr", "loss", *LOSS_NAMES]
    f = path.open("w", newline="")
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return f, writer


def train(config: TrainConfig) -> dict:
    """Train NanoDet-m for ``config.steps`` steps in total (a resumed run continues its count).

    Returns:
        ``dict(step=int, losses=[{name: float} per step run now], checkpoint=Path, log=Path)``.

    Raises:
        ValueError: bad settings, or ``resume`` names a checkpoint of another model family
            or class count.
        FloatingPointError: a loss became NaN or Inf.
    """
    _check_config(config)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = open_dataset(config.data if config.data else synthetic_train_dir(config))
    num_classes = len(dataset.label_to_category_id)

    torch.manual_seed(config.seed)
    model = build_nanodet(NanoDetConfig(num_classes=num_classes, input_size=config.input_size))
    optimizer = _optimizer(config, model)
    data_rng = torch.Generator().manual_seed(config.seed)
    batches = _Batches(len(dataset), config.batch_size, data_rng)
    step = 0
    if config.resume:
        checkpoint = load_checkpoint(config.resume, model_family=config.model, num_classes=num_classes)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        step = checkpoint["step"]
        torch.set_rng_state(checkpoint["rng"]["torch"])
        data_rng.set_state(checkpoint["rng"]["data"])
        batches.order, batches.cursor = list(checkpoint["batches"]["order"]), checkpoint["batches"]["cursor"]

    warp = NanoDetWarp((config.input_size, config.input_size))
    base_lr = config.lr if config.lr is not None else DEFAULT_LR[config.optimizer]
    checkpoint_path, log_path = out / CHECKPOINT_NAME, out / LOG_NAME
    log_file, log = _open_log(log_path, step)
    bar = _progress(config, step)
    losses_run = []

    def save() -> None:
        _save_atomic({
            "format": CHECKPOINT_FORMAT, "model_family": config.model, "num_classes": num_classes,
            "model_config": asdict(model.cfg), "train_config": asdict(config),
            "label_to_category_id": dict(dataset.label_to_category_id), "step": step,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "data": data_rng.get_state()},
            "batches": {"order": list(batches.order), "cursor": batches.cursor},
        }, checkpoint_path)

    model.train()
    try:
        while step < config.steps:
            lr = base_lr * min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else base_lr
            for group in optimizer.param_groups:
                group["lr"] = lr
            images, boxes, labels = _warped_batch(dataset, batches.next(), warp, data_rng)
            cls_scores, bbox_preds = model(images)
            loss_dict = model.loss(cls_scores, bbox_preds, boxes, labels)
            loss = sum(loss_dict.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"step {step + 1}: loss is {float(loss)} "
                                         f"({ {k: float(v) for k, v in loss_dict.items()} })")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            optimizer.step()
            step += 1

            values = {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in loss_dict.items()}}
            losses_run.append(values)
            log.writerow({"step": step, "lr": lr, **values})
            log_file.flush()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{values['loss']:.4f}")
            elif config.progress:
                print(f"step {step}/{config.steps} " + " ".join(f"{k}={v:.4f}" for k, v in values.items()),
                      flush=True)
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                save()
        save()
    finally:
        log_file.close()
        if bar is not None:
            bar.close()
    return {"step": step, "losses": losses_run, "checkpoint": checkpoint_path, "log": log_path}


def finite_metrics(metrics: dict) -> dict:
    """``evaluate_coco``'s numbers only (no table, no COCOeval), NaN written as None so the dict is valid JSON."""
    def clean(value):
        return None if isinstance(value, float) and math.isnan(value) else value

    return {k: ({n: clean(v) for n, v in value.items()} if isinstance(value, dict) else clean(value))
            for k, value in metrics.items() if isinstance(value, (int, float, dict))}


def dumps_metrics(metrics: dict) -> str:
    """One JSON line of :func:`finite_metrics`."""
    return json.dumps(finite_metrics(metrics), allow_nan=False)


# ---------------------------------------------------------------- evaluation

def _predict_original_size(model: NanoDet, dataset: CocoDetection, input_size: int, batch_size: int
                           ) -> list[dict]:
    """Resize each image (keeping its aspect ratio) to the network input, predict, map the boxes back."""
    from detviz.predict import gfl_predict
    from detviz.transforms import warp_boxes

    resize = NanoDetWarp((input_size, input_size), scale=(1.0, 1.0), translate=0.0, flip=0.0)
    fixed = torch.Generator().manual_seed(0)  # the draws do not matter: this warp is a plain resize
    predictions = []
    for start in range(0, len(dataset), batch_size):
        chunk = [dataset[i][0] for i in range(start, min(start + batch_size, len(dataset)))]
        empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
        warped = [resize(image, empty, fixed) for image in chunk]
        batch = normalize_images(torch.stack([w[0] for w in warped]))  # [B, 3, S, S]
        for prediction, (_, _, meta) in zip(gfl_predict(model, batch), warped):
            h, w = meta["ori_shape"]
            back = torch.linalg.inv(meta["warp_matrix"])  # input pixels -> original pixels
            predictions.append({**prediction, "boxes": warp_boxes(prediction["boxes"], back, width=w, height=h)})
    return predictions


def evaluate_checkpoint(checkpoint_path: str | Path, data: str | Path, *, batch_size: int = 8
                        ) -> tuple[dict, Path]:
    """COCO metrics of a checkpoint on ``data`` (``images/`` + ``annotations.json``).

    Predictions are made at the checkpoint's input size and mapped back to each image's
    original pixels; the COCO results list is written next to the checkpoint as
    ``<checkpoint stem>.results.json``.

    Returns:
        (``evaluate_coco``'s dict, path of the results json).
    """
    from detviz.evaluation import evaluate_coco, to_coco_results

    dataset = open_dataset(data)
    checkpoint = load_checkpoint(checkpoint_path, num_classes=len(dataset.label_to_category_id))
    model = build_model_from_checkpoint(checkpoint).eval()
    predictions = _predict_original_size(model, dataset, checkpoint["model_config"]["input_size"], batch_size)
    results = to_coco_results(predictions, dataset.image_ids, dataset.label_to_category_id)
    results_path = Path(checkpoint_path).with_suffix(".results.json")
    results_path.write_text(json.dumps(results) + "\n")
    return evaluate_coco(dataset.coco, results), results_path
