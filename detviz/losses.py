"""The three losses of the GFL head (Li et al. 2020, "Generalized Focal Loss"), and its Integral.

Every loss returns one value per element and leaves normalisation to the caller, who
divides explicitly with ``weight_reduce`` (``sum(loss * weight) / avg_factor``), as the
GFL/NanoDet head does:

* QFL over all priors, weighted by label weights, ``avg_factor = max(num_pos, 1)``;
* GIoU over positives, weighted by the predicted score, ``avg_factor = 1`` then ``/ Σ weights``;
* DFL over the 4 sides of the positives, weights repeated x4, ``avg_factor = 4`` then ``/ Σ weights``.

Distances handled here (DFL targets, ``distribution_project`` outputs) are in stride units.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detviz._validate import check_labels, check_tensor
from detviz.boxes import aligned_generalized_box_iou


def quality_focal_loss(pred: Tensor, labels: Tensor, score: Tensor, beta: float = 2.0) -> Tensor:
    """Quality Focal Loss (QFL) of the GFL paper, summed over classes.

    With σ = sigmoid(pred) and a soft target y (the IoU ``score`` at the positive class, 0 at
    every other class and at every class of a background prior)::

        QFL(σ) = -|y - σ|^β · ((1 - y) log(1 - σ) + y log σ) = BCE(pred, y) · |y - σ|^β

    For y = 0 this is NanoDet's negative term ``BCE(pred, 0) · σ^β``; for the positive class it
    is ``BCE(pred, score) · |score - σ|^β``. The modulating factor is not detached (as NanoDet).

    Args:
        pred (Tensor[N, C]): class logits, one row per prior.
        labels (Tensor[N] int64): class in ``[0, C-1]`` for positives, ``C`` for background.
        score (Tensor[N] float): IoU target in [0, 1]; used only where the prior is positive.
        beta: focusing exponent β (2.0 in the paper and NanoDet).
    Returns:
        Tensor[N]: loss per prior, summed over the C classes; not normalised.
    """
    check_tensor(pred, "pred", ndim=2, floating=True, layout="[N, C] logits")
    num_priors, num_classes = pred.shape
    check_labels(labels, "labels", num_priors, None)
    if labels.numel() > 0 and (int(labels.min()) < 0 or int(labels.max()) > num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}] (classes 0..{num_classes - 1}, background = {num_classes}), "
            f"got range [{int(labels.min())}, {int(labels.max())}]"
        )
    check_tensor(score, "score", ndim=1, floating=True, layout="[N] float in [0, 1]")
    if score.shape[0] != num_priors:
        raise ValueError(f"score must have one value per prior ({num_priors}), got {score.shape[0]}")
    if score.numel() > 0 and not bool(((score >= 0) & (score <= 1)).all()):
        raise ValueError(f"score must lie in [0, 1], got range [{float(score.min())}, {float(score.max())}]")

    classes = torch.arange(num_classes, device=pred.device)
    is_positive_class = labels[:, None] == classes[None, :]  # [N, C]; background rows are all False
    soft_target = torch.where(is_positive_class, score[:, None].to(pred.dtype), torch.zeros_like(pred))  # [N, C]
    prob = pred.sigmoid()
    bce = F.binary_cross_entropy_with_logits(pred, soft_target, reduction="none")  # [N, C]
    return (bce * (soft_target - prob).abs().pow(beta)).sum(dim=1)  # [N]


def distribution_focal_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Distribution Focal Loss (DFL) of the GFL paper.

    The continuous target y in [0, R-1) sits between bins ``y_l = floor(y)`` and ``y_r = y_l + 1``;
    DFL raises the probability of both, weighted by closeness::

        DFL = CE(pred, y_l) · (y_r - y) + CE(pred, y_r) · (y - y_l)

    Its minimum puts softmax mass ``y_r - y`` on ``y_l`` and ``y - y_l`` on ``y_r``, whose
    expectation (see ``distribution_project``) is exactly y.

    Args:
        pred (Tensor[N, R]): logits over the R = reg_max + 1 bins ``0..reg_max`` (one row per side).
        target (Tensor[N] float): distances in stride units, ``0 <= y < R - 1`` (``bbox2distance``
            with ``max_dis=reg_max`` guarantees this).
    Returns:
        Tensor[N]: loss per row; not normalised.
    """
    check_tensor(pred, "pred", ndim=2, floating=True, layout="[N, R] logits")
    num_bins = pred.shape[1]
    check_tensor(target, "target", ndim=1, floating=True, layout="[N] float")
    if target.shape[0] != pred.shape[0]:
        raise ValueError(f"target must have one value per row of pred ({pred.shape[0]}), got {target.shape[0]}")
    if target.numel() > 0 and not bool(((target >= 0) & (target < num_bins - 1)).all()):
        raise ValueError(
            f"target must lie in [0, reg_max) = [0, {num_bins - 1}) for R = {num_bins} bins, "
            f"got range [{float(target.min())}, {float(target.max())}]"
        )
    left = target.floor().long()  # [N] bin at or below y
    right = left + 1  # [N] bin above y, <= reg_max
    weight_left = right.to(target.dtype) - target
    weight_right = target - left.to(target.dtype)
    ce_left = F.cross_entropy(pred, left, reduction="none")  # [N]
    ce_right = F.cross_entropy(pred, right, reduction="none")
    return ce_left * weight_left + ce_right * weight_right


