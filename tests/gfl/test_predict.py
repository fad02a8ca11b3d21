"""Tests for detviz.gfl.predict: hand-built GFL logits -> exact boxes, the nms_pre cut, thresholds, NMS, errors,
and the batched post-processing against the per-image path it replaced, bit for bit.

The exact examples use reg_max = 2 (bins 0, 1, 2) and side logits ``log(p)``, so each side's
softmax is ``p`` and its expectation ``0 * p0 + 1 * p1 + 2 * p2`` is known exactly;
``log(0) = -inf`` gives a bin probability of exactly 0. Zero logits are uniform: 1 stride.
"""
import pytest
import torch
import torchvision.ops as tv_ops
from torch import nn
from torch.testing import assert_close

from detviz.anchors import center_points
from detviz.boxes import batched_nms, distance2bbox
from detviz.gfl.model import NanoDetConfig, build_nanodet, normalize_images
from detviz.gfl.predict import _nms_per_group, decode_gfl_level, gfl_predict
from detviz.losses import distribution_project

REG_MAX = 2
P0 = (1.0, 0.0, 0.0)  # expectation 0 strides
P075 = (0.5, 0.25, 0.25)  # 0.25 + 2 * 0.25 = 0.75 strides
P100 = (0.25, 0.5, 0.25)  # 1 stride
P125 = (0.25, 0.25, 0.5)  # 0.25 + 2 * 0.5 = 1.25 strides
P1625 = (0.125, 0.125, 0.75)  # 0.125 + 2 * 0.75 = 1.625 strides
P2 = (0.0, 0.0, 1.0)  # 2 strides
OFF = -30.0  # a class logit whose sigmoid (~1e-13) is far below any threshold

# gfl_predict examples: a 32 x 48 input (not square, so a swapped H/W shows up), two levels
INPUT = (32, 48)
STRIDES = (8, 16)
SIZES = [(4, 6), (2, 3)]
C = 3

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _sides(left, top, right, bottom):
    """Distance logits of one prior, [4R] in ltrb order: softmax(log p) = p for each side."""
    return torch.tensor([left, top, right, bottom]).log().reshape(-1)  # [4, R] -> [4R]


class _Outputs(nn.Module):
    """Stands in for NanoDet: ``forward`` returns the given per-level [B, C, H, W] class logits and
    [B, 4R, H, W] distance logits (the head's format); ``cfg`` gives strides and reg_max."""

    def __init__(self, cls_scores, bbox_preds, strides=STRIDES, reg_max=REG_MAX):
        super().__init__()
        self.cfg = NanoDetConfig(num_classes=cls_scores[0].shape[1], strides=tuple(strides), reg_max=reg_max)
        self.cls_scores, self.bbox_preds = cls_scores, bbox_preds
        self.calls = 0

    def forward(self, images):
        self.calls += 1
        return list(self.cls_scores), list(self.bbox_preds)


def _blank(batch=1):
    """Per-level outputs where every class logit is OFF and every side is uniform (1 stride)."""
    cls = [torch.full((batch, C, h, w), OFF) for h, w in SIZES]
    reg = [torch.zeros(batch, 4 * (REG_MAX + 1), h, w) for h, w in SIZES]
    return cls, reg


def _set(outputs, level, row, col, scores, sides=None, b=0):
    """Switch on one prior: {label: probability} and, optionally, its ltrb distributions."""
    cls, reg = outputs
    for label, p in scores.items():
        cls[level][b, label, row, col] = torch.logit(torch.tensor(p))
    if sides is not None:
        reg[level][b, :, row, col] = _sides(*sides)


def _predict(outputs, batch=1, **kwargs):
    return gfl_predict(_Outputs(*outputs), torch.zeros(batch, 3, *INPUT), **kwargs)


def _check_empty(result):
    assert result["boxes"].shape == (0, 4) and result["boxes"].dtype == torch.float32
    assert result["labels"].shape == (0,) and result["labels"].dtype == torch.int64
    assert result["scores"].shape == (0,) and result["scores"].dtype == torch.float32


# ---------------------------------------------------------------- decode_gfl_level

