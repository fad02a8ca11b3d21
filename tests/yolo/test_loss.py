"""Tests for detviz.yolo.loss: per-level terms by hand, the ignore mask, level sums, CIoU, a few SGD steps."""
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.ops as tv_ops
from torch.testing import assert_close

from detviz.boxes import complete_box_iou
from detviz.yolo.anchors import level_anchors
from detviz.yolo.loss import (aligned_complete_box_iou, ciou_loss, gt_boxes_from_y_true, ignore_mask, yolo_loss,
                              yolo_loss_per_level)
from detviz.yolo.model import YOLOv3Config, build_yolov3
from detviz.yolo.targets import build_targets

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


LN2 = math.log(2.0)


def one_cell_case(raw_values=None):
    """Input 32x32, one 1x1 level, one 16x16 anchor, one class; the gt is the centred 16x16 box."""
    y = torch.tensor([0.5, 0.5, 0.5, 0.5, 1.0, 1.0]).view(1, 1, 1, 1, 6)
    raw = torch.zeros(1, 1, 1, 1, 6) if raw_values is None else torch.tensor(raw_values).view(1, 1, 1, 1, 6)
    gts = [torch.tensor([[8.0, 8.0, 24.0, 24.0]])]
    return yolo_loss_per_level(raw, y, torch.tensor([[16.0, 16.0]]), (32, 32), gts)


def test_loss_terms_hand_computed():
    terms = one_cell_case()
    scale = 2 - 0.25
    assert_close(terms.box_loss_scale.flatten(), torch.tensor([scale]))
    assert_close(terms.loss_xy.flatten(), torch.tensor([scale * LN2] * 2))  # BCE(logit 0, target 0.5) = ln 2
    assert_close(terms.loss_wh.flatten(), torch.zeros(2))  # exp(0) * 16 = 16: exact size
    assert_close(terms.loss_conf.flatten(), torch.tensor([LN2]))
    assert_close(terms.loss_cls.flatten(), torch.tensor([LN2]))
    assert_close(terms.loss_ciou.flatten(), torch.zeros(1), atol=1e-6, rtol=0)  # decoded box == gt
    # tw = ln 2: twice as wide -> 0.5 * scale * (0 - ln 2)^2
    wide = one_cell_case([0.0, 0.0, LN2, 0.0, 0.0, 0.0])
    assert_close(wide.loss_wh.flatten(), torch.tensor([scale * 0.5 * LN2**2, 0.0]))


def test_ignore_mask_hand_computed():
    # 32x32 input, 2x2 level (stride 16), anchor 16x16. gt [4, 0, 20, 16] sits in cell (0, 0).
    # Cell (0, 1) with tx -> -inf predicts [8, 0, 24, 16]: IoU 192 / 320 = 0.6 with the gt.
    y = torch.zeros(1, 2, 2, 1, 6)
    y[0, 0, 0, 0] = torch.tensor([12 / 32, 8 / 32, 16 / 32, 16 / 32, 1.0, 1.0])
    raw = torch.zeros(1, 2, 2, 1, 6)
    raw[0, 0, 1, 0, 0] = -30.0
    raw[..., 4] = 1.0
    gts = [torch.tensor([[4.0, 0.0, 20.0, 16.0]])]
    anchors = torch.tensor([[16.0, 16.0]])
    terms = yolo_loss_per_level(raw, y, anchors, (32, 32), gts, ignore_thresh=0.5)
    assert terms.ignore_mask[0, :, :, 0].tolist() == [[0.0, 0.0], [1.0, 1.0]]  # (0, 0) has IoU 0.6 too
    bce0 = F.softplus(torch.tensor(1.0))  # BCE(logit 1, target 0)
    assert_close(terms.loss_conf[0, :, :, 0], torch.stack([torch.stack([F.softplus(torch.tensor(-1.0)),
                                                                        torch.tensor(0.0)]), bce0.repeat(2)]))
    loose = yolo_loss_per_level(raw, y, anchors, (32, 32), gts, ignore_thresh=0.7)
    assert_close(loose.loss_conf[0, 0, 1, 0], bce0)
    assert_close(ignore_mask(terms.decoded.boxes, [torch.zeros(0, 4)]), torch.ones(1, 2, 2, 1))


def test_loss_empty_gt_is_pure_background():
    torch.manual_seed(0)
    t = build_targets([torch.zeros(0, 4)] * 2, [torch.zeros(0, dtype=torch.int64)] * 2, input_size=(64, 64),
                      num_classes=2)
    outs = [torch.randn(y.shape) for y in t.y_true]
    losses = yolo_loss(outs, t.y_true, input_size=(64, 64))
    assert [losses[k].item() for k in ("loss_xy", "loss_wh", "loss_cls")] == [0.0, 0.0, 0.0]
    expected = sum(F.softplus(o[..., 4]).sum() for o in outs) / 2
    assert_close(losses["loss_conf"], expected)
    assert gt_boxes_from_y_true(t.y_true, (64, 64))[0].shape == (0, 4)


