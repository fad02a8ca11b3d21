"""The reference projects' own unit-test cases, run against detviz.

Only inputs and expected values come from mmdetection / NanoDet (each group names the file and
commit read); the test code is detviz's own. Where detviz deliberately differs from the
reference, the test pins detviz's behaviour and the comment says why.

gt index conventions: detviz's ``AssignResult.gt_inds`` is 0-based with NEGATIVE = -1 and
IGNORE = -2; mmdetection's is 1-based with 0 = negative and -1 = ignored. ``_mmdet_gt_inds``
converts detviz's results to mmdetection's convention before comparing.
"""
import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from detviz.assigners import BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, IGNORE, NEGATIVE, ATSSAssigner, Matcher
from detviz.boxes import bbox2distance, box_iof, box_iou, clip_boxes_to_image, distance2bbox
from detviz.coders import BoxCoder
from detviz.gfl.head import GFLHead, gfl_loss, loss_single
from detviz.gfl.targets import gfl_targets
from detviz.losses import distribution_focal_loss, giou_loss, quality_focal_loss, weight_reduce
from detviz.rcnn.roi_heads import RoIHeads
from detviz.rcnn.rpn import RegionProposalNetwork
from detviz.samplers import BalancedPositiveNegativeSampler

# The boxes shared by mmdetection's assigner and sampler tests.
PRIORS = torch.tensor([[0.0, 0, 10, 10], [10, 10, 20, 20], [5, 5, 15, 15], [32, 32, 38, 42]])
PRIORS_NEAR_IGNORE = torch.tensor([[0.0, 0, 10, 10], [10, 10, 20, 20], [5, 5, 15, 15], [30, 32, 40, 42]])
GT_BBOXES = torch.tensor([[0.0, 0, 10, 9], [0, 10, 10, 19]])
GT_LABELS = torch.tensor([2, 3])
GT_BBOXES_IGNORE = torch.tensor([[30.0, 30, 40, 40]])
NO_BOXES = torch.zeros(0, 4)
NO_LABELS = torch.zeros(0, dtype=torch.long)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _mmdet_gt_inds(gt_inds):
    """detviz 0-based gt_inds (NEGATIVE -1, IGNORE -2) -> mmdetection's 1-based (0 negative, -1 ignored)."""
    negative_or_ignored = torch.where(gt_inds == IGNORE, torch.full_like(gt_inds, -1), torch.zeros_like(gt_inds))
    return torch.where(gt_inds >= 0, gt_inds + 1, negative_or_ignored)


def _matches_as_mmdet_gt_inds(matches):
    """Matcher output -> mmdetection's MaxIoUAssigner gt_inds: a gt index becomes 1-based, below the
    low threshold is negative (0), between the thresholds is ignored (-1), as MaxIoUAssigner leaves it."""
    as_mmdet = matches + 1
    as_mmdet[matches == BELOW_LOW_THRESHOLD] = 0
    as_mmdet[matches == BETWEEN_THRESHOLDS] = -1
    return as_mmdet


def test_gt_index_conversion_helper():
    assert (NEGATIVE, IGNORE) == (-1, -2)
    assert _mmdet_gt_inds(torch.tensor([0, 1, NEGATIVE, IGNORE])).tolist() == [1, 2, 0, -1]
    assert _matches_as_mmdet_gt_inds(torch.tensor([0, 1, BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS])).tolist() == [
        1, 2, 0, -1]


# ---- ATSS assigner -----------------------------------------------------------------------------------------
# inputs and expected values: open-mmlab/mmdetection
#   tests/test_models/test_task_modules/test_assigners/test_atss_assigner.py @ 19bceba56284d440278e80cfde1d95460330ccbb
# (same cases at 0c5159285b4d69e75679c2e34a08415fe2bec8d8). NanoDet has no assigner test.

def test_atss_assigner():
    result = ATSSAssigner(topk=9).assign(PRIORS, [4], GT_BBOXES, gt_labels=GT_LABELS, num_classes=80)
    assert len(result.gt_inds) == 4 and len(result.labels) == 4
    assert _mmdet_gt_inds(result.gt_inds).tolist() == [1, 0, 0, 0]
    # Pinned difference: non-positive priors get the background label num_classes (here 80), where
    # mmdetection's AssignResult.labels holds -1; detviz's GFL targets use the label directly.
    assert result.labels.tolist() == [2, 80, 80, 80]
    # Pinned difference: max_overlaps is 0 for non-positives (mmdetection and NanoDet keep -INF there).
    assert_close(result.max_overlaps, torch.tensor([0.9, 0.0, 0.0, 0.0]))


