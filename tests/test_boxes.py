"""Tests for detviz.boxes: hand-computed cases, round trips, torchvision parity, bad input."""
import math

import pytest
import torch
import torchvision.ops as tv_ops
from torch.testing import assert_close

from detviz import boxes as B
from detviz.losses import giou_loss
from detviz.yolo.loss import ciou_loss

PAIRWISE = {
    "box_iou": (B.box_iou, tv_ops.box_iou),
    "generalized_box_iou": (B.generalized_box_iou, tv_ops.generalized_box_iou),
    "distance_box_iou": (B.distance_box_iou, tv_ops.distance_box_iou),
    "complete_box_iou": (B.complete_box_iou, tv_ops.complete_box_iou),
}
SIZES = [(0, 3), (4, 0), (0, 0), (1, 1), (5, 7), (37, 20)]


def random_boxes(n, seed, dtype=torch.float32, max_wh=50.0):
    """``n`` random xyxy boxes with positive width and height inside roughly [0, 150]^2."""
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=gen, dtype=dtype) * 100
    wh = torch.rand(n, 2, generator=gen, dtype=dtype) * max_wh + 1
    return torch.cat([xy, xy + wh], dim=1)  # [n, 4]


def distinct_scores(n, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen).float() / max(n, 1) + 0.01  # all different


# ---- hand-computed cases ----

BOXES1 = torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30]])
BOXES2 = torch.tensor([[0.0, 0, 10, 10], [0, 0, 5, 5], [10, 0, 20, 10], [5, 0, 15, 10]])


def test_box_iou_hand_written_3x4():
    expected = torch.tensor([
        [1.0, 25 / 100, 0.0, 50 / 150],   # identical, nested, touching edge, half overlap
        [25 / 175, 0.0, 25 / 175, 50 / 150],  # corner overlap, touching corner, ...
        [0.0, 0.0, 0.0, 0.0],             # far away
    ])
    assert_close(B.box_iou(BOXES1, BOXES2), expected)


def test_generalized_distance_complete_iou_hand_values():
    a = torch.tensor([[0.0, 0, 10, 10]])
    far, wide = torch.tensor([[20.0, 0, 30, 10]]), torch.tensor([[0.0, 0, 20, 10]])
    # disjoint: IoU 0, enclosing 30x10 = 300, union 200
    assert_close(B.generalized_box_iou(a, far), torch.tensor([[-100 / 300]]))
    # centres 20 apart, enclosing diagonal^2 = 30^2 + 10^2
    assert_close(B.distance_box_iou(a, far), torch.tensor([[-400 / 1000]]))
    # same aspect ratio: v = 0 so CIoU == DIoU
    assert_close(B.complete_box_iou(a, far), torch.tensor([[-400 / 1000]]))
    # IoU 0.5, centres 5 apart, diagonal^2 = 500, aspect ratios 1 and 2
    diou = 0.5 - 25 / 500
    v = 4 / math.pi**2 * (math.atan(1.0) - math.atan(2.0)) ** 2
    assert_close(B.distance_box_iou(a, wide), torch.tensor([[diou]]))
    assert_close(B.complete_box_iou(a, wide), torch.tensor([[diou - v / (1 - 0.5 + v) * v]]))


