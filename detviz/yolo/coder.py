"""YOLOv3's box coder: raw offsets ``t`` <-> boxes, per level.

For the cell in column ``cx``, row ``cy`` of an ``H x W`` level and its anchor ``(aw, ah)``
(pixels of the input)::

    bx = sigmoid(tx) + cx            by = sigmoid(ty) + cy           (grid units of the level)
    bw = aw * exp(tw)                bh = ah * exp(th)               (pixels of the input)
    normed: bx / W, by / H           bw / input_w, bh / input_h      (fractions of the input)

The loss works on the raw ``t`` (the xy target ``bx - cx`` lies in [0, 1]; the wh target is
``log(bw / aw)``); decoded boxes are needed only for the ignore mask and for IoU losses.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from detviz._validate import check_tensor
from detviz.boxes import box_cxcywh_to_xyxy

__all__ = ["grid_offsets", "YoloDecoded", "decode_level", "raw_box_targets", "check_input_size"]


def check_input_size(input_size) -> tuple[int, int]:
    """``(height, width)`` of the network input as two positive ints."""
    if (not isinstance(input_size, (tuple, list, torch.Size)) or len(input_size) != 2
            or any(int(s) != s or s <= 0 for s in input_size)):
        raise ValueError(f"input_size must be (height, width) in pixels, got {input_size!r}")
    return int(input_size[0]), int(input_size[1])


def _check_raw(raw, name: str = "raw") -> None:
    check_tensor(raw, name, ndim=5, floating=True, layout="[B, H, W, A, 4 + 1 + C]")
    if raw.shape[-1] < 5:
        raise ValueError(f"{name} must be Tensor[B, H, W, A, 4 + 1 + C], got shape {list(raw.shape)}")


def grid_offsets(featmap_size: Sequence[int], dtype=torch.float32, device=None) -> Tensor:
    """``(cx, cy)`` = (column, row) of every cell, shaped ``[H, W, 1, 2]`` to broadcast over anchors."""
    h, w = featmap_size
    ys, xs = torch.meshgrid(torch.arange(h, dtype=dtype, device=device), torch.arange(w, dtype=dtype, device=device),
                            indexing="ij")  # [H, W] each
    return torch.stack([xs, ys], dim=-1)[:, :, None, :]  # [H, W, 1, 2]


class YoloDecoded(NamedTuple):
    """Decoded predictions of one level (all ``[B, H, W, A, ...]``)."""

    xy: Tensor  # [..., 2] normalised centre: (sigmoid(t) + cell) / (W, H)
    wh: Tensor  # [..., 2] normalised size: anchor * exp(t) / (input_w, input_h)
    boxes: Tensor  # [..., 4] xyxy pixels of the input
    objectness: Tensor  # [...] sigmoid of the objectness logit
    class_probs: Tensor  # [..., C] independent sigmoids


def decode_level(raw: Tensor, anchors: Tensor, input_size: Sequence[int]) -> YoloDecoded:
    """Decode one level's raw output.

    Args:
        raw (Tensor[B, H, W, A, 4 + 1 + C]): tx, ty, tw, th, objectness logit, class logits.
        anchors (Tensor[A, 2]): (w, h) pixels of the input, the level's anchors.
        input_size: (height, width) of the network input in pixels.
    Returns:
        YoloDecoded; ``boxes`` are xyxy pixels (not clipped to the image).
    """
    _check_raw(raw)
    input_h, input_w = check_input_size(input_size)
    h, w, a = raw.shape[1:4]
    anchors = torch.as_tensor(anchors, dtype=raw.dtype, device=raw.device)
    if list(anchors.shape) != [a, 2]:
        raise ValueError(f"anchors must be Tensor[A={a}, 2] (w, h) pixels, got shape {list(anchors.shape)}")
    grid = grid_offsets((h, w), raw.dtype, raw.device)  # [H, W, 1, 2]
    grid_wh = torch.tensor([w, h], dtype=raw.dtype, device=raw.device)
    input_wh = torch.tensor([input_w, input_h], dtype=raw.dtype, device=raw.device)
    xy = (raw[..., 0:2].sigmoid() + grid) / grid_wh  # bx = sigmoid(tx) + cx, by = sigmoid(ty) + cy
    wh = anchors * raw[..., 2:4].exp() / input_wh  # bw = aw * exp(tw), bh = ah * exp(th)
    boxes = box_cxcywh_to_xyxy(torch.cat([xy, wh], dim=-1) * torch.cat([input_wh, input_wh]))
    return YoloDecoded(xy, wh, boxes, raw[..., 4].sigmoid(), raw[..., 5:].sigmoid())


def raw_box_targets(y_true: Tensor, anchors: Tensor, input_size: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Invert the coder on ``y_true``: the raw xy and wh the network should output.

    Args:
        y_true (Tensor[B, H, W, A, 4 + 1 + C]): normalised cxcywh, objectness, one-hot classes.
        anchors (Tensor[A, 2]): the level's (w, h) anchors, pixels.
        input_size: (height, width) pixels.
    Returns:
        raw_xy (Tensor[B, H, W, A, 2]): ``normed_xy * (W, H) - cell``, in [0, 1] where there is
            an object (the BCE target of ``tx, ty``); 0 elsewhere.
        raw_wh (Tensor[B, H, W, A, 2]): ``log(normed_wh * input_wh / anchor)``, the L2 target of
            ``tw, th``; 0 where there is no object (log(0) = -inf is switched off, as keras-yolo3 does).
    """
    _check_raw(y_true, "y_true")
    input_h, input_w = check_input_size(input_size)
    h, w = y_true.shape[1:3]
    dtype, device = y_true.dtype, y_true.device
    anchors = torch.as_tensor(anchors, dtype=dtype, device=device)
    has_object = y_true[..., 4:5] > 0  # [B, H, W, A, 1]
    grid = grid_offsets((h, w), dtype, device)
    raw_xy = y_true[..., 0:2] * torch.tensor([w, h], dtype=dtype, device=device) - grid
    ratio = y_true[..., 2:4] * torch.tensor([input_w, input_h], dtype=dtype, device=device) / anchors
    raw_wh = torch.where(has_object, ratio.clamp(min=torch.finfo(dtype).tiny).log(), torch.zeros_like(ratio))
    return torch.where(has_object, raw_xy, torch.zeros_like(raw_xy)), raw_wh