def _level_2x3():
    """One 2 x 3 level, C = 2: class probabilities and distance logits of every cell."""
    probs = torch.tensor([[[0.10, 0.20, 0.30], [0.40, 0.50, 0.60]],   # class 0
                          [[0.15, 0.25, 0.35], [0.45, 0.55, 0.65]]])  # class 1
    reg = torch.zeros(4 * (REG_MAX + 1), 2, 3)  # uniform sides: 1 stride
    reg[:, 0, 0] = _sides(P1625, P2, P075, P100)
    reg[:, 1, 1] = _sides(P075, P100, P125, P0)
    reg[:, 1, 2] = _sides(P0, P0, P2, P1625)
    return torch.logit(probs), reg


def test_decode_level_by_hand():
    cls, reg = _level_2x3()
    scores, boxes = decode_gfl_level(cls, reg, stride=8, reg_max=REG_MAX, image_size=(16, 24))
    # rows are the cells in row-major order (y outer, x inner), one column per class
    assert_close(scores, torch.tensor([[0.10, 0.15], [0.20, 0.25], [0.30, 0.35],
                                       [0.40, 0.45], [0.50, 0.55], [0.60, 0.65]]))
    # centre ((x + 0.5) * 8, (y + 0.5) * 8) -/+ expectation * 8, then x clamped to [0, 24], y to [0, 16]
    expected = torch.tensor([
        [0.0, 0.0, 10.0, 12.0],   # (4, 4) - (13, 16) + (6, 8) = [-9, -12, 10, 12]
        [4.0, 0.0, 20.0, 12.0],   # (12, 4) -/+ 8 = [4, -4, 20, 12]
        [12.0, 0.0, 24.0, 12.0],  # (20, 4) -/+ 8 = [12, -4, 28, 12]
        [0.0, 4.0, 12.0, 16.0],   # (4, 12) -/+ 8 = [-4, 4, 12, 20]
        [6.0, 4.0, 22.0, 12.0],   # (12, 12) - (6, 8) + (10, 0): inside the image, nothing clamped
        [20.0, 12.0, 24.0, 16.0],  # (20, 12) - (0, 0) + (16, 13) = [20, 12, 36, 25]
    ])
    assert_close(boxes, expected)
    assert boxes.dtype == torch.float32


def test_decode_level_scales_with_the_stride():
    # the same logits at stride 16 on a twice larger input: centres, distances and clamps all double
    cls, reg = _level_2x3()
    _, boxes8 = decode_gfl_level(cls, reg, stride=8, reg_max=REG_MAX, image_size=(16, 24))
    _, boxes16 = decode_gfl_level(cls, reg, stride=16, reg_max=REG_MAX, image_size=(32, 48))
    assert_close(boxes16, 2 * boxes8)


def test_nms_pre_keeps_the_best_class_score_of_each_prior():
    # priors (class 0, class 1): p0 (0.6, 0.6), p1 (0.2, 0.85), p2 (0.5, 0.5), p3 (0.9, 0.1).
    # By best class: p3, p1, p0, p2; by class 0 it would be p3, p0; by the sum p0, p1.
    # The kept priors come best first, in topk order, as in NanoDet.
    probs = torch.tensor([[[0.6, 0.2], [0.5, 0.9]], [[0.6, 0.85], [0.5, 0.1]]])
    reg = torch.randn(4 * (REG_MAX + 1), 2, 2, generator=torch.Generator().manual_seed(0))  # a box per cell
    cls = torch.logit(probs)
    all_scores, all_boxes = decode_gfl_level(cls, reg, 8, REG_MAX, (16, 16), nms_pre=4)
    assert_close(all_scores, torch.tensor([[0.6, 0.6], [0.2, 0.85], [0.5, 0.5], [0.9, 0.1]]))  # no cut: row-major
    for nms_pre, kept in [(1, [3]), (2, [3, 1]), (3, [3, 1, 0])]:
        scores, boxes = decode_gfl_level(cls, reg, 8, REG_MAX, (16, 16), nms_pre=nms_pre)
        assert_close(scores, all_scores[kept])
        assert_close(boxes, all_boxes[kept])