@pytest.mark.parametrize("ignore_iof_thr", [-1.0, 0.5])
def test_atss_assigner_with_ignore(ignore_iof_thr):
    # The reference keeps ATSSAssigner's default ignore_iof_thr = -1 (as does detviz): the ignore
    # box then has no effect. With 0.5, prior 3 (IoF 0.8 with the ignore box), which is not positive either
    # way, becomes IGNORE (-1 in mmdetection's convention) instead of negative.
    result = ATSSAssigner(topk=9, ignore_iof_thr=ignore_iof_thr).assign(
        PRIORS_NEAR_IGNORE, [4], GT_BBOXES, gt_bboxes_ignore=GT_BBOXES_IGNORE, gt_labels=GT_LABELS)
    expected = [1, 0, 0, 0] if ignore_iof_thr < 0 else [1, 0, 0, -1]
    assert _mmdet_gt_inds(result.gt_inds).tolist() == expected


def test_atss_assigner_with_empty_gt():
    result = ATSSAssigner(topk=9).assign(PRIORS, [4], NO_BOXES, gt_labels=NO_LABELS)
    assert _mmdet_gt_inds(result.gt_inds).tolist() == [0, 0, 0, 0]
    # Pinned difference: the reference passes float labels (torch.empty(0)); detviz requires an
    # integer label tensor, even when it is empty.
    with pytest.raises(TypeError, match="integer dtype"):
        ATSSAssigner(topk=9).assign(PRIORS, [4], NO_BOXES, gt_labels=torch.empty(0))


def test_atss_assigner_with_empty_boxes():
    result = ATSSAssigner(topk=9).assign(NO_BOXES, [0], GT_BBOXES, gt_labels=GT_LABELS)
    assert len(result.gt_inds) == 0
    assert tuple(result.labels.shape) == (0,)


@pytest.mark.parametrize("ignore_iof_thr", [-1.0, 0.5])
def test_atss_assigner_with_empty_boxes_and_ignore(ignore_iof_thr):
    # The reference's ATSSAssigner keeps the default (-1); 0.5 switches the ignore test on as well.
    result = ATSSAssigner(topk=9, ignore_iof_thr=ignore_iof_thr).assign(
        NO_BOXES, [0], GT_BBOXES, gt_bboxes_ignore=GT_BBOXES_IGNORE, gt_labels=GT_LABELS)
    assert len(result.gt_inds) == 0
    assert tuple(result.labels.shape) == (0,)


def test_atss_assigner_with_empty_boxes_and_gt():
    result = ATSSAssigner(topk=9).assign(NO_BOXES, [0], NO_BOXES, gt_labels=NO_LABELS)
    assert len(result.gt_inds) == 0


# ---- MaxIoUAssigner cases on detviz's torchvision-style Matcher --------------------------------------------
# inputs and expected values: open-mmlab/mmdetection
#   tests/test_models/test_task_modules/test_assigners/test_max_iou_assigner.py
#   @ 19bceba56284d440278e80cfde1d95460330ccbb
# (the 2.x copies in tests/test_utils/test_assigner.py @ 0402bcda9b1b78279e79ff2dd3b4617a444ec50c are the same).
# MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.5) keeps its defaults min_pos_iou=0, match_low_quality=True
# and gt_max_assign_all=True: that is Matcher(0.5, 0.5, allow_low_quality_matches=True) (every gt's best
# priors, ties included, become positive) on the [M, N] IoU matrix.

def _max_iou_matcher():
    return Matcher(high_threshold=0.5, low_threshold=0.5, allow_low_quality_matches=True)


def _rpn_like_mmdet_max_iou():
    # RPN target assignment with the same thresholds; anchors come from the caller, so no generator/head.
    return RegionProposalNetwork(None, None, fg_iou_thresh=0.5, bg_iou_thresh=0.5, batch_size_per_image=10,
                                 positive_fraction=0.5, pre_nms_top_n=dict(training=10, testing=10),
                                 post_nms_top_n=dict(training=10, testing=10), nms_thresh=0.7)


