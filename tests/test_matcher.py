import pytest
import torch
from torch.testing import assert_close
from torchvision.models.detection._utils import Matcher as TVMatcher
from torchvision.ops import box_iou

from detviz.assigners import BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, Matcher

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# 3 gts x 4 predictions. Best per prediction: 0.9 (gt 0), 0.5 (gt 1), 0.25 (gt 1), 0.2 (gt 2).
# gt 2's best IoU, 0.2, is tied between predictions 1 and 3.
IOU = torch.tensor([[0.9, 0.2, 0.1, 0.0],
                    [0.1, 0.5, 0.25, 0.0],
                    [0.0, 0.2, 0.1, 0.2]])


def _random_iou(num_gts, num_preds, seed, quantize=False):
    generator = torch.Generator().manual_seed(seed)

    def boxes(n):
        xy = torch.rand(n, 2, generator=generator) * 100
        return torch.cat([xy, xy + 5 + torch.rand(n, 2, generator=generator) * 60], dim=1)

    iou = box_iou(boxes(num_gts), boxes(num_preds))  # [M, N]
    return (iou * 4).round() / 4 if quantize else iou  # quantised: many ties


def test_sentinels():
    assert (BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS) == (-1, -2)
    assert (Matcher.BELOW_LOW_THRESHOLD, Matcher.BETWEEN_THRESHOLDS) == (TVMatcher.BELOW_LOW_THRESHOLD,
                                                                         TVMatcher.BETWEEN_THRESHOLDS)


def test_hand_made_matrix_without_low_quality_matches():
    matches = Matcher(0.7, 0.3)(IOU)
    assert matches.dtype == torch.int64
    assert_close(matches, torch.tensor([0, BETWEEN_THRESHOLDS, BELOW_LOW_THRESHOLD, BELOW_LOW_THRESHOLD]))


def test_hand_made_matrix_with_low_quality_matches():
    steps = Matcher(0.7, 0.3, allow_low_quality_matches=True).match_with_steps(IOU)
    assert_close(steps.matched_vals, torch.tensor([0.9, 0.5, 0.25, 0.2]))
    assert_close(steps.all_matches, torch.tensor([0, 1, 1, 2]))
    assert_close(steps.below_low_threshold, torch.tensor([False, False, True, True]))
    assert_close(steps.between_thresholds, torch.tensor([False, True, False, False]))
    # Predictions 1 and 3 are gt 2's (tied) best. Prediction 1 gets back its own best, gt 1, not gt 2.
    assert_close(steps.low_quality, torch.tensor([True, True, False, True]))
    assert_close(steps.matches, torch.tensor([0, 1, BELOW_LOW_THRESHOLD, 2]))


def test_steps_without_low_quality_matches_flag_nothing():
    steps = Matcher(0.7, 0.3).match_with_steps(IOU)
    assert not steps.low_quality.any()
    assert_close(steps.matches, Matcher(0.7, 0.3)(IOU))


def test_equal_thresholds_make_the_boundary_positive():
    # RoI heads use 0.5 / 0.5: no ignore band, and IoU exactly 0.5 is a match.
    iou = torch.tensor([[0.5, 0.49, 0.51]])
    assert_close(Matcher(0.5, 0.5)(iou), torch.tensor([0, BELOW_LOW_THRESHOLD, 0]))


@pytest.mark.parametrize("allow_low_quality_matches", [False, True])
@pytest.mark.parametrize("thresholds", [(0.7, 0.3), (0.5, 0.5), (0.6, 0.4)])
@pytest.mark.parametrize("shape,quantize", [((1, 1), False), ((3, 50), False), ((12, 400), False),
                                            ((7, 300), True), ((40, 5), True)])
@pytest.mark.parametrize("device", DEVICES)
def test_matches_torchvision(allow_low_quality_matches, thresholds, shape, quantize, device):
    for seed in range(3):
        iou = _random_iou(*shape, seed=seed, quantize=quantize).to(device)
        original = iou.clone()
        expected = TVMatcher(*thresholds, allow_low_quality_matches)(iou)
        got = Matcher(*thresholds, allow_low_quality_matches)(iou)
        assert got.device == iou.device
        assert_close(got, expected, rtol=0, atol=0)
        assert_close(iou, original, rtol=0, atol=0)  # input untouched


def test_empty_inputs_raise_like_torchvision():
    matcher = Matcher(0.7, 0.3)
    with pytest.raises(ValueError, match="No ground-truth boxes available .* M = 0"):
        matcher(torch.zeros(0, 5))
    with pytest.raises(ValueError, match="No proposal boxes available .* N = 0"):
        matcher(torch.zeros(3, 0))


def test_bad_inputs():
    with pytest.raises(ValueError, match="low_threshold must be <= high_threshold, got low=0.7 and high=0.3"):
        Matcher(0.3, 0.7)
    with pytest.raises(TypeError, match=r"match_quality_matrix must be Tensor\[M, N\] .* got list"):
        Matcher(0.7, 0.3)([[0.5]])
    with pytest.raises(ValueError, match=r"match_quality_matrix must be Tensor\[M, N\] .* got shape \[4\]"):
        Matcher(0.7, 0.3)(torch.zeros(4))
