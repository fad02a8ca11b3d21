"""Priors of dense heads: centre points and square grid cells per feature-map level.

NanoDet's GFL head (``nanodet/model/head/gfl_head.py``) places one point at the
centre of every feature-map cell, ``((x + 0.5) * stride, (y + 0.5) * stride)``,
and surrounds it with a square "grid cell" of side ``stride * octave_base_scale``
(40 / 80 / 160 px for NanoDet-m's strides 8 / 16 / 32 and scale 5). The grid
cells are only used as prior boxes by the ATSS assigner; the head regresses
distances from the centre point.

Cells are flattened row-major (``index = y * W + x``), so on a 320x320 input the
first NanoDet-m cell is ``[-16, -16, 24, 24]`` and the last of the stride-32 level
``[224, 224, 384, 384]``: cells near the border stick out of the image, which is
expected (they are priors, not predictions).

Other libraries differ in where the centre sits (torchvision's AnchorGenerator and
NanoDet-Plus use ``x * stride``, FCOS uses ``x * stride + stride // 2``); see the
grid-cells walkthrough notebook.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["center_points", "grid_cells", "grid_cells_to_centers", "multilevel_grid_cells", "level_slices"]


def _check_level(featmap_size, stride) -> tuple[int, int]:
    if (not isinstance(featmap_size, (tuple, list, torch.Size)) or len(featmap_size) != 2
            or any(int(s) != s or s <= 0 for s in featmap_size)):
        raise ValueError(f"featmap_size must be (H, W) with positive integers, got {featmap_size!r}")
    if not stride > 0:
        raise ValueError(f"stride must be a positive number of pixels, got {stride!r}")
    return int(featmap_size[0]), int(featmap_size[1])


def center_points(featmap_size: Sequence[int], stride: float, dtype=torch.float32, device=None) -> Tensor:
    """Centre of every cell of one level, in pixels of the network input.

    Args:
        featmap_size: (H, W) of the level's feature map.
        stride: pixels of the input per feature-map cell.

    Returns:
        Tensor[H*W, 2]: (x, y) = ((i + 0.5) * stride, (j + 0.5) * stride), row-major
        (y outer, x inner).
    """
    h, w = _check_level(featmap_size, stride)
    xs = (torch.arange(w, dtype=dtype, device=device) + 0.5) * stride  # [W]
    ys = (torch.arange(h, dtype=dtype, device=device) + 0.5) * stride  # [H]
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")  # [H, W] each
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)  # [H*W, 2]


def grid_cells(featmap_size: Sequence[int], stride: float, octave_base_scale: float,
               dtype=torch.float32, device=None) -> Tensor:
    """Square prior boxes ("grid cells") of one level, NanoDet's GFL-head convention.

    Args:
        featmap_size: (H, W) of the level's feature map.
        stride: pixels of the input per feature-map cell.
        octave_base_scale: cell side in strides (5 for NanoDet-m).

    Returns:
        Tensor[H*W, 4]: xyxy pixels of the network input, row-major, each a square of
        side ``stride * octave_base_scale`` centred on :func:`center_points`.
    """
    if not octave_base_scale > 0:
        raise ValueError(f"octave_base_scale must be positive, got {octave_base_scale!r}")
    centers = center_points(featmap_size, stride, dtype=dtype, device=device)  # [H*W, 2]
    half = 0.5 * stride * octave_base_scale
    return torch.cat([centers - half, centers + half], dim=-1)  # [H*W, 4]


def grid_cells_to_centers(cells: Tensor) -> Tensor:
    """Centres of xyxy boxes: Tensor[N, 4] -> Tensor[N, 2] (x, y)."""
    if not isinstance(cells, Tensor) or cells.dim() != 2 or cells.shape[-1] != 4:
        shape = list(cells.shape) if isinstance(cells, Tensor) else type(cells).__name__
        raise ValueError(f"cells must be Tensor[N, 4] xyxy, got {shape}")
    return (cells[:, :2] + cells[:, 2:]) / 2


def multilevel_grid_cells(featmap_sizes: Sequence[Sequence[int]], strides: Sequence[float],
                          octave_base_scale: float, dtype=torch.float32, device=None) -> list[Tensor]:
    """Grid cells of every level: a list of Tensor[H_l*W_l, 4], finest stride first.

    ``torch.cat`` of the list gives the N = sum(H_l * W_l) priors the assigner sees
    (2100 for NanoDet-m at 320x320); ``[len(c) for c in cells]`` is ``num_level_cells``.
    """
    if len(featmap_sizes) != len(strides):
        raise ValueError(
            f"featmap_sizes and strides must have one entry per level, got {len(featmap_sizes)} sizes "
            f"and {len(strides)} strides")
    return [grid_cells(size, stride, octave_base_scale, dtype=dtype, device=device)
            for size, stride in zip(featmap_sizes, strides)]


def level_slices(num_level_priors: Sequence[int]) -> list[slice]:
    """Index range of each level inside the concatenated priors, e.g. [1600, 400, 100] ->
    [slice(0, 1600), slice(1600, 2000), slice(2000, 2100)]."""
    bounds, start = [], 0
    for n in num_level_priors:
        bounds.append(slice(start, start + int(n)))
        start += int(n)
    return bounds