def test_max_iou_assigner():
    # The reference runs this with neg_iou_thr=0.5 and with (0, 0.5); IoUs are never below 0, so both are
    # Matcher's low_threshold=0.5.
    matches = _max_iou_matcher()(box_iou(GT_BBOXES, PRIORS))
    assert len(matches) == 4
    # Prior 2 has IoU 0.15 with gt 1 only, and is gt 1's best prior: positive by the low-quality rule.
    assert _matches_as_mmdet_gt_inds(matches).tolist() == [1, 0, 2, 0]


def test_max_iou_assigner_with_ignore():
    # Pinned difference: the Matcher has no ignore regions (torchvision's Faster R-CNN has none), so
    # prior 3 stays background where mmdetection (ignore_iof_thr=0.5, ignore_wrt_candidates=False) gives -1.
    matches = _max_iou_matcher()(box_iou(GT_BBOXES, PRIORS_NEAR_IGNORE))
    assert _matches_as_mmdet_gt_inds(matches).tolist() == [1, 0, 2, 0]
    # detviz's box_iof measured against the ignore box's own area (ignore_wrt_candidates=False) picks out
    # exactly the prior mmdetection ignores; marking it as between-thresholds gives the reference's answer.
    iof = box_iof(GT_BBOXES_IGNORE, PRIORS_NEAR_IGNORE)[0]  # [N], intersection / area of the ignore box
    assert_close(iof, torch.tensor([0.0, 0.0, 0.0, 0.8]))
    matches[iof > 0.5] = BETWEEN_THRESHOLDS
    assert _matches_as_mmdet_gt_inds(matches).tolist() == [1, 0, 2, -1]


