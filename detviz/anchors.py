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

:class:`AnchorGenerator` (end of this file) is a drop-in for torchvision's Faster
R-CNN anchor generator: A = len(sizes) * len(ratios) boxes per cell, anchored at the
cell's top-left corner ``(x * stride, y * stride)``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["center_points", "grid_cells", "grid_cells_to_centers", "multilevel_grid_cells", "level_slices",
           "base_anchors", "shifted_anchors", "AnchorGenerator"]


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


# --- torchvision-style anchors (Faster R-CNN) -----------------------------------------------


def base_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float],
                 dtype=torch.float32, device=None) -> Tensor:
    """Zero-centred anchors of one level: one box per (aspect ratio, size) pair.

    An anchor of size ``s`` and ratio ``r = h / w`` keeps the area ``s**2``:
    ``w = s / sqrt(r)``, ``h = s * sqrt(r)``. Rows are ratio-major (all sizes of the
    first ratio, then the next ratio), and coordinates are rounded half-to-even, both
    as in torchvision, so size 32 with ratios (0.5, 1, 2) gives
    ``[[-23, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]]``
    (the exact half-sides are 22.63 and 11.31).

    Args:
        sizes: anchor sides in pixels of the network input (sqrt of the area).
        aspect_ratios: height / width of each anchor.

    Returns:
        Tensor[A, 4] xyxy, A = len(aspect_ratios) * len(sizes), centred on (0, 0).
    """
    scales = torch.as_tensor(sizes, dtype=dtype, device=device)  # [S]
    ratios = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)  # [R]
    height_factors = torch.sqrt(ratios)
    width_factors = 1 / height_factors
    widths = (width_factors[:, None] * scales[None, :]).reshape(-1)  # [R, S] -> [A], ratio-major
    heights = (height_factors[:, None] * scales[None, :]).reshape(-1)  # [A]
    return (torch.stack([-widths, -heights, widths, heights], dim=1) / 2).round()  # [A, 4]


def shifted_anchors(base: Tensor, featmap_size: Sequence[int], stride: Sequence[int]) -> Tensor:
    """Copy the base anchors to every cell of one feature map.

    Args:
        base: Tensor[A, 4] zero-centred anchors from :func:`base_anchors`.
        featmap_size: (H, W) of the feature map.
        stride: (stride_h, stride_w), integer pixels of the padded input per cell.

    Returns:
        Tensor[H*W*A, 4] xyxy pixels of the padded input, dtype and device of ``base``,
        ordered (y, x, a): the A anchors of cell (0, 0), then those of (0, 1), ...
        Cell (y, x) is centred on ``(x * stride_w, y * stride_h)``, its top-left corner.
    """
    height, width = int(featmap_size[0]), int(featmap_size[1])
    # Integer shifts, as in torchvision; the addition below promotes them to base's dtype.
    shifts_x = torch.arange(width, dtype=torch.int64, device=base.device) * int(stride[1])  # [W]
    shifts_y = torch.arange(height, dtype=torch.int64, device=base.device) * int(stride[0])  # [H]
    grid_y, grid_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")  # [H, W] each
    grid_x, grid_y = grid_x.reshape(-1), grid_y.reshape(-1)  # [H*W]
    shifts = torch.stack([grid_x, grid_y, grid_x, grid_y], dim=1)  # [H*W, 4]
    return (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4)  # [H*W, A, 4] -> [H*W*A, 4]


