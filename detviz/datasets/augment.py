"""Training-time warps of images and their boxes: NanoDet's random scale/flip/shift and YOLO's letterbox.

Both move the image and its gt boxes with one 3x3 matrix that maps source pixels to
output pixels and record it in a meta dict (``warp_matrix``, as NanoDet's meta does).
Boxes move as in NanoDet's ``warp_boxes``: the four corners of each box are transformed,
the axis-aligned box around them is taken, and it is clipped to the output image
(:func:`warp_boxes`). Predictions made on the output image go back to the source image
with the inverse matrix.

Pixel convention, shared with the boxes: pixel ``(row i, column j)`` covers
``[j, j + 1] x [i, i + 1]``, so its centre is ``(j + 0.5, i + 0.5)``. A box
``[0, 0, W, H]`` is the whole image, and flipping maps ``x -> W - x``.
(OpenCV's ``warpAffine``, which NanoDet calls, puts pixel centres on integers instead;
the two differ by at most half a pixel.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from detviz._validate import check_boxes, check_labels, check_tensor

__all__ = ["scale_flip_translate_matrix", "warp_boxes", "warp_image", "NanoDetWarp", "letterbox", "unletterbox_boxes",
           "MIN_BOX_SIDE"]

MIN_BOX_SIDE = 1.0  # boxes narrower or shorter than this (output pixels) after clipping are dropped


# ---------------------------------------------------------------- boxes

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


# ---------------------------------------------------------------- images


def _check_image(image) -> None:
    check_tensor(image, "image", ndim=3, layout="[3, H, W] float in [0, 1]")
    if not image.is_floating_point():
        raise TypeError(f"image must be Tensor[3, H, W] of a floating dtype with values in [0, 1] "
                        f"(e.g. uint8 image / 255), got {image.dtype}")
    if image.shape[0] != 3:
        raise ValueError(f"image must be Tensor[3, H, W] float in [0, 1], got shape {list(image.shape)}")


def _check_target(target) -> None:
    if not isinstance(target, dict) or "boxes" not in target or "labels" not in target:
        raise TypeError(f"target must be dict(boxes=Tensor[M, 4] xyxy, labels=Tensor[M]), got {target!r:.80}")
    check_boxes(target["boxes"], "target['boxes']")
    check_labels(target["labels"], "target['labels']", target["boxes"].shape[0], None)
    per_box = [k for k, v in target.items()
               if k not in ("boxes", "labels") and isinstance(v, Tensor) and v.dim() > 0]
    if per_box:
        raise ValueError(f"target may hold only 'boxes', 'labels' and scalar entries (other per-box "
                         f"entries would not be warped), got tensor entries {per_box}")


def warp_image(image: Tensor, matrix: Tensor, size: tuple[int, int], fill: float = 0.0) -> Tensor:
    """Resample ``image`` through an affine ``matrix`` with bilinear interpolation.

    Each output pixel centre ``(x, y)`` is mapped back with ``matrix^-1`` to a source
    point, read bilinearly from its four neighbouring pixel centres; neighbours outside
    the source image read ``fill`` (a constant border, like OpenCV's ``BORDER_CONSTANT``).
    Coordinates are computed in float64, so a matrix made of integer shifts and flips
    reproduces the pixels exactly. A warp without rotation or shear (all of NanoDet's) is
    interpolated along rows, then columns: the same weights, a few float32 ulps apart, about four times faster.

    Args:
        image: Tensor[C, H, W] float.
        matrix: Tensor[3, 3] affine, source pixels -> output pixels.
        size: (height, width) of the output in pixels.
        fill: value of pixels that fall outside the source.

    Returns:
        Tensor[C, height, width], same dtype and device as ``image``.
    """
    _, h, w = image.shape
    out_h, out_w = size
    inverse = torch.linalg.inv(matrix.to(torch.float64)).to(image.device)
    # a one-pixel border of `fill` around the source; indices clamped into it read `fill`
    padded = F.pad(image, (1, 1, 1, 1), value=fill)  # [C, H + 2, W + 2]
    if inverse[0, 1] == 0 and inverse[1, 0] == 0 and inverse[2, 0] == 0 and inverse[2, 1] == 0 and inverse[2, 2] == 1:
        return _warp_axis_aligned(padded, inverse, out_h, out_w)
    ys, xs = torch.meshgrid(torch.arange(out_h, dtype=torch.float64, device=image.device) + 0.5,
                            torch.arange(out_w, dtype=torch.float64, device=image.device) + 0.5, indexing="ij")
    centres = torch.stack([xs.flatten(), ys.flatten(), torch.ones_like(xs.flatten())])  # [3, out_h*out_w]
    src = inverse @ centres
    sx, sy = src[0] / src[2] - 0.5, src[1] / src[2] - 0.5  # source pixel indices (centre of pixel j is j)
    (cols, fx), (rows, fy) = _taps(sx, w, image.dtype), _taps(sy, h, image.dtype)
    flat = padded.flatten(1)  # [C, H + 2, W + 2] -> [C, (H+2)*(W+2)]

    def read(row, col):
        return flat[:, row * (w + 2) + col]  # [C, out_h*out_w]

    top = read(rows[0], cols[0]) * (1 - fx) + read(rows[0], cols[1]) * fx
    bottom = read(rows[1], cols[0]) * (1 - fx) + read(rows[1], cols[1]) * fx
    return (top * (1 - fy) + bottom * fy).reshape(-1, out_h, out_w)  # [C, out_h*out_w] -> [C, out_h, out_w]


def _taps(src: Tensor, size: int, dtype: torch.dtype) -> tuple[list[Tensor], Tensor]:
    """Bilinear taps along one axis: the two neighbouring indices into the padded axis, and the weight of the second."""
    lower = src.floor()
    return [(lower + d + 1).clamp(0, size + 1).long() for d in (0, 1)], (src - lower).to(dtype)


def _warp_axis_aligned(padded: Tensor, inverse: Tensor, out_h: int, out_w: int) -> Tensor:
    """The same bilinear resampling when the warp has no rotation or shear (scales, flips, shifts):
    source x depends on output x only, and y on y, so rows and then columns are interpolated apart."""
    _, h, w = padded.shape[0], padded.shape[1] - 2, padded.shape[2] - 2
    xs = torch.arange(out_w, dtype=torch.float64, device=padded.device) + 0.5
    ys = torch.arange(out_h, dtype=torch.float64, device=padded.device) + 0.5
    sx = inverse[0, 0] * xs + inverse[0, 2] - 0.5  # [out_w] source column indices
    sy = inverse[1, 1] * ys + inverse[1, 2] - 0.5  # [out_h] source row indices
    (cols, fx), (rows, fy) = _taps(sx, w, padded.dtype), _taps(sy, h, padded.dtype)
    # index_select gathers whole rows / columns: the same values as advanced indexing, faster
    by_rows = (padded.index_select(1, rows[0]) * (1 - fy)[:, None]
               + padded.index_select(1, rows[1]) * fy[:, None])  # [C, out_h, W + 2]
    return by_rows.index_select(2, cols[0]) * (1 - fx) + by_rows.index_select(2, cols[1]) * fx  # [C, out_h, out_w]


def _move_target(target: dict, matrix: Tensor, out_h: int, out_w: int) -> dict:
    """Warp and clip the boxes, then drop those thinner than MIN_BOX_SIDE with their labels."""
    boxes = warp_boxes(target["boxes"], matrix, width=out_w, height=out_h)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= MIN_BOX_SIDE) & ((boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_SIDE)
    return {**target, "boxes": boxes[keep], "labels": target["labels"][keep]}


class NanoDetWarp:
    """NanoDet's training warp: random scale about the centre, horizontal flip and shift,
    then a resize to the network input, all folded into one 3x3 matrix.

    As in NanoDet's ``ShapeTransform``/``warp_affine`` (rotation, shear, stretch and
    perspective left out), the matrix is ``M = Resize @ T @ F @ S @ C`` where

    1. ``C`` moves the source centre to the origin;
    2. ``S`` scales by ``s ~ U(scale)``;
    3. ``F`` negates x with probability ``flip``;
    4. ``T`` moves the origin to ``(tx * W, ty * H)``, ``tx, ty ~ U(0.5 - translate, 0.5 + translate)``
       (source size, so ``translate=0`` puts the centre back);
    5. ``Resize`` maps the W x H source onto the output: with ``keep_ratio`` by
       ``min(out_w / W, out_h / H)`` centred (the rest is border), else per axis.

    Args:
        input_size: (width, height) of the output in pixels, NanoDet's order.
        scale: (low, high) range of the random zoom.
        translate: largest shift as a fraction of the source width/height.
        flip: probability of a horizontal flip.
        keep_ratio: keep the aspect ratio when resizing to ``input_size``.
        fill (keyword): value of output pixels that come from outside the source image
            (0, black, as NanoDet's zero border before normalisation).
    """

    def __init__(self, input_size: tuple[int, int] = (320, 320), scale: tuple[float, float] = (0.6, 1.4),
                 translate: float = 0.2, flip: float = 0.5, keep_ratio: bool = True, *, fill: float = 0.0):
        if len(input_size) != 2 or min(input_size) < 1:
            raise ValueError(f"input_size must be (width, height) in pixels, got {input_size!r}")
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale!r}")
        if not 0 <= flip <= 1:
            raise ValueError(f"flip must be a probability in [0, 1], got {flip!r}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.scale, self.translate, self.flip = tuple(scale), float(translate), float(flip)
        self.keep_ratio, self.fill = keep_ratio, fill

    def draw_matrix(self, height: int, width: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw one warp for a ``height`` x ``width`` source (four uniform draws, in the order
        scale, flip, tx, ty). Returns Tensor[3, 3] float64, source -> output pixels."""
        u = torch.rand(4, generator=generator, dtype=torch.float64)
        s = self.scale[0] + (self.scale[1] - self.scale[0]) * float(u[0])
        flipped = float(u[1]) < self.flip
        tx, ty = ((0.5 - self.translate + 2 * self.translate * float(v)) for v in u[2:])
        centre = scale_flip_translate_matrix(1.0, (-width / 2, -height / 2))
        # flip_width=0 negates x about the origin, which C has moved to the image centre
        around = scale_flip_translate_matrix(1.0, (tx * width, ty * height), flip_width=0.0 if flipped else None)
        zoom = scale_flip_translate_matrix(s)
        return self._resize_matrix(height, width) @ around @ zoom @ centre

    def _resize_matrix(self, height: int, width: int) -> Tensor:
        out_w, out_h = self.input_size
        sx, sy = out_w / width, out_h / height
        if self.keep_ratio:
            sx = sy = min(sx, sy)
        return torch.tensor([[sx, 0.0, (out_w - sx * width) / 2], [0.0, sy, (out_h - sy * height) / 2],
                             [0.0, 0.0, 1.0]], dtype=torch.float64)

    def __call__(self, image: Tensor, target: dict, generator: torch.Generator | None = None
                 ) -> tuple[Tensor, dict, dict]:
        """Args:
            image: Tensor[3, H, W] float in [0, 1].
            target: dict(boxes=Tensor[M, 4] float xyxy source pixels, labels=Tensor[M] int);
                scalar entries (e.g. ``image_id``) are passed through.
            generator: torch CPU generator for the draws; None uses torch's global one.

        Returns:
            image: Tensor[3, height, width] in output pixels (``input_size``).
            target: new dict, boxes warped, clipped to the output, and those thinner than
                ``MIN_BOX_SIDE`` px dropped with their labels.
            meta: dict(warp_matrix=Tensor[3, 3] float64 source -> output pixels,
                img_shape=(height, width) of the output, ori_shape=(H, W) of the source).
        """
        _check_image(image)
        _check_target(target)
        h, w = image.shape[-2:]
        matrix = self.draw_matrix(h, w, generator)
        out_w, out_h = self.input_size
        warped = warp_image(image, matrix, (out_h, out_w), self.fill)
        meta = {"warp_matrix": matrix, "img_shape": (out_h, out_w), "ori_shape": (h, w)}
        return warped, _move_target(target, matrix, out_h, out_w), meta

    def __repr__(self) -> str:
        return (f"NanoDetWarp(input_size={self.input_size}, scale={self.scale}, translate={self.translate}, "
                f"flip={self.flip}, keep_ratio={self.keep_ratio}, fill={self.fill})")


def letterbox(image: Tensor, target: dict | None = None, size: int = 416, fill: float = 0.5
              ) -> tuple[Tensor, dict | None, dict]:
    """YOLO's letterbox: resize keeping the aspect ratio so the long side becomes ``size``,
    then pad both sides of the short one with ``fill`` to a ``size`` x ``size`` square.

    The resized side lengths are ``round(side * r)`` with ``r = size / max(H, W)``; boxes
    are scaled by the exact per-axis ratios of those rounded lengths (so they follow the
    pixels) and shifted by the padding. As in YOLOv5, the padding is split
    ``round(d / 2 - 0.1)`` before and the rest after.

    Args:
        image: Tensor[3, H, W] float in [0, 1].
        target: None, or dict(boxes=Tensor[M, 4] float xyxy source pixels, labels=Tensor[M]).
        size: side of the square output in pixels.
        fill: value of the padding (YOLOv5 uses grey 114 / 255).

    Returns:
        image: Tensor[3, size, size], bilinear resize (``align_corners=False``) plus padding.
        target: new dict with boxes in output pixels (none dropped), or None.
        meta: dict(scale=(sx, sy) output px per source px, pad=(left, top) px,
            warp_matrix=Tensor[3, 3] float64 source -> output pixels,
            img_shape=(size, size), ori_shape=(H, W)).
    """
    _check_image(image)
    if target is not None:
        _check_target(target)
    h, w = image.shape[-2:]
    r = size / max(h, w)
    new_h, new_w = max(1, round(h * r)), max(1, round(w * r))
    left, top = round((size - new_w) / 2 - 0.1), round((size - new_h) / 2 - 0.1)
    resized = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False)[0]
    # F.pad takes (left, right, top, bottom) for the last two dims
    padded = F.pad(resized, (left, size - new_w - left, top, size - new_h - top), value=fill)
    scale = (new_w / w, new_h / h)
    matrix = scale_flip_translate_matrix(1.0, (left, top)) @ torch.diag(
        torch.tensor([scale[0], scale[1], 1.0], dtype=torch.float64))
    meta = {"scale": scale, "pad": (left, top), "warp_matrix": matrix,
            "img_shape": (size, size), "ori_shape": (h, w)}
    if target is None:
        return padded, None, meta
    return padded, {**target, "boxes": warp_boxes(target["boxes"], matrix)}, meta


def unletterbox_boxes(boxes: Tensor, meta: dict) -> Tensor:
    """Map xyxy boxes from letterboxed pixels back to the original image.

    Args:
        boxes: Tensor[K, 4] float xyxy in pixels of the letterboxed image (e.g. predictions).
        meta: the meta dict returned by :func:`letterbox`.

    Returns:
        Tensor[K, 4] xyxy in original-image pixels, clipped to ``meta["ori_shape"]``;
        ``unletterbox_boxes(letterbox(...)[1]["boxes"], meta)`` gives back the input boxes.
    """
    check_boxes(boxes, "boxes")
    if not isinstance(meta, dict) or "warp_matrix" not in meta or "ori_shape" not in meta:
        raise TypeError("meta must be the dict returned by letterbox(), with 'warp_matrix' and 'ori_shape'")
    h, w = meta["ori_shape"]
    return warp_boxes(boxes, torch.linalg.inv(meta["warp_matrix"]), width=w, height=h)
