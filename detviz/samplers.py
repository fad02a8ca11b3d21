"""Sampling a fixed-size, class-balanced minibatch of anchors/proposals per image.

Faster R-CNN does not train on every anchor: per image the RPN draws 256 anchors
with at most half positives, and the RoI heads draw 512 proposals with at most a
quarter positives; the rest of the batch is filled with negatives.

:class:`BalancedPositiveNegativeSampler` equals torchvision's
(``models/detection/_utils.py``) draw for draw: it makes the same ``torch.randperm``
calls, positives before negatives, image by image, on the labels' device, so with
the same seed it picks the same elements and training losses match.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["subsample_labels", "BalancedPositiveNegativeSampler"]


def subsample_labels(labels: Tensor, num_samples: int, positive_fraction: float) -> tuple[Tensor, Tensor]:
    """Pick at most ``num_samples`` elements, at most ``positive_fraction`` of them positive.

    Like detectron2's ``subsample_labels``, with torchvision's label convention:
      1. positives are labels >= 1, negatives labels == 0; anything else (-1: ignored,
         between the matcher's thresholds) is never picked;
      2. num_pos = min(int(num_samples * positive_fraction), #positives);
      3. num_neg = min(num_samples - num_pos, #negatives): missing positives are made
         up with negatives, never the other way round;
      4. draw num_pos positives, then num_neg negatives, uniformly without replacement
         (one ``torch.randperm`` each, in that order, from the global RNG).

    Example: labels [0]*6 + [1]*3 + [-1]*2, num_samples 4, positive_fraction 0.25 ->
    1 of the 3 positives and 3 of the 6 negatives.

    Args:
        labels: Tensor[N], integer or float (the RPN passes 1.0 / 0.0 / -1.0).
        num_samples: the batch size for this image.
        positive_fraction: in [0, 1].

    Returns:
        (pos_idx, neg_idx): Tensor[P] and Tensor[Q] int64 indices into ``labels``, in
        draw order (not sorted), P + Q <= num_samples.
    """
    positive = torch.where(labels >= 1)[0]  # [#pos]
    negative = torch.where(labels == 0)[0]  # [#neg]
    num_pos = min(positive.numel(), int(num_samples * positive_fraction))
    num_neg = min(negative.numel(), num_samples - num_pos)
    pos_pick = torch.randperm(positive.numel(), device=positive.device)[:num_pos]
    neg_pick = torch.randperm(negative.numel(), device=negative.device)[:num_neg]
    return positive[pos_pick], negative[neg_pick]


class BalancedPositiveNegativeSampler:
    """Drop-in for torchvision's ``BalancedPositiveNegativeSampler``.

    Args:
        batch_size_per_image: elements drawn per image (256 RPN, 512 RoI heads).
        positive_fraction: largest share of positives (0.5 RPN, 0.25 RoI heads).
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float):
        if isinstance(batch_size_per_image, bool) or int(batch_size_per_image) != batch_size_per_image \
                or batch_size_per_image < 0:
            raise ValueError(f"batch_size_per_image must be a non-negative integer, got {batch_size_per_image!r}")
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must lie in [0, 1], got {positive_fraction!r}")
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = positive_fraction

    def __repr__(self) -> str:
        return (f"BalancedPositiveNegativeSampler(batch_size_per_image={self.batch_size_per_image}, "
                f"positive_fraction={self.positive_fraction})")

    def __call__(self, matched_idxs: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Sample every image of the batch.

        Args:
            matched_idxs: B tensors [N_i] of labels: >= 1 positive, 0 negative, -1 ignored
                (torchvision's name, although the heads pass labels, not gt indices).

        Returns:
            (pos_idx, neg_idx): two lists of B uint8 masks [N_i], 1 where the element was
            drawn as a positive (resp. negative), on the device of the labels.
        """
        if not isinstance(matched_idxs, (list, tuple)) or not all(isinstance(m, Tensor) for m in matched_idxs):
            raise TypeError(f"matched_idxs must be a list of Tensor[N_i] labels, one per image, "
                            f"got {type(matched_idxs).__name__}")
        pos_masks, neg_masks = [], []
        for image_idx, labels_per_image in enumerate(matched_idxs):
            if labels_per_image.dim() != 1:
                raise ValueError(f"matched_idxs[{image_idx}] must be Tensor[N] labels, "
                                 f"got shape {list(labels_per_image.shape)}")
            pos_idx, neg_idx = subsample_labels(labels_per_image, self.batch_size_per_image, self.positive_fraction)
            pos_mask = torch.zeros_like(labels_per_image, dtype=torch.uint8)
            neg_mask = torch.zeros_like(labels_per_image, dtype=torch.uint8)
            pos_mask[pos_idx] = 1
            neg_mask[neg_idx] = 1
            pos_masks.append(pos_mask)
            neg_masks.append(neg_mask)
        return pos_masks, neg_masks