def test_decode_level_does_not_modify_its_inputs():
    cls, reg = _level_2x3()
    cls_before, reg_before = cls.clone(), reg.clone()
    decode_gfl_level(cls, reg, 8, REG_MAX, (16, 24), nms_pre=2)
    assert_close(cls, cls_before, rtol=0, atol=0)
    assert_close(reg, reg_before, rtol=0, atol=0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(bbox_pred=torch.zeros(16, 2, 3)),  # 16 channels, but 4 * (2 + 1) = 12 expected
     r"bbox_pred \[4 \* \(reg_max \+ 1\) = 12, H, W\] on the same grid, got \[2, 2, 3\] and \[16, 2, 3\]"),
    (dict(reg_max=0, bbox_pred=torch.zeros(4, 2, 3)), r"reg_max must be an int >= 1, got 0"),
    (dict(stride=0), r"stride must be a positive number of pixels, got 0"),
    (dict(image_size=16), r"must be \(height, width\), got 16"),
])
def test_decode_level_bad_input(kwargs, message):
    cls, reg = _level_2x3()
    args = dict(cls_score=cls, bbox_pred=reg, stride=8, reg_max=REG_MAX, image_size=(16, 24)) | kwargs
    with pytest.raises(ValueError, match=message):
        decode_gfl_level(**args)


# ---------------------------------------------------------------- gfl_predict

def test_one_prior_gives_its_decoded_box_label_and_score():
    outputs = _blank()
    # level 1 (stride 16), cell (row 1, col 2): centre (40, 24); distances 12, 16, 0, 20 px
    _set(outputs, level=1, row=1, col=2, scores={2: 0.8}, sides=(P075, P100, P0, P125))
    (result,) = _predict(outputs)
    assert_close(result["boxes"], torch.tensor([[28.0, 8.0, 40.0, 32.0]]))  # y2 = 44 clamped to the height 32
    assert_close(result["labels"], torch.tensor([2]))
    assert_close(result["scores"], torch.tensor([0.8]))


def test_score_threshold_is_strict_and_keeps_every_class_above_it():
    outputs = _blank()
    _set(outputs, level=0, row=2, col=3, scores={0: 0.7, 1: 0.5, 2: 0.6})  # sigmoid(logit(0.5)) = 0.5 exactly
    box = torch.tensor([20.0, 12.0, 36.0, 28.0])  # centre (28, 20) -/+ 8
    (strict,) = _predict(outputs, score_thresh=0.5)
    assert_close(strict["labels"], torch.tensor([0, 2]))
    assert_close(strict["scores"], torch.tensor([0.7, 0.6]))
    assert_close(strict["boxes"], box.expand(2, 4))  # one prior, two detections: classes never suppress each other
    (lower,) = _predict(outputs, score_thresh=0.49)
    assert_close(lower["labels"], torch.tensor([0, 2, 1]))
    assert_close(lower["scores"], torch.tensor([0.7, 0.6, 0.5]))


@pytest.mark.parametrize("label_b, nms_thresh, expected_labels", [
    (0, 0.6, [0]),  # same class, IoU 0.694 > 0.6: the weaker box goes
    (1, 0.6, [0, 1]),  # different classes: both stay
    (0, 0.7, [0, 0]),  # same class, IoU 0.694 <= 0.7: both stay
])
def test_nms_is_per_class_and_across_levels(label_b, nms_thresh, expected_labels):
    outputs = _blank()
    # level 0 cell (1, 1): centre (12, 12) -/+ 10 = [2, 2, 22, 22], area 400;
    # level 1 cell (0, 0): centre (8, 8) -/+ 16 = [-8, -8, 24, 24] -> [0, 0, 24, 24], area 576; IoU 400 / 576
    _set(outputs, level=0, row=1, col=1, scores={0: 0.9}, sides=(P125,) * 4)
    _set(outputs, level=1, row=0, col=0, scores={label_b: 0.8})
    (result,) = _predict(outputs, nms_thresh=nms_thresh)
    assert_close(result["labels"], torch.tensor(expected_labels))
    expected_boxes = torch.tensor([[2.0, 2.0, 22.0, 22.0], [0.0, 0.0, 24.0, 24.0]])[:len(expected_labels)]
    assert_close(result["boxes"], expected_boxes)
    assert_close(result["scores"], torch.tensor([0.9, 0.8])[:len(expected_labels)])


