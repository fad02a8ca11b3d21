"""Tests for detviz.yolo (anchors, k-means, targets, coder, loss, CIoU) and the seed-004 trace."""
import math
import re

import pytest
import torch
import torch.nn.functional as F
import torchvision.ops as tv_ops
from torch.testing import assert_close

from detviz.boxes import complete_box_iou
from detviz.fixtures import ENTRY_KEYS, QUOTE_KINDS, load_trace
from detviz.models.yolov3 import YOLOv3Config, build_yolov3
from detviz.yolo import (ANCHOR_MASKS, COCO_ANCHORS, aligned_complete_box_iou, best_anchors, build_targets,
                         ciou_loss, decode_level, featmap_sizes, gt_boxes_from_y_true, ignore_mask, kmeans_anchors,
                         level_anchors, raw_box_targets, wh_iou, yolo_loss, yolo_loss_per_level)

TRACE = load_trace("seed004_yolov3")

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


LN2 = math.log(2.0)
ANCHORS = torch.tensor(COCO_ANCHORS)


def targets_416(boxes, labels, num_classes=3, **kw):
    return build_targets([torch.tensor(boxes, dtype=torch.float32)], [torch.tensor(labels)], input_size=(416, 416),
                         num_classes=num_classes, **kw)


# ---- the trace: schema and transcription ----

def test_trace_schema():
    for name in TRACE.names():
        entry = TRACE.entry(name)
        assert set(entry) <= set(ENTRY_KEYS) | {"remark", "also_lines"}, name
        assert entry["quote"] in QUOTE_KINDS and entry["decimals"] is None, name
        first, last = entry["lines"]
        assert 1 <= first <= last <= len(TRACE.note_lines()), name


def _leaves(value):
    if isinstance(value, dict):
        return [x for v in value.values() for x in _leaves(v)]
    if isinstance(value, list):
        return [x for v in value for x in _leaves(v)]
    return [value]


def _digits_in_order(value, text: str) -> bool:
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 2,556,808 -> 2556808
    pos = 0
    for leaf in _leaves(value):
        found = re.compile(rf"(?<!\d){leaf}(?!\d)").search(text, pos) if leaf >= 10 else None
        found = found or re.compile(str(leaf)).search(text, pos)
        if found is None:
            return False
        pos = found.end()
    return True


@pytest.mark.parametrize("name", [n for n in TRACE.names() if TRACE.entry(n)["quote"] == "numbers"])
def test_trace_numbers_appear_in_their_lines(name):
    entry = TRACE.entry(name)
    assert _digits_in_order(entry["value"], TRACE.quote(name)), (name, TRACE.quote(name))


def test_transcription_check_can_fail():
    assert not _digits_in_order(40638497, TRACE.quote("params.backbone_f32"))
    assert not _digits_in_order([16, 32, 8], TRACE.quote("targets.output_strides"))  # order matters


# ---- anchors ----

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


# ---- targets ----

def test_targets_hand_computed():
    # w 60, h 100, centre (130, 200): shape IoU with 59x119 = 5900 / 7121 is the best -> anchor 5,
    # level 1 (stride 16), slot 2, cell col floor(130 / 16) = 8, row floor(200 / 16) = 12
    t = targets_416([[100.0, 150.0, 160.0, 250.0]], [1])
    assert [tuple(y.shape) for y in t.y_true] == [(1, 13, 13, 3, 8), (1, 26, 26, 3, 8), (1, 52, 52, 3, 8)]
    m = t.matches
    assert (m.level.tolist(), m.anchor.tolist(), m.slot.tolist(), m.row.tolist(), m.col.tolist()) == (
        [1], [5], [2], [12], [8])
    assert_close(m.iou, torch.tensor([5900 / 7121]))
    expected = torch.tensor([130 / 416, 200 / 416, 60 / 416, 100 / 416, 1, 0, 1, 0])
    assert_close(t.y_true[1][0, 12, 8, 2], expected)
    assert t.y_true[1].count_nonzero() == 6 and t.y_true[0].count_nonzero() == 0 and t.y_true[2].count_nonzero() == 0
    raw_xy, raw_wh = raw_box_targets(t.y_true[1], level_anchors(1), (416, 416))
    assert_close(raw_xy[0, 12, 8, 2], torch.tensor([0.125, 0.5]))
    assert_close(raw_wh[0, 12, 8, 2], torch.tensor([math.log(60 / 59), math.log(100 / 119)]))
    assert raw_wh.count_nonzero() == 2


def test_targets_empty_and_zero_area_gt():
    t = build_targets([torch.zeros(0, 4), torch.tensor([[5.0, 5.0, 5.0, 30.0]])],
                      [torch.zeros(0, dtype=torch.int64), torch.tensor([0])], input_size=(64, 96), num_classes=2)
    assert [tuple(y.shape) for y in t.y_true] == [(2, 2, 3, 3, 7), (2, 4, 6, 3, 7), (2, 8, 12, 3, 7)]
    assert all(y.count_nonzero() == 0 for y in t.y_true)
    assert t.matches.image.numel() == 0 and t.matches.iou.dtype == torch.float32


def test_targets_on_cell_borders_and_image_edge():
    # centre x = 32 is the border between stride-32 cells 0 and 1: cell 1, offset 0;
    # centre (416, 416) on the image corner stays in the last cell with offset 1
    t = targets_416([[-168.0, 0.0, 232.0, 400.0], [216.0, 216.0, 616.0, 616.0]], [0, 2])
    assert t.matches.level.tolist() == [0, 0]
    assert (t.matches.row.tolist(), t.matches.col.tolist()) == ([6, 12], [1, 12])
    raw_xy, _ = raw_box_targets(t.y_true[0], level_anchors(0), (416, 416))
    assert_close(raw_xy[0, 6, 1, 2], torch.tensor([0.0, 0.25]))
    assert_close(raw_xy[0, 12, 12, 2], torch.tensor([1.0, 1.0]))