def giou_loss(pred: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    """GIoU loss ``1 - GIoU(pred[i], target[i])`` (Rezatofighi et al. 2019), in [0, 2].

    Uses ``aligned_generalized_box_iou`` with NanoDet's conventions: union and enclosing area
    floored at eps, and eps = 1e-6, the default of NanoDet's ``GIoULoss`` module.

    Args:
        pred (Tensor[N, 4]): decoded predicted boxes, xyxy. target (Tensor[N, 4]): xyxy.
        eps: floor on union and enclosing area.
    Returns:
        Tensor[N]: loss per pair; not normalised.
    """
    return 1 - aligned_generalized_box_iou(pred, target, eps=eps)


def weight_reduce(loss: Tensor, weight: Tensor | None = None, avg_factor: float | Tensor | None = None) -> Tensor:
    """Explicit normaliser: ``sum(loss * weight) / avg_factor``, or the mean when avg_factor is None.

    An empty ``loss`` with ``avg_factor=None`` gives 0 (not the NaN of an empty mean), so a
    batch without positives still yields a finite, differentiable zero.

    Args:
        loss (Tensor[*]): per-element losses. weight (Tensor[*] | None): same shape as ``loss``.
        avg_factor: positive normaliser (number or 0-d tensor), e.g. ``num_total_pos``.
    Returns:
        Tensor[]: scalar loss.
    """
    check_tensor(loss, "loss", floating=True, layout="[*] float")
    if weight is not None:
        check_tensor(weight, "weight", floating=True, layout=f"{list(loss.shape)} float, the shape of loss")
        if weight.shape != loss.shape:
            raise ValueError(f"weight must have the shape of loss {list(loss.shape)}, got shape {list(weight.shape)}")
        loss = loss * weight
    if avg_factor is None:
        return loss.sum() if loss.numel() == 0 else loss.mean()
    if isinstance(avg_factor, Tensor) and avg_factor.numel() != 1:
        raise ValueError(f"avg_factor must be a number or a one-element Tensor, got shape {list(avg_factor.shape)}")
    value = float(avg_factor.detach()) if isinstance(avg_factor, Tensor) else avg_factor
    if not value > 0:  # a tensor 0 as well as a number 0: a sum divided by 0 is no loss (NaN fails here too)
        raise ValueError(f"avg_factor must be > 0, got {value}")
    return loss.sum() / avg_factor


def _expectation(reg: Tensor, project: Tensor) -> Tensor:
    num_bins = project.shape[0]
    if reg.dim() == 0 or reg.shape[-1] != 4 * num_bins:
        raise ValueError(
            f"reg must be Tensor[..., 4 * (reg_max + 1)] = [..., {4 * num_bins}] logits, got shape {list(reg.shape)}"
        )
    prob = F.softmax(reg.reshape(*reg.shape[:-1], 4, num_bins), dim=-1)  # [..., 4R] -> [..., 4, R]
    return prob @ project.to(prob.dtype)  # [..., 4, R] @ [R] -> [..., 4]


def _bins(reg_max: int, device=None) -> Tensor:
    if isinstance(reg_max, bool) or not isinstance(reg_max, int) or reg_max < 1:
        raise ValueError(f"reg_max must be an int >= 1, got {reg_max!r}")
    return torch.linspace(0, reg_max, reg_max + 1, device=device)  # [R]: 0, 1, ..., reg_max


def distribution_project(reg: Tensor, reg_max: int) -> Tensor:
    """Expected distance of each side under its softmax distribution (NanoDet's ``Integral``).

    The GFL paper's discrete integral ``d = Σ_i softmax(logits)_i · i`` over bins ``i = 0..reg_max``,
    for l, t, r, b in turn.

    Args:
        reg (Tensor[..., 4 * R]): logits, R = reg_max + 1 bins per side, sides in ltrb order.
        reg_max: largest bin value.
    Returns:
        Tensor[..., 4]: ltrb distances in [0, reg_max], stride units.
    """
    check_tensor(reg, "reg", floating=True, layout="[..., 4 * (reg_max + 1)] logits")
    return _expectation(reg, _bins(reg_max, reg.device))


class Integral(nn.Module):
    """``distribution_project`` as a module, with the bins as a ``project`` buffer.

    The buffer is persistent, as in NanoDet, so state dicts keep the ``project`` key.
    """

    def __init__(self, reg_max: int = 16):
        super().__init__()
        self.reg_max = reg_max
        self.register_buffer("project", _bins(reg_max))  # [R]

    def forward(self, reg: Tensor) -> Tensor:
        """Args: reg (Tensor[..., 4 * (reg_max + 1)]) logits. Returns: Tensor[..., 4] ltrb distances."""
        check_tensor(reg, "reg", floating=True, layout="[..., 4 * (reg_max + 1)] logits")
        return _expectation(reg, self.project)