def test_box_area_and_zero_area_boxes():
    boxes = torch.tensor([[0.0, 0, 10, 5], [3, 3, 3, 9], [1, 1, 1, 1]])
    assert_close(B.box_area(boxes), torch.tensor([50.0, 0.0, 0.0]))
    # a zero-area box has IoU 0 with a real box, and 0/0 = NaN with another zero-area box (as torchvision)
    iou = B.box_iou(boxes, boxes)
    assert_close(iou[0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.isnan(iou[1:, 1:]).all()


def test_aligned_iou_hand_values_and_nanodet_eps():
    boxes1 = torch.tensor([[0.0, 0, 10, 10], [10, 10, 20, 20], [32, 32, 38, 42], [4, 4, 4, 4]])
    boxes2 = torch.tensor([[0.0, 0, 10, 20], [0, 10, 10, 19], [10, 10, 20, 20], [4, 4, 4, 4]])
    # last row: two identical points; union and enclosing area are floored at eps, so 0 instead of NaN
    assert_close(B.aligned_box_iou(boxes1, boxes2), torch.tensor([0.5, 0.0, 0.0, 0.0]))
    expected_giou = torch.tensor([0.5, -(200 - 190) / 200, -(896 - 160) / 896, 0.0])
    assert_close(B.aligned_generalized_box_iou(boxes1, boxes2), expected_giou)


@pytest.mark.parametrize("n", [0, 1, 25])
def test_aligned_iou_is_the_diagonal_of_pairwise(n):
    boxes1, boxes2 = random_boxes(n, seed=1), random_boxes(n, seed=2)
    assert_close(B.aligned_box_iou(boxes1, boxes2), B.box_iou(boxes1, boxes2).diagonal())
    assert_close(B.aligned_generalized_box_iou(boxes1, boxes2), B.generalized_box_iou(boxes1, boxes2).diagonal())
    assert B.aligned_box_iou(boxes1, boxes2).shape == (n,)


# ---- torchvision parity ----

@pytest.mark.parametrize("name", sorted(PAIRWISE))
@pytest.mark.parametrize("n,m", SIZES)
def test_pairwise_iou_matches_torchvision(name, n, m):
    ours, theirs = PAIRWISE[name]
    boxes1, boxes2 = random_boxes(n, seed=10 + n), random_boxes(m, seed=20 + m)
    result = ours(boxes1, boxes2)
    assert result.shape == (n, m)
    assert_close(result, theirs(boxes1, boxes2))


@pytest.mark.parametrize("name", sorted(PAIRWISE))
def test_pairwise_iou_matches_torchvision_on_degenerate_boxes(name):
    ours, theirs = PAIRWISE[name]
    degenerate = torch.tensor([[0.0, 0, 0, 10], [5, 5, 5, 5], [0, 0, 10, 10], [2, 2, 8, 2], [30, 30, 40, 45]])
    assert_close(ours(degenerate, degenerate), theirs(degenerate, degenerate), equal_nan=True)


@pytest.mark.parametrize("name", sorted(PAIRWISE))
def test_pairwise_iou_gradients_match_torchvision(name):
    ours, theirs = PAIRWISE[name]
    grads = []
    for fn in (ours, theirs):
        boxes1 = random_boxes(6, seed=3, dtype=torch.float64).requires_grad_()
        boxes2 = random_boxes(4, seed=4, dtype=torch.float64)
        fn(boxes1, boxes2).sum().backward()
        grads.append(boxes1.grad)
    assert_close(grads[0], grads[1])


@pytest.mark.parametrize("n", [0, 1, 30])
def test_clip_and_remove_small_match_torchvision(n):
    boxes = random_boxes(n, seed=5) - 20  # some boxes stick out of the 100x120 image on each side
    assert_close(B.clip_boxes_to_image(boxes, (100, 120)), tv_ops.clip_boxes_to_image(boxes, (100, 120)))
    assert_close(B.remove_small_boxes(boxes, 20.0), tv_ops.remove_small_boxes(boxes, 20.0))


def test_clip_hand_case_uses_height_then_width():
    boxes = torch.tensor([[-5.0, -5, 50, 50], [10, 10, 20, 20]])
    expected = torch.tensor([[0.0, 0, 40, 30], [10, 10, 20, 20]])
    assert_close(B.clip_boxes_to_image(boxes, (30, 40)), expected)


@pytest.mark.parametrize("n", [1, 10, 200])
@pytest.mark.parametrize("iou_threshold", [0.2, 0.5, 0.8])
def test_nms_matches_torchvision(n, iou_threshold):
    boxes, scores = random_boxes(n, seed=n), distinct_scores(n, seed=n + 1)
    keep = B.nms(boxes, scores, iou_threshold)
    assert keep.dtype == torch.int64
    assert_close(keep, tv_ops.nms(boxes, scores, iou_threshold))


@pytest.mark.parametrize("n", [1, 10, 200])
def test_batched_nms_matches_torchvision(n):
    boxes, scores = random_boxes(n, seed=n + 7), distinct_scores(n, seed=n + 8)
    idxs = torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(n))
    assert_close(B.batched_nms(boxes, scores, idxs, 0.4), tv_ops.batched_nms(boxes, scores, idxs, 0.4))


def test_nms_hand_case_and_degenerate_boxes_match_torchvision():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [5, 5, 5, 5], [5, 5, 5, 5]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    # box 1 overlaps box 0 with IoU 90/110; the two zero-area boxes have NaN IoU and never suppress
    assert_close(B.nms(boxes, scores, 0.5), torch.tensor([0, 2, 3, 4]))
    assert_close(B.nms(boxes, scores, 0.9), torch.tensor([0, 1, 2, 3, 4]))
    assert_close(B.nms(boxes, scores, 0.5), tv_ops.nms(boxes, scores, 0.5))
    # the same two boxes in different classes do not suppress each other; output sorted by score
    idxs = torch.tensor([0, 1, 0, 0, 0])
    assert_close(B.batched_nms(boxes, scores, idxs, 0.5), torch.tensor([0, 1, 2, 3, 4]))


def test_iou_at_the_threshold_compares_like_torchvision():
    # IoU 30/100 is 0.30000001 in float32; torchvision compares it with the threshold in double
    boxes, scores = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 3]]), torch.tensor([0.9, 0.8])
    assert B.nms(boxes, scores, 0.3).tolist() == tv_ops.nms(boxes, scores, 0.3).tolist() == [0]
    b64, s64 = boxes.double(), scores.double()
    assert B.nms(b64, s64, 0.3).tolist() == tv_ops.nms(b64, s64, 0.3).tolist() == [0, 1]
    idxs = torch.zeros(2, dtype=torch.int64)
    assert B.batched_nms(boxes, scores, idxs, 0.3).tolist() == tv_ops.batched_nms(boxes, scores, idxs, 0.3).tolist()


