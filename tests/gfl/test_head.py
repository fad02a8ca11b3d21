import pytest
import torch
from torch.testing import assert_close

from detviz.boxes import aligned_box_iou
from detviz.gfl.head import GFLHead, gfl_loss, loss_single
from detviz.gfl.targets import gfl_targets
from detviz.losses import giou_loss

SIZES, STRIDES, REG_MAX, C = [(8, 8), (4, 4)], [8, 16], 7, 3  # a 64x64 input


def _head_outputs(seed=0, batch=1):
    gen = torch.Generator().manual_seed(seed)
    cls = [torch.randn(batch, C, h, w, generator=gen, requires_grad=True) for h, w in SIZES]
    reg = [torch.randn(batch, 4 * (REG_MAX + 1), h, w, generator=gen, requires_grad=True) for h, w in SIZES]
    return cls, reg


def _targets(gts, labels):
    return gfl_targets(SIZES, STRIDES, 5, gts, labels, num_classes=C)


def test_head_shapes_and_prior_bias():
    head = GFLHead(num_classes=C, in_channels=16, feat_channels=16, num_levels=2, reg_max=REG_MAX)
    feats = [torch.zeros(2, 16, 8, 8), torch.zeros(2, 16, 4, 4)]
    cls, reg = head(feats)
    assert [c.shape for c in cls] == [(2, C, 8, 8), (2, C, 4, 4)]
    assert [r.shape for r in reg] == [(2, 32, 8, 8), (2, 32, 4, 4)]
    # Zero features give the initial score: sigmoid(-4.595) = 0.01.
    assert_close(cls[0].sigmoid(), torch.full_like(cls[0], 0.01), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match=r"feats must hold one feature map per level \(2\), got 1"):
        head(feats[:1])


def test_loss_single_steps():
    gt = torch.tensor([[10.0, 14, 42, 50]])
    targets = _targets([gt], [torch.tensor([1])])
    cls, reg = _head_outputs()
    steps = loss_single(targets.grid_cells[0], cls[0], reg[0], targets.labels[0], targets.label_weights[0],
                        targets.bbox_targets[0], STRIDES[0], num_total_samples=4, reg_max=REG_MAX)
    pos = steps.pos_inds
    assert pos.numel() > 0 and torch.equal(pos, targets.per_image[0].pos_inds[targets.per_image[0].pos_inds < 64])
    assert_close(steps.pos_decode_bbox_targets, (gt / 8).expand(len(pos), 4))
    flat_cls = cls[0].detach().permute(0, 2, 3, 1).reshape(-1, C)
    assert_close(steps.weight_targets, flat_cls.sigmoid().max(dim=1).values[pos])
    assert_close(steps.score[pos], aligned_box_iou(steps.pos_decode_bbox_pred.detach(), steps.pos_decode_bbox_targets))
    assert steps.score.count_nonzero() <= pos.numel()
    assert steps.pred_corners.shape == (4 * len(pos), REG_MAX + 1)
    assert steps.target_corners.shape == (4 * len(pos),)
    assert float(steps.target_corners.max()) <= REG_MAX - 0.1 + 1e-6
    assert_close(steps.weight_sum, steps.weight_targets.sum())
    for loss in (steps.loss_qfl, steps.loss_bbox, steps.loss_dfl):
        assert loss.dim() == 0 and torch.isfinite(loss) and loss > 0


