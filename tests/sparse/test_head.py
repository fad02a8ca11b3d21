"""Tests for detviz.sparse.head and detviz.sparse.targets, and the seed-000 trace (sparse RepPoints head)."""
from __future__ import annotations

import itertools
import math
import re

import pytest
import torch
import torchvision.ops as tv_ops
from torch.testing import assert_close

from detviz.boxes import box_iou
from detviz.fixtures import ENTRY_KEYS, QUOTE_KINDS, load_trace
from detviz.sparse.head import SparseRepPointsHead, base_point_grid, points_to_boxes, sample_features
from detviz.sparse.targets import (UNMATCHED, HungarianMatcher, box_loss, centerness_targets, featmap_sizes_for,
                                   linear_sum_assignment, objectness_targets, objectness_targets_single,
                                   sigmoid_focal_loss)

TRACE = load_trace("seed000_sparse_reppoints")
NOTE_STRIDES = [8, 16, 32, 64, 128]


def note_meta() -> dict:
    """The note's img_meta, rebuilt from the trace (flip_direction None has no entry)."""
    keys = ("ori_shape", "img_shape", "pad_shape", "batch_input_shape")
    meta = {key: tuple(TRACE[f"img_meta.{key}"]) for key in keys}
    meta.update(flip=TRACE["img_meta.flip"], flip_direction=None, scale_factor=TRACE["img_meta.scale_factor"])
    return meta


def small_meta(h: int, w: int, pad: tuple[int, int] | None = None) -> dict:
    ph, pw = pad or (h, w)
    return {"img_shape": (h, w, 3), "pad_shape": (ph, pw, 3), "batch_input_shape": (ph, pw)}


def make_head(strides=(8, 16, 32), topn=5, num_classes=3, in_channels=8, seed=0, **kwargs) -> SparseRepPointsHead:
    torch.manual_seed(seed)
    return SparseRepPointsHead(num_classes, in_channels, topn=topn, strides=strides, hidden_dim=32, **kwargs)


def make_feats(input_hw, strides, batch=2, in_channels=8, seed=0, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, in_channels, h, w, generator=g, dtype=dtype).to(device)
            for h, w in featmap_sizes_for(input_hw, strides)]


def transposed(out):
    """forward's layouts -> loss's: [B, K, 4] -> [B, 4, K] and [B, K, C] -> [B, C, K]."""
    return [b.transpose(1, 2) for b in out.topn_bbox], [c.transpose(1, 2) for c in out.topn_cls]


# ---------------------------------------------------------------------------- the trace
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _quoted_text(name: str) -> str:
    entry = TRACE.entry(name)
    spans = [entry["lines"], *entry.get("also_lines", [])]
    return "\n".join("\n".join(TRACE.note_lines()[first - 1:last]) for first, last in spans)


def _leaves(value):
    if isinstance(value, dict):
        return [x for v in value.values() for x in _leaves(v)]
    if isinstance(value, list):
        return [x for v in value for x in _leaves(v)]
    return [value]


def _found(leaf, text: str) -> bool:
    if isinstance(leaf, bool):
        return re.search(rf"\b{leaf}\b", text) is not None
    if isinstance(leaf, str):
        return leaf in text
    return any(float(token) == leaf for token in _NUMBER.findall(text))


NUMBER_ENTRIES = [n for n in TRACE.names() if TRACE.entry(n)["quote"] == "numbers"]


def test_trace_schema():
    assert TRACE.note == "000_e8f26c891e0ce2de.txt" and len(NUMBER_ENTRIES) >= 15
    num_lines = len(TRACE.note_lines())
    for name in TRACE.names():
        entry = TRACE.entry(name)
        assert set(ENTRY_KEYS) <= set(entry), name
        assert entry["quote"] in QUOTE_KINDS, name
        first, last = entry["lines"]
        assert 1 <= first <= last <= num_lines, name


@pytest.mark.parametrize("name", NUMBER_ENTRIES)
def test_trace_values_appear_in_their_quoted_lines(name):
    text = _quoted_text(name)
    value = TRACE[name]
    missing = [leaf for leaf in _leaves(value) if not _found(leaf, text)]
    if isinstance(value, dict):
        missing += [key for key in value if key not in text]
    assert not missing, f"{name}: {missing} not on lines {TRACE.entry(name)['lines']}"


