"""Detections for a whole COCO folder, and their COCO metrics, for any model family.

:func:`predict_dataset` resizes each image to the network input (aspect ratio kept),
predicts with the family's ``predict`` and maps the boxes back to the image's pixels;
:func:`evaluate_model` and :func:`evaluate_checkpoint` score them with pycocotools
(:func:`detviz.evaluation.evaluate_coco`). Images are read and resized by DataLoader worker
processes while the model runs where CPUs are free for them (:func:`default_workers`), and an
image that already has the input size is not resized at all.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from detviz.datasets.augment import NanoDetWarp, warp_boxes, warp_image
from detviz.datasets.coco import CocoDetection, open_dataset
from detviz.engine.checkpoints import build_model_from_checkpoint, load_checkpoint
from detviz.engine.families import Family, get_family
from detviz.engine.processes import training_device
from detviz.evaluation import evaluate_coco, to_coco_results

__all__ = ["predict_dataset", "evaluate_model", "evaluate_checkpoint", "load_model", "class_names_of",
           "finite_metrics", "dumps_metrics", "default_workers"]

# Starting a worker costs tens of milliseconds where processes fork (Linux) and a few seconds where
# they spawn and import torch again (macOS, Windows); decoding and resizing one image costs a few ms.
WORKERS_FROM_IMAGES = 64  # smaller datasets are decoded in this process
MAX_WORKERS = 2  # one worker reads and resizes faster than a CPU forward pass uses images; two for faster models
IDENTITY = torch.eye(3, dtype=torch.float64)  # the resize of an image that already has the input size
EMPTY_TARGET = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}


def finite_metrics(metrics: dict) -> dict:
    """``evaluate_coco``'s numbers only (no table, no COCOeval), NaN written as None so the dict is valid JSON."""
    def clean(value):
        return None if isinstance(value, float) and math.isnan(value) else value

    return {k: ({n: clean(v) for n, v in value.items()} if isinstance(value, dict) else clean(value))
            for k, value in metrics.items() if isinstance(value, (int, float, dict))}


def dumps_metrics(metrics: dict) -> str:
    """One JSON line of :func:`finite_metrics`."""
    return json.dumps(finite_metrics(metrics), allow_nan=False)


def default_workers(num_images: int) -> int:
    """DataLoader workers :func:`predict_dataset` starts when not told: none for fewer than
    ``WORKERS_FROM_IMAGES`` images (starting one would cost more than it saves), else one per CPU
    that torch's own threads leave free, at most ``MAX_WORKERS``. A worker on a CPU the model's
    threads need slows the forward pass down more than it saves: on a 2-core machine running
    2 torch threads there is none to spare, and the images are read in this process."""
    if num_images < WORKERS_FROM_IMAGES:
        return 0
    return max(0, min(MAX_WORKERS, (os.cpu_count() or 1) - torch.get_num_threads()))


class _NetworkInputs(Dataset):
    """The images of ``dataset`` resized to ``input_size`` square (aspect ratio kept, padded), as
    :func:`predict_dataset` feeds them to the model; item ``i`` is ``(image Tensor[3, S, S],
    warp_matrix Tensor[3, 3] float64 source -> input pixels or None, (H, W) of the source)``.

    An image that already is ``S x S`` is passed on as it is (``warp_matrix`` None): its resize is
    the identity, and the bilinear warp through the identity reads every pixel back exactly, so
    skipping it changes no prediction. An item that fails is its exception, raised again by
    :func:`predict_dataset` as it is (a DataLoader worker's own would come back wrapped in its
    traceback). Module level, so DataLoader workers can pickle it.
    """

    def __init__(self, dataset: Dataset, input_size: int):
        self.dataset, self.size = dataset, input_size
        self.resize = NanoDetWarp((input_size, input_size), scale=(1.0, 1.0), translate=0.0, flip=0.0)  # a plain resize

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor | None, tuple[int, int]] | Exception:
        try:
            return self._resized(index)
        except Exception as err:  # e.g. OSError "cannot read image ...": predict_dataset raises it
            return err

    def _resized(self, index: int) -> tuple[Tensor, Tensor | None, tuple[int, int]]:
        image = self.dataset[index][0]
        if not (isinstance(image, Tensor) and image.dim() == 3 and image.shape[0] == 3 and image.is_floating_point()):
            self.resize(image, EMPTY_TARGET)  # raises the warp's own error, naming what an image must be
        h, w = int(image.shape[1]), int(image.shape[2])
        # NanoDetWarp's matrix and image, without its target bookkeeping; the draws do not matter here
        matrix = self.resize.draw_matrix(h, w, torch.Generator().manual_seed(0))
        if torch.equal(matrix, IDENTITY):
            return image, None, (h, w)
        return warp_image(image, matrix, (self.size, self.size), self.resize.fill), matrix, (h, w)


