"""Detections for a whole COCO folder, and their COCO metrics, for any model family.

:func:`predict_dataset` resizes each image to the network input (aspect ratio kept),
predicts with the family's ``predict`` and maps the boxes back to the image's pixels;
:func:`evaluate_model` and :func:`evaluate_checkpoint` score them with pycocotools
(:func:`detviz.evaluation.evaluate_coco`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from detviz.datasets.augment import NanoDetWarp, warp_boxes
from detviz.datasets.coco import CocoDetection, open_dataset
from detviz.engine.checkpoints import build_model_from_checkpoint, load_checkpoint
from detviz.engine.families import Family, get_family
from detviz.engine.processes import training_device
from detviz.evaluation import evaluate_coco, to_coco_results

__all__ = ["predict_dataset", "evaluate_model", "evaluate_checkpoint", "load_model", "class_names_of",
           "finite_metrics", "dumps_metrics"]


def finite_metrics(metrics: dict) -> dict:
    """``evaluate_coco``'s numbers only (no table, no COCOeval), NaN written as None so the dict is valid JSON."""
    def clean(value):
        return None if isinstance(value, float) and math.isnan(value) else value

    return {k: ({n: clean(v) for n, v in value.items()} if isinstance(value, dict) else clean(value))
            for k, value in metrics.items() if isinstance(value, (int, float, dict))}


def dumps_metrics(metrics: dict) -> str:
    """One JSON line of :func:`finite_metrics`."""
    return json.dumps(finite_metrics(metrics), allow_nan=False)


@torch.no_grad()
def predict_dataset(family: Family, module: nn.Module, dataset: CocoDetection, input_size: int,
                    batch_size: int = 8) -> list[dict]:
    """Detections for every image of ``dataset``, in its original pixels.

    Each image is resized (aspect ratio kept, padded) to ``input_size`` square, predicted by
    ``family.predict`` (the module must be in eval mode) and its boxes mapped back through
    the inverse warp matrix. ``dataset`` yields ``(image Tensor[3, H, W] in [0, 1], anything)``:
    a :class:`~detviz.datasets.CocoDetection` or an :class:`~detviz.datasets.ImageFolder`.
    """
    if module.training:
        raise ValueError("predict_dataset needs the module in eval mode (call module.eval()): in train mode "
                         "BatchNorm would update its running statistics from these images and change the predictions")
    device = next(module.parameters()).device
    resize = NanoDetWarp((input_size, input_size), scale=(1.0, 1.0), translate=0.0, flip=0.0)
    fixed = torch.Generator().manual_seed(0)  # the draws do not matter: this warp is a plain resize
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    predictions = []
    for start in range(0, len(dataset), batch_size):
        warped = [resize(dataset[i][0], empty, fixed) for i in range(start, min(start + batch_size, len(dataset)))]
        batch = torch.stack([w[0] for w in warped]).to(device)  # [B, 3, S, S]
        for prediction, (_, _, meta) in zip(family.predict(module, batch), warped):
            h, w = meta["ori_shape"]
            back = torch.linalg.inv(meta["warp_matrix"])  # input pixels -> original pixels
            prediction = {k: v.cpu() for k, v in prediction.items()}
            predictions.append({**prediction, "boxes": warp_boxes(prediction["boxes"], back, width=w, height=h)})
    return predictions


def _coco_results(family: Family, module: nn.Module, dataset: CocoDetection, input_size: int,
                  batch_size: int) -> list[dict]:
    """:func:`predict_dataset` as a COCO results list (category ids and xywh boxes of the dataset)."""
    predictions = predict_dataset(family, module, dataset, input_size, batch_size)
    return to_coco_results(predictions, dataset.image_ids, dataset.label_to_category_id)


def evaluate_model(family: Family, module: nn.Module, dataset: CocoDetection, input_size: int,
                   batch_size: int = 8) -> dict:
    """pycocotools' metrics (``detviz.evaluation.evaluate_coco``) of ``module`` on ``dataset``."""
    return evaluate_coco(dataset.coco, _coco_results(family, module, dataset, input_size, batch_size))


def class_names_of(checkpoint: dict) -> dict[int, str]:
    """label -> class name as the checkpoint's training data named them ("category <id>" for a
    checkpoint written before names were stored)."""
    names = checkpoint.get("class_names") or {}
    return {int(label): names.get(int(label), f"category {category_id}")
            for label, category_id in checkpoint["label_to_category_id"].items()}


def load_model(checkpoint_path: str | Path, *, dataset: CocoDetection | None = None, device: str = "cpu",
               family: Family | None = None) -> tuple[Family, nn.Module, dict]:
    """The model of a checkpoint (``checkpoint.pt`` or ``model.pt``), in eval mode on ``device``.

    ``family`` rebuilds the model (None: the built-in family named in the checkpoint); the EMA
    weights are used when the checkpoint has them. With ``dataset``, a dataset whose categories
    differ from the training data's (label -> category id) is refused: scoring it would pair the
    model's classes with the wrong categories.

    Returns:
        ``(family, module, checkpoint dict)``.
    """
    num_classes = None if dataset is None else len(dataset.label_to_category_id)
    checkpoint = load_checkpoint(checkpoint_path, num_classes=num_classes)
    stored = {int(k): v for k, v in checkpoint["label_to_category_id"].items()}
    if dataset is not None and stored != dataset.label_to_category_id:
        raise ValueError(f"{checkpoint_path} was trained on the categories {stored} (label: category id), the "
                         f"data has {dataset.label_to_category_id}")
    family = family if family is not None else get_family(checkpoint["model_family"])
    module = build_model_from_checkpoint(checkpoint, family=family).to(training_device(device)).eval()
    return family, module, checkpoint


def evaluate_checkpoint(checkpoint_path: str | Path, data: str | Path | CocoDetection, *, batch_size: int = 8,
                        device: str = "cpu", family: Family | None = None) -> tuple[dict, list[dict]]:
    """COCO metrics of a checkpoint (``checkpoint.pt`` or ``model.pt``) on ``data``; writes nothing.

    ``data`` is a COCO folder (``images/`` + ``annotations.json``) or its dataset. The model is
    loaded by :func:`load_model` (which refuses data of other categories); predictions are made
    at the run's input size and mapped back to each image's original pixels.

    Returns:
        (``evaluate_coco``'s dict, the COCO results list it scored).
    """
    dataset = data if isinstance(data, CocoDetection) else open_dataset(data)
    family, module, checkpoint = load_model(checkpoint_path, dataset=dataset, device=device, family=family)
    results = _coco_results(family, module, dataset, checkpoint["train_config"]["input_size"], batch_size)
    return evaluate_coco(dataset.coco, results), results
