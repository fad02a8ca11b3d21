"""RoI Pool (Fast R-CNN) and RoI Align (Mask R-CNN), written in plain torch.

Teaching twins of ``torchvision.ops.roi_pool`` and ``torchvision.ops.roi_align``:
the same arguments and the same numbers (tests/test_roi_ops.py compares values and
gradients), written so that the algorithm can be read. Both cut each region of
interest (RoI) into ``output_size`` bins and reduce every bin to one value per channel:

* ``roi_pool`` snaps the RoI to whole feature cells and keeps the largest cell of each bin.
* ``roi_align`` keeps the fractional coordinates, samples a few points per bin with
  bilinear interpolation and averages them.

Boxes are xyxy in input-image pixels; ``spatial_scale`` (1 / stride) maps them onto
the feature map. Shapes here: B images, C feature channels, H/W feature-map size,
K RoIs, ``oh``/``ow`` the output size. The reference is torchvision's C++ kernel;
where it has quirks (how it rounds, where it clamps, where zero padding starts),
this module reproduces them and says so. Like the kernel, neither op gives a
gradient to the boxes, only to ``input``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from detviz._validate import check_tensor

__all__ = ["roi_pool", "roi_align"]


# ---- shared input handling ----

def _output_hw(output_size) -> tuple[int, int]:
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"output_size must be a positive int or a pair (height, width) of them, got {output_size!r}")
    return size


def _as_rois(input: Tensor, boxes) -> Tensor:
    """Check the arguments; return ``Tensor[K, 5]`` rows (batch index, x1, y1, x2, y2)."""
    check_tensor(input, "input", ndim=4, floating=True, layout="[B, C, H, W]")
    if isinstance(boxes, (list, tuple)):
        for i, b in enumerate(boxes):
            check_tensor(b, f"boxes[{i}]", ndim=2, last_dim=4, layout="[L, 4] xyxy")
        if len(boxes) == 0:
            rois = input.new_zeros(0, 5)
        else:  # the list position is the batch index
            rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)])
    else:
        check_tensor(boxes, "boxes", ndim=2, last_dim=5, layout="[K, 5] (batch index, x1, y1, x2, y2) or a list of Tensor[L, 4]")
        rois = boxes
    if rois.dtype != input.dtype:
        raise TypeError(f"boxes must have the dtype of input ({input.dtype}), got {rois.dtype}")
    if rois.device != input.device:
        raise ValueError(f"boxes must be on the device of input ({input.device}), got {rois.device}")
    batch = rois[:, 0].long()
    if rois.shape[0] and (int(batch.min()) < 0 or int(batch.max()) >= input.shape[0]):
        raise ValueError(f"batch indices must lie in [0, {input.shape[0] - 1}], got range "
                         f"[{int(batch.min())}, {int(batch.max())}]")
    return rois.detach()  # the reference kernel gives boxes no gradient


# ---- RoI Pool ----

def _round_half_away_from_zero(v: Tensor) -> Tensor:
    """C++ ``std::round``: 2.5 -> 3, -2.5 -> -3 (``torch.round`` gives 2 and -2)."""
    halfway = (v - v.trunc()).abs() == 0.5
    return torch.where(halfway, v.trunc() + v.sign(), v.round())


def _bin_edges(start: Tensor, length: Tensor, num_bins: int, limit: int, dtype) -> tuple[Tensor, Tensor]:
    """First and one-past-last cell of every bin along one axis, clamped to ``[0, limit]``.

    Bin ``i`` of a RoI ``length`` cells long covers ``[floor(i * s), ceil((i + 1) * s))``
    with ``s = length / num_bins``, so neighbouring bins may share a cell.
    Returns two ``Tensor[K, num_bins]`` of int64.
    """
    bin_size = length.to(dtype) / num_bins  # [K]
    i = torch.arange(num_bins, dtype=dtype, device=start.device)  # [num_bins]
    lo = torch.floor(i * bin_size[:, None]).long() + start[:, None]  # [K, num_bins]
    hi = torch.ceil((i + 1) * bin_size[:, None]).long() + start[:, None]
    return lo.clamp(0, limit), hi.clamp(0, limit)


def _max_per_bin(feature: Tensor, rows: tuple[Tensor, Tensor], cols: tuple[Tensor, Tensor]) -> Tensor:
    """Max of ``feature[C, H, W]`` over each (row bin x column bin) rectangle -> ``[C, oh, ow]``.

    A rectangle's max is the max over its rows of each row's max over its columns,
    so two masked 1-D maxima do it. Empty bins give 0.
    """
    (r_lo, r_hi), (c_lo, c_hi) = rows, cols

    def in_bin(lo, hi, n):  # [num_bins, n]: is cell j inside bin i?
        j = torch.arange(n, device=feature.device)
        return (j >= lo[:, None]) & (j < hi[:, None])

    in_row_bin = in_bin(r_lo, r_hi, feature.shape[1])  # [oh, H]
    in_col_bin = in_bin(c_lo, c_hi, feature.shape[2])  # [ow, W]
    lowest = torch.tensor(float("-inf"), dtype=feature.dtype, device=feature.device)
    # [C, H, 1, W] -> [C, H, ow, W] -> max over W -> [C, H, ow]
    row_max = torch.where(in_col_bin, feature[:, :, None, :], lowest).max(dim=-1).values
    # [C, 1, H, ow] -> [C, oh, H, ow] -> max over H -> [C, oh, ow]
    bin_max = torch.where(in_row_bin[:, :, None], row_max[:, None], lowest).max(dim=2).values
    empty = (r_hi <= r_lo)[:, None] | (c_hi <= c_lo)[None, :]  # [oh, ow]
    return torch.where(empty, torch.zeros_like(lowest), bin_max)


def roi_pool(input: Tensor, boxes, output_size, spatial_scale: float = 1.0) -> Tensor:
    """RoI max pooling (Girshick, "Fast R-CNN", ICCV 2015), as ``torchvision.ops.roi_pool``.

    Per RoI:

    1. Scale the corners to feature cells and round them, halves away from zero.
    2. The RoI spans ``x2 - x1 + 1`` cells (both ends included), at least 1.
    3. Cut it into ``oh`` x ``ow`` bins whose edges are floored (start) / ceiled (end),
       shifted by the RoI's first cell and clamped to the map.
    4. Each output is the max over its bin's cells; a bin that lies off the map is 0.

    Args:
        input: Tensor[B, C, H, W], float feature maps.
        boxes: Tensor[K, 5] rows (batch index, x1, y1, x2, y2), or a list of B
            Tensor[L, 4] xyxy (one per image), in input-image pixels, dtype of ``input``.
        output_size: ``oh`` (square) or ``(oh, ow)``.
        spatial_scale: feature cells per image pixel, e.g. 1/16.

    Returns:
        Tensor[K, C, oh, ow], dtype of ``input``; the gradient flows to each bin's max cell.
    """
    rois = _as_rois(input, boxes)
    out_h, out_w = _output_hw(output_size)
    _, C, H, W = input.shape
    x1, y1, x2, y2 = _round_half_away_from_zero(rois[:, 1:] * spatial_scale).long().unbind(1)  # step 1
    roi_w, roi_h = (x2 - x1 + 1).clamp(min=1), (y2 - y1 + 1).clamp(min=1)  # step 2
    rows = _bin_edges(y1, roi_h, out_h, H, input.dtype)  # step 3: [K, oh] each
    cols = _bin_edges(x1, roi_w, out_w, W, input.dtype)  # [K, ow] each
    pooled = [_max_per_bin(input[b], (rows[0][k], rows[1][k]), (cols[0][k], cols[1][k]))  # step 4
              for k, b in enumerate(rois[:, 0].long().tolist())]
    return torch.stack(pooled) if pooled else input.new_zeros(0, C, out_h, out_w)


# ---- RoI Align ----

def _neighbours(coord: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The two cells around each sample coordinate along one axis, and their weights.

    Matches the kernel: a sample more than one cell off the map (``< -1`` or ``> size``)
    gets weight 0; otherwise the border cell stands in for the padding just outside
    it: coordinates below 0 are clamped to 0, and past the last cell both neighbours
    are that cell, so its two weights add up to 1 on it.
    Returns ``low, high`` (int64 indices) and ``w_low, w_high``, all shaped like ``coord``.
    """
    inside = (coord >= -1.0) & (coord <= size)
    coord = coord.clamp(min=0)
    low = coord.long().clamp(max=size - 1)  # .long() floors, since coord >= 0
    high = (low + 1).clamp(max=size - 1)
    frac = coord - low
    zero = torch.zeros_like(frac)
    return low, high, torch.where(inside, 1.0 - frac, zero), torch.where(inside, frac, zero)


