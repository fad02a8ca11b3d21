"""Tests for detviz.keypoints: centerness forms, gaussian heatmaps, point targets, losses, training."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from detviz.keypoints import (NO_OWNER, box_ray_distances, centernet_focal_loss, fcos_centerness, gaussian_heatmap,
                              keypoint_loss, keypoint_targets, polar_centerness)
from detviz.yolo.model import YOLOv3KeypointConfig, build_yolov3_keypoint

LN2 = math.log(2.0)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def targets_for(points, labels, size=(4, 4), stride=8, num_classes=2, sigma=1.0):
    return keypoint_targets([torch.tensor(points, dtype=torch.float32).view(-1, 2)], [torch.tensor(labels)],
                            featmap_size=size, stride=stride, num_classes=num_classes, sigma=sigma)


# ---- centerness ----

def test_fcos_centerness_hand_computed():
    ltrb = torch.tensor([[2.0, 1.0, 6.0, 3.0], [5.0, 5.0, 5.0, 5.0], [0.0, 2.0, 4.0, 2.0]])
    # (2/6) * (1/3) = 1/9 -> sqrt 1/3; the centre gives 1; a point on the left side gives 0
    assert_close(fcos_centerness(ltrb), torch.tensor([1 / 3, 1.0, 0.0]))
    assert_close(fcos_centerness(ltrb, sqrt=False), torch.tensor([1 / 9, 1.0, 0.0]))
    assert_close(fcos_centerness(torch.zeros(1, 4)), torch.zeros(1))  # 0 / 0 is 0, not NaN


def test_polar_centerness_on_box_rays():
    box = torch.tensor([0.0, 0.0, 10.0, 10.0])
    d = box_ray_distances(torch.tensor([[5.0, 5.0], [2.0, 5.0], [20.0, 5.0]]), box, num_rays=8)
    s2 = math.sqrt(2)
    assert_close(d[0], torch.tensor([5, 5 * s2, 5, 5 * s2, 5, 5 * s2, 5, 5 * s2]))
    assert_close(d[1], torch.tensor([8, 5 * s2, 5, 2 * s2, 2, 2 * s2, 5, 5 * s2]))
    assert_close(d[2], torch.zeros(8))  # outside the box
    # centre of a square: min / max = 5 / (5 sqrt 2)
    assert_close(polar_centerness(d[:2], sqrt=False), torch.tensor([1 / s2, 2 / 8]))
    assert_close(polar_centerness(d[:2]), torch.tensor([2 ** -0.25, 0.5]))
    assert_close(polar_centerness(d[2:]), torch.zeros(1))


def test_centerness_bad_input():
    with pytest.raises(ValueError, match="ltrb must be >= 0"):
        fcos_centerness(torch.tensor([[-1.0, 1.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match=r"\[N, 4\] ltrb"):
        fcos_centerness(torch.ones(3, 2))
    with pytest.raises(ValueError, match=r"R >= 1 and values >= 0"):
        polar_centerness(torch.zeros(2, 0))
    with pytest.raises(ValueError, match=r"\[4\] xyxy"):
        box_ray_distances(torch.zeros(1, 2), torch.zeros(1, 4))


# ---- heatmap and targets ----

def test_gaussian_heatmap_values():
    # stride 8: the point (12, 20) is the centre of cell (col 1, row 2)
    heat = gaussian_heatmap(torch.tensor([[12.0, 20.0]]), (5, 5), 8, sigma=1.0)
    assert heat[2, 1] == 1
    assert_close(heat[2, 2], torch.tensor(math.exp(-0.5)))
    assert_close(heat[3, 2], torch.tensor(math.exp(-1.0)))
    assert_close(heat[2, 4], torch.tensor(math.exp(-4.5)))  # exactly 3 sigma away: kept
    assert heat[1, 4] == 0 and heat[0, 4] == 0  # sqrt(10) and sqrt(13) sigma away: cut, though exp(-5) > 0
    assert_close(gaussian_heatmap(torch.zeros(0, 2), (2, 3), 8), torch.zeros(2, 3))
    # two points: max, not sum
    two = gaussian_heatmap(torch.tensor([[12.0, 20.0], [20.0, 20.0]]), (5, 5), 8)
    assert_close(two[2, 1:3], torch.tensor([1.0, 1.0]))


def test_targets_best_centerness_wins_the_cell():
    # both points fall in cell (col 1, row 1) of stride 8; the second is closer to the centre (12, 12)
    t = targets_for([[9.0, 9.0], [13.0, 11.0]], [0, 1])
    assert t.owner[0, 1, 1] == 1 and int(t.pos_mask.sum()) == 1
    assert_close(t.xy[0, 1, 1], torch.tensor([5 / 8, 3 / 8]))
    assert_close(t.cls[0, 1, 1], torch.tensor([0.0, 1.0]))
    # a tie keeps the lower index
    tie = targets_for([[11.0, 12.0], [13.0, 12.0]], [1, 0])
    assert tie.owner[0, 1, 1] == 0


def test_targets_on_cell_borders_and_edges():
    t = targets_for([[16.0, 8.0], [32.0, 32.0]], [0, 1])
    # x = 16 is the border of columns 1 and 2: column 2 with offset 0; (32, 32) is the corner: last cell, offset 1
    assert t.owner[0, 1, 2] == 0 and t.owner[0, 3, 3] == 1
    assert_close(t.xy[0, 1, 2], torch.tensor([0.0, 0.0]))
    assert_close(t.xy[0, 3, 3], torch.tensor([1.0, 1.0]))
    assert float(t.xy.min()) >= 0 and float(t.xy.max()) <= 1


def test_targets_empty_image_and_batch():
    t = keypoint_targets([torch.zeros(0, 2), torch.tensor([[4.0, 4.0]])],
                         [torch.zeros(0, dtype=torch.int64), torch.tensor([1])],
                         featmap_size=(2, 3), stride=8, num_classes=2)
    assert t.xy.shape == (2, 2, 3, 2) and t.cls.shape == (2, 2, 3, 2) and t.centerness.shape == (2, 2, 3)
    assert not t.pos_mask[0].any() and bool((t.owner[0] == NO_OWNER).all())
    assert t.centerness[0].count_nonzero() == 0 and t.centerness[1, 0, 0] == 1


def test_targets_bad_input():
    with pytest.raises(ValueError, match="inside the input"):
        targets_for([[40.0, 4.0]], [0])
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        targets_for([[4.0, 4.0]], [2])
    with pytest.raises(ValueError, match=r"\[M, 2\] xy"):
        keypoint_targets([torch.zeros(1, 3)], [torch.tensor([0])], featmap_size=(2, 2), stride=8, num_classes=1)
    with pytest.raises(TypeError, match="one Tensor per image"):
        keypoint_targets(torch.zeros(1, 2), [torch.tensor([0])], featmap_size=(2, 2), stride=8, num_classes=1)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        gaussian_heatmap(torch.zeros(1, 2), (2, 2), 8, sigma=0.0)


# ---- losses ----

def test_centernet_focal_loss_hand_computed():
    logits = torch.zeros(3)
    heat = torch.tensor([1.0, 0.5, 0.0])
    pos = torch.tensor([True, False, False])
    # pos: -(1 - 0.5)^2 ln 0.5; neg: -(1 - y)^4 * 0.5^2 * ln 0.5
    expected = torch.tensor([0.25 * LN2, 0.5**4 * 0.25 * LN2, 0.25 * LN2])
    assert_close(centernet_focal_loss(logits, heat, pos), expected)


def test_keypoint_loss_hand_computed_and_normalised():
    t = targets_for([[12.0, 12.0], [28.0, 4.0]], [0, 1])  # two positives
    reg, cls = torch.zeros(1, 4, 4, 2), torch.zeros(1, 4, 4, 3)
    losses = keypoint_loss(reg, cls, t)
    assert_close(losses["loss_xy"], torch.tensor(4 * LN2 / 2))  # BCE(0, y) = ln 2 for every target y
    assert_close(losses["loss_cls"], torch.tensor(4 * LN2 / 2))
    assert_close(losses["loss_centerness"], torch.tensor(16 * LN2 / 2))
    l2 = keypoint_loss(reg, cls, t, centerness_loss="l2")["loss_centerness"]
    assert_close(l2, ((0.5 - t.centerness) ** 2).sum() / 2)
    focal = keypoint_loss(reg, cls, t, centerness_loss="focal")["loss_centerness"]
    assert_close(focal, centernet_focal_loss(cls[..., -1], t.centerness, t.pos_mask).sum() / 2)


def test_keypoint_loss_without_points():
    t = keypoint_targets([torch.zeros(0, 2)], [torch.zeros(0, dtype=torch.int64)], featmap_size=(2, 2), stride=8,
                         num_classes=1)
    losses = keypoint_loss(torch.zeros(1, 2, 2, 2), torch.full((1, 2, 2, 2), -2.0), t)
    assert losses["loss_xy"] == 0 and losses["loss_cls"] == 0
    assert_close(losses["loss_centerness"], 4 * F.softplus(torch.tensor(-2.0)))  # divided by max(0, 1)


def test_keypoint_loss_bad_input():
    t = targets_for([[12.0, 12.0]], [0])
    with pytest.raises(ValueError, match=r"cls Tensor\[1, 4, 4, 3\]"):
        keypoint_loss(torch.zeros(1, 4, 4, 2), torch.zeros(1, 4, 4, 2), t)
    with pytest.raises(ValueError, match="centerness_loss must be one of"):
        keypoint_loss(torch.zeros(1, 4, 4, 2), torch.zeros(1, 4, 4, 3), t, centerness_loss="wce")


@pytest.mark.parametrize("head,centerness_loss", [("separated", "bce"), ("shared", "focal")])
def test_few_sgd_steps_reduce_the_keypoint_loss(head, centerness_loss):
    torch.manual_seed(0)
    model = build_yolov3_keypoint(YOLOv3KeypointConfig(num_classes=2, initial_filters=8, head=head))
    images = torch.rand(2, 3, 64, 64)
    points = [torch.tensor([[10.0, 12.0], [40.0, 50.0]]), torch.tensor([[33.0, 20.0]])]
    labels = [torch.tensor([0, 1]), torch.tensor([1])]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(6):
        total = 0
        for (reg, cls), stride in zip(model(images), (32, 16, 8)):
            t = keypoint_targets(points, labels, featmap_size=reg.shape[1:3], stride=stride, num_classes=2)
            total = total + sum(keypoint_loss(reg, cls, t, centerness_loss=centerness_loss).values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
    assert history[-1] < 0.9 * history[0], history


@pytest.mark.parametrize("kwargs, message", [
    (dict(featmap_size=(8, 8), stride=0), "stride must be a positive number"),
    (dict(featmap_size=(0, 8), stride=8), r"featmap_size must be \(H, W\) with positive integers"),
])
def test_keypoint_targets_reject_bad_grids(kwargs, message):
    with pytest.raises(ValueError, match=message):
        keypoint_targets([torch.tensor([[4.0, 4.0]])], [torch.tensor([0])], num_classes=2, **kwargs)