def test_loss_sums_levels_and_divides_by_batch():
    torch.manual_seed(0)
    t = build_targets([torch.tensor([[0.0, 0.0, 30.0, 40.0]]), torch.tensor([[20.0, 10.0, 60.0, 30.0]])],
                      [torch.tensor([0]), torch.tensor([1])], input_size=(64, 64), num_classes=2)
    outs = [torch.randn(y.shape) for y in t.y_true]
    losses = yolo_loss(outs, t.y_true, input_size=(64, 64))
    gts = gt_boxes_from_y_true(t.y_true, (64, 64))
    by_hand = 0
    for level, (o, y) in enumerate(zip(outs, t.y_true)):
        by_hand = by_hand + yolo_loss_per_level(o, y, level_anchors(level), (64, 64), gts).loss_cls.sum()
    assert_close(losses["loss_cls"], by_hand / 2)


def test_ignore_from_image_vs_level():
    # a 300x300 gt goes to level 0; on level 2 a prediction that reproduces it is ignored only
    # when the ignore mask looks at every gt of the image
    t = build_targets([torch.tensor([[50.0, 50.0, 350.0, 350.0]], dtype=torch.float64)], [torch.tensor([0])],
                      input_size=(416, 416), num_classes=1)  # float64: the difference of two sums of 10647 terms
    outs = [torch.zeros(y.shape, dtype=torch.float64) for y in t.y_true]
    outs[2][0, 25, 25, 2, 2:4] = torch.log(torch.tensor([300.0 / 33, 300.0 / 23]))
    by_image = yolo_loss(outs, t.y_true, input_size=(416, 416))
    by_level = yolo_loss(outs, t.y_true, input_size=(416, 416), ignore_from="level")
    assert_close(by_level["loss_conf"] - by_image["loss_conf"], torch.tensor(LN2, dtype=torch.float64))


def test_ciou_hand_computed_and_torchvision():
    b1 = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 1.0, 1.0]])
    b2 = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 3.0, 1.0]])
    # identical: 1; concentric, same aspect: IoU 4 / 16; apart: 0 - 2^2 / (3^2 + 1^2)
    assert_close(aligned_complete_box_iou(b1, b2), torch.tensor([1.0, 0.25, -0.4]))
    g = torch.Generator().manual_seed(0)
    p = torch.rand(20, 2, generator=g) * 50
    q = torch.rand(20, 2, generator=g) * 50
    boxes1 = torch.cat([p, p + torch.rand(20, 2, generator=g) * 30 + 1], 1)
    boxes2 = torch.cat([q, q + torch.rand(20, 2, generator=g) * 30 + 1], 1)
    assert_close(aligned_complete_box_iou(boxes1, boxes2), complete_box_iou(boxes1, boxes2).diagonal())
    assert_close(ciou_loss(boxes1, boxes2), tv_ops.complete_box_iou_loss(boxes1, boxes2))


def test_ciou_gradient_skips_alpha():
    pred = torch.tensor([[0.0, 0.0, 4.0, 2.0]], requires_grad=True)
    ciou_loss(pred, torch.tensor([[1.0, 1.0, 3.0, 5.0]])).sum().backward()
    mine = pred.grad.clone()
    pred.grad = None
    tv_ops.complete_box_iou_loss(pred, torch.tensor([[1.0, 1.0, 3.0, 5.0]])).sum().backward()
    assert_close(mine, pred.grad)


def test_loss_bad_input():
    t = build_targets([torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.int64)], input_size=(64, 64), num_classes=1)
    outs = [torch.zeros(y.shape) for y in t.y_true]
    with pytest.raises(ValueError, match="'xywh' or 'ciou'"):
        yolo_loss(outs, t.y_true, input_size=(64, 64), box_loss="giou")
    with pytest.raises(ValueError, match="'image' or 'level'"):
        yolo_loss(outs, t.y_true, input_size=(64, 64), ignore_from="batch")
    with pytest.raises(ValueError, match="one tensor per level"):
        yolo_loss(outs[:2], t.y_true, input_size=(64, 64))
    with pytest.raises(ValueError, match="must have the shape of raw"):
        yolo_loss_per_level(outs[0], t.y_true[1], level_anchors(0), (64, 64), [torch.zeros(0, 4)])


@pytest.mark.parametrize("box_loss", ["xywh", "ciou"])
def test_few_sgd_steps_reduce_the_loss(box_loss):
    torch.manual_seed(0)
    model = build_yolov3(YOLOv3Config(num_classes=2, initial_filters=8))
    images = torch.rand(2, 3, 64, 64)
    t = build_targets([torch.tensor([[8.0, 10.0, 40.0, 50.0], [30.0, 20.0, 60.0, 40.0]]),
                       torch.tensor([[0.0, 0.0, 64.0, 64.0]])], [torch.tensor([0, 1]), torch.tensor([1])],
                      input_size=(64, 64), num_classes=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(6):
        loss = sum(yolo_loss(model(images), t.y_true, input_size=(64, 64), box_loss=box_loss).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert history[-1] < 0.9 * history[0], history