def _one_unit_off(leaf, decimals):
    if isinstance(leaf, bool):
        return not leaf
    if isinstance(leaf, str):
        digits = [m.start() for m in re.finditer(r"\d", leaf)]
        if not digits:
            return None
        i = digits[-1]
        return leaf[:i] + str((int(leaf[i]) + 1) % 10) + leaf[i + 1:]
    return round(leaf + (10.0 ** -decimals if decimals else 1), decimals or 0)


@pytest.mark.parametrize("name", NUMBER_ENTRIES)
def test_trace_digits_are_checked(name):
    # The search above must fail once any single digit of the entry is changed.
    entry = TRACE.entry(name)
    text = _quoted_text(name)
    for leaf in _leaves(entry["value"]):
        changed = _one_unit_off(leaf, entry["decimals"])
        if changed is not None:
            assert not _found(changed, text), f"{name}: {changed!r} is also on the quoted lines"


def test_note_meta_is_consistent():
    meta = note_meta()
    (h0, w0, _), (h, w, _) = meta["ori_shape"], meta["img_shape"]
    assert_close(torch.tensor(meta["scale_factor"]), torch.tensor([w / w0, h / h0, w / w0, h / h0]), atol=1e-7, rtol=0)
    assert meta["batch_input_shape"] == meta["pad_shape"][:2]


# ---------------------------------------------------------------------------- focal loss
def test_focal_loss_hand_value_and_torchvision():
    # pred 0 -> p = 0.5; target 1: 0.25 * (1 - 0.5)^2 * ln 2; target 0: 0.75 * 0.5^2 * ln 2.
    loss = sigmoid_focal_loss(torch.zeros(2), torch.tensor([1.0, 0.0]))
    assert_close(loss, torch.tensor([0.0625, 0.1875]) * math.log(2))
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(6, 5, generator=g) * 3, (torch.rand(6, 5, generator=g) > 0.7).float()
    for alpha, gamma in ((0.25, 2.0), (-1.0, 1.5), (0.5, 0.0)):
        assert_close(sigmoid_focal_loss(pred, target, alpha, gamma),
                     tv_ops.sigmoid_focal_loss(pred, target, alpha, gamma, reduction="none"))


def test_focal_loss_bad_input():
    with pytest.raises(ValueError, match=r"target must have the shape of pred \[2, 3\]"):
        sigmoid_focal_loss(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(TypeError, match="pred must be Tensor"):
        sigmoid_focal_loss([0.0], torch.zeros(1))


# ---------------------------------------------------------------------------- box loss
def test_box_loss_hand_value():
    pred = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    target = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # IoU = GIoU = 1/2; cxcywh differ by (0, 5, 0, 10)
    img_wh = torch.tensor([[100.0, 50.0, 100.0, 50.0]])
    assert_close(box_loss(pred, target, img_wh, l1_weight=0.0), torch.tensor([0.5]))
    assert_close(box_loss(pred, target, img_wh, l1_weight=2.0), torch.tensor([0.5 + 2 * (5 / 50 + 10 / 50)]))
    with pytest.raises(ValueError, match=r"img_wh must be Tensor\[P, 4\] \(w, h, w, h\)"):
        box_loss(pred, target, torch.tensor([100.0, 50.0]))


def test_giou_alone_inflates_a_box_that_misses_its_gt():
    # Box [0, 0, s, s] with s = 10, gt [50, 50, 52, 52]: no overlap. GIoU improves as s grows
    # (d loss / ds = -2s / 52^2 < 0); the L1 term (d/ds = +2.5 * (2 - 1) / 100) outweighs it.
    size = torch.tensor(10.0, requires_grad=True)
    pred = torch.stack([torch.tensor(0.0), torch.tensor(0.0), size, size])[None]
    target, img_wh = torch.tensor([[50.0, 50.0, 52.0, 52.0]]), torch.full((1, 4), 100.0)
    (grad_giou,) = torch.autograd.grad(box_loss(pred, target, img_wh, l1_weight=0.0).sum(), size)
    (grad_both,) = torch.autograd.grad(box_loss(pred, target, img_wh).sum(), size)
    assert_close(grad_giou, torch.tensor(-20 / 52**2))
    assert_close(grad_both, torch.tensor(-20 / 52**2 + 2.5 / 100))


# ---------------------------------------------------------------------------- assignment
def _brute_force_min(cost: torch.Tensor) -> float:
    r, c = cost.shape
    if r <= c:
        return min(sum(cost[i, j] for i, j in enumerate(p)) for p in itertools.permutations(range(c), r))
    return _brute_force_min(cost.T)


def test_assignment_hand_3x3():
    # Greedy (row 0 takes its cheapest column 0) costs 1 + 5 + 9 = 15; the optimum is 2 + 2 + 2 = 6.
    cost = torch.tensor([[1.0, 2, 9], [2, 5, 2], [2, 9, 9]])
    rows, cols = linear_sum_assignment(cost)
    assert rows.tolist() == [0, 1, 2] and cols.tolist() == [1, 2, 0]


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (2, 5), (5, 2), (4, 6), (6, 4)])
def test_assignment_is_optimal(shape):
    g = torch.Generator().manual_seed(sum(shape))
    for _ in range(3):
        cost = torch.randn(*shape, generator=g, dtype=torch.float64)
        rows, cols = linear_sum_assignment(cost)
        assert len(rows) == min(shape) and len(set(cols.tolist())) == min(shape)
        assert torch.equal(rows, rows.sort().values)
        assert_close(cost[rows, cols].sum().item(), float(_brute_force_min(cost)))


