import math

import pytest
import torch
from torch.testing import assert_close

from detviz.anchors import multilevel_grid_cells
from detviz.assigners import IGNORE, NEGATIVE, ATSSAssigner


def _atss_by_hand(priors, num_level, gts, topk):
    """An independent, loop-by-loop ATSS on plain Python floats (no shared code)."""
    def iou(a, b):
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    def centre(b):
        return ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)

    best = [(-1.0, NEGATIVE)] * len(priors)
    for g, gt in enumerate(gts):
        gx, gy = centre(gt)
        candidates, start = [], 0
        for n in num_level:
            level = list(range(start, start + n))
            level.sort(key=lambda i: math.dist(centre(priors[i]), (gx, gy)))
            candidates += level[:topk]
            start += n
        ious = [iou(priors[i], gt) for i in candidates]
        mean = sum(ious) / len(ious)
        std = math.sqrt(sum((v - mean) ** 2 for v in ious) / (len(ious) - 1))
        for i, v in zip(candidates, ious):
            px, py = centre(priors[i])
            inside = min(px - gt[0], py - gt[1], gt[2] - px, gt[3] - py) > 0.01
            if v >= mean + std and inside and v > best[i][0]:
                best[i] = (v, g)
    return [g for _, g in best]


def test_matches_an_independent_loop_implementation_on_random_scenes():
    gen = torch.Generator().manual_seed(0)
    cells = multilevel_grid_cells([(16, 16), (8, 8), (4, 4)], [8, 16, 32], octave_base_scale=4)
    priors = torch.cat(cells)
    num_level = [len(c) for c in cells]
    assigner = ATSSAssigner(topk=9)
    for _ in range(20):
        m = int(torch.randint(1, 6, (1,), generator=gen))
        xy = torch.rand(m, 2, generator=gen) * 100
        wh = torch.rand(m, 2, generator=gen) * 60 + 4
        gts = torch.cat([xy, xy + wh], dim=1)
        result = assigner.assign(priors, num_level, gts)
        expected = _atss_by_hand(priors.tolist(), num_level, gts.tolist(), topk=9)
        assert result.gt_inds.tolist() == expected


def test_centre_on_the_gt_edge_is_not_positive():
    # Prior 2 clears gt 1's IoU threshold, but its centre (10, 10) lies on gt 1's top edge.
    priors = torch.tensor([[0.0, 0, 10, 10], [10, 10, 20, 20], [5, 5, 15, 15], [32, 32, 38, 42]])
    gts = torch.tensor([[0.0, 0, 10, 9], [0, 10, 10, 19]])
    steps = ATSSAssigner(topk=9).assign_with_steps(priors, [4], gts, gt_labels=torch.tensor([2, 3]),
                                                   num_classes=5)
    assert_close(steps.overlaps[2], torch.tensor([0.1176, 0.1515]), atol=1e-4, rtol=0)
    assert steps.is_pos_iou[:, 1].any()
    assert steps.result.gt_inds.tolist() == [0, NEGATIVE, NEGATIVE, NEGATIVE]
    assert steps.result.labels.tolist() == [2, 5, 5, 5]
    assert_close(steps.result.max_overlaps, torch.tensor([0.9, 0.0, 0.0, 0.0]))


def test_threshold_is_mean_plus_unbiased_std():
    priors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 20, 10], [0, 0, 40, 10]])
    gt = torch.tensor([[0.0, 0, 10, 10]])
    steps = ATSSAssigner(topk=3).assign_with_steps(priors, [3], gt)
    ious = [1.0, 0.5, 0.25]
    mean = sum(ious) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in ious) / 2)
    assert_close(steps.overlaps_mean, torch.tensor([mean]))
    assert_close(steps.overlaps_std, torch.tensor([std]))
    assert_close(steps.overlaps_thr, torch.tensor([mean + std]))
    assert steps.result.gt_inds.tolist() == [0, NEGATIVE, NEGATIVE]