def test_targets_tiny_and_huge_boxes():
    t = targets_416([[100.0, 100.0, 101.0, 101.0], [0.0, 0.0, 416.0, 416.0]], [0, 1])
    assert t.matches.anchor.tolist() == [0, 8] and t.matches.level.tolist() == [2, 0]
    assert (t.matches.row.tolist(), t.matches.col.tolist()) == ([12, 6], [12, 6])
    assert_close(t.y_true[0][0, 6, 6, 2, :5], torch.tensor([0.5, 0.5, 1.0, 1.0, 1.0]))


def test_targets_every_scale_and_collision():
    one = targets_416([[100.0, 150.0, 160.0, 250.0]], [1])
    every = targets_416([[100.0, 150.0, 160.0, 250.0]], [1], every_scale=True)
    assert every.matches.level.tolist() == [0, 1, 2] and every.matches.anchor.tolist() == [6, 5, 2]
    assert_close(every.y_true[1], one.y_true[1])  # the best level is written as before
    assert every.y_true[0][0, 6, 4, 0, 4] == 1 and every.y_true[2][0, 25, 16, 2, 4] == 1
    # two gts on the same cell and anchor: the later one replaces the first, class included
    clash = targets_416([[100.0, 150.0, 160.0, 250.0], [101.0, 151.0, 161.0, 251.0]], [0, 2])
    cell = clash.y_true[1][0, 12, 8, 2]
    assert_close(cell[5:], torch.tensor([0.0, 0.0, 1.0]))
    assert_close(cell[0], torch.tensor(131 / 416))


def test_targets_keep_dtype():
    t = build_targets([torch.tensor([[0.0, 0.0, 30.0, 30.0]], dtype=torch.float64)], [torch.tensor([0])],
                      input_size=(64, 64), num_classes=1)
    assert all(y.dtype == torch.float64 for y in t.y_true)


def test_targets_bad_input():
    ok_labels = [torch.tensor([0])]
    with pytest.raises(ValueError, match=r"\[M, 4\] xyxy"):
        build_targets([torch.ones(1, 5)], ok_labels, input_size=(64, 64), num_classes=2)
    with pytest.raises(ValueError, match=r"x2 >= x1"):
        build_targets([torch.tensor([[10.0, 0.0, 5.0, 5.0]])], ok_labels, input_size=(64, 64), num_classes=2)
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        build_targets([torch.ones(1, 4)], [torch.tensor([2])], input_size=(64, 64), num_classes=2)
    with pytest.raises(ValueError, match="divisible by every stride"):
        featmap_sizes((64, 70))
    with pytest.raises(TypeError, match="one Tensor per image"):
        build_targets(torch.ones(1, 4), ok_labels, input_size=(64, 64), num_classes=2)
    with pytest.raises(ValueError, match=r"input_size must be \(height, width\)"):
        build_targets([torch.ones(1, 4)], ok_labels, input_size=64, num_classes=2)


# ---- coder ----

def test_decode_hand_computed():
    raw = torch.zeros(1, 13, 13, 3, 6)
    out = decode_level(raw, level_anchors(0), (416, 416))
    # cell col 2, row 1, anchor 0 (116 x 90): centre (2.5, 1.5) cells = (80, 48) px
    assert_close(out.xy[0, 1, 2, 0], torch.tensor([2.5 / 13, 1.5 / 13]))
    assert_close(out.wh[0, 1, 2, 0], torch.tensor([116 / 416, 90 / 416]))
    assert_close(out.boxes[0, 1, 2, 0], torch.tensor([22.0, 3.0, 138.0, 93.0]))
    assert_close(out.objectness, torch.full((1, 13, 13, 3), 0.5))
    assert out.class_probs.shape == (1, 13, 13, 3, 1)


def test_decode_by_uses_ty_not_tx():
    raw = torch.zeros(1, 2, 2, 1, 5)
    raw[..., 0], raw[..., 1] = 2.0, -2.0
    xy = decode_level(raw, torch.tensor([[16.0, 16.0]]), (64, 64)).xy
    assert_close(xy[0, 1, 0, 0, 1], (torch.sigmoid(torch.tensor(-2.0)) + 1) / 2)


def test_decode_inverts_raw_targets():
    t = targets_416([[10.0, 20.0, 60.0, 100.0], [100.0, 150.0, 160.0, 250.0], [0.0, 0.0, 416.0, 300.0]], [0, 1, 2])
    for level, y in enumerate(t.y_true):
        anchors = level_anchors(level)
        raw_xy, raw_wh = raw_box_targets(y, anchors, (416, 416))
        raw = torch.cat([torch.logit(raw_xy.clamp(1e-6, 1 - 1e-6)), raw_wh, y[..., 4:]], dim=-1)
        out = decode_level(raw, anchors, (416, 416))
        pos = y[..., 4] > 0
        assert_close(torch.cat([out.xy, out.wh], -1)[pos], y[..., :4][pos], atol=1e-5, rtol=0)


def test_decode_bad_input():
    with pytest.raises(ValueError, match=r"anchors must be Tensor\[A=3, 2\]"):
        decode_level(torch.zeros(1, 2, 2, 3, 6), torch.ones(2, 2), (64, 64))
    with pytest.raises(ValueError, match=r"\[B, H, W, A, 4 \+ 1 \+ C\]"):
        decode_level(torch.zeros(1, 2, 2, 18), torch.ones(3, 2), (64, 64))


# ---- loss ----

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