def test_assignment_equals_scipy():
    import scipy.optimize as scipy_optimize  # scipy comes with the pinned scikit-image
    g = torch.Generator().manual_seed(3)
    for shape in ((7, 40), (40, 7), (12, 12)):
        cost = torch.rand(*shape, generator=g, dtype=torch.float64)
        rows, cols = linear_sum_assignment(cost)
        ref_rows, ref_cols = scipy_optimize.linear_sum_assignment(cost.numpy())
        assert_close(cost[rows, cols].sum().item(), float(cost.numpy()[ref_rows, ref_cols].sum()))
        assert rows.tolist() == ref_rows.tolist()


def test_assignment_empty_and_bad_input():
    rows, cols = linear_sum_assignment(torch.zeros(0, 4))
    assert rows.shape == (0,) and cols.dtype == torch.long
    with pytest.raises(ValueError, match="cost must hold finite values"):
        linear_sum_assignment(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match=r"cost must be Tensor\[R, C\] float, got shape \[3\]"):
        linear_sum_assignment(torch.zeros(3))


def test_matcher_is_one_to_one_where_max_iou_is_not():
    gts = torch.tensor([[0.0, 0, 40, 40], [60, 0, 100, 40]])
    labels = torch.tensor([0, 1])
    # Predictions 0 and 1 both overlap gt 0 most; prediction 2 is far from both.
    boxes = torch.tensor([[0.0, 0, 40, 40], [2, 2, 42, 42], [0, 60, 40, 100]])
    logits = torch.zeros(3, 2)
    assert box_iou(boxes, gts).argmax(dim=1).tolist() == [0, 0, 0]
    match = HungarianMatcher()(logits, boxes, gts, labels, (100, 100))
    assert match.pred_inds.tolist() == [0, 1] and match.gt_inds.tolist() == [0, 1]
    assert match.cost.shape == (3, 2)
    assert_close(match.cost, -0.5 + 5 * match.cost_l1 + 2 * match.cost_giou)  # cost_class = -sigmoid(0)