def test_prior_positive_for_several_gts_keeps_the_higher_iou_and_ties_go_to_the_first():
    cells = torch.cat(multilevel_grid_cells([(6, 6)], [8], octave_base_scale=1))  # 8 px cells
    gts = torch.tensor([[0.0, 0, 16, 17], [0, 0, 16, 16], [0, 0, 16, 16]])  # gts 1 and 2 identical
    steps = ATSSAssigner(topk=9).assign_with_steps(cells, [36], gts)
    shared = [0, 1, 6, 7]  # the four cells inside all three gts are positive for each of them
    assert steps.is_pos[:4].all()
    assert sorted(steps.candidate_idxs[:4, 0].tolist()) == shared
    # IoU 64/272 with gt 0 loses to 64/256 with gts 1 and 2; the 1-2 tie goes to gt 1
    assert steps.result.gt_inds[shared].tolist() == [1, 1, 1, 1]
    assert_close(steps.result.max_overlaps[shared], torch.full((4,), 0.25))


def test_a_single_candidate_never_becomes_positive_like_nanodet():
    # torch.std of one value is NaN (n - 1 = 0), so the threshold is NaN and IoU >= NaN is False
    steps = ATSSAssigner(topk=9).assign_with_steps(torch.tensor([[0.0, 0, 10, 10]]), [1],
                                                   torch.tensor([[0.0, 0, 10, 10]]))
    assert torch.isnan(steps.overlaps_thr).all()
    assert steps.result.gt_inds.tolist() == [NEGATIVE]


def test_steps_are_consistent():
    cells = multilevel_grid_cells([(8, 8), (4, 4)], [8, 16], octave_base_scale=5)
    gts = torch.tensor([[10.0, 12, 40, 50], [30, 5, 60, 30]])
    steps = ATSSAssigner(topk=4).assign_with_steps(torch.cat(cells), [64, 16], gts)
    assert steps.candidate_idxs.shape == (8, 2)
    assert (steps.candidate_idxs[:4] < 64).all() and (steps.candidate_idxs[4:] >= 64).all()
    assert_close(steps.candidate_idxs_flat, steps.candidate_idxs + torch.tensor([0, 80]))
    assert torch.equal(steps.is_pos, steps.is_pos_iou & steps.is_in_gts)
    assert_close(steps.candidate_overlaps, steps.overlaps.gather(0, steps.candidate_idxs))


def test_empty_gt_makes_every_prior_negative():
    priors = torch.cat(multilevel_grid_cells([(4, 4)], [8], 5))
    steps = ATSSAssigner().assign_with_steps(priors, [16], torch.zeros(0, 4),
                                             gt_labels=torch.zeros(0, dtype=torch.long), num_classes=3)
    result = steps.result
    assert result.num_gts == 0
    assert (result.gt_inds == NEGATIVE).all() and (result.labels == 3).all()
    assert_close(result.max_overlaps, torch.zeros(16))
    assert steps.candidate_idxs.shape == (9, 0) and steps.overlaps_thr.shape == (0,)
    assert result.pos_inds.numel() == 0 and result.neg_inds.numel() == 16


def test_no_priors():
    result = ATSSAssigner().assign(torch.zeros(0, 4), [0], torch.tensor([[0.0, 0, 5, 5]]))
    assert result.gt_inds.shape == (0,) and result.labels.shape == (0,)


def test_fewer_priors_than_topk_and_more_gts_than_priors():
    priors = torch.tensor([[0.0, 0, 10, 10], [10, 0, 20, 10]])
    gts = torch.tensor([[0.0, 0, 9, 9], [11, 1, 19, 9], [2, 2, 8, 8], [12, 2, 18, 8]])
    steps = ATSSAssigner(topk=9).assign_with_steps(priors, [2], gts)
    assert steps.candidate_idxs.shape == (2, 4)
    assert torch.isfinite(steps.overlaps_thr).all()
    # With two candidates per gt, IoUs (0.81, 0) give thr = 0.405 + 0.573 > 0.81: ATSS's
    # mean + std can exceed every candidate's IoU, leaving a gt without positives.
    assert_close(steps.overlaps_thr[0], torch.tensor(0.405 + 0.81 / math.sqrt(2)))
    assert steps.result.gt_inds.tolist() == _atss_by_hand(priors.tolist(), [2], gts.tolist(), topk=9)
    assert (steps.result.gt_inds == NEGATIVE).all()