def test_max_iou_assigner_with_empty_gt():
    # Pinned difference: the Matcher refuses M = 0 (as torchvision's does); the heads handle images
    # without gts before matching, making every anchor background, which is the reference's [0, 0, 0, 0].
    with pytest.raises(ValueError, match="No ground-truth boxes"):
        _max_iou_matcher()(box_iou(NO_BOXES, PRIORS))
    labels, _ = _rpn_like_mmdet_max_iou().assign_targets_to_anchors([PRIORS], [dict(boxes=NO_BOXES)])
    assert labels[0].tolist() == [0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("ignore", [None, GT_BBOXES_IGNORE], ids=["empty_priors", "empty_boxes_and_ignore"])
def test_max_iou_assigner_with_empty_priors(ignore):
    # Pinned difference: with no priors mmdetection returns an empty result; the Matcher (like
    # torchvision's) raises instead. The ignore box of the second case has nothing to act on in detviz.
    with pytest.raises(ValueError, match="No proposal boxes"):
        _max_iou_matcher()(box_iou(GT_BBOXES, NO_BOXES))
    with pytest.raises(ValueError, match="No proposal boxes"):
        _rpn_like_mmdet_max_iou().assign_targets_to_anchors([NO_BOXES], [dict(boxes=GT_BBOXES)])


def test_max_iou_assigner_with_empty_priors_and_gt():
    # The Matcher alone raises (no gts); the RPN's assignment, which handles gt-less images first, returns
    # the reference's empty result.
    with pytest.raises(ValueError, match="No ground-truth boxes"):
        _max_iou_matcher()(box_iou(NO_BOXES, NO_BOXES))
    labels, matched = _rpn_like_mmdet_max_iou().assign_targets_to_anchors([NO_BOXES], [dict(boxes=NO_BOXES)])
    assert len(labels[0]) == 0 and matched[0].shape == (0, 4)


# ---- RandomSampler cases on the RoI heads' sampling --------------------------------------------------------
# inputs: open-mmlab/mmdetection tests/test_sampler.py @ 02fc94722ae8fe2e2e8bb0aa19af01e94a3dbc17
# (MaxIoUAssigner(0.5, 0.5, ignore_iof_thr=0.5) then RandomSampler(num=10, pos_fraction=0.5, neg_pos_ub=-1,
# add_gt_as_proposals=True)). The reference only checks len(pos_bboxes) == len(pos_inds); the counts asserted
# here follow from its inputs: mmdetection samples 4 positives (2 gts + priors 0 and 2) and 1 negative (prior 1).
# add_gt_as_proposals corresponds to RoIHeads.select_training_samples, which adds the gts to the proposals.

def _roi_heads():
    return RoIHeads(nn.Identity(), nn.Identity(), nn.Identity(), fg_iou_thresh=0.5, bg_iou_thresh=0.5,
                    batch_size_per_image=10, positive_fraction=0.5, bbox_reg_weights=None, score_thresh=0.05,
                    nms_thresh=0.5, detections_per_img=100)


def test_random_sampler():
    torch.manual_seed(0)
    samples = _roi_heads().select_training_samples([PRIORS], [dict(boxes=GT_BBOXES, labels=torch.tensor([1, 2]))])
    proposals, labels = samples.proposals[0], samples.labels[0]
    assert len(proposals) == len(labels) == len(samples.regression_targets[0])
    # Pinned differences, all torchvision's: (1) the RoI heads' Matcher has allow_low_quality_matches=False
    # (mmdetection's Faster R-CNN rcnn assigner also sets match_low_quality=False; the reference's
    # MaxIoUAssigner keeps True), so prior 2 (IoU 0.15) is background; (2) no ignore regions, so prior 3
    # is background; (3) the gts are appended after the proposals, not put first. Every candidate is
    # drawn (3 positives <= 5, 3 negatives <= 7), so the sample is the 4 priors then the 2 gts.
    assert_close(proposals, torch.cat([PRIORS, GT_BBOXES]))
    assert labels.tolist() == [1, 0, 0, 0, 1, 2]
    assert (int((labels > 0).sum()), int((labels == 0).sum())) == (3, 3)

    # The sampler itself on mmdetection's assignment of [gt0, gt1, priors...] (labels = gt class for
    # positives, 0 negatives, -1 ignored): RandomSampler's 4 positives and 1 negative.
    mmdet_labels = torch.tensor([1, 2, 1, 0, 2, -1])
    (pos,), (neg,) = BalancedPositiveNegativeSampler(10, 0.5)([mmdet_labels])
    assert torch.nonzero(pos).flatten().tolist() == [0, 1, 2, 4]
    assert torch.nonzero(neg).flatten().tolist() == [3]


def test_random_sampler_empty_gt():
    torch.manual_seed(0)
    samples = _roi_heads().select_training_samples([PRIORS], [dict(boxes=NO_BOXES, labels=NO_LABELS)])
    proposals, labels = samples.proposals[0], samples.labels[0]
    assert len(proposals) == len(labels) == len(samples.regression_targets[0])
    # As mmdetection: no positives, all 4 priors sampled as negatives.
    assert_close(proposals, PRIORS)
    assert labels.tolist() == [0, 0, 0, 0]


def test_random_sampler_empty_pred():
    torch.manual_seed(0)
    samples = _roi_heads().select_training_samples([NO_BOXES], [dict(boxes=GT_BBOXES, labels=torch.tensor([1, 2]))])
    proposals, labels = samples.proposals[0], samples.labels[0]
    assert len(proposals) == len(labels) == len(samples.regression_targets[0])
    # As mmdetection: the 2 gts added as proposals are the only samples, both positive.
    assert_close(proposals, GT_BBOXES)
    assert labels.tolist() == [1, 2]
    assert_close(samples.regression_targets[0], torch.zeros(2, 4))


# ---- DeltaXYWHBBoxCoder cases on BoxCoder((1, 1, 1, 1)) ----------------------------------------------------
# inputs and expected values: open-mmlab/mmdetection
#   tests/test_models/test_task_modules/test_coder/test_delta_xywh_bbox_coder.py
#   @ c3181321ff4510656286843e39683593afde70ff (test_delta_bbox_coder; the 2.x copy in tests/test_utils/test_coder.py
#   @ 304150d7ee12e5c6ed186ffe77bf70c630c75b3f has the same first two cases).
# DeltaXYWHBBoxCoder() has means 0 and stds 1, i.e. weights (1, 1, 1, 1), and since mmdetection 2.0 no "+1"
# in widths, as detviz. Its decode clips to max_shape; BoxCoder does not (torchvision clips in
# postprocessing), so detviz's equivalent is decode_single followed by clip_boxes_to_image.

ROIS = torch.tensor([[0.0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [5, 5, 5, 5]])
DELTAS = torch.tensor([[0.0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 2, -1], [0.7, -1.9, -0.5, 0.3]])
EXPECTED_DECODE = torch.tensor([[0.0000, 0.0000, 1.0000, 1.0000],
                                [0.1409, 0.1409, 2.8591, 2.8591],
                                [0.0000, 0.3161, 4.1945, 0.6839],
                                [5.0000, 5.0000, 5.0000, 5.0000]])


def _decode(deltas, rois):
    return BoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(deltas, rois)


def test_delta_bbox_coder():
    raw = _decode(DELTAS, ROIS)
    # Pinned difference: no clipping inside decode; row 2 runs off the image to the left.
    assert_close(raw[2, 0], torch.tensor(-3.1945), atol=1e-4, rtol=0)
    out = clip_boxes_to_image(raw, (32, 32))
    assert_close(out, EXPECTED_DECODE, atol=1e-4, rtol=0)

    # The batched case: two images of the same rois and deltas, decoded through the per-image list API.
    batch = BoxCoder((1.0, 1.0, 1.0, 1.0)).decode(DELTAS.repeat(2, 1), [ROIS, ROIS])  # [8, 1, 4]
    assert_close(clip_boxes_to_image(batch.reshape(2, 4, 4), (32, 32))[0], out)

    # No boxes in, no boxes out.
    assert _decode(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)


def test_delta_bbox_coder_add_ctr_clamp():
    # Reference: DeltaXYWHBBoxCoder(add_ctr_clamp=True, ctr_clamp=2) gives row 0 [0, 0, 27.1672, 27.1672].
    # Pinned difference: BoxCoder has no centre-shift clamp (torchvision has none); only dw, dh are clamped.
    # Row 0's centre moves by dx * w = 6 px instead of the clamped 2 px, so the clipped box ends 4 px
    # further right and down: 31.1672. The other rows do not reach the clamp and match the reference.
    rois = torch.tensor([[0.0, 0, 6, 6], [0, 0, 1, 1], [0, 0, 1, 1], [5, 5, 5, 5]])
    deltas = torch.tensor([[1.0, 1, 2, 2], [1, 1, 1, 1], [0, 0, 2, -1], [0.7, -1.9, -0.5, 0.3]])
    mmdet_expected = torch.tensor([[0.0000, 0.0000, 27.1672, 27.1672],
                                   [0.1409, 0.1409, 2.8591, 2.8591],
                                   [0.0000, 0.3161, 4.1945, 0.6839],
                                   [5.0000, 5.0000, 5.0000, 5.0000]])
    out = clip_boxes_to_image(_decode(deltas, rois), (32, 32))
    assert_close(out[1:], mmdet_expected[1:], atol=1e-4, rtol=0)
    assert_close(out[0], torch.tensor([0.0, 0.0, 31.1672, 31.1672]), atol=1e-4, rtol=0)
    assert_close(out[0, 2:] - mmdet_expected[0, 2:], torch.tensor([4.0, 4.0]), atol=1e-4, rtol=0)


def test_delta_bbox_coder_for_glip():
    # Reference: DeltaXYWHBBoxCoderForGLIP (same rois and deltas as above) keeps the legacy pixel offset:
    # its x2, y2 are 1 px smaller. Pinned difference: detviz has no offset (torchvision's convention);
    # subtracting 1 from x2, y2 before clipping reproduces the GLIP values.
    glip_expected = torch.tensor([[0.0000, 0.0000, 0.0000, 0.0000],
                                  [0.1409, 0.1409, 1.8591, 1.8591],
                                  [0.0000, 0.3161, 3.1945, 0.0000],
                                  [5.0000, 5.0000, 4.0000, 4.0000]])
    raw = _decode(DELTAS, ROIS)
    assert_close(clip_boxes_to_image(raw, (32, 32)), EXPECTED_DECODE, atol=1e-4, rtol=0)  # not the GLIP values
    legacy = clip_boxes_to_image(raw - torch.tensor([0.0, 0.0, 1.0, 1.0]), (32, 32))
    assert_close(legacy, glip_expected, atol=1e-4, rtol=0)


# ---- DistancePointBBoxCoder cases on bbox2distance / distance2bbox (GFL's ltrb coder) ----------------------
# inputs and expected values: open-mmlab/mmdetection tests/test_utils/test_coder.py
#   @ 304150d7ee12e5c6ed186ffe77bf70c630c75b3f (test_distance_point_bbox_coder)

def test_distance_point_bbox_coder():
    points = torch.tensor([[74.0, 61.0], [-29.0, 106.0], [138.0, 61.0], [29.0, 170.0]])
    gt_bboxes = torch.tensor([[74.0, 61.0, 75.0, 62.0], [0.0, 104.0, 0.0, 112.0],
                              [100.0, 90.0, 100.0, 120.0], [0.0, 120.0, 100.0, 120.0]])
    expected_distance = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 2.0, 29.0, 6.0],
                                      [38.0, 0.0, 0.0, 50.0], [29.0, 50.0, 50.0, 0.0]])
    assert_close(bbox2distance(points, gt_bboxes, max_dis=50, eps=0), expected_distance)

    distance = torch.tensor([[0.0, 0, 1.0, 1.0], [1.0, 2.0, 10.0, 6.0],
                             [22.0, -29.0, 138.0, 61.0], [54.0, -29.0, 170.0, 61.0]])
    assert_close(distance2bbox(points, distance, max_shape=(120, 100)), gt_bboxes)