# ---------------------------------------------------------------------------- objectness targets
def test_centerness_one_gt_on_4x4_by_hand():
    # Stride 8: centres at 4, 12, 20, 28. gt [0, 0, 24, 16]: along x, min/max(l, r) is 4/20, 12/12,
    # 4/20 and outside; along y 4/12, 4/12, outside, outside.
    meta = small_meta(32, 32)
    (target,) = objectness_targets_single(torch.tensor([[0.0, 0, 24, 16]]), meta, [8], [(4, 4)])
    a, b = math.sqrt(0.2 / 3), math.sqrt(1 / 3)
    expected = torch.tensor([[a, b, a, 0], [a, b, a, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert target.shape == (1, 1, 4, 4)
    assert_close(target[0, 0], expected)


def test_centerness_takes_the_max_over_gts():
    points = torch.tensor([[12.0, 12.0], [4.0, 4.0]])
    gts = torch.tensor([[0.0, 0, 24, 24], [8, 8, 40, 40]])  # point 0: 1.0 and sqrt(4/28 * 4/28)
    assert_close(centerness_targets(points, gts), torch.tensor([1.0, 1 / 5]))
    assert_close(centerness_targets(points, gts[1:]), torch.tensor([4 / 28, 0.0]))


def test_no_targets_in_the_padding():
    meta = small_meta(16, 24, pad=(32, 32))
    (target,) = objectness_targets_single(torch.tensor([[0.0, 0, 32, 32]]), meta, [8], [(4, 4)])
    inside = torch.zeros(4, 4, dtype=torch.bool)
    inside[:2, :3] = True  # centres 4 and 12 < 16 along y, 4, 12, 20 < 24 along x
    assert bool((target[0, 0][~inside] == 0).all()) and bool((target[0, 0][inside] > 0).all())


def test_gts_smaller_than_one_stride():
    meta = small_meta(32, 32)
    # 4 px around the centre (4, 4): the one point inside, at the gt's centre -> 1.
    (target,) = objectness_targets_single(torch.tensor([[2.0, 2, 6, 6]]), meta, [8], [(4, 4)])
    expected = torch.zeros(4, 4)
    expected[0, 0] = 1.0
    assert_close(target[0, 0], expected)
    # 2 px between centres: no point of any level inside, so no objectness target at all.
    targets = objectness_targets_single(torch.tensor([[9.0, 9, 11, 11]]), meta, [8, 16], [(4, 4), (2, 2)])
    assert all(float(t.abs().sum()) == 0 for t in targets)


def test_batch_targets_on_the_note_meta():
    meta = note_meta()
    assert featmap_sizes_for(meta["batch_input_shape"], NOTE_STRIDES) == [(100, 168), (50, 84), (25, 42), (13, 21),
                                                                          (7, 11)]
    other = dict(meta, img_shape=(800, 1200, 3))
    gts = [torch.tensor([[1200.0, 600, 1333, 770]]), torch.zeros(0, 4)]
    targets = objectness_targets(gts, [meta, other], NOTE_STRIDES)
    assert [tuple(t.shape) for t in targets] == [(2, 1, 100, 168), (2, 1, 50, 84), (2, 1, 25, 42), (2, 1, 13, 21),
                                                 (2, 1, 7, 11)]
    assert all(float(t[1].abs().sum()) == 0 for t in targets)  # the image without gts
    assert float(targets[0][0].max()) > 0.9
    # The gt touches the bottom-right corner of img_shape: nothing beyond it.
    for t, stride in zip(targets, NOTE_STRIDES):
        ys = (torch.arange(t.shape[2]) + 0.5) * stride
        xs = (torch.arange(t.shape[3]) + 0.5) * stride
        assert float(t[0, 0][ys >= 770].abs().sum()) == 0 and float(t[0, 0][:, xs >= 1333].abs().sum()) == 0


def test_objectness_target_bad_input():
    with pytest.raises(ValueError, match=r"img_meta must hold 'img_shape' = \(h, w\[, c\]\)"):
        objectness_targets_single(torch.zeros(0, 4), {"pad_shape": (32, 32, 3)}, [8], [(4, 4)])
    with pytest.raises(TypeError, match="img_meta must be a dict"):
        objectness_targets([torch.zeros(0, 4)], [(32, 32)], [8])
    with pytest.raises(ValueError, match="one entry per image, got 2 and 1"):
        objectness_targets([torch.zeros(0, 4)] * 2, [small_meta(32, 32)], [8])
    with pytest.raises(ValueError, match="gt_bboxes must be xyxy"):
        objectness_targets_single(torch.tensor([[10.0, 0, 5, 5]]), small_meta(32, 32), [8], [(4, 4)])


# ---------------------------------------------------------------------------- forward
def test_base_grid_and_point_helpers():
    grid = base_point_grid(9)
    assert grid[:3].tolist() == [[-1, -1], [0, -1], [1, -1]] and grid[4].tolist() == [0, 0]
    assert base_point_grid(4).tolist() == [[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]]
    with pytest.raises(ValueError, match=r"num_points must be a square number \(4, 9, 16, ...\), got 8"):
        base_point_grid(8)
    assert points_to_boxes(torch.tensor([[[3.0, 1.0], [0.0, 5.0], [2.0, 2.0]]])).tolist() == [[0, 1, 3, 5]]


def test_sample_features_at_centres_between_and_outside():
    feat = torch.arange(12.0).reshape(1, 1, 3, 4)  # value 4 * row + col, stride 8
    points = torch.tensor([[[[12.0, 4.0], [20.0, 20.0], [8.0, 12.0], [-100.0, 0.0]]]])  # [1, 1, 4, 2]
    # centre of (row 0, col 1) -> 1; centre of (2, 2) -> 10; halfway between (1, 0) and (1, 1) -> 4.5; outside -> 0
    assert_close(sample_features(feat, points, 8)[0, 0, :, 0], torch.tensor([1.0, 10.0, 4.5, 0.0]))


@pytest.mark.parametrize("input_hw, topn, strides", [
    ((64, 96), 5, (8, 16, 32)),
    ((100, 70), 1, (8,)),
    ((120, 200), 20, (8, 16, 32, 64, 128)),  # the last levels have 8 and 2 locations: K = H*W there
])
def test_forward_shapes_and_indices(input_hw, topn, strides):
    head = make_head(strides=strides, topn=topn, num_classes=4)
    feats = make_feats(input_hw, strides, batch=2)
    out = head(feats)
    assert len(out.objectness) == len(out.topn_bbox) == len(out.topn_cls) == len(out.topn_idx) == len(strides)
    for feat, obj, boxes, cls, idx in zip(feats, *out):
        h, w = feat.shape[-2:]
        k = min(topn, h * w)
        assert obj.shape == (2, 1, h, w) and boxes.shape == (2, k, 4) and cls.shape == (2, k, 4)
        assert idx.shape == (2, k) and idx.dtype == torch.long
        assert 0 <= int(idx.min()) and int(idx.max()) <= h * w - 1
        flat = obj.flatten(1)  # row-major: index y * W + x
        assert_close(flat.gather(1, idx), flat.topk(k, dim=1).values)
        assert_close(obj[0, 0, idx[0, 0] // w, idx[0, 0] % w], flat[0].max())
        assert bool(((obj > 0) & (obj < 1)).all())


def test_initial_points_and_boxes_are_the_dilated_3x3_grid():
    head = make_head(strides=(8, 16), topn=3)
    feats = make_feats((48, 64), (8, 16), batch=1)
    steps = head.forward_with_steps(feats)
    for stride, feat, idx, centers, points, boxes in zip((8, 16), feats, steps.topn_idx, steps.topn_centers,
                                                         steps.topn_points, steps.topn_bbox):
        w = feat.shape[-1]
        expected_centers = torch.stack([(idx % w + 0.5) * stride, (idx // w + 0.5) * stride], dim=-1).float()
        assert_close(centers, expected_centers)
        assert_close(points, centers[:, :, None, :] + base_point_grid(9) * stride)
        assert_close(boxes, torch.cat([centers - stride, centers + stride], dim=-1))
    # zero features give the initial objectness prior_prob = 0.01 everywhere
    zero_out = head([torch.zeros_like(f) for f in feats])
    assert_close(zero_out.objectness[0], torch.full_like(zero_out.objectness[0], 0.01))


def test_forward_and_loss_keep_float64():
    head = make_head(strides=(8, 16)).double()
    out = head(make_feats((32, 48), (8, 16), dtype=torch.float64))
    assert all(t.dtype == torch.float64 for t in (*out.objectness, *out.topn_bbox, *out.topn_cls))
    gts, labels = [torch.tensor([[2.0, 4.0, 30.0, 20.0]])] * 2, [torch.tensor([1])] * 2
    losses = head.loss(out.objectness, *transposed(out), out.topn_idx, gts, labels, [small_meta(32, 48)] * 2)
    assert all(v.dtype == torch.float64 for v in losses.values())


def test_forward_and_loss_under_cpu_autocast():
    head = make_head()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(make_feats((64, 96), (8, 16, 32)))
        losses = head.loss(out.objectness, *transposed(out), out.topn_idx, GTS, LABELS, METAS)
    assert out.topn_cls[0].dtype == torch.bfloat16
    assert all(bool(torch.isfinite(v)) for v in losses.values())
    sum(losses.values()).backward()


def test_forward_bad_input():
    head = make_head(strides=(8, 16))
    feats = make_feats((32, 32), (8, 16))
    with pytest.raises(ValueError, match=r"feats must hold one feature map per stride \[8, 16\] \(2\), got 1"):
        head(feats[:1])
    with pytest.raises(ValueError, match=r"feats\[1\] must be Tensor\[B, 8, H, W\]"):
        head([feats[0], feats[1][:, :4]])
    with pytest.raises(TypeError, match="feats must be a list of Tensor"):
        head(feats[0])
    with pytest.raises(ValueError, match="strides must be a non-empty sequence of positive ints"):
        SparseRepPointsHead(3, 8, strides=())
    with pytest.raises(ValueError, match="topn must be a positive int, got 0"):
        SparseRepPointsHead(3, 8, topn=0)


# ---------------------------------------------------------------------------- targets and loss
GTS = [torch.tensor([[4.0, 6.0, 40.0, 30.0], [50.0, 20.0, 90.0, 60.0], [70.0, 2.0, 74.0, 6.0]]),
       torch.tensor([[10.0, 10.0, 60.0, 50.0]])]
LABELS = [torch.tensor([0, 2, 1]), torch.tensor([1])]
METAS = [small_meta(64, 96), small_meta(56, 90, pad=(64, 96))]


def _head_and_output(seed=0):
    head = make_head(seed=seed)
    feats = make_feats((64, 96), (8, 16, 32), seed=seed)
    return head, feats, head(feats)


def test_get_targets_matches_every_gt_once():
    head, _, out = _head_and_output()
    targets = head.get_targets(out.topn_cls, out.topn_bbox, GTS, LABELS, METAS)
    assert targets.num_level_preds == [5, 5, 5] and targets.labels.shape == (2, 15)
    assert targets.num_pos == 4
    for b, (gt, labels) in enumerate(zip(GTS, LABELS)):
        matched = targets.matched_gt_inds[b]
        assert sorted(matched[matched != UNMATCHED].tolist()) == list(range(len(gt)))
        assert_close(targets.bbox_targets[b][matched >= 0], gt[matched[matched >= 0]])
        assert torch.equal(targets.labels[b][matched >= 0], labels[matched[matched >= 0]])
        assert bool((targets.labels[b][matched == UNMATCHED] == 3).all())  # background = C


def test_loss_recomputed_by_hand():
    head, _, out = _head_and_output()
    bbox_pred, cls_pred = transposed(out)
    losses = head.loss(out.objectness, bbox_pred, cls_pred, out.topn_idx, GTS, LABELS, METAS)
    assert list(losses) == ["objectness_loss", "bbox_loss", "cls_loss"]

    obj_targets = objectness_targets(GTS, METAS, [8, 16, 32])
    pred = torch.cat([o.flatten() for o in out.objectness])
    target = torch.cat([t.flatten() for t in obj_targets])
    bce = -(target * pred.log() + (1 - target) * (1 - pred).log())
    assert_close(losses["objectness_loss"], bce.mean())

    targets = head.get_targets(out.topn_cls, out.topn_bbox, GTS, LABELS, METAS)
    cls_all = torch.cat(out.topn_cls, dim=1)
    one_hot = torch.zeros_like(cls_all)
    pos = targets.matched_gt_inds >= 0
    one_hot[pos, targets.labels[pos]] = 1.0
    num_pos = targets.num_pos
    assert_close(losses["cls_loss"], tv_ops.sigmoid_focal_loss(cls_all, one_hot, reduction="sum") / num_pos)
    boxes, gts = torch.cat(out.topn_bbox, dim=1)[pos], targets.bbox_targets[pos]
    img_wh = torch.tensor([[96.0, 64.0, 96.0, 64.0], [90.0, 56.0, 90.0, 56.0]])[pos.nonzero()[:, 0]]  # [P, 4]
    l1 = (tv_ops.box_convert(boxes, "xyxy", "cxcywh") - tv_ops.box_convert(gts, "xyxy", "cxcywh")).abs() / img_wh
    giou = tv_ops.generalized_box_iou_loss(boxes, gts, reduction="sum")
    assert_close(losses["bbox_loss"], (giou + 2.5 * l1.sum()) / num_pos)


def test_loss_without_any_gt():
    head, _, out = _head_and_output()
    bbox_pred, cls_pred = transposed(out)
    empty = [torch.zeros(0, 4), torch.zeros(0, 4)]
    no_labels = [torch.zeros(0, dtype=torch.long)] * 2
    losses = head.loss(out.objectness, bbox_pred, cls_pred, out.topn_idx, empty, no_labels, METAS)
    assert float(losses["bbox_loss"].detach()) == 0
    assert all(torch.isfinite(v) for v in losses.values()) and float(losses["cls_loss"].detach()) > 0
    sum(losses.values()).backward()
    assert head.objectness_branch[-1].weight.grad is not None


def test_loss_gradients_reach_every_output_layer():
    head, _, out = _head_and_output()
    losses = head.loss(out.objectness, *transposed(out), out.topn_idx, GTS, LABELS, METAS)
    sum(losses.values()).backward()
    for name in ("objectness_branch.2", "points_branch.2", "mlp.0", "reg_out", "cls_out"):
        grad = dict(head.named_parameters())[f"{name}.weight"].grad
        assert grad is not None and float(grad.abs().sum()) > 0, name


def test_loss_bad_input():
    head, _, out = _head_and_output()
    bbox_pred, cls_pred = transposed(out)
    args = (out.objectness, bbox_pred, cls_pred, out.topn_idx, GTS, LABELS, METAS)
    with pytest.raises(ValueError, match=r"bbox_pred\[0\] must be Tensor\[B, 4, K\] = \[2, 4, 5\] \(forward's"):
        head.loss(out.objectness, out.topn_bbox, cls_pred, *args[3:])
    with pytest.raises(ValueError, match=r"cls_pred\[0\] must be Tensor\[B, C, K\] = \[2, 3, 5\]"):
        head.loss(out.objectness, bbox_pred, out.topn_cls, *args[3:])
    with pytest.raises(ValueError, match="gt_bboxes_ignore must be None"):
        head.loss(*args, gt_bboxes_ignore=[torch.zeros(0, 4)] * 2)
    with pytest.raises(ValueError, match=r"one entry per image \(2\), got 1, 2 and 2"):
        head.loss(*args[:4], GTS[:1], LABELS, METAS)
    with pytest.raises(ValueError, match=r"topn_idx\[0\] must lie in \[0, H\*W - 1\] = \[0, 95\]"):
        head.loss(*args[:3], [out.topn_idx[0] + 96, *out.topn_idx[1:]], *args[4:])
    with pytest.raises(ValueError, match=r"gt_labels must lie in \[0, 2\]"):
        head.loss(*args[:5], [torch.tensor([0, 2, 3]), LABELS[1]], METAS)
    with pytest.raises(TypeError, match="objectness_pred must be a list of tensors"):
        head.loss(out.objectness[0], *args[1:])
    with pytest.raises(ValueError, match="img_meta must hold 'img_shape'"):
        head.loss(*args[:6], [{"pad_shape": (64, 96, 3)}] * 2)


def test_short_training_reduces_every_loss():
    head, feats, _ = _head_and_output(seed=1)
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    history = []
    for _ in range(40):
        out = head(feats)
        losses = head.loss(out.objectness, *transposed(out), out.topn_idx, GTS, LABELS, METAS)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    for key in ("objectness_loss", "bbox_loss", "cls_loss"):
        first, last = history[0][key], sum(h[key] for h in history[-5:]) / 5
        assert last < 0.9 * first, f"{key}: {first:.4f} -> {last:.4f}"


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_forward_and_loss_stay_on_the_input_device(device):
    head = make_head().to(device)
    feats = make_feats((64, 96), (8, 16, 32), device=device)
    out = head(feats)
    assert all(t.device.type == device for t in (*out.objectness, *out.topn_bbox, *out.topn_cls, *out.topn_idx))
    gts = [g.to(device) for g in GTS]
    losses = head.loss(out.objectness, *transposed(out), out.topn_idx, gts, [lab.to(device) for lab in LABELS], METAS)
    sum(losses.values()).backward()
    assert all(v.device.type == device and torch.isfinite(v) for v in losses.values())