class AnchorGenerator(nn.Module):
    """Drop-in replacement for ``torchvision.models.detection.anchor_utils.AnchorGenerator``.

    Level l gets ``len(sizes[l]) * len(aspect_ratios[l])`` anchors per cell; the values,
    dtype and order equal torchvision's. It is an ``nn.Module`` only so that it can sit
    inside a torchvision ``RegionProposalNetwork``; it has no parameters or buffers,
    so a torchvision Faster R-CNN state_dict loads strictly into a model using it.

    Args:
        sizes: per level, the anchor sides in pixels, e.g. ``((32,), (64,), ...)`` for the
            FPN models or ``((32, 64, 128, 256, 512),)`` for the single-map tutorial model.
            A flat tuple ``(32, 64)`` means one size per level, as in torchvision.
        aspect_ratios: per level, the height / width ratios; a flat tuple is shared by
            every level.
    """

    def __init__(self, sizes=((128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),)):
        super().__init__()
        if len(sizes) == 0 or len(aspect_ratios) == 0:
            raise ValueError(f"sizes and aspect_ratios must not be empty, got {sizes!r} and {aspect_ratios!r}")
        if not isinstance(sizes[0], (list, tuple)):
            sizes = tuple((s,) for s in sizes)
        if not isinstance(aspect_ratios[0], (list, tuple)):
            aspect_ratios = (aspect_ratios,) * len(sizes)
        if len(sizes) != len(aspect_ratios):
            raise ValueError(
                f"sizes and aspect_ratios must have one entry per feature-map level, got {len(sizes)} "
                f"sizes and {len(aspect_ratios)} aspect_ratios")
        self.sizes = sizes
        self.aspect_ratios = aspect_ratios
        # A plain list, not buffers: registered tensors would appear in the state_dict.
        self.cell_anchors = [base_anchors(s, r) for s, r in zip(sizes, aspect_ratios)]  # L x [A_l, 4]

    def num_anchors_per_location(self) -> list[int]:
        """A for each level, e.g. [15] for the tutorial model, [3] * 5 for the FPN models."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def forward(self, image_list, feature_maps: list[Tensor]) -> list[Tensor]:
        """Anchors for every image of the batch.

        Args:
            image_list: a torchvision ``ImageList``: ``.tensors`` Tensor[B, 3, H_pad, W_pad]
                (the padded batch) and ``.image_sizes`` (B sizes before padding; only
                their count is used: every image shares the padded batch's anchors).
            feature_maps: L tensors [B, C, H_l, W_l], one per level.

        Returns:
            B tensors [sum_l H_l*W_l*A_l, 4], xyxy pixels of the padded batch, dtype and
            device of ``feature_maps[0]``, levels concatenated in order, each (y, x, a).
            The stride of level l is ``(H_pad // H_l, W_pad // W_l)``.
        """
        padded_size = self._check_forward_inputs(image_list, feature_maps)
        dtype, device = feature_maps[0].dtype, feature_maps[0].device
        anchors_per_level = []
        for feature_map, base in zip(feature_maps, self.cell_anchors):
            grid_h, grid_w = feature_map.shape[-2:]
            stride = (padded_size[0] // grid_h, padded_size[1] // grid_w)
            # base was made in float32 on the CPU and is cast after rounding, as in torchvision.
            anchors_per_level.append(shifted_anchors(base.to(dtype=dtype, device=device), (grid_h, grid_w), stride))
        return [torch.cat(anchors_per_level) for _ in image_list.image_sizes]

    def _check_forward_inputs(self, image_list, feature_maps) -> tuple[int, int]:
        images = getattr(image_list, "tensors", None)
        if not isinstance(images, Tensor) or images.dim() < 2 or not hasattr(image_list, "image_sizes"):
            raise TypeError("image_list must be an ImageList with .tensors (Tensor[B, 3, H, W]) and "
                            f".image_sizes, got {type(image_list).__name__}")
        if not isinstance(feature_maps, (list, tuple)) or not all(isinstance(f, Tensor) for f in feature_maps):
            raise TypeError(f"feature_maps must be a list of Tensor[B, C, H, W], got {type(feature_maps).__name__}")
        if len(feature_maps) != len(self.cell_anchors):
            raise ValueError(
                f"got {len(feature_maps)} feature maps but {len(self.cell_anchors)} levels of sizes and "
                "aspect_ratios: there must be one entry of each per feature map")
        padded_size = (int(images.shape[-2]), int(images.shape[-1]))
        for level, feature_map in enumerate(feature_maps):
            if feature_map.dim() < 2 or any(f < 1 or f > p for f, p in zip(feature_map.shape[-2:], padded_size)):
                raise ValueError(
                    f"feature map {level} must be [B, C, H, W] with 1 <= H, W <= the padded image size "
                    f"{list(padded_size)}, got shape {list(feature_map.shape)}")
        return padded_size