def _stack(items: list) -> tuple[Tensor, list, list] | Exception:
    """A DataLoader batch of ``_NetworkInputs`` items: images stacked [B, 3, S, S], matrices and sizes
    as lists; or the first item's exception when one failed."""
    failed = [item for item in items if isinstance(item, Exception)]
    if failed:
        return failed[0]
    images, matrices, sizes = zip(*items)
    return torch.stack(images), list(matrices), list(sizes)


def _check_workers(num_workers) -> None:
    if num_workers is not None and (isinstance(num_workers, bool) or not isinstance(num_workers, int)
                                    or num_workers < 0):
        raise ValueError(f"num_workers must be None (default_workers) or an int >= 0, got {num_workers!r}")


@torch.no_grad()
def predict_dataset(family: Family, module: nn.Module, dataset: CocoDetection, input_size: int,
                    batch_size: int = 8, num_workers: int | None = None) -> list[dict]:
    """Detections for every image of ``dataset``, in its original pixels.

    Each image is resized (aspect ratio kept, padded) to ``input_size`` square, predicted by
    ``family.predict`` (the module must be in eval mode) and its boxes mapped back through
    the inverse warp matrix. ``dataset`` yields ``(image Tensor[3, H, W] in [0, 1], anything)``:
    a :class:`~detviz.datasets.CocoDetection` or an :class:`~detviz.datasets.ImageFolder`.
    Images are read and resized by ``num_workers`` DataLoader processes (None:
    :func:`default_workers`; 0: in this process), in the dataset's order whatever the number.
    """
    if module.training:
        raise ValueError("predict_dataset needs the module in eval mode (call module.eval()): in train mode "
                         "BatchNorm would update its running statistics from these images and change the predictions")
    _check_workers(num_workers)
    workers = default_workers(len(dataset)) if num_workers is None else num_workers
    device = next(module.parameters()).device
    batches = DataLoader(_NetworkInputs(dataset, input_size), batch_size=batch_size, shuffle=False,
                         num_workers=workers, collate_fn=_stack)
    predictions = []
    for loaded in batches:
        if isinstance(loaded, Exception):
            raise loaded
        batch, matrices, sizes = loaded  # [B, 3, S, S], B x [3, 3] or None, B x (H, W)
        for prediction, matrix, (h, w) in zip(family.predict(module, batch.to(device)), matrices, sizes):
            prediction = {k: v.cpu() for k, v in prediction.items()}
            if matrix is not None:  # input pixels -> original pixels
                prediction["boxes"] = warp_boxes(prediction["boxes"], torch.linalg.inv(matrix), width=w, height=h)
            predictions.append(prediction)
    return predictions


def _coco_results(family: Family, module: nn.Module, dataset: CocoDetection, input_size: int,
                  batch_size: int, num_workers: int | None) -> list[dict]:
    """:func:`predict_dataset` as a COCO results list (category ids and xywh boxes of the dataset)."""
    predictions = predict_dataset(family, module, dataset, input_size, batch_size, num_workers)
    return to_coco_results(predictions, dataset.image_ids, dataset.label_to_category_id)


def evaluate_model(family: Family, module: nn.Module, dataset: CocoDetection, input_size: int,
                   batch_size: int = 8, num_workers: int | None = None) -> dict:
    """pycocotools' metrics (``detviz.evaluation.evaluate_coco``) of ``module`` on ``dataset``
    (``num_workers`` as in :func:`predict_dataset`)."""
    return evaluate_coco(dataset.coco, _coco_results(family, module, dataset, input_size, batch_size, num_workers))


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
                        device: str = "cpu", family: Family | None = None,
                        num_workers: int | None = None) -> tuple[dict, list[dict]]:
    """COCO metrics of a checkpoint (``checkpoint.pt`` or ``model.pt``) on ``data``; writes nothing.

    ``data`` is a COCO folder (``images/`` + ``annotations.json``) or its dataset. The model is
    loaded by :func:`load_model` (which refuses data of other categories); predictions are made
    at the run's input size and mapped back to each image's original pixels (``num_workers`` as in
    :func:`predict_dataset`).

    Returns:
        (``evaluate_coco``'s dict, the COCO results list it scored).
    """
    dataset = data if isinstance(data, CocoDetection) else open_dataset(data)
    family, module, checkpoint = load_model(checkpoint_path, dataset=dataset, device=device, family=family)
    results = _coco_results(family, module, dataset, checkpoint["train_config"]["input_size"], batch_size,
                            num_workers)
    return evaluate_coco(dataset.coco, results), results