def test_tied_scores_keep_torchvisions_order():
    boxes = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10]])
    scores, idxs = torch.full((3,), 0.5), torch.tensor([1, 0, 0])
    assert B.batched_nms(boxes, scores, idxs, 0.5).tolist() == tv_ops.batched_nms(boxes, scores, idxs, 0.5).tolist()
    gen = torch.Generator().manual_seed(0)
    for trial in range(50):  # integer boxes and scores on a coarse grid: many ties of both kinds
        xy = torch.randint(0, 40, (30, 2), generator=gen).float()
        boxes = torch.cat([xy, xy + torch.randint(1, 20, (30, 2), generator=gen)], dim=1)
        scores = torch.randint(0, 4, (30,), generator=gen).float() / 4
        idxs = torch.randint(0, 3, (30,), generator=gen)
        assert B.nms(boxes, scores, 0.5).tolist() == tv_ops.nms(boxes, scores, 0.5).tolist(), trial
        assert B.batched_nms(boxes, scores, idxs, 0.5).tolist() == \
            tv_ops.batched_nms(boxes, scores, idxs, 0.5).tolist(), trial


def test_nms_empty_input_returns_empty_int64():
    empty_boxes, empty_scores = torch.zeros(0, 4), torch.zeros(0)
    for keep in (B.nms(empty_boxes, empty_scores, 0.5),
                 B.batched_nms(empty_boxes, empty_scores, torch.zeros(0, dtype=torch.int64), 0.5)):
        assert keep.dtype == torch.int64
        assert_close(keep, torch.zeros(0, dtype=torch.int64))


# ---- round trips ----

def test_format_round_trips_and_hand_values():
    boxes = random_boxes(20, seed=6)
    assert_close(B.box_cxcywh_to_xyxy(B.box_xyxy_to_cxcywh(boxes)), boxes)
    assert_close(B.box_xywh_to_xyxy(B.box_xyxy_to_xywh(boxes)), boxes)
    box = torch.tensor([[2.0, 4, 12, 10]])
    assert_close(B.box_xyxy_to_cxcywh(box), torch.tensor([[7.0, 7, 10, 6]]))
    assert_close(B.box_xyxy_to_xywh(box), torch.tensor([[2.0, 4, 10, 6]]))
    batched = random_boxes(6, seed=7).reshape(2, 3, 4)  # any leading shape
    assert_close(B.box_xyxy_to_cxcywh(batched), tv_ops.box_convert(batched, "xyxy", "cxcywh"))


