"""Input checks shared by the public functions: fail early, name what was expected."""
from __future__ import annotations

import torch
from torch import Tensor


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
