"""Tests for detviz.yolo.predict: hand-built raw outputs -> exact boxes, NMS, thresholds, errors."""
import math

import pytest
import torch
import torchvision.ops as tv_ops
from torch.testing import assert_close

from detviz.yolo import ANCHOR_MASKS, COCO_ANCHORS, decode_yolo_outputs, yolo_predict
from detviz.yolo.model import YOLOv3Config, build_yolov3

INPUT = (64, 96)  # (height, width): not square, so a swapped H/W shows up
SIZES = [(2, 3), (4, 6), (8, 12)]  # levels 0, 1, 2 = strides 32, 16, 8
C = 3
OFF = -30.0  # a logit whose sigmoid (~1e-13) is far below any threshold

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _blank(batch=1):
    """Raw outputs where every objectness and class logit is OFF: no detection anywhere."""
    outputs = [torch.zeros(batch, h, w, 3, 5 + C) for h, w in SIZES]
    for raw in outputs:
        raw[..., 4:] = OFF
    return outputs


def _set(outputs, level, row, col, anchor, t=(0.0, 0.0, 0.0, 0.0), obj=10.0, label=0, cls=10.0, b=0):
    """Switch on one prior: raw tx, ty, tw, th, the objectness logit and one class logit."""
    outputs[level][b, row, col, anchor, :4] = torch.tensor(t)
    outputs[level][b, row, col, anchor, 4] = obj
    outputs[level][b, row, col, anchor, 5 + label] = cls


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def _expected_box(level, row, col, anchor, t):
    """The YOLO formulas written out: centre in grid units -> pixels, size = anchor * exp(t)."""
    (h, w), (input_h, input_w) = SIZES[level], INPUT
    anchor_w, anchor_h = COCO_ANCHORS[ANCHOR_MASKS[level][anchor]]
    cx = (_sigmoid(t[0]) + col) / w * input_w
    cy = (_sigmoid(t[1]) + row) / h * input_h
    bw, bh = anchor_w * math.exp(t[2]), anchor_h * math.exp(t[3])
    return [cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]


def _check_empty(result):
    assert result["boxes"].shape == (0, 4) and result["boxes"].dtype == torch.float32
    assert result["labels"].shape == (0,) and result["labels"].dtype == torch.int64
    assert result["scores"].shape == (0,) and result["scores"].dtype == torch.float32


def test_one_prior_gives_its_decoded_box_label_and_score():
    outputs = _blank()
    t = (0.3, -0.4, -0.5, -0.3)
    _set(outputs, level=1, row=2, col=3, anchor=1, t=t, obj=4.0, label=2, cls=1.5)
    before = [raw.clone() for raw in outputs]
    (result,) = yolo_predict(outputs, input_size=INPUT)
    # anchor (62, 45): cx = (sigmoid(0.3) + 3) / 6 * 96 = 57.19, w = 62 * exp(-0.5) = 37.60, ...
    expected = _expected_box(1, 2, 3, 1, t)
    assert 0 < expected[0] < expected[2] < INPUT[1] and 0 < expected[1] < expected[3] < INPUT[0]  # not clipped
    assert_close(result["boxes"], torch.tensor([expected]))
    assert result["labels"].tolist() == [2]
    assert_close(result["scores"], torch.tensor([_sigmoid(4.0) * _sigmoid(1.5)]))  # objectness * class prob
    for raw, raw_before in zip(outputs, before):
        assert torch.equal(raw, raw_before)  # the inputs are not modified


def test_each_level_uses_its_own_anchors_and_grid():
    outputs = _blank()
    t = (-1.0, 0.5, 0.1, -0.2)
    _set(outputs, level=2, row=5, col=9, anchor=2, t=t, label=1)  # anchor (33, 23), stride 8
    _set(outputs, level=0, row=1, col=1, anchor=0, t=(0.0, 0.0, -1.0, -1.2), obj=5.0, label=0)  # (116, 90), stride 32
    (result,) = yolo_predict(outputs, input_size=INPUT)
    assert result["labels"].tolist() == [1, 0]  # level 2's prior scores higher (obj 10 vs 5)
    assert_close(result["boxes"], torch.tensor([_expected_box(2, 5, 9, 2, t),
                                                _expected_box(0, 1, 1, 0, (0.0, 0.0, -1.0, -1.2))]))


def _two_identical_boxes(label_a, label_b):
    """Level 2, cell (4, 5): anchor 0 (10, 13) and anchor 2 (33, 23) both decode to a 20 x 26 box."""
    outputs = _blank()
    _set(outputs, 2, 4, 5, 0, t=(0.0, 0.0, math.log(2.0), math.log(2.0)), obj=3.0, label=label_a)
    _set(outputs, 2, 4, 5, 2, t=(0.0, 0.0, math.log(20 / 33), math.log(26 / 23)), obj=2.0, label=label_b)
    return outputs


def test_overlapping_boxes_of_one_class_keep_the_best():
    (result,) = yolo_predict(_two_identical_boxes(1, 1), input_size=INPUT)
    assert result["labels"].tolist() == [1]
    assert_close(result["scores"], torch.tensor([_sigmoid(3.0) * _sigmoid(10.0)]))