def test_distance2bbox_hand_case_and_max_shape():
    points = torch.tensor([[5.0, 5.0], [2.0, 28.0]])
    ltrb = torch.tensor([[1.0, 2, 3, 4], [4.0, 1, 50, 5]])
    assert_close(B.distance2bbox(points, ltrb), torch.tensor([[4.0, 3, 8, 9], [-2.0, 27, 52, 33]]))
    # max_shape = (height 30, width 40)
    assert_close(B.distance2bbox(points, ltrb, max_shape=(30, 40)), torch.tensor([[4.0, 3, 8, 9], [0.0, 27, 40, 30]]))


def test_bbox2distance_clamps_to_nanodet_range():
    points = torch.tensor([[5.0, 5.0], [25.0, 5.0]])
    bbox = torch.tensor([[0.0, 0, 20, 6], [0.0, 0, 20, 6]])
    assert_close(B.bbox2distance(points, bbox), torch.tensor([[5.0, 5, 15, 1], [25.0, 5, -5, 1]]))
    # [0, max_dis - eps] = [0, 6.9]: too-long sides shrink, an outside point's negative side becomes 0
    assert_close(B.bbox2distance(points, bbox, max_dis=7), torch.tensor([[5.0, 5, 6.9, 1], [6.9, 5, 0, 1]]))


def test_ltrb_round_trip_for_points_inside_boxes():
    bbox = random_boxes(50, seed=8)
    t = torch.rand(50, 2, generator=torch.Generator().manual_seed(9))
    points = bbox[:, :2] + t * (bbox[:, 2:] - bbox[:, :2])  # inside each box
    assert_close(B.distance2bbox(points, B.bbox2distance(points, bbox)), bbox)
    assert_close(B.distance2bbox(points, B.bbox2distance(points, bbox, max_dis=100.0)), bbox)


# ---- inputs are never modified ----

def test_functions_do_not_modify_inputs():
    boxes1, boxes2 = random_boxes(8, seed=11) - 10, random_boxes(8, seed=12)
    scores, idxs = distinct_scores(8, seed=13), torch.arange(8) % 2
    points = (boxes1[:, :2] + boxes1[:, 2:]) / 2
    inputs = [boxes1, boxes2, scores, idxs, points]
    before = [x.clone() for x in inputs]
    for fn in PAIRWISE.values():
        fn[0](boxes1, boxes2)
    for fn in (B.aligned_box_iou, B.aligned_generalized_box_iou):
        fn(boxes1, boxes2)
    for fn in (B.box_xyxy_to_cxcywh, B.box_cxcywh_to_xyxy, B.box_xywh_to_xyxy, B.box_xyxy_to_xywh, B.box_area):
        fn(boxes1)
    B.clip_boxes_to_image(boxes1, (50, 50))
    B.remove_small_boxes(boxes1, 5.0)
    B.nms(boxes1, scores, 0.3)
    B.batched_nms(boxes1, scores, idxs, 0.3)
    B.distance2bbox(points, B.bbox2distance(points, boxes1, max_dis=7.0), max_shape=(40, 40))
    for x, x0 in zip(inputs, before):
        assert_close(x, x0, rtol=0, atol=0)


# ---- bad input ----

INVERTED = torch.tensor([[0.0, 0, 10, 10], [10.0, 0, 5, 10]])
OK = torch.tensor([[0.0, 0, 10, 10], [1.0, 1, 9, 9]])


@pytest.mark.parametrize("fn", [B.box_iou, B.generalized_box_iou, B.distance_box_iou, B.complete_box_iou,
                                B.aligned_box_iou, B.aligned_generalized_box_iou])