# ---- Quality and Distribution Focal Loss -------------------------------------------------------------------
# inputs and expected values: RangiLyu/nanodet tests/test_models/test_loss/test_gfocal_loss.py
#   @ be9b4a9001d7f9b6fc89c2df31ae8d428e35b4f0
# NanoDet's loss modules reduce by mean (default) or sum; detviz returns per-element losses and leaves
# the reduction to weight_reduce: mean without avg_factor, and sum / 1 for "sum".

def test_qfl_zero_weight():
    g = _gen(0)
    label = torch.randint(0, 7, (10,), generator=g)
    score = torch.rand(10, generator=g)
    pred = torch.rand(10, 7, generator=g)
    weight = torch.zeros(10)
    loss = quality_focal_loss(pred, label, score)
    assert loss.shape == (10,) and bool((loss > 0).all())
    assert weight_reduce(loss, weight) == 0.0  # reduction "mean"
    assert weight_reduce(loss, weight, avg_factor=1.0) == 0.0  # reduction "sum"
    # NanoDet also checks QualityFocalLoss(use_sigmoid=False) is refused: detviz's QFL has no such switch,
    # it always applies the sigmoid to logits (checked against the BCE form in test_quality_focal_loss_*).


def test_dfl_zero_weight():
    g = _gen(1)
    pred = torch.rand(10, 7, generator=g)
    target = torch.rand(10, generator=g)
    weight = torch.zeros(10)
    loss = distribution_focal_loss(pred, target)
    assert loss.shape == (10,) and bool((loss > 0).all())
    assert weight_reduce(loss, weight) == 0.0
    assert weight_reduce(loss, weight, avg_factor=1.0) == 0.0