def test_nms_pre_cuts_each_level_not_the_image():
    outputs = _blank()
    _set(outputs, level=0, row=0, col=0, scores={0: 0.9})  # [0, 0, 12, 12]
    _set(outputs, level=0, row=3, col=5, scores={0: 0.8})  # [36, 20, 48, 32]
    _set(outputs, level=1, row=0, col=2, scores={1: 0.3})  # [24, 0, 48, 24]
    (uncut,) = _predict(outputs)
    assert_close(uncut["scores"], torch.tensor([0.9, 0.8, 0.3]))
    (cut,) = _predict(outputs, nms_pre=1)  # level 0 keeps only its best prior, level 1 keeps its own
    assert_close(cut["scores"], torch.tensor([0.9, 0.3]))
    assert_close(cut["boxes"], torch.tensor([[0.0, 0.0, 12.0, 12.0], [24.0, 0.0, 48.0, 24.0]]))


def _random_outputs(batch=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    cls = [2 * torch.randn(batch, C, h, w, generator=gen) - 1 for h, w in SIZES]
    reg = [2 * torch.randn(batch, 4 * (REG_MAX + 1), h, w, generator=gen) for h, w in SIZES]
    return cls, reg


def test_matches_torchvision_batched_nms_on_the_same_candidates():
    cls, reg = _random_outputs()
    kwargs = dict(score_thresh=0.2, nms_thresh=0.5, max_per_img=100, nms_pre=10)  # level 0 has 24 priors: cut
    results = _predict((cls, reg), batch=2, **kwargs)
    suppressed = 0
    for b, result in enumerate(results):
        per_level = [decode_gfl_level(c[b], r[b], stride, REG_MAX, INPUT, nms_pre=10)
                     for c, r, stride in zip(cls, reg, STRIDES)]
        scores = torch.cat([s for s, _ in per_level])  # [N, C]
        boxes = torch.cat([bx for _, bx in per_level])  # [N, 4]
        prior, labels = torch.nonzero(scores > 0.2, as_tuple=True)
        keep = tv_ops.batched_nms(boxes[prior], scores[prior, labels], labels, 0.5)
        suppressed += len(prior) - len(keep)
        assert_close(result["boxes"], boxes[prior][keep])
        assert_close(result["labels"], labels[keep])
        assert_close(result["scores"], scores[prior, labels][keep])
    assert suppressed > 0  # NMS had something to do


def test_max_per_img_keeps_the_best_detections_in_order():
    outputs = _random_outputs(batch=1)
    (full,) = _predict(outputs, score_thresh=0.2)
    (top3,) = _predict(outputs, score_thresh=0.2, max_per_img=3)
    assert len(full["scores"]) > 3
    for key in ("boxes", "labels", "scores"):
        assert_close(top3[key], full[key][:3])
    assert_close(top3["scores"], top3["scores"].sort(descending=True).values)


def test_image_without_candidates_next_to_one_with():
    outputs = _blank(batch=2)
    _set(outputs, level=1, row=0, col=0, scores={1: 0.6}, b=0)
    with_one, empty = _predict(outputs, batch=2)
    assert_close(with_one["labels"], torch.tensor([1]))
    _check_empty(empty)


def test_no_candidate_above_the_threshold():
    (result,) = _predict(_random_outputs(batch=1), score_thresh=0.999)
    _check_empty(result)


def test_gfl_predict_does_not_modify_its_inputs():
    cls, reg = _random_outputs()
    images = torch.rand(2, 3, *INPUT)
    before = [t.clone() for t in (*cls, *reg, images)]
    gfl_predict(_Outputs(cls, reg), images, score_thresh=0.2, nms_pre=10)
    for tensor, copy in zip((*cls, *reg, images), before):
        assert_close(tensor, copy, rtol=0, atol=0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(score_thresh=-0.1), r"score_thresh must be a number in \[0, 1\), got -0\.1"),
    (dict(score_thresh=1.0), r"score_thresh must be a number in \[0, 1\), got 1\.0"),
    (dict(max_per_img=0), r"max_per_img must be an int >= 1, got 0"),
    (dict(nms_thresh=1.5), r"nms_thresh must be an IoU in \[0, 1\], got 1\.5"),
    (dict(nms_pre=0), r"nms_pre must be an int >= 1, got 0"),
    (dict(nms_pre=10.5), r"nms_pre must be an int >= 1, got 10\.5"),
    (dict(images=torch.zeros(1, 3, 100, 96)), r"H and W multiples of the largest stride 16, got \[100, 96\]"),
    (dict(images=torch.zeros(1, 96, 96)), r"images must be a float Tensor\[B, 3, H, W\], got \[1, 96, 96\]"),
])
def test_gfl_predict_bad_arguments_before_running_the_model(kwargs, message):
    model = _Outputs(*_blank())
    images = kwargs.pop("images", torch.zeros(1, 3, *INPUT))
    with pytest.raises(ValueError, match=message):
        gfl_predict(model, images, **kwargs)
    assert model.calls == 0


