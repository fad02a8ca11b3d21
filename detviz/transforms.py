"""Geometric transforms of boxes.

NanoDet resizes, flips and shifts each training image with one 3x3 affine
"warp matrix" (recorded as ``warp_matrix`` in the image meta) and moves the gt
boxes with the same matrix: the four corners of each box are transformed, the
axis-aligned box around them is taken, and it is clipped to the output image.
"""
from __future__ import annotations

import torch
from torch import Tensor

from detviz._validate import check_boxes, check_tensor

__all__ = ["warp_boxes", "scale_flip_translate_matrix"]


def scale_flip_translate_matrix(scale: float, translate: tuple[float, float] = (0.0, 0.0), *,
                                flip_width: float | None = None, dtype=torch.float64) -> Tensor:
    """The 3x3 matrix of ``x' = s * x + tx``, ``y' = s * y + ty``, with an optional
    horizontal flip of an image ``flip_width`` pixels wide applied first (``x -> W - x``).

    Returns:
        Tensor[3, 3], acting on homogeneous column vectors (x, y, 1).
    """
    flip = torch.eye(3, dtype=dtype)
    if flip_width is not None:
        flip[0, 0], flip[0, 2] = -1.0, float(flip_width)
    affine = torch.tensor([[scale, 0.0, translate[0]], [0.0, scale, translate[1]], [0.0, 0.0, 1.0]], dtype=dtype)
    return affine @ flip


def warp_boxes(boxes: Tensor, matrix: Tensor, width: float | None = None, height: float | None = None) -> Tensor:
    """Move xyxy boxes with an affine/perspective matrix, as NanoDet's ``warp_boxes``.

    Args:
        boxes: Tensor[M, 4] xyxy pixels of the source image.
        matrix: Tensor[3, 3] mapping source pixels to destination pixels.
        width, height: destination size; boxes are clipped to it when given.

    Returns:
        Tensor[M, 4] xyxy pixels of the destination image, same dtype as ``boxes``:
        the axis-aligned hull of the four transformed corners.
    """
    check_boxes(boxes, "boxes")
    check_tensor(matrix, "matrix", ndim=2, layout="[3, 3]")
    if matrix.shape != (3, 3):
        raise ValueError(f"matrix must be Tensor[3, 3], got shape {list(matrix.shape)}")
    if boxes.numel() == 0:
        return boxes.clone()
    m = matrix.to(torch.float64)
    corners = boxes.to(torch.float64)[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(-1, 2)  # [M*4, 2]: tl, br, bl, tr
    homogeneous = torch.cat([corners, torch.ones_like(corners[:, :1])], dim=1)  # [M*4, 3]
    moved = homogeneous @ m.T  # [M*4, 3]
    moved = (moved[:, :2] / moved[:, 2:]).reshape(-1, 4, 2)  # [M, 4 corners, 2]
    out = torch.cat([moved.min(dim=1).values, moved.max(dim=1).values], dim=1)  # [M, 4]
    if width is not None:
        out[:, 0::2] = out[:, 0::2].clamp(0, width)
    if height is not None:
        out[:, 1::2] = out[:, 1::2].clamp(0, height)
    return out.to(boxes.dtype)
