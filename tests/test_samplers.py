import copy

import pytest
import torch
from torch import nn
from torch.testing import assert_close
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler as TVSampler
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.ops import MultiScaleRoIAlign

from detviz.anchors import AnchorGenerator
from detviz.assigners import Matcher
from detviz.coders import BoxCoder
from detviz.samplers import BalancedPositiveNegativeSampler, subsample_labels

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
LABELS = torch.tensor([0] * 6 + [1] * 3 + [-1] * 2)  # 6 negatives, 3 positives, 2 ignored


def _random_labels(n, generator, num_classes=3, dtype=torch.int64):
    # Mostly background, some positives of several classes, some ignored (-1).
    draw = torch.rand(n, generator=generator)
    labels = torch.randint(1, num_classes + 1, (n,), generator=generator)
    labels = torch.where(draw < 0.75, torch.zeros_like(labels), labels)
    return torch.where(draw > 0.95, torch.full_like(labels, -1), labels).to(dtype)


@pytest.mark.parametrize("seed", range(5))
def test_hand_example_one_positive_three_negatives(seed):
    torch.manual_seed(seed)
    (pos,), (neg,) = BalancedPositiveNegativeSampler(4, 0.25)([LABELS])
    assert pos.dtype == neg.dtype == torch.uint8
    assert (int(pos.sum()), int(neg.sum())) == (1, 3)
    assert_close(pos.bool() & (LABELS != 1), torch.zeros(11, dtype=torch.bool))  # only positives
    assert_close(neg.bool() & (LABELS != 0), torch.zeros(11, dtype=torch.bool))  # only negatives


def test_missing_positives_are_made_up_with_negatives_and_never_the_reverse():
    torch.manual_seed(0)
    pos_idx, neg_idx = subsample_labels(LABELS, num_samples=8, positive_fraction=0.5)  # wants 4 pos, has 3
    assert (len(pos_idx), len(neg_idx)) == (3, 5)
    pos_idx, neg_idx = subsample_labels(LABELS, num_samples=100, positive_fraction=0.9)  # wants 90 pos, 10 neg
    assert (len(pos_idx), len(neg_idx)) == (3, 6)
    assert_close(pos_idx.sort().values, torch.tensor([6, 7, 8]))
    pos_idx, neg_idx = subsample_labels(torch.tensor([-1, -1]), num_samples=4, positive_fraction=0.5)
    assert (len(pos_idx), len(neg_idx)) == (0, 0)


def test_positive_count_is_truncated_like_torchvision():
    torch.manual_seed(0)
    pos_idx, neg_idx = subsample_labels(torch.tensor([1] * 5 + [0] * 5), num_samples=5, positive_fraction=0.5)
    assert (len(pos_idx), len(neg_idx)) == (2, 3)  # int(2.5) = 2


@pytest.mark.parametrize("seed", [0, 1, 7, 123, 2024])
@pytest.mark.parametrize("dtype", [torch.int64, torch.float32])  # RoI heads pass int labels, the RPN floats
@pytest.mark.parametrize("settings", [(256, 0.5), (512, 0.25), (4, 0.25)])
@pytest.mark.parametrize("device", DEVICES)
def test_same_draws_as_torchvision_after_manual_seed(seed, dtype, settings, device):
    generator = torch.Generator().manual_seed(seed)
    labels = [_random_labels(n, generator, dtype=dtype).to(device) for n in (3000, 40, 0, 700)]
    labels[1] = labels[1].clamp(max=0)  # an image with no positive

    torch.manual_seed(seed)
    expected_pos, expected_neg = TVSampler(*settings)(labels)
    expected_next = torch.rand(3)
    torch.manual_seed(seed)
    got_pos, got_neg = BalancedPositiveNegativeSampler(*settings)(labels)
    assert_close(torch.rand(3), expected_next)  # the same number of draws was consumed
    for got, expected in zip(got_pos + got_neg, expected_pos + expected_neg):
        assert got.dtype == torch.uint8 and got.device == expected.device
        assert_close(got, expected, rtol=0, atol=0)


def _tiny_faster_rcnn():
    """The tutorial's single-map Faster R-CNN shape (15 anchors per cell) on a 2-layer backbone."""
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=16, padding=1), nn.ReLU())
    backbone.out_channels = 8
    return FasterRCNN(backbone, num_classes=3, min_size=128, max_size=192,
                      rpn_anchor_generator=TVAnchorGenerator(((32, 64, 128, 256, 512),), ((0.5, 1.0, 2.0),)),
                      box_roi_pool=MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2),
                      rpn_batch_size_per_image=64, box_batch_size_per_image=32)


def _with_detviz_parts(model):
    """Copy of a torchvision Faster R-CNN whose anchors, matchers, coders and samplers are detviz's."""
    ours = copy.deepcopy(model)
    rpn, roi = ours.rpn, ours.roi_heads
    rpn.anchor_generator = AnchorGenerator(((32, 64, 128, 256, 512),), ((0.5, 1.0, 2.0),))
    rpn.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    rpn.proposal_matcher = Matcher(0.7, 0.3, allow_low_quality_matches=True)
    rpn.fg_bg_sampler = BalancedPositiveNegativeSampler(64, 0.5)
    roi.box_coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    roi.proposal_matcher = Matcher(0.5, 0.5, allow_low_quality_matches=False)
    roi.fg_bg_sampler = BalancedPositiveNegativeSampler(32, 0.25)
    return ours


def test_faster_rcnn_with_detviz_parts_matches_torchvision():
    torch.manual_seed(0)
    model = _tiny_faster_rcnn()
    ours = _with_detviz_parts(model)
    ours.load_state_dict(model.state_dict(), strict=True)
    images = [torch.rand(3, 120, 150), torch.rand(3, 100, 170)]
    targets = [dict(boxes=torch.tensor([[10.0, 20, 80, 90], [60, 30, 140, 110]]), labels=torch.tensor([1, 2])),
               dict(boxes=torch.tensor([[5.0, 5, 50, 95]]), labels=torch.tensor([2]))]
    model.train(), ours.train()
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        expected = model(images, targets)
        torch.manual_seed(seed)
        got = ours(images, targets)
        assert got.keys() == expected.keys()
        for name in expected:
            assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)
    model.eval(), ours.eval()
    with torch.no_grad():
        for got, expected in zip(ours(images), model(images)):
            for name in ("boxes", "scores", "labels"):
                assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)


def test_bad_inputs():
    with pytest.raises(ValueError, match="batch_size_per_image must be a non-negative integer, got 2.5"):
        BalancedPositiveNegativeSampler(2.5, 0.5)
    with pytest.raises(ValueError, match=r"positive_fraction must lie in \[0, 1\], got 1.5"):
        BalancedPositiveNegativeSampler(256, 1.5)
    sampler = BalancedPositiveNegativeSampler(4, 0.25)
    with pytest.raises(TypeError, match=r"matched_idxs must be a list of Tensor\[N_i\] labels, one per image, got Tensor"):
        sampler(LABELS)
    with pytest.raises(ValueError, match=r"matched_idxs\[1\] must be Tensor\[N\] labels, got shape \[2, 3\]"):
        sampler([LABELS, torch.zeros(2, 3)])