# inputs and expected values: open-mmlab/mmdetection tests/test_models/test_losses/test_loss.py
#   @ 0ee12d21402cec42af77c32db03dcff591592350 (test_QualityFocalLoss_Loss)

def _dense_qfl(prob, target, beta=2.0):
    """QFL over a dense [N, C] soft target, from probabilities: BCE(p, y) |y - p|^beta summed over classes."""
    bce = -(target * prob.log() + (1 - target) * (1 - prob).log())
    return (bce * (target - prob).abs().pow(beta)).sum(dim=1)


@pytest.mark.parametrize("activated", [False, True])
def test_quality_focal_loss_label_score_equals_dense_target(activated):
    g = _gen(2)
    pred = torch.rand(4, 5, generator=g, dtype=torch.float64)
    label = torch.tensor([0, 1, 2, 0])
    quality_label = torch.rand(4, generator=g, dtype=torch.float64)
    target = torch.nn.functional.one_hot(label, 5) * quality_label[:, None]  # the reference's dense form
    # mmdetection reduces QFL by the mean over priors; so does weight_reduce without avg_factor.
    if activated:
        # Pinned difference: mmdetection's activated=True takes probabilities; detviz's QFL takes logits
        # only, so the probabilities are passed as their logits.
        loss = weight_reduce(quality_focal_loss(torch.logit(pred), label, quality_label))
        expected = _dense_qfl(pred, target).mean()
    else:
        loss = weight_reduce(quality_focal_loss(pred, label, quality_label))
        expected = _dense_qfl(pred.sigmoid(), target).mean()
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0
    assert_close(loss, expected)


# ---- GIoU loss ---------------------------------------------------------------------------------------------
# inputs and expected values: open-mmlab/mmdetection tests/test_models/test_losses/test_loss.py
#   @ 0ee12d21402cec42af77c32db03dcff591592350 (test_iou_type_loss_zeros_weight, test_regression_losses: GIoULoss)
# and RangiLyu/nanodet tests/test_models/test_loss/test_iou_loss.py @ be9b4a9001d7f9b6fc89c2df31ae8d428e35b4f0
# (test_iou_type_loss_zeros_weight: GIoULoss; the other IoU losses are not re-implemented by detviz).
# Both references draw boxes with torch.rand((10, 4)), which gives x2 < x1 for most rows. Pinned
# difference: detviz rejects inverted boxes (in the GFL head the decoded boxes never are); the cases run
# on the same draws with each box's corners sorted.