def test_overlapping_boxes_of_different_classes_are_both_kept():
    (result,) = yolo_predict(_two_identical_boxes(0, 2), input_size=INPUT)
    assert result["labels"].tolist() == [0, 2]
    assert_close(result["scores"], torch.tensor([_sigmoid(3.0), _sigmoid(2.0)]) * _sigmoid(10.0))
    assert_close(result["boxes"][0], result["boxes"][1])  # the same box: NMS did not compare across classes


def test_nms_thresh_decides_whether_a_partial_overlap_survives():
    outputs = _blank()
    _set(outputs, 2, 4, 5, 1, obj=3.0)  # anchor (16, 30) at cell centres 8 px apart: IoU = 8 / 24 = 1/3
    _set(outputs, 2, 4, 6, 1, obj=2.0)
    assert len(yolo_predict(outputs, input_size=INPUT, nms_thresh=0.5)[0]["scores"]) == 2
    assert len(yolo_predict(outputs, input_size=INPUT, nms_thresh=0.3)[0]["scores"]) == 1


def test_score_threshold_filters_pairs():
    outputs = _blank()
    _set(outputs, 2, 1, 1, 0, obj=10.0, cls=10.0, label=0)  # score ~1.0
    _set(outputs, 2, 6, 10, 0, obj=0.0, cls=10.0, label=1)  # score ~0.5
    _set(outputs, 2, 6, 10, 0, obj=0.0, cls=-1.0, label=2)  # same prior, class 2: 0.5 * 0.269 = 0.134
    assert yolo_predict(outputs, input_size=INPUT, score_thresh=0.6)[0]["labels"].tolist() == [0]
    assert yolo_predict(outputs, input_size=INPUT, score_thresh=0.2)[0]["labels"].tolist() == [0, 1]
    result = yolo_predict(outputs, input_size=INPUT, score_thresh=0.1)[0]
    assert result["labels"].tolist() == [0, 1, 2]
    assert_close(result["scores"][2], torch.tensor(0.5 * _sigmoid(-1.0)))
    assert bool((yolo_predict(outputs, input_size=INPUT, score_thresh=0.999)[0]["scores"] > 0.999).all())


def test_boxes_are_clipped_to_the_image():
    outputs = _blank()
    _set(outputs, 0, 0, 0, 0)  # anchor (116, 90) at the top-left cell: beyond the left and top edges
    _set(outputs, 0, 1, 2, 0, label=1, obj=9.0)  # the same anchor at the bottom-right cell
    (result,) = yolo_predict(outputs, input_size=INPUT)
    x1, y1, x2, y2 = _expected_box(0, 0, 0, 0, (0.0, 0.0, 0.0, 0.0))  # [-42, -29, 74, 61]
    assert x1 < 0 and y1 < 0 and 0 < x2 < INPUT[1] and 0 < y2 < INPUT[0]
    x1b, y1b, x2b, y2b = _expected_box(0, 1, 2, 0, (0.0, 0.0, 0.0, 0.0))  # [22, 3, 138, 93]
    assert 0 < x1b and 0 < y1b and x2b > INPUT[1] and y2b > INPUT[0]
    assert_close(result["boxes"], torch.tensor([[0.0, 0.0, x2, y2], [x1b, y1b, 96.0, 64.0]]))


def test_max_per_img_keeps_the_best_scores_in_order():
    outputs = _blank()
    cells = [(0, 0), (0, 11), (7, 0), (7, 11), (4, 6)]  # far apart: no suppression
    for (row, col), obj in zip(cells, [1.0, 3.0, -1.0, 2.0, 0.0]):
        _set(outputs, 2, row, col, 0, obj=obj)
    full = yolo_predict(outputs, input_size=INPUT)[0]
    assert len(full["scores"]) == 5
    result = yolo_predict(outputs, input_size=INPUT, max_per_img=3)[0]
    assert_close(result["scores"], torch.sigmoid(torch.tensor([3.0, 2.0, 1.0])) * _sigmoid(10.0))
    assert_close(result["boxes"], full["boxes"][:3])


def test_nms_pre_ranks_priors_over_all_levels():
    outputs = _blank()
    _set(outputs, 0, 0, 0, 0, obj=2.0, label=0)  # level 0 (first in the concatenation), lower score
    _set(outputs, 2, 7, 11, 0, obj=4.0, label=1)  # level 2, higher score
    assert yolo_predict(outputs, input_size=INPUT, nms_pre=1)[0]["labels"].tolist() == [1]
    assert yolo_predict(outputs, input_size=INPUT, nms_pre=2)[0]["labels"].tolist() == [1, 0]


def test_batch_with_an_empty_image():
    outputs = _blank(batch=2)
    _set(outputs, 1, 2, 2, 0, b=0, label=2)
    first, second = yolo_predict(outputs, input_size=INPUT)
    assert first["labels"].tolist() == [2] and first["boxes"].shape == (1, 4)
    _check_empty(second)
    for result in yolo_predict(_blank(batch=2), input_size=INPUT):
        _check_empty(result)