def _bilinear(input: Tensor, batch: Tensor, y: Tensor, x: Tensor) -> Tensor:
    """``input[batch[k]]`` sampled at every point ``(y[k, p], x[k, q])`` -> ``Tensor[k, C, P, Q]``."""
    H, W = input.shape[-2:]
    y_lo, y_hi, wy_lo, wy_hi = _neighbours(y, H)  # [k, P] each
    x_lo, x_hi, wx_lo, wx_hi = _neighbours(x, W)  # [k, Q] each

    def cell(yi, xi):  # -> [k, P, Q, C]
        return input[batch[:, None, None], :, yi[:, :, None], xi[:, None, :]]

    def weight(wy, wx):  # -> [k, P, Q, 1]
        return (wy[:, :, None] * wx[:, None, :])[..., None]

    value = (weight(wy_lo, wx_lo) * cell(y_lo, x_lo) + weight(wy_lo, wx_hi) * cell(y_lo, x_hi)
             + weight(wy_hi, wx_lo) * cell(y_hi, x_lo) + weight(wy_hi, wx_hi) * cell(y_hi, x_hi))
    return value.permute(0, 3, 1, 2)  # [k, P, Q, C] -> [k, C, P, Q]


def _sample_coords(start: Tensor, bin_size: Tensor, num_bins: int, grid: int) -> Tensor:
    """``grid`` evenly spaced sample centres in each of ``num_bins`` bins -> ``Tensor[k, num_bins * grid]``.

    Sample ``j`` of bin ``i`` sits at ``start + i * bin_size + (j + 0.5) * bin_size / grid``.
    """
    i = torch.arange(num_bins, dtype=start.dtype, device=start.device)[None, :, None]  # [1, num_bins, 1]
    j = torch.arange(grid, dtype=start.dtype, device=start.device)[None, None, :] + 0.5  # [1, 1, grid]
    s, b = start[:, None, None], bin_size[:, None, None]  # [k, 1, 1]
    return (s + i * b + j * b / grid).flatten(1)  # [k, num_bins, grid] -> [k, num_bins * grid]