def _rand_boxes(shape, generator):
    raw = torch.rand(shape, generator=generator)
    sorted_boxes = torch.cat([torch.minimum(raw[:, :2], raw[:, 2:]), torch.maximum(raw[:, :2], raw[:, 2:])], dim=1)
    return raw, sorted_boxes


def test_giou_loss_rejects_the_references_inverted_random_boxes():
    g = _gen(3)
    raw_pred, _ = _rand_boxes((10, 4), g)
    _, target = _rand_boxes((10, 4), g)
    assert bool(((raw_pred[:, 2] < raw_pred[:, 0]) | (raw_pred[:, 3] < raw_pred[:, 1])).any())
    with pytest.raises(ValueError, match="x2 >= x1"):
        giou_loss(raw_pred, target)


def test_giou_loss_zeros_weight():
    g = _gen(4)
    _, pred = _rand_boxes((10, 4), g)
    _, target = _rand_boxes((10, 4), g)
    loss = giou_loss(pred, target)
    assert weight_reduce(loss, torch.zeros(10)) == 0.0  # mmdetection and NanoDet
    assert weight_reduce(loss, torch.rand(10, generator=g)) != 0.0  # NanoDet's second check


@pytest.mark.parametrize("input_shape", [(10, 4), (0, 4)])
def test_giou_regression_loss(input_shape):
    g = _gen(5)
    _, pred = _rand_boxes(input_shape, g)
    _, target = _rand_boxes(input_shape, g)
    weight = torch.rand(input_shape, generator=g)
    loss = giou_loss(pred, target)
    assert loss.shape == input_shape[:1]
    # Pinned difference: mmdetection's GIoULoss averages an [N, 4] weight over its last axis itself;
    # weight_reduce wants one weight per element of the loss.
    with pytest.raises(ValueError, match="must have the shape of loss"):
        weight_reduce(loss, weight)
    for reduced in (weight_reduce(loss), weight_reduce(loss, weight.mean(-1)),
                    weight_reduce(loss, avg_factor=10), weight_reduce(loss, weight.mean(-1), avg_factor=10)):
        assert isinstance(reduced, torch.Tensor) and reduced.dim() == 0 and bool(torch.isfinite(reduced))
    # With avg_factor the mean is sum / avg_factor (mmdetection adds a float32 eps to the divisor).
    assert_close(weight_reduce(loss, avg_factor=10), loss.sum() / 10)
    if input_shape[0] == 0:
        # Pinned difference: an empty loss reduces to 0, not to the NaN of an empty mean.
        assert bool(torch.isnan(loss.mean()))
        assert weight_reduce(loss) == 0.0


# ---- GFL head loss with and without ground truth -----------------------------------------------------------
# inputs and expected values: open-mmlab/mmdetection tests/test_models/test_dense_heads/test_gfl_head.py
#   @ 12815281e9625c5e6de70bc8d9e3cae45e1380a6 (test_gfl_head_loss: 256 px, 4 classes, strides 8..128,
#   octave_base_scale 8, reg_max 16, QFL 1.0, GIoU 2.0, DFL 0.25; features of 64, 32, 16, 8, 4 cells).
# detviz's head is NanoDet-m's (depthwise towers) rather than mmdetection's GN towers; the loss under test
# only needs its outputs.

MMDET_SIZES = [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)]
MMDET_STRIDES = [8, 16, 32, 64, 128]


def _mmdet_gfl_outputs():
    torch.manual_seed(0)
    head = GFLHead(num_classes=4, in_channels=1, feat_channels=16, num_levels=5, reg_max=16)
    return head([torch.rand(1, 1, h, w) for h, w in MMDET_SIZES])


def _mmdet_gfl_losses(cls_scores, bbox_preds, gt_bboxes, gt_labels):
    targets = gfl_targets(MMDET_SIZES, MMDET_STRIDES, 8, [gt_bboxes], [gt_labels], num_classes=4)
    return targets, gfl_loss(cls_scores, bbox_preds, targets, MMDET_STRIDES, reg_max=16)