def test_perfect_distribution_decodes_the_box_exactly():
    # One positive whose target distances are whole strides: a peaked distribution on
    # those bins decodes the box exactly.
    centre = torch.tensor([[28.0, 28.0]])  # cell (3, 3) of the stride-8 level
    gt = torch.tensor([[28.0 - 16, 28.0 - 8, 28.0 + 24, 28.0 + 16]])  # ltrb = 2, 1, 3, 2 strides
    targets = _targets([gt], [torch.tensor([0])])
    cls, reg = _head_outputs()
    peaked = torch.full((1, 4, REG_MAX + 1, 8, 8), -30.0)
    for side, bin_ in enumerate([2, 1, 3, 2]):
        peaked[0, side, bin_] = 30.0
    steps = loss_single(targets.grid_cells[0], cls[0], peaked.reshape(1, -1, 8, 8), targets.labels[0],
                        targets.label_weights[0], targets.bbox_targets[0], 8, num_total_samples=1, reg_max=REG_MAX)
    cell = 3 * 8 + 3
    i = (steps.pos_inds == cell).nonzero().item()
    assert_close(steps.pos_grid_cell_centers[i] * 8, centre[0])
    assert_close(steps.pos_bbox_pred_corners[i], torch.tensor([2.0, 1.0, 3.0, 2.0]))
    assert_close(steps.score[cell], torch.tensor(1.0))
    assert_close(giou_loss(steps.pos_decode_bbox_pred[i:i + 1], steps.pos_decode_bbox_targets[i:i + 1]),
                 torch.zeros(1), atol=1e-6, rtol=0)


def test_gfl_loss_one_gt_backward():
    targets = _targets([torch.tensor([[10.0, 14, 42, 50]])], [torch.tensor([2])])
    cls, reg = _head_outputs()
    losses = gfl_loss(cls, reg, targets, STRIDES, reg_max=REG_MAX)
    assert set(losses) == {"loss_qfl", "loss_bbox", "loss_dfl"}
    total = sum(losses.values())
    total.backward()
    assert all(torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0 for t in cls)
    for level, reg_level in enumerate(reg):  # distributions learn only where a level has positives
        has_pos = bool((targets.labels[level] < C).any())
        assert torch.isfinite(reg_level.grad).all()
        assert (reg_level.grad.abs().sum() > 0) == has_pos


def test_gfl_loss_without_any_gt_is_zero_like_nanodet():
    targets = _targets([torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)])
    cls, reg = _head_outputs()
    losses = gfl_loss(cls, reg, targets, STRIDES, reg_max=REG_MAX)
    for value in losses.values():
        assert_close(value, torch.tensor(0.0))
    sum(losses.values()).backward()  # still differentiable: a zero step, not an error
    assert all(torch.isfinite(t.grad).all() for t in cls + reg)


def test_image_without_gt_next_to_one_with_gt():
    targets = _targets([torch.zeros(0, 4), torch.tensor([[10.0, 14, 42, 50]])],
                       [torch.zeros(0, dtype=torch.long), torch.tensor([0])])
    cls, reg = _head_outputs(batch=2)
    losses = gfl_loss(cls, reg, targets, STRIDES, reg_max=REG_MAX)
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())


def test_level_without_positives_keeps_the_graph():
    targets = _targets([torch.tensor([[10.0, 14, 42, 50]])], [torch.tensor([2])])
    cls, reg = _head_outputs()
    empty_labels = torch.full_like(targets.labels[1], C)
    steps = loss_single(targets.grid_cells[1], cls[1], reg[1], empty_labels, targets.label_weights[1],
                        targets.bbox_targets[1], 16, num_total_samples=1, reg_max=REG_MAX)
    assert steps.pos_inds.numel() == 0
    assert_close(steps.loss_bbox, torch.tensor(0.0))
    assert steps.loss_bbox.requires_grad and steps.loss_dfl.requires_grad
    assert steps.loss_qfl > 0


def test_levels_and_images_must_line_up():
    targets = _targets([torch.tensor([[10.0, 14, 42, 50]])], [torch.tensor([2])])
    cls, reg = _head_outputs()
    with pytest.raises(ValueError, match="one entry per level, got 2, 2, 1 and 2"):
        gfl_loss(cls, reg, targets, STRIDES[:1], reg_max=REG_MAX)
    with pytest.raises(ValueError, match=r"bbox_pred must be Tensor\[B, 4 \* \(reg_max \+ 1\), H, W\] = \[B, 68, H, W\] for reg_max=16"):
        gfl_loss(cls, reg, targets, STRIDES, reg_max=16)
    with pytest.raises(ValueError, match="one entry .* per image, got 1 for 2 images"):
        gfl_targets(SIZES, STRIDES, 5, [torch.zeros(0, 4)] * 2, [torch.zeros(0, dtype=torch.long)] * 2, C,
                    gt_bboxes_ignore_list=[None])