def test_a_model_whose_levels_do_not_match_its_strides_is_named():
    cls, reg = _blank()
    model = _Outputs(cls[:1], reg[:1])
    with pytest.raises(ValueError, match=r"returned 1 levels of scores and 1 of boxes, but its cfg.strides "
                                         r"\(8, 16\) has 2"):
        gfl_predict(model, torch.zeros(1, 3, *INPUT))


# ---------------------------------------------------------------- a NanoDet end to end

@pytest.fixture(scope="module")
def nanodet():
    """A NanoDet in eval mode. Its head starts with weights of std 0.01, which give every prior the
    same 0.01 score to 8 digits; Kaiming-initialised head convolutions make the priors differ."""
    torch.manual_seed(0)
    model = build_nanodet(NanoDetConfig(num_classes=3)).eval()
    with torch.no_grad():
        for module in model.head.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
    return model


def test_nanodet_predictions_are_per_image(nanodet):
    # eval mode: each image's detections do not depend on the other images of the batch
    images = normalize_images(torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(1)))
    batch = gfl_predict(nanodet, images, score_thresh=0.01)  # the scores start near the prior, 0.01
    alone = [gfl_predict(nanodet, images[b:b + 1], score_thresh=0.01)[0] for b in range(2)]
    assert len(batch[0]["scores"]) > 10
    assert not torch.equal(batch[0]["scores"], batch[1]["scores"])  # two different images
    for in_batch, single in zip(batch, alone):
        for key in ("boxes", "labels", "scores"):
            assert_close(in_batch[key], single[key])
    cls_scores, bbox_preds = nanodet(images)  # the same as the stub pipeline on the model's own outputs
    stubbed = gfl_predict(_Outputs(cls_scores, bbox_preds, nanodet.cfg.strides, nanodet.cfg.reg_max), images,
                          score_thresh=0.01)
    for mine, via_stub in zip(batch, stubbed):
        for key in ("boxes", "labels", "scores"):
            assert_close(mine[key], via_stub[key])


# ---------------------------------------------------------------- on a NanoDet-m

def _model(cls_bias: float):
    torch.manual_seed(0)
    model = build_nanodet(NanoDetConfig(num_classes=3, input_size=64)).eval()
    with torch.no_grad():
        for out in model.head.outputs:
            out.bias[:3] = cls_bias
    return model


def test_decode_uniform_distribution_by_hand():
    # zero logits: every side's distribution is uniform over 0..7, expectation 3.5 strides = 28 px at stride 8;
    # cell (0, 0) is centred at (4, 4), so its box [-24, -24, 32, 32] is clamped to [0, 0, 32, 32]
    scores, boxes = decode_gfl_level(torch.zeros(2, 2, 3), torch.zeros(32, 2, 3), 8, 7, (16, 24))
    assert_close(scores, torch.full((6, 2), 0.5))
    assert_close(boxes[0], torch.tensor([0.0, 0.0, 24.0, 16.0]))  # clamped to width 24, height 16
    _, top = decode_gfl_level(torch.arange(6.0).view(1, 2, 3), torch.zeros(32, 2, 3), 8, 7, (16, 24), nms_pre=2)
    assert top.shape == (2, 4)


