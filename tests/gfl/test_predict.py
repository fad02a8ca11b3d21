"""Tests for detviz.gfl.predict: hand-built GFL logits -> exact boxes, the nms_pre cut, thresholds, NMS, errors.

The exact examples use reg_max = 2 (bins 0, 1, 2) and side logits ``log(p)``, so each side's
softmax is ``p`` and its expectation ``0 * p0 + 1 * p1 + 2 * p2`` is known exactly;
``log(0) = -inf`` gives a bin probability of exactly 0. Zero logits are uniform: 1 stride.
"""
import pytest
import torch
import torchvision.ops as tv_ops
from torch import nn
from torch.testing import assert_close

from detviz.gfl.model import NanoDetConfig, build_nanodet, normalize_images
from detviz.gfl.predict import decode_gfl_level, gfl_predict

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