def test_mmdet_gfl_head_loss_empty_gt():
    cls_scores, bbox_preds = _mmdet_gfl_outputs()
    targets, losses = _mmdet_gfl_losses(cls_scores, bbox_preds, NO_BOXES, NO_LABELS)
    # As mmdetection: no box loss and no DFL without gts.
    assert losses["loss_bbox"].item() == 0 and losses["loss_dfl"].item() == 0
    # Pinned difference: mmdetection expects a non-zero classification loss here. detviz follows NanoDet:
    # when no image of the batch has a positive (the weight sum is 0) all three losses are 0, QFL included.
    assert losses["loss_qfl"].item() == 0
    # The QFL term mmdetection keeps is there before that rule: every level's background QFL is positive.
    per_level = [loss_single(targets.grid_cells[i], cls_scores[i], bbox_preds[i], targets.labels[i],
                             targets.label_weights[i], targets.bbox_targets[i], MMDET_STRIDES[i],
                             targets.num_total_pos, reg_max=16) for i in range(len(MMDET_STRIDES))]
    assert sum(s.loss_qfl for s in per_level).item() > 0
    assert all(s.loss_bbox.item() == 0 and s.loss_dfl.item() == 0 for s in per_level)


def test_mmdet_gfl_head_loss_one_gt():
    cls_scores, bbox_preds = _mmdet_gfl_outputs()
    _, losses = _mmdet_gfl_losses(cls_scores, bbox_preds, torch.tensor([[23.6667, 23.8757, 238.6326, 151.8874]]),
                                  torch.tensor([2]))
    assert losses["loss_qfl"].item() > 0, "cls loss should be non-zero"
    assert losses["loss_bbox"].item() > 0, "box loss should be non-zero"
    assert losses["loss_dfl"].item() > 0, "dfl loss should be non-zero"


# inputs and expected values: RangiLyu/nanodet tests/test_models/test_head/test_gfl_head.py
#   @ be9b4a9001d7f9b6fc89c2df31ae8d428e35b4f0 (test_gfl_head_loss: 320 px, 80 classes, input_channel 1,
#   feat_channels 96, stacked_convs 2, strides 8, 16, 32, GFLHead defaults octave_base_scale 4 and reg_max 16,
#   QFL 1.0, DFL 0.25, GIoU 2.0; the ignore box is inert with NanoDet's default ignore_iof_thr = -1).

NANODET_SIZES = [(40, 40), (20, 20), (10, 10)]
NANODET_STRIDES = [8, 16, 32]


def _nanodet_gfl_losses(gt_bboxes, gt_labels, gt_bboxes_ignore):
    torch.manual_seed(0)
    head = GFLHead(num_classes=80, in_channels=1, feat_channels=96, stacked_convs=2, num_levels=3, reg_max=16)
    cls_scores, bbox_preds = head([torch.rand(1, 1, h, w) for h, w in NANODET_SIZES])
    targets = gfl_targets(NANODET_SIZES, NANODET_STRIDES, 4, [gt_bboxes], [gt_labels], num_classes=80,
                          gt_bboxes_ignore_list=[gt_bboxes_ignore])
    return gfl_loss(cls_scores, bbox_preds, targets, NANODET_STRIDES, reg_max=16,
                    loss_weights=(1.0, 2.0, 0.25))


def test_nanodet_gfl_head_loss_empty_gt():
    losses = _nanodet_gfl_losses(NO_BOXES, NO_LABELS, NO_BOXES)
    assert losses["loss_qfl"].item() == 0
    assert losses["loss_bbox"].item() == 0, "there should be no box loss when there are no true boxes"
    assert losses["loss_dfl"].item() == 0, "there should be no dfl loss when there are no true boxes"


def test_nanodet_gfl_head_loss_one_gt():
    losses = _nanodet_gfl_losses(torch.tensor([[23.6667, 23.8757, 238.6326, 151.8874]]), torch.tensor([2]),
                                 torch.tensor([[29.6667, 29.8757, 244.6326, 160.8874]]))
    assert losses["loss_qfl"].item() > 0, "qfl loss should be non-zero"
    assert losses["loss_bbox"].item() > 0, "box loss should be non-zero"
    assert losses["loss_dfl"].item() > 0, "dfl loss should be non-zero"
    assert all(math.isfinite(v.item()) for v in losses.values())