def test_gfl_predict_shapes_and_ranges():
    images = normalize_images(torch.rand(2, 3, 64, 96))
    predictions = gfl_predict(_model(3.0), images, max_per_img=7)
    assert len(predictions) == 2
    for p in predictions:
        assert p["boxes"].shape == (7, 4) and p["labels"].shape == (7,) and p["scores"].shape == (7,)
        assert p["labels"].dtype == torch.int64 and p["labels"].min() >= 0 and p["labels"].max() < 3
        assert (p["scores"] > 0.05).all() and (p["scores"] <= 1).all()
        assert_close(p["scores"], p["scores"].sort(descending=True).values)
        assert p["boxes"][:, 0::2].max() <= 96 and p["boxes"][:, 1::2].max() <= 64 and p["boxes"].min() >= 0


def test_gfl_predict_empty_output():
    (p,) = gfl_predict(_model(-20.0), torch.zeros(1, 3, 64, 64))
    assert p["boxes"].shape == (0, 4) and p["labels"].shape == (0,) and p["scores"].shape == (0,)
    with pytest.raises(ValueError, match=r"score_thresh must be a number in \[0, 1\)"):
        gfl_predict(_model(0.0), torch.zeros(1, 3, 64, 64), score_thresh=1.5)


# ---------------------------------------------------------------- the batched path against the per-image one

def _per_image_reference(outputs, strides, reg_max, image_size, score_thresh=0.05, nms_thresh=0.6,
                         max_per_img=100, nms_pre=1000):
    """gfl_predict as NanoDet's get_bboxes reads, one image at a time: every prior decoded per level,
    the nms_pre cut, the candidates, detviz.boxes.batched_nms (one nms per class), the best max_per_img."""
    cls_scores, bbox_preds = outputs
    predictions = []
    for b in range(cls_scores[0].shape[0]):
        scores, boxes = [], []
        for cls, reg, stride in zip(cls_scores, bbox_preds, strides):
            c, h, w = cls[b].shape
            level_scores = cls[b].permute(1, 2, 0).reshape(h * w, c).sigmoid()
            distances = distribution_project(reg[b].permute(1, 2, 0).reshape(h * w, -1), reg_max) * stride
            points = center_points((h, w), stride)
            if h * w > nms_pre:
                top = level_scores.max(dim=1).values.topk(nms_pre).indices
                level_scores, distances, points = level_scores[top], distances[top], points[top]
            scores.append(level_scores)
            boxes.append(distance2bbox(points, distances, max_shape=image_size))
        scores, boxes = torch.cat(scores), torch.cat(boxes)
        prior, labels = torch.nonzero(scores > score_thresh, as_tuple=True)
        keep = batched_nms(boxes[prior], scores[prior, labels], labels, nms_thresh)[:max_per_img]
        predictions.append({"boxes": boxes[prior][keep], "labels": labels[keep], "scores": scores[prior, labels][keep]})
    return predictions


def _tied_outputs(batch, sizes, num_classes, seed, reg_max=REG_MAX):
    """Logits on a coarse grid (steps of 0.5): many priors share a score, many sides a distribution."""
    gen = torch.Generator().manual_seed(seed)
    cls = [torch.randint(-8, 3, (batch, num_classes, h, w), generator=gen) / 2.0 for h, w in sizes]
    reg = [torch.randint(-4, 5, (batch, 4 * (reg_max + 1), h, w), generator=gen) / 2.0 for h, w in sizes]
    return cls, reg


def _assert_identical(batched, reference):
    assert len(batched) == len(reference)
    for mine, theirs in zip(batched, reference):
        for key in ("boxes", "labels", "scores"):
            assert mine[key].dtype == theirs[key].dtype and torch.equal(mine[key], theirs[key]), key


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kwargs", [dict(), dict(nms_pre=10, max_per_img=5), dict(score_thresh=0.3, nms_thresh=0.3)])
def test_batched_post_processing_equals_the_per_image_path(seed, kwargs):
    cls, reg = _tied_outputs(batch=3, sizes=SIZES, num_classes=C, seed=seed)
    cls[0][1] = OFF  # image 1 has candidates at level 1 only
    for level in cls:
        level[2] = OFF  # image 2 has none
    batched = _predict((cls, reg), batch=3, **kwargs)
    _assert_identical(batched, _per_image_reference((cls, reg), STRIDES, REG_MAX, INPUT, **kwargs))
    _check_empty(batched[2])
    scores = batched[0]["scores"]
    assert len(scores) > len(torch.unique(scores))  # equal scores: their order is the tie-break's


