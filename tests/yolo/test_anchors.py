"""Tests for detviz.yolo.anchors: shape-only IoU, the COCO anchors and masks, k-means anchors."""
import pytest
import torch
from torch.testing import assert_close

from detviz.fixtures import load_trace
from detviz.yolo.anchors import ANCHOR_MASKS, COCO_ANCHORS, best_anchors, kmeans_anchors, level_anchors, wh_iou

TRACE = load_trace("seed004_yolov3")

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


ANCHORS = torch.tensor(COCO_ANCHORS)


def test_wh_iou_hand_computed():
    # (2, 2) vs (1, 4): inter 1 * 2 = 2, union 4 + 4 - 2 = 6
    assert_close(wh_iou(torch.tensor([[2.0, 2.0]]), torch.tensor([[1.0, 4.0], [2.0, 2.0], [4.0, 4.0]])),
                 torch.tensor([[1 / 3, 1.0, 0.25]]))


def test_coco_anchors_and_masks():
    assert ANCHORS.shape == (TRACE["anchors.num_coco"], 2)
    assert torch.all(ANCHORS.prod(1)[1:] >= ANCHORS.prod(1)[:-1] * 0.5)  # roughly small to large
    assert_close(level_anchors(0), torch.tensor([[116.0, 90.0], [156.0, 198.0], [373.0, 326.0]]))
    assert [ANCHOR_MASKS.index(m) for m in sorted(ANCHOR_MASKS)] == TRACE["anchors.level_order"]
    idx, iou = best_anchors(torch.tensor([[10.0, 13.0], [400.0, 300.0]]), ANCHORS)
    assert idx.tolist() == [0, 8] and iou[0] == 1


def test_kmeans_is_deterministic_and_finds_clusters():
    g = torch.Generator().manual_seed(3)
    centres = torch.tensor([[10.0, 10.0], [40.0, 20.0], [100.0, 120.0]])
    wh = (centres[:, None, :] * (1 + 0.05 * torch.randn(3, 40, 2, generator=g))).reshape(-1, 2)
    first, second = kmeans_anchors(wh, k=3, seed=1), kmeans_anchors(wh, k=3, seed=1)
    assert_close(first.anchors, second.anchors)
    assert_close(first.anchors, centres, rtol=0.1, atol=0)
    assert torch.equal(first.assignment, torch.arange(3).repeat_interleave(40))
    assert first.mean_iou > 0.85 and first.iterations < 300
    mean = kmeans_anchors(wh, k=3, seed=1, center="mean")
    assert_close(mean.anchors, centres, rtol=0.1, atol=0)


def test_kmeans_bad_input():
    with pytest.raises(ValueError, match=r"k must be an int in \[1, N=2\]"):
        kmeans_anchors(torch.ones(2, 2), k=3)
    with pytest.raises(ValueError, match="positive"):
        kmeans_anchors(torch.tensor([[1.0, 0.0], [2.0, 2.0]]), k=1)
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        kmeans_anchors(torch.ones(4, 4), k=1)
