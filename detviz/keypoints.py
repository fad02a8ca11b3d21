"""The note's keypoint variant of YOLOv3: anchor-free point targets, centerness, and losses.

The model (``detviz.yolo.model.YOLOv3Keypoint``) predicts per cell ``reg [H, W, 2]``
(sigmoid -> offset of the point inside the cell, as YOLO's ``tx, ty``) and
``cls [H, W, C + 1]`` (C class logits + one centerness logit in place of YOLO's objectness).
Targets, for one level of stride ``s``:

1. Each point ``p`` (pixels) falls in cell ``floor(p / s)``; its centerness there is a
   gaussian of its distance to the cell centre, ``exp(-d^2 / (2 sigma^2))`` (grid units).
2. When several points fall in one cell, the point of highest centerness (closest to the
   cell centre) owns it: its offset ``p / s - cell`` and its one-hot class are the targets.
3. The centerness channel's target is the CenterNet-style heatmap: at every cell centre the
   largest gaussian over all points, zero beyond ``3 sigma`` (CenterNet draws each gaussian in
   a window of radius 3 sigma and merges with ``max``).

Box centerness for comparison: FCOS ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))``
and PolarMask ``sqrt(min(d) / max(d))`` over ray lengths ``d`` (the note writes both without
the square root: ``sqrt=False``). Both need a contour around the point; a bare keypoint has
none, so the note uses the gaussian.

Losses (all values in [0, 1], so BCE is the baseline): BCE on xy and classes at the owner
cells; on the centerness channel BCE against the soft heatmap, an L2 variant, or CenterNet's
penalty-reduced focal loss (owner cells are the peaks). Sums are divided by ``max(num_pos, 1)``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from detviz._validate import check_labels, check_tensor
from detviz.anchors import center_points

__all__ = ["fcos_centerness", "polar_centerness", "box_ray_distances", "gaussian_heatmap", "KeypointTargets",
           "keypoint_targets", "centernet_focal_loss", "keypoint_loss", "NO_OWNER", "CENTERNESS_LOSSES"]

NO_OWNER = -1  # owner index of a cell that holds no point
CENTERNESS_LOSSES = ("bce", "l2", "focal")
WINDOW_SIGMAS = 3.0  # gaussians are cut to zero beyond this many sigmas


def _ratio(small: Tensor, large: Tensor) -> Tensor:
    """small / large, with 0 / 0 = 0 (a point on a zero-size contour has no centerness)."""
    return torch.where(large > 0, small / large.clamp(min=torch.finfo(large.dtype).tiny), torch.zeros_like(large))


def fcos_centerness(ltrb: Tensor, *, sqrt: bool = True) -> Tensor:
    """FCOS centerness of points inside boxes (Tian et al. 2019).

    Args:
        ltrb (Tensor[N, 4]): distances from each point to the left, top, right, bottom sides, >= 0.
        sqrt: FCOS takes the square root "to slow down the decay"; False gives the note's plain product.
    Returns:
        Tensor[N] in [0, 1]: 1 at the box centre, 0 on its border.
    """
    check_tensor(ltrb, "ltrb", ndim=2, last_dim=4, floating=True, layout="[N, 4] ltrb")
    if bool((ltrb < 0).any()):
        raise ValueError("ltrb must be >= 0 (points inside their box); clamp distances of outside points to 0")
    lr, tb = ltrb[:, 0::2], ltrb[:, 1::2]  # [N, 2] each: (l, r), (t, b)
    c = _ratio(lr.min(dim=1).values, lr.max(dim=1).values) * _ratio(tb.min(dim=1).values, tb.max(dim=1).values)
    return c.sqrt() if sqrt else c


def polar_centerness(distances: Tensor, *, sqrt: bool = True) -> Tensor:
    """PolarMask centerness ``min(d) / max(d)`` over the ray lengths of each point (Xie et al. 2020).

    Args:
        distances (Tensor[N, R]): length of R rays from each point to the contour, >= 0.
        sqrt: PolarMask's code takes the square root; False gives the note's ``min(d) / max(d)``.
    Returns:
        Tensor[N] in [0, 1].
    """
    check_tensor(distances, "distances", ndim=2, floating=True, layout="[N, R] ray lengths")
    if distances.shape[1] == 0 or bool((distances < 0).any()):
        raise ValueError("distances must be Tensor[N, R] with R >= 1 and values >= 0, "
                         f"got shape {list(distances.shape)}")
    c = _ratio(distances.min(dim=1).values, distances.max(dim=1).values)
    return c.sqrt() if sqrt else c


def box_ray_distances(points: Tensor, box: Tensor, num_rays: int = 36) -> Tensor:
    """Length of ``num_rays`` rays (angles ``2 pi k / R``, k = 0 first, pointing right) from each
    point to the border of an xyxy box; rows of points outside the box are all 0.

    Args:
        points (Tensor[N, 2]): xy pixels. box (Tensor[4]): xyxy pixels.
    Returns:
        Tensor[N, R]: distances in pixels.
    """
    check_tensor(points, "points", ndim=2, last_dim=2, floating=True, layout="[N, 2] xy")
    check_tensor(box, "box", ndim=1, last_dim=4, floating=True, layout="[4] xyxy")
    angles = torch.arange(num_rays, dtype=points.dtype, device=points.device) * (2 * math.pi / num_rays)
    cos, sin = angles.cos(), angles.sin()  # [R]
    px, py = points[:, 0:1], points[:, 1:2]  # [N, 1]
    inf = torch.full_like(px * cos, math.inf)

    def hit(low: Tensor, high: Tensor, pos: Tensor, step: Tensor) -> Tensor:
        # distance along the ray to the side it leaves through, for one axis; inf along the other axis
        to_high, to_low = (high - pos) / step, (low - pos) / step  # [N, R]
        return torch.where(step > 1e-9, to_high, torch.where(step < -1e-9, to_low, inf))

    d = torch.minimum(hit(box[0], box[2], px, cos), hit(box[1], box[3], py, sin))  # [N, R]
    inside = (px >= box[0]) & (px <= box[2]) & (py >= box[1]) & (py <= box[3])  # [N, 1]
    return torch.where(inside, d, torch.zeros_like(d))


def gaussian_heatmap(points: Tensor, featmap_size: Sequence[int], stride: float, sigma: float = 1.0) -> Tensor:
    """CenterNet-style target: at every cell centre, the largest gaussian over the points.

    Args:
        points (Tensor[M, 2]): xy pixels of the input.
        featmap_size: (H, W). stride: pixels per cell. sigma: gaussian width in cells.
    Returns:
        Tensor[H, W] in [0, 1]; 1 only where a point sits exactly on a cell centre, 0 farther
        than ``3 sigma`` from every point and everywhere when M = 0.
    """
    check_tensor(points, "points", ndim=2, last_dim=2, floating=True, layout="[M, 2] xy")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0 cells, got {sigma!r}")
    h, w = featmap_size
    centres = center_points((h, w), 1.0, points.dtype, points.device)  # [H*W, 2] grid units, (i + 0.5)
    if points.shape[0] == 0:
        return points.new_zeros(h, w)
    dist_sq = torch.cdist(centres, points / stride) ** 2  # [H*W, M]
    g = torch.exp(-dist_sq / (2 * sigma**2))
    g = torch.where(dist_sq <= (WINDOW_SIGMAS * sigma) ** 2, g, torch.zeros_like(g))
    return g.max(dim=1).values.view(h, w)


class KeypointTargets(NamedTuple):
    """Targets of one level for a batch."""

    xy: Tensor  # [B, H, W, 2] offset of the owner point in its cell, [0, 1]
    cls: Tensor  # [B, H, W, C] one-hot class of the owner point
    centerness: Tensor  # [B, H, W] gaussian heatmap
    pos_mask: Tensor  # [B, H, W] bool: the cell owns a point
    owner: Tensor  # [B, H, W] int64: index of the owner point, NO_OWNER elsewhere


def _targets_per_image(points: Tensor, labels: Tensor, featmap_size, stride: float, num_classes: int,
                       sigma: float) -> tuple[Tensor, Tensor, Tensor]:
    h, w = featmap_size
    grid_xy = points / stride  # [M, 2] grid units
    cells = grid_xy.floor().long()
    cells[:, 0].clamp_(0, w - 1)  # a point on the right or bottom edge stays in the last cell
    cells[:, 1].clamp_(0, h - 1)
    dist_sq = ((grid_xy - (cells + 0.5)) ** 2).sum(dim=1)
    point_centerness = torch.exp(-dist_sq / (2 * sigma**2))  # [M] at its own cell
    owner = torch.full((h, w), NO_OWNER, dtype=torch.int64, device=points.device)
    for m in torch.argsort(point_centerness, descending=True, stable=True).tolist():  # best first; ties: lower index
        col, row = cells[m].tolist()
        if owner[row, col] == NO_OWNER:
            owner[row, col] = m
    has = owner != NO_OWNER
    xy = points.new_zeros(h, w, 2)
    xy[has] = grid_xy[owner[has]] - cells[owner[has]].to(points.dtype)
    cls = points.new_zeros(h, w, num_classes)
    cls[has] = F.one_hot(labels[owner[has]], num_classes).to(points.dtype)
    return xy, cls, owner


def keypoint_targets(points: Sequence[Tensor], labels: Sequence[Tensor], *, featmap_size: Sequence[int],
                     stride: float, num_classes: int, sigma: float = 1.0) -> KeypointTargets:
    """Targets of one level (see the module docstring, steps 1-3).

    Args:
        points: per image ``Tensor[M, 2]`` xy pixels of the input.
        labels: per image ``Tensor[M]`` int64 in ``[0, C)``.
        featmap_size: (H, W) of the level. stride: its pixels per cell. sigma: in cells.
    """
    if (len(featmap_size) != 2 or any(int(n) != n or n <= 0 for n in featmap_size)):
        raise ValueError(f"featmap_size must be (H, W) with positive integers, got {tuple(featmap_size)!r}")
    if not stride > 0:
        raise ValueError(f"stride must be a positive number of input pixels per cell, got {stride!r}")
    if not isinstance(points, (list, tuple)) or not isinstance(labels, (list, tuple)) or len(points) != len(labels):
        raise TypeError("points and labels must be lists with one Tensor per image, of equal length")
    per_image = []
    for b, (pts, lab) in enumerate(zip(points, labels)):
        check_tensor(pts, f"points[{b}]", ndim=2, last_dim=2, floating=True, layout="[M, 2] xy")
        check_labels(lab, f"labels[{b}]", pts.shape[0], num_classes)
        extent = pts.new_tensor([featmap_size[1] * stride, featmap_size[0] * stride])
        if pts.numel() and not bool(((pts >= 0) & (pts <= extent)).all()):
            raise ValueError(f"points[{b}] must lie inside the input, x in [0, {float(extent[0])}] and "
                             f"y in [0, {float(extent[1])}] pixels")
        xy, cls, owner = _targets_per_image(pts, lab, featmap_size, stride, num_classes, sigma)
        per_image.append((xy, cls, gaussian_heatmap(pts, featmap_size, stride, sigma), owner))
    xy, cls, heat, owner = (torch.stack(t) for t in zip(*per_image))
    return KeypointTargets(xy, cls, heat, owner != NO_OWNER, owner)


def centernet_focal_loss(logits: Tensor, heatmap: Tensor, pos_mask: Tensor, alpha: float = 2.0,
                         beta: float = 4.0) -> Tensor:
    """CenterNet's penalty-reduced focal loss per cell (Zhou et al. 2019, eq. 1), not normalised.

    ``-(1 - p)^alpha log p`` at the peaks (``pos_mask``); ``-(1 - y)^beta p^alpha log(1 - p)``
    elsewhere, so cells near a point (y close to 1) are barely pushed down.

    Args:
        logits, heatmap (Tensor[...]): same shape; heatmap y in [0, 1]. pos_mask: bool, same shape.
    """
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = logits.sigmoid()
    pos = -((1 - p) ** alpha) * log_p
    neg = -((1 - heatmap) ** beta) * p**alpha * log_not_p
    return torch.where(pos_mask, pos, neg)


def keypoint_loss(reg: Tensor, cls: Tensor, targets: KeypointTargets, *,
                  centerness_loss: str = "bce") -> dict[str, Tensor]:
    """Losses of one level.

    Args:
        reg (Tensor[B, H, W, 2]): xy logits. cls (Tensor[B, H, W, C + 1]): class logits + centerness logit.
        targets: from :func:`keypoint_targets` for the same level.
        centerness_loss: "bce" (soft target), "l2" (``(sigmoid - y)^2``) or "focal" (CenterNet's).
    Returns:
        ``{"loss_xy", "loss_cls", "loss_centerness"}``: sums over cells divided by ``max(num_pos, 1)``.
    """
    if centerness_loss not in CENTERNESS_LOSSES:
        raise ValueError(f"centerness_loss must be one of {CENTERNESS_LOSSES}, got {centerness_loss!r}")
    num_classes = targets.cls.shape[-1]
    if list(reg.shape) != list(targets.xy.shape) or list(cls.shape) != [*targets.cls.shape[:-1], num_classes + 1]:
        raise ValueError(f"reg must be Tensor{list(targets.xy.shape)} and cls Tensor"
                         f"{[*targets.cls.shape[:-1], num_classes + 1]}, got {list(reg.shape)} and {list(cls.shape)}")
    pos = targets.pos_mask
    num_pos = pos.sum().clamp(min=1).to(reg.dtype)
    loss_xy = F.binary_cross_entropy_with_logits(reg[pos], targets.xy[pos], reduction="sum")
    loss_cls = F.binary_cross_entropy_with_logits(cls[..., :-1][pos], targets.cls[pos], reduction="sum")
    logit, y = cls[..., -1], targets.centerness
    if centerness_loss == "bce":
        loss_ctr = F.binary_cross_entropy_with_logits(logit, y, reduction="sum")
    elif centerness_loss == "l2":
        loss_ctr = ((logit.sigmoid() - y) ** 2).sum()
    else:
        loss_ctr = centernet_focal_loss(logit, y, pos).sum()
    return {"loss_xy": loss_xy / num_pos, "loss_cls": loss_cls / num_pos, "loss_centerness": loss_ctr / num_pos}
