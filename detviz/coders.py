"""Box coders: boxes <-> the regression targets ("deltas") a head predicts.

:class:`BoxCoder` is the R-CNN parameterisation (Girshick et al., "Rich feature
hierarchies...", 2014, appendix C) as implemented by torchvision's
``models/detection/_utils.BoxCoder``, which Faster R-CNN uses with weights
(1, 1, 1, 1) in the RPN and (10, 10, 5, 5) in the RoI heads. For an anchor with
centre (ax, ay) and size (aw, ah) and a gt with (gx, gy, gw, gh):

    dx = wx * (gx - ax) / aw        dw = ww * log(gw / aw)
    dy = wy * (gy - ay) / ah        dh = wh * log(gh / ah)

Widths are ``x2 - x1`` (no "+1" as in the original Caffe code).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["BoxCoder"]


def _centers_and_sizes(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """xyxy Tensor[N, 4] -> (cx, cy, w, h), each Tensor[N]."""
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    return boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights, widths, heights


def _check_box_list(boxes, name: str) -> None:
    if not isinstance(boxes, (list, tuple)) or not all(isinstance(b, Tensor) for b in boxes):
        raise TypeError(f"{name} must be a list of Tensor[N_i, 4], one per image, got {type(boxes).__name__}")
    if len(boxes) == 0:
        raise ValueError(f"{name} must be a list of Tensor[N_i, 4] with at least one image, got an empty list")
    for i, b in enumerate(boxes):
        if b.dim() != 2 or b.shape[1] != 4:
            raise ValueError(f"{name}[{i}] must be Tensor[N_i, 4] xyxy, got shape {list(b.shape)}")


def _check_pair(first: Tensor, second: Tensor, first_name: str, second_name: str) -> None:
    for x, name in ((first, first_name), (second, second_name)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")
    if second.dim() != 2 or second.shape[1] != 4:
        raise ValueError(f"{second_name} must be Tensor[N, 4] xyxy, got shape {list(second.shape)}")


class BoxCoder:
    """Encode gt boxes as deltas relative to anchors/proposals, and decode them back.

    Invariant (up to float round-off, and while ``|dw|, |dh| <= bbox_xform_clip``, i.e.
    no gt is more than 1000/16 = 62.5 times wider or taller than its anchor)::

        decode_single(encode_single(gt, anchors), anchors) == gt

    Args:
        weights: (wx, wy, ww, wh) multiplying (dx, dy, dw, dh); larger weights make the
            targets larger, e.g. (10, 10, 5, 5) in the RoI heads.
        bbox_xform_clip: upper clamp of the decoded dw, dh (after dividing by ww, wh),
            so that ``exp`` cannot overflow; log(1000 / 16) ~ 4.135 as in torchvision.
    """

    def __init__(self, weights: Sequence[float], bbox_xform_clip: float = math.log(1000.0 / 16)):
        if len(weights) != 4:
            raise ValueError(f"weights must be 4 numbers (wx, wy, ww, wh), got {weights!r}")
        self.weights = tuple(weights)
        self.bbox_xform_clip = bbox_xform_clip

    def __repr__(self) -> str:
        return f"BoxCoder(weights={self.weights}, bbox_xform_clip={self.bbox_xform_clip})"

    def encode(self, reference_boxes: list[Tensor], proposals: list[Tensor]) -> tuple[Tensor, ...]:
        """Per image, the targets that move each proposal onto its matched gt.

        Args:
            reference_boxes: B tensors [N_i, 4], the matched gt boxes (torchvision's name).
            proposals: B tensors [N_i, 4], the anchors or proposals they were matched to.

        Returns:
            B tensors [N_i, 4] of (dx, dy, dw, dh).
        """
        _check_box_list(reference_boxes, "reference_boxes")
        _check_box_list(proposals, "proposals")
        boxes_per_image = [len(b) for b in reference_boxes]
        if boxes_per_image != [len(p) for p in proposals]:
            raise ValueError(f"reference_boxes and proposals must pair up per image, got {boxes_per_image} "
                             f"gt boxes and {[len(p) for p in proposals]} proposals")
        targets = self.encode_single(torch.cat(reference_boxes), torch.cat(proposals))  # [sum N_i, 4]
        return targets.split(boxes_per_image, 0)

    def encode_single(self, reference_boxes: Tensor, proposals: Tensor) -> Tensor:
        """Encode one set of matched pairs.

        Args:
            reference_boxes: Tensor[N, 4] xyxy, the matched gt boxes.
            proposals: Tensor[N, 4] xyxy, the anchors/proposals (positive widths and heights).

        Returns:
            Tensor[N, 4] (dx, dy, dw, dh), dtype and device of ``reference_boxes``.
        """
        _check_pair(reference_boxes, proposals, "reference_boxes", "proposals")
        if reference_boxes.shape != proposals.shape:
            raise ValueError(f"reference_boxes and proposals must both be [N, 4], got shapes "
                             f"{list(reference_boxes.shape)} and {list(proposals.shape)}")
        wx, wy, ww, wh = torch.as_tensor(self.weights, dtype=reference_boxes.dtype, device=reference_boxes.device)
        anchor_cx, anchor_cy, anchor_w, anchor_h = _centers_and_sizes(proposals)
        gt_cx, gt_cy, gt_w, gt_h = _centers_and_sizes(reference_boxes)
        dx = wx * (gt_cx - anchor_cx) / anchor_w
        dy = wy * (gt_cy - anchor_cy) / anchor_h
        dw = ww * torch.log(gt_w / anchor_w)
        dh = wh * torch.log(gt_h / anchor_h)
        return torch.stack([dx, dy, dw, dh], dim=1)  # [N, 4]

    def decode(self, rel_codes: Tensor, boxes: list[Tensor]) -> Tensor:
        """Apply predicted deltas to the boxes of every image.

        Args:
            rel_codes: the deltas, R*K*4 values in all (e.g. [R, 4*K] from a per-class
                box head, or [B*N, 4] from the RPN), rows in the order of ``boxes``.
            boxes: B tensors [N_i, 4] xyxy (anchors or proposals), R = sum N_i.

        Returns:
            Tensor[R, K, 4] xyxy in the frame of ``boxes``, dtype of ``rel_codes``. When
            R = 0 the result is [0, K, 4] with K = rel_codes.shape[-1] // 4 (torchvision
            returns the [0, 4*K] tensor from :meth:`decode_single` there).
        """
        if not isinstance(rel_codes, Tensor):
            raise TypeError(f"rel_codes must be a Tensor of deltas, got {type(rel_codes).__name__}")
        _check_box_list(boxes, "boxes")
        total = sum(len(b) for b in boxes)
        if total == 0:
            num_codes = rel_codes.shape[-1] if rel_codes.dim() > 0 else 0
            return self.decode_single(rel_codes.reshape(0, num_codes), torch.cat(boxes)).reshape(0, num_codes // 4, 4)
        if rel_codes.numel() % (4 * total) != 0:
            raise ValueError(f"rel_codes must hold 4*K deltas for each of the {total} boxes, got shape "
                             f"{list(rel_codes.shape)}")
        pred = self.decode_single(rel_codes.reshape(total, -1), torch.cat(boxes))  # [R, 4*K]
        return pred.reshape(total, -1, 4)  # [R, 4*K] -> [R, K, 4]

    def decode_single(self, rel_codes: Tensor, boxes: Tensor) -> Tensor:
        """Apply deltas to one set of boxes.

        Args:
            rel_codes: Tensor[N, 4*K] deltas (dx, dy, dw, dh) for K boxes per row (K classes).
            boxes: Tensor[N, 4] xyxy anchors/proposals; cast to ``rel_codes.dtype``.

        Returns:
            Tensor[N, 4*K] xyxy, the K decoded boxes of each row side by side.
        """
        _check_pair(rel_codes, boxes, "rel_codes", "boxes")
        if rel_codes.dim() != 2 or rel_codes.shape[1] % 4 != 0 or rel_codes.shape[0] != boxes.shape[0]:
            raise ValueError(f"rel_codes must be Tensor[{boxes.shape[0]}, 4*K] for {boxes.shape[0]} boxes, "
                             f"got shape {list(rel_codes.shape)}")
        boxes = boxes.to(rel_codes.dtype)
        ctr_x, ctr_y, widths, heights = _centers_and_sizes(boxes)  # [N] each
        wx, wy, ww, wh = self.weights
        dx = rel_codes[:, 0::4] / wx  # [N, K]
        dy = rel_codes[:, 1::4] / wy
        # Clamp only from above: a huge predicted dw would overflow exp(); small ones are harmless.
        dw = torch.clamp(rel_codes[:, 2::4] / ww, max=self.bbox_xform_clip)
        dh = torch.clamp(rel_codes[:, 3::4] / wh, max=self.bbox_xform_clip)

        pred_cx = dx * widths[:, None] + ctr_x[:, None]  # [N, K]
        pred_cy = dy * heights[:, None] + ctr_y[:, None]
        half_w = 0.5 * (torch.exp(dw) * widths[:, None])
        half_h = 0.5 * (torch.exp(dh) * heights[:, None])
        pred = torch.stack([pred_cx - half_w, pred_cy - half_h, pred_cx + half_w, pred_cy + half_h], dim=2)  # [N, K, 4]
        return pred.flatten(1)  # [N, K, 4] -> [N, 4*K]