def test_matches_a_torchvision_reference_on_random_outputs():
    gen = torch.Generator().manual_seed(0)
    outputs = [torch.randn(2, h, w, 3, 5 + C, generator=gen) for h, w in SIZES]
    results = yolo_predict(outputs, input_size=INPUT, score_thresh=0.3, nms_thresh=0.45, max_per_img=20)
    boxes, scores = decode_yolo_outputs(outputs, input_size=INPUT)  # [B, N, 4], [B, N, C]
    assert boxes.shape == (2, 3 * sum(h * w for h, w in SIZES), 4) and scores.shape[-1] == C
    for result, boxes_per_image, scores_per_image in zip(results, boxes, scores):
        prior, label = torch.nonzero(scores_per_image > 0.3, as_tuple=True)
        cand_boxes, cand_scores = boxes_per_image[prior], scores_per_image[prior, label]
        keep = tv_ops.batched_nms(cand_boxes, cand_scores, label, 0.45)[:20]
        assert len(keep) == 20  # enough candidates for max_per_img to bite
        assert_close(result["boxes"], cand_boxes[keep])
        assert_close(result["scores"], cand_scores[keep])
        assert torch.equal(result["labels"], label[keep])


def test_on_a_small_yolov3():
    torch.manual_seed(0)
    model = build_yolov3(YOLOv3Config(num_classes=3, initial_filters=8)).eval()
    outputs = model(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outputs] == [(2, 2, 2, 3, 8), (2, 4, 4, 3, 8), (2, 8, 8, 3, 8)]
    results = yolo_predict(outputs, input_size=(64, 64), score_thresh=0.05, max_per_img=50)
    assert len(results) == 2
    for result in results:
        boxes, labels, scores = result["boxes"], result["labels"], result["scores"]
        k = len(scores)
        assert 0 < k <= 50  # an untrained model scores about 0.5 * 0.5: many candidates
        assert boxes.shape == (k, 4) and boxes.dtype == torch.float32
        assert labels.shape == (k,) and labels.dtype == torch.int64
        assert scores.dtype == torch.float32
        assert not boxes.requires_grad and not scores.requires_grad  # run under no_grad
        assert bool(((labels >= 0) & (labels < 3)).all())
        assert bool(((scores > 0.05) & (scores <= 1)).all())
        assert bool((scores[:-1] >= scores[1:]).all())
        assert bool((boxes >= 0).all()) and bool((boxes <= 64).all())
        assert bool((boxes[:, 2:] >= boxes[:, :2]).all())


@pytest.mark.parametrize("kwargs, match", [
    ({"score_thresh": 1.0}, r"score_thresh must be in \[0, 1\), got 1.0"),
    ({"score_thresh": -0.1}, r"score_thresh must be in \[0, 1\)"),
    ({"max_per_img": 0}, r"max_per_img must be >= 1, got 0"),
    ({"nms_pre": 0}, r"nms_pre must be >= 1, got 0"),
    ({"input_size": (64,)}, r"input_size must be \(height, width\)"),
])
def test_bad_arguments(kwargs, match):
    kwargs = {"input_size": INPUT, **kwargs}
    with pytest.raises(ValueError, match=match):
        yolo_predict(_blank(), **kwargs)


def _bad_outputs(case):
    outputs = _blank()
    if case == "too few levels":
        return outputs[:2]
    if case == "not 5-D":
        outputs[1] = outputs[1][0]
    elif case == "no class":
        outputs[2] = outputs[2][..., :5]
    elif case == "class count differs":
        outputs[2] = torch.cat([outputs[2], outputs[2][..., :1]], dim=-1)
    elif case == "batch differs":
        outputs[1] = torch.cat([outputs[1], outputs[1]])
    elif case == "wrong anchor count":
        outputs[0] = outputs[0][:, :, :, :2]
    return outputs


@pytest.mark.parametrize("case, match", [
    ("too few levels", r"one Tensor\[B, H, W, A, 4 \+ 1 \+ C\] per level \(3, one per anchor mask\), got 2 levels"),
    ("not 5-D", r"outputs\[1\] must be Tensor\[B, H, W, A, 4 \+ 1 \+ C\], got shape \[4, 6, 3, 8\]"),
    ("no class", r"outputs\[2\] must be .* C >= 1 \(last dim >= 6\), got shape \[1, 8, 12, 3, 5\]"),
    ("class count differs", r"outputs\[2\] must have the last dim of outputs\[0\] \(8 = 4 \+ 1 \+ C\)"),
    ("batch differs", r"every level must have the batch size of outputs\[0\] \(1\), got 2 in outputs\[1\]"),
    ("wrong anchor count", r"anchors must be Tensor\[A=2, 2\]"),
])
def test_bad_outputs(case, match):
    with pytest.raises(ValueError, match=match):
        yolo_predict(_bad_outputs(case), input_size=INPUT)


def test_outputs_must_be_tensors():
    outputs = _blank()
    outputs[0] = outputs[0].tolist()
    with pytest.raises(TypeError, match=r"outputs\[0\] must be Tensor\[B, H, W, A, 4 \+ 1 \+ C\], got list"):
        yolo_predict(outputs, input_size=INPUT)