def test_batched_post_processing_on_large_groups_and_many_classes():
    """More candidates than one NMS block (256) in a class, and many small classes packed into blocks."""
    sizes, strides = [(24, 24), (12, 12), (6, 6)], (8, 16, 32)
    cls, reg = _tied_outputs(batch=2, sizes=sizes, num_classes=20, seed=7, reg_max=7)
    cls[0][0, 3] = 2.0  # class 3 of image 0: all 576 priors of level 0 are candidates
    model = _Outputs(cls, reg, strides=strides, reg_max=7)
    for kwargs in (dict(max_per_img=1000), dict(max_per_img=37, nms_pre=300)):
        batched = gfl_predict(model, torch.zeros(2, 3, 192, 192), **kwargs)
        reference = _per_image_reference((cls, reg), strides, 7, (192, 192), **kwargs)
        _assert_identical(batched, reference)
    assert (batched[0]["labels"] == 3).sum() > 0 and len(torch.unique(batched[1]["labels"])) > 10


def test_nanodet_outputs_give_the_per_image_path(nanodet):
    images = normalize_images(torch.rand(4, 3, 64, 96, generator=torch.Generator().manual_seed(2)))
    outputs = nanodet(images)
    for kwargs in (dict(score_thresh=0.01), dict(score_thresh=0.01, max_per_img=10, nms_pre=20)):
        batched = gfl_predict(nanodet, images, **kwargs)
        reference = _per_image_reference(outputs, nanodet.cfg.strides, nanodet.cfg.reg_max, (64, 96), **kwargs)
        _assert_identical(batched, reference)
        assert all(len(p["scores"]) > 0 for p in batched)


def _random_boxes(n, gen, size=60.0):
    xy = torch.randint(0, 40, (n, 2), generator=gen).float()
    wh = torch.randint(0, 25, (n, 2), generator=gen).float()  # some zero-area boxes: their IoU is NaN
    return torch.cat([xy, (xy + wh).clamp(max=size)], dim=1)


@pytest.mark.parametrize("n, num_groups", [(0, 1), (1, 1), (40, 1), (300, 3), (700, 40), (900, 2)])
def test_nms_per_group_is_batched_nms(n, num_groups):
    gen = torch.Generator().manual_seed(n)
    boxes = _random_boxes(n, gen)
    scores = torch.randint(0, 6, (n,), generator=gen) / 5.0  # many equal scores
    groups = torch.randint(0, num_groups, (n,), generator=gen)
    for threshold in (0.0, 0.3, 0.7):
        expected = batched_nms(boxes, scores, groups, threshold)
        assert torch.equal(_nms_per_group(boxes, scores, groups, threshold), expected)
    assert n < 40 or len(batched_nms(boxes, scores, groups, 0.3)) < n  # something was suppressed


def test_scores_are_bit_identical_on_continuous_logits():
    """Every prior a candidate (threshold 0), odd grids: a vectorised sigmoid over the whole batch would
    give some scores one ulp away from the per-image call (its scalar tail falls elsewhere)."""
    gen = torch.Generator().manual_seed(5)
    sizes, strides = [(10, 15), (5, 8)], (8, 16)
    cls = [3 * torch.randn(4, 5, h, w, generator=gen) for h, w in sizes]
    reg = [3 * torch.randn(4, 4 * (REG_MAX + 1), h, w, generator=gen) for h, w in sizes]
    kwargs = dict(score_thresh=0.0, nms_thresh=1.0, max_per_img=10_000)  # nothing suppressed, nothing cut
    batched = gfl_predict(_Outputs(cls, reg, strides=strides), torch.zeros(4, 3, 80, 128), **kwargs)
    _assert_identical(batched, _per_image_reference((cls, reg), strides, REG_MAX, (80, 128), **kwargs))
    assert all(len(p["scores"]) == 5 * (150 + 40) for p in batched)