def test_iou_functions_reject_bad_boxes(fn):
    with pytest.raises(ValueError, match=r"boxes1 must be Tensor\[N, 4\] xyxy, got shape \[3, 5\]"):
        fn(torch.zeros(3, 5), OK)
    with pytest.raises(ValueError, match=r"boxes1 must be Tensor\[N, 4\] xyxy, got shape \[4\]"):
        fn(torch.zeros(4), OK)
    with pytest.raises(TypeError, match=r"boxes1 must be Tensor\[N, 4\] xyxy, got list"):
        fn([[0.0, 0, 1, 1]], OK)
    with pytest.raises(TypeError, match="boxes2 must be .* of a floating dtype, got torch.int64"):
        fn(OK, OK.long())
    with pytest.raises(ValueError, match=r"boxes2 must be xyxy with x2 >= x1 and y2 >= y1"):
        fn(OK, INVERTED)
    with pytest.raises(ValueError, match="boxes1 must be finite xyxy boxes"):
        fn(torch.tensor([[0.0, 0, float("nan"), 1], [0.0, 0, 1, 1]]), OK)


def test_pairwise_names_m_and_aligned_checks_rows():
    with pytest.raises(ValueError, match=r"boxes2 must be Tensor\[M, 4\] xyxy, got shape \[2, 3\]"):
        B.box_iou(OK, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"boxes2 must have as many rows as boxes1 \(2\), got 1"):
        B.aligned_box_iou(OK, OK[:1])


def test_box_area_and_conversions_reject_bad_shapes():
    with pytest.raises(ValueError, match="boxes must be xyxy with x2 >= x1"):
        B.box_area(INVERTED)
    with pytest.raises(ValueError, match=r"boxes_cxcywh must be Tensor\[\*, 4\] cxcywh, got shape \[3, 3\]"):
        B.box_cxcywh_to_xyxy(torch.zeros(3, 3))
    with pytest.raises(TypeError, match=r"boxes_xywh must be Tensor\[\*, 4\] xywh, got ndarray"):
        B.box_xywh_to_xyxy(torch.zeros(2, 4).numpy())


def test_nms_rejects_bad_input():
    with pytest.raises(ValueError, match="boxes must be xyxy with x2 >= x1"):
        B.nms(INVERTED, torch.tensor([0.5, 0.4]), 0.5)
    with pytest.raises(ValueError, match=r"scores must have one score per box \(2\), got 3"):
        B.nms(OK, torch.rand(3), 0.5)
    with pytest.raises(ValueError, match=r"scores must be Tensor\[N\] float, got shape \[2, 1\]"):
        B.nms(OK, torch.rand(2, 1), 0.5)
    with pytest.raises(TypeError, match="iou_threshold must be a float, got str"):
        B.nms(OK, torch.rand(2), "0.5")
    with pytest.raises(TypeError, match="idxs must be Tensor\\[M\\] of an integer dtype"):
        B.batched_nms(OK, torch.rand(2), torch.zeros(2), 0.5)
    with pytest.raises(ValueError, match=r"idxs must have one label per box \(2\), got 1"):
        B.batched_nms(OK, torch.rand(2), torch.zeros(1, dtype=torch.int64), 0.5)


def test_clip_remove_and_coder_reject_bad_input():
    with pytest.raises(ValueError, match=r"size must be \(height, width\), got 30"):
        B.clip_boxes_to_image(OK, 30)
    with pytest.raises(ValueError, match=r"boxes must be Tensor\[N, 4\] xyxy, got shape \[2, 2\]"):
        B.remove_small_boxes(torch.zeros(2, 2), 1.0)
    with pytest.raises(ValueError, match=r"points must be Tensor\[N, 2\] xy, got shape \[2, 3\]"):
        B.distance2bbox(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"distance must have one row per point \(2\), got 1"):
        B.distance2bbox(torch.zeros(2, 2), torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"max_shape must be \(height, width\)"):
        B.distance2bbox(torch.zeros(2, 2), torch.zeros(2, 4), max_shape=(1, 2, 3))
    with pytest.raises(ValueError, match="bbox must be xyxy with x2 >= x1"):
        B.bbox2distance(torch.zeros(2, 2), INVERTED)


