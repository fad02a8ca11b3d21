"""Input checks shared by the public functions: fail early, name what was expected."""
from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor


def is_finite_number(value) -> bool:
    """A finite real number: an int or float, numpy's included; not a bool, NaN or Inf."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_tensor(x, name: str, *, ndim: int | None = None, last_dim: int | None = None,
                 floating: bool = False, layout: str = "") -> None:
    """Raise ``ValueError``/``TypeError`` unless ``x`` is a tensor of the stated form.

    ``layout`` is how the expected shape reads in the message, e.g. ``"[M, 4] xyxy"``.
    """
    expected = f"{name} must be Tensor{layout}" if layout else f"{name} must be a Tensor"
    if not isinstance(x, Tensor):
        raise TypeError(f"{expected}, got {type(x).__name__}")
    if (ndim is not None and x.dim() != ndim) or (last_dim is not None and (x.dim() == 0 or x.shape[-1] != last_dim)):
        raise ValueError(f"{expected}, got shape {list(x.shape)}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{expected} of a floating dtype, got {x.dtype}")


def check_boxes(boxes, name: str = "boxes", *, allow_inverted: bool = False) -> None:
    """Check ``boxes`` is a finite float ``Tensor[*, 4]`` in xyxy with ``x2 >= x1`` and ``y2 >= y1``.

    Zero-width or zero-height boxes pass (they are legal and give IoU 0); inverted
    boxes (``x2 < x1``), NaN and Inf do not, unless ``allow_inverted`` is set for
    code that must accept raw, unconstrained predictions.
    """
    layout = "[*, 4] xyxy" if not isinstance(boxes, Tensor) or boxes.dim() != 2 else "[M, 4] xyxy"
    check_tensor(boxes, name, last_dim=4, floating=True, layout=layout)
    if boxes.dim() == 1:
        raise ValueError(f"{name} must be Tensor[M, 4] xyxy, got shape {list(boxes.shape)}")
    if boxes.numel() == 0:
        return
    if not torch.isfinite(boxes).all():
        bad = torch.nonzero(~torch.isfinite(boxes).all(dim=-1))[0].tolist()
        raise ValueError(f"{name} must be finite xyxy boxes, got a NaN/Inf at index {bad}")
    if allow_inverted:
        return
    inverted = (boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1])
    if inverted.any():
        idx = torch.nonzero(inverted)[0].tolist()
        raise ValueError(
            f"{name} must be xyxy with x2 >= x1 and y2 >= y1, got {boxes[tuple(idx)].tolist()} "
            f"at index {idx} (xywh or cxcywh boxes must be converted first)"
        )


def check_labels(labels, name: str, num_boxes: int, num_classes: int | None) -> None:
    """Check ``labels`` is an integer ``Tensor[M]`` matching ``num_boxes``, values in ``[0, num_classes)``."""
    check_tensor(labels, name, ndim=1, layout="[M] int64")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be Tensor[M] of an integer dtype, got {labels.dtype}")
    if labels.shape[0] != num_boxes:
        raise ValueError(f"{name} must have one label per box ({num_boxes}), got {labels.shape[0]}")
    if num_classes is not None and labels.numel() > 0:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"{name} must lie in [0, {num_classes - 1}] (num_classes={num_classes}), got range [{lo}, {hi}]")


def check_detection_targets(targets, num_images: int, *, require_labels: bool = True) -> None:
    """Reject targets a detector cannot train on, naming what was expected.

    Expected: a list with one ``dict(boxes=Tensor[M, 4] float xyxy with x2 > x1 and y2 > y1,
    labels=Tensor[M] int64)`` per image (M may be 0).
    """
    expected = "list[dict(boxes=Tensor[M, 4] float xyxy, labels=Tensor[M] int64)], one per image"
    if targets is None:
        raise ValueError(f"targets must be given in training mode: {expected}")
    if not isinstance(targets, (list, tuple)) or len(targets) != num_images:
        got = len(targets) if isinstance(targets, (list, tuple)) else type(targets).__name__
        raise ValueError(f"targets must be {expected}; got {got} for {num_images} images")
    for index, target in enumerate(targets):
        boxes = target.get("boxes") if isinstance(target, dict) else None
        if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4:
            got = list(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
            raise ValueError(f"targets[{index}]['boxes'] must be Tensor[M, 4] xyxy, got {got}")
        if require_labels and (not isinstance(target.get("labels"), Tensor) or target["labels"].shape != boxes.shape[:1]):
            raise ValueError(f"targets[{index}]['labels'] must be Tensor[{boxes.shape[0]}] int64, one per box")
        degenerate = (boxes[:, 2:] <= boxes[:, :2]).any(dim=1)
        if degenerate.any():
            row = int(torch.where(degenerate)[0][0])
            raise ValueError(f"targets[{index}]['boxes'][{row}] = {boxes[row].tolist()} has no positive width and "
                             f"height; boxes must be xyxy with x2 > x1 and y2 > y1 (convert COCO xywh first)")