def roi_align(input: Tensor, boxes, output_size, spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False) -> Tensor:
    """RoI Align (He et al., "Mask R-CNN", ICCV 2017), as ``torchvision.ops.roi_align``.

    Per RoI:

    1. Scale the corners to feature cells without rounding; with ``aligned=True`` shift
       them by -0.5 so that cell centres sit at integer coordinates (Detectron2). With
       ``aligned=False`` (legacy, Faster R-CNN) the RoI is at least 1 x 1 cell.
    2. Cut it into ``oh`` x ``ow`` equal bins.
    3. Put ``g_h x g_w`` sample points on a regular grid inside each bin:
       ``g = sampling_ratio`` when it is > 0, else ``ceil(roi_size / output_size)``
       per RoI and axis (about one sample per cell).
    4. Read each sample by bilinear interpolation of its four neighbouring cells
       (zero beyond one cell off the map, clamped to the border cell otherwise).
    5. Average the samples of each bin (a RoI with no samples gives 0).

    RoIs sharing one sample grid (all of them when ``sampling_ratio > 0``) are
    computed together.

    Args:
        input: Tensor[B, C, H, W], float feature maps.
        boxes: Tensor[K, 5] rows (batch index, x1, y1, x2, y2), or a list of B
            Tensor[L, 4] xyxy (one per image), in input-image pixels, dtype of ``input``.
        output_size: ``oh`` (square) or ``(oh, ow)``.
        spatial_scale: feature cells per image pixel, e.g. 1/16.
        sampling_ratio: samples per bin along each axis; <= 0 means adaptive (step 3).
        aligned: apply the half-cell shift of step 1.

    Returns:
        Tensor[K, C, oh, ow], dtype of ``input``, differentiable w.r.t. ``input``.
    """
    rois = _as_rois(input, boxes)
    out_h, out_w = _output_hw(output_size)
    batch = rois[:, 0].long()  # [K]
    x1, y1, x2, y2 = (rois[:, 1:] * spatial_scale - (0.5 if aligned else 0.0)).unbind(1)  # step 1: [K] each
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    if sampling_ratio > 0:  # step 3
        grid_h = grid_w = torch.full_like(batch, sampling_ratio)
    else:
        grid_h, grid_w = torch.ceil(roi_h / out_h).long(), torch.ceil(roi_w / out_w).long()

    out = input.new_zeros(rois.shape[0], input.shape[1], out_h, out_w)  # [K, C, oh, ow]
    for gh, gw in sorted(set(zip(grid_h.tolist(), grid_w.tolist()))):
        if gh <= 0 or gw <= 0:  # an aligned RoI of zero or negative size: no samples, stays 0
            continue
        same_grid = (grid_h == gh) & (grid_w == gw)  # [K]
        ys = _sample_coords(y1[same_grid], roi_h[same_grid] / out_h, out_h, gh)  # step 2-3: [k, oh*gh]
        xs = _sample_coords(x1[same_grid], roi_w[same_grid] / out_w, out_w, gw)  # [k, ow*gw]
        samples = _bilinear(input, batch[same_grid], ys, xs)  # step 4: [k, C, oh*gh, ow*gw]
        samples = samples.unflatten(2, (out_h, gh)).unflatten(4, (out_w, gw))  # -> [k, C, oh, gh, ow, gw]
        out[same_grid] = samples.sum(dim=(3, 5)) / (gh * gw)  # step 5: [k, C, oh, ow]
    return out