def test_box_iof_by_hand():
    priors = torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30]])
    regions = torch.tensor([[0.0, 0, 10, 5]])
    # prior 0: 50 of its 100 px inside; prior 1: none (the region ends at y = 5); prior 2: none
    assert_close(B.box_iof(priors, regions), torch.tensor([[0.5], [0.0], [0.0]]))
    assert_close(B.box_iof(regions, priors), torch.tensor([[1.0, 0.0, 0.0]]))
    assert B.box_iof(torch.zeros(0, 4), regions).shape == (0, 1)


@pytest.mark.parametrize("block", [3, 256])
def test_nms_across_several_blocks_matches_torchvision(block, monkeypatch):
    monkeypatch.setattr(B, "NMS_BLOCK", block)
    g = torch.Generator().manual_seed(7)
    xy = torch.rand(1000, 2, generator=g) * 300
    boxes = torch.cat([xy, xy + 5 + torch.rand(1000, 2, generator=g) * 60], dim=1)
    scores = torch.rand(1000, generator=g)
    for threshold in (0.3, 0.7):
        assert B.nms(boxes, scores, threshold).tolist() == tv_ops.nms(boxes, scores, threshold).tolist()


def test_nms_of_half_precision_boxes_with_large_areas():
    # 300 x 300 px boxes: areas above float16's largest value 65504
    boxes = torch.tensor([[0.0, 0.0, 300.0, 300.0], [10.0, 10.0, 310.0, 310.0], [400.0, 0.0, 700.0, 300.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert B.nms(boxes.half(), scores.half(), 0.5).tolist() == [0, 2]


# ---------------------------------------------------------------- half precision, as torchvision
def _image_sized_boxes(dtype):
    """Boxes up to 600 px: their areas (~3.6e5 px^2) overflow float16's 65504."""
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(30, 2, generator=generator) * 500
    wh = torch.rand(30, 2, generator=generator) * 600 + 10
    return torch.cat([xy, xy + wh], dim=1).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name, ours, theirs", [
    ("box_iou", B.box_iou, tv_ops.box_iou), ("generalized_box_iou", B.generalized_box_iou, tv_ops.generalized_box_iou),
    ("distance_box_iou", B.distance_box_iou, tv_ops.distance_box_iou),
    ("complete_box_iou", B.complete_box_iou, tv_ops.complete_box_iou)])
def test_half_precision_boxes_are_measured_in_float32(dtype, name, ours, theirs):
    half = _image_sized_boxes(dtype)
    got = ours(half, half.flip(0))
    assert got.dtype == theirs(half, half.flip(0)).dtype == torch.float32
    assert torch.isfinite(got).all()
    assert_close(got, ours(half.float(), half.float().flip(0)), rtol=0, atol=1e-6)  # the same boxes in float32
    # torchvision subtracts the corners before it upcasts: its IoUs carry that rounding (about 1e-3 in
    # float16, 1e-2 in bfloat16); detviz measures the same rounded boxes exactly
    assert_close(got, theirs(half, half.flip(0)), rtol=0, atol=2e-3 if dtype == torch.float16 else 2e-2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_areas_aligned_ious_and_losses_come_back_in_float32(dtype):
    half = _image_sized_boxes(dtype)
    full = half.float()
    assert B.box_area(half).dtype == torch.float32
    assert_close(B.box_area(half), tv_ops.box_area(full), rtol=0, atol=0)
    for fn in (B.aligned_box_iou, B.aligned_generalized_box_iou, giou_loss, ciou_loss):
        got = fn(half, half.flip(0))
        assert got.dtype == torch.float32 and torch.isfinite(got).all()
        assert_close(got, fn(full, full.flip(0)), rtol=0, atol=1e-6)
    assert_close(giou_loss(half, half.flip(0)), tv_ops.generalized_box_iou_loss(half, half.flip(0)), rtol=0, atol=1e-6)
    assert_close(ciou_loss(half, half.flip(0)), tv_ops.complete_box_iou_loss(half, half.flip(0)), rtol=0, atol=1e-6)