def test_degenerate_gt_gets_no_positive_and_no_nan():
    priors = torch.cat(multilevel_grid_cells([(4, 4)], [8], 5))
    gts = torch.tensor([[12.0, 12, 12, 20], [4, 4, 20, 20]])  # gt 0 has zero width
    steps = ATSSAssigner().assign_with_steps(priors, [16], gts)
    assert torch.isfinite(steps.overlaps_thr).all()
    assert not (steps.result.gt_inds == 0).any()
    assert (steps.result.gt_inds == 1).any()


def test_gt_outside_the_image_gets_no_positive():
    priors = torch.cat(multilevel_grid_cells([(4, 4)], [8], 5))  # a 32x32 input
    gts = torch.tensor([[40.0, 40, 60, 60], [-16, 0, 16, 24]])  # fully outside; half outside
    result = ATSSAssigner().assign(priors, [16], gts)
    assert not (result.gt_inds == 0).any()
    assert torch.nonzero(result.gt_inds == 1).squeeze(1).tolist() == [0, 4, 8]  # the cells with centres inside


def test_ignore_regions():
    priors = torch.tensor([[0.0, 0, 10, 10], [10, 0, 20, 10], [40, 0, 50, 10], [60, 0, 70, 10]])
    gts = torch.tensor([[0.0, 0, 20, 10]])  # covers priors 0 and 1, IoU 0.5 each
    ignore = torch.tensor([[58.0, -2, 72, 12]])  # contains prior 3
    result = ATSSAssigner(topk=2, ignore_iof_thr=0.5).assign(priors, [4], gts, gt_bboxes_ignore=ignore)
    assert result.gt_inds.tolist() == [0, 0, NEGATIVE, IGNORE]
    disabled = ATSSAssigner(topk=2).assign(priors, [4], gts, gt_bboxes_ignore=ignore)
    assert disabled.gt_inds.tolist() == [0, 0, NEGATIVE, NEGATIVE]
    # without gts NanoDet answers "all negative" before it looks at ignore regions
    empty = ATSSAssigner(topk=2, ignore_iof_thr=0.5).assign(priors, [4], torch.zeros(0, 4), gt_bboxes_ignore=ignore)
    assert empty.gt_inds.tolist() == [NEGATIVE] * 4


def test_inputs_are_not_modified():
    priors = torch.cat(multilevel_grid_cells([(4, 4)], [8], 5))
    gts = torch.tensor([[4.0, 4, 20, 20]])
    priors_copy, gts_copy = priors.clone(), gts.clone()
    ATSSAssigner().assign(priors, [16], gts, gt_labels=torch.tensor([1]), num_classes=2)
    assert torch.equal(priors, priors_copy) and torch.equal(gts, gts_copy)


@pytest.mark.parametrize("gts, message", [
    (torch.zeros(3, 5), r"gt_bboxes must be Tensor\[M, 4\] xyxy, got shape \[3, 5\]"),
    (torch.zeros(2, 3, 4), r"gt_bboxes must be Tensor\[M, 4\] xyxy, got shape \[2, 3, 4\]"),
    (torch.tensor([[10.0, 0, 5, 5]]), r"gt_bboxes must be xyxy with x2 >= x1 and y2 >= y1"),
    (torch.tensor([[0.0, 0, float("nan"), 5]]), "gt_bboxes must be finite"),
])
def test_bad_gt_boxes(gts, message):
    priors = torch.cat(multilevel_grid_cells([(2, 2)], [8], 5))
    with pytest.raises(ValueError, match=message):
        ATSSAssigner().assign(priors, [4], gts)


def test_bad_labels_and_level_counts():
    priors = torch.cat(multilevel_grid_cells([(2, 2)], [8], 5))
    gts = torch.tensor([[0.0, 0, 8, 8]])
    with pytest.raises(ValueError, match=r"gt_labels must lie in \[0, 79\] \(num_classes=80\), got range \[80, 80\]"):
        ATSSAssigner().assign(priors, [4], gts, gt_labels=torch.tensor([80]))
    with pytest.raises(TypeError, match="gt_labels must be Tensor.*integer dtype"):
        ATSSAssigner().assign(priors, [4], gts, gt_labels=torch.tensor([1.0]))
    with pytest.raises(ValueError, match="num_level_bboxes must be non-negative counts summing to the 4 bboxes"):
        ATSSAssigner().assign(priors, [3], gts)
    with pytest.raises(ValueError, match="topk must be a positive integer"):
        ATSSAssigner(topk=0)
