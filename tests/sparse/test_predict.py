"""Tests for detviz.sparse.predict: class scores of the top-n predictions, clipping, optional NMS."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from detviz.sparse.head import SparseHeadOutput
from detviz.sparse.predict import sparse_predict
from tests.sparse.conftest import NUM_CLASSES, make_images

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class FixedOutput(nn.Module):
    """A stand-in model whose forward returns a hand-built SparseHeadOutput."""

    def __init__(self, output: SparseHeadOutput):
        super().__init__()
        self.output = output

    def forward(self, images):
        return self.output


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def hand_output(objectness: float = 0.5) -> SparseHeadOutput:
    """One image, C = 2, two levels with K = 2 and 1; input 32 x 32 (objectness maps 4x4 and 2x2)."""
    boxes = [torch.tensor([[[2.0, 3.0, 12.0, 14.0], [-5.0, 20.0, 40.0, 36.0]]]),  # the second box leaves the image
             torch.tensor([[[4.0, 4.0, 20.0, 24.0]]])]
    logits = [torch.tensor([[[logit(0.9), logit(0.02)], [logit(0.3), logit(0.6)]]]),
              torch.tensor([[[logit(0.04), logit(0.7)]]])]
    obj = [torch.full((1, 1, 4, 4), objectness), torch.full((1, 1, 2, 2), objectness)]
    idx = [torch.tensor([[0, 5]]), torch.tensor([[3]])]
    return SparseHeadOutput(obj, boxes, logits, idx)


def test_predict_by_hand():
    images = torch.zeros(1, 3, 32, 32)
    (det,) = sparse_predict(FixedOutput(hand_output()), images, score_thresh=0.05)
    # (prediction, class) pairs above 0.05: (0, 0) 0.9, (2, 1) 0.7, (1, 1) 0.6, (1, 0) 0.3; not (0, 1), (2, 0).
    # The scores are the class probabilities alone: the objectness (0.5 here) is not multiplied in.
    assert_close(det["scores"], torch.tensor([0.9, 0.7, 0.6, 0.3]))
    assert det["labels"].tolist() == [0, 1, 1, 0]
    assert_close(det["boxes"], torch.tensor([[2.0, 3.0, 12.0, 14.0], [4.0, 4.0, 20.0, 24.0],
                                             [0.0, 20.0, 32.0, 32.0], [0.0, 20.0, 32.0, 32.0]]))
    (other,) = sparse_predict(FixedOutput(hand_output(objectness=0.1)), images, score_thresh=0.05)
    assert_close(other["scores"], det["scores"])
    (top2,) = sparse_predict(FixedOutput(hand_output()), images, score_thresh=0.5, max_per_img=2)
    assert_close(top2["scores"], torch.tensor([0.9, 0.7]))


def test_predict_nms_is_optional_and_per_class():
    # Two near-identical boxes of class 0 (IoU 0.81) and one of class 1 on the same place.
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]]])
    logits = torch.tensor([[[logit(0.8), -20.0], [logit(0.6), -20.0], [-20.0, logit(0.5)]]])
    out = SparseHeadOutput([torch.full((1, 1, 2, 2), 0.5)], [boxes], [logits], [torch.tensor([[0, 1, 2]])])
    images = torch.zeros(1, 3, 32, 32)
    (plain,) = sparse_predict(FixedOutput(out), images)
    (nms,) = sparse_predict(FixedOutput(out), images, nms_thresh=0.5)
    assert plain["labels"].tolist() == [0, 0, 1]
    assert nms["labels"].tolist() == [0, 1]
    assert_close(nms["scores"], torch.tensor([0.8, 0.5]))


def test_predict_format_sorting_and_clipping(eval_model):
    images = make_images()
    detections = sparse_predict(eval_model, images, score_thresh=0.0, max_per_img=1000)
    assert len(detections) == 2
    for det in detections:
        assert set(det) == {"boxes", "labels", "scores"}
        assert det["boxes"].dtype == torch.float32 and det["labels"].dtype == torch.int64
        assert det["scores"].dtype == torch.float32
        assert det["boxes"].shape == (150, 4) and det["labels"].shape == det["scores"].shape == (150,)  # K*C = 50*3
        assert bool((det["scores"][:-1] >= det["scores"][1:]).all())
        assert 0 <= int(det["labels"].min()) and int(det["labels"].max()) < NUM_CLASSES
        assert bool((det["boxes"] >= 0).all()) and bool((det["boxes"][:, [0, 2]] <= 64).all())
        assert bool((det["boxes"][:, [1, 3]] <= 64).all())
    assert bool((detections[0]["boxes"] == 0).any())  # initial 2s x 2s boxes at border cells leave the image
    top = sparse_predict(eval_model, images, score_thresh=0.0, max_per_img=7)
    for det, full in zip(top, detections):
        assert det["scores"].shape == (7,)
        for key in ("boxes", "labels", "scores"):
            assert_close(det[key], full[key][:7])
    thresh = float(detections[0]["scores"][10])
    (cut, _) = sparse_predict(eval_model, images, score_thresh=thresh)
    assert bool((cut["scores"] > thresh).all()) and cut["scores"].shape[0] == 10


def test_predict_empty(eval_model):
    detections = sparse_predict(eval_model, make_images(), score_thresh=0.999)
    for det in detections:
        assert det["boxes"].shape == (0, 4) and det["labels"].shape == (0,) and det["scores"].shape == (0,)
        assert det["labels"].dtype == torch.int64 and det["boxes"].dtype == torch.float32


def test_predict_scores_are_the_heads_class_probabilities(eval_model):
    images = make_images()
    with torch.no_grad():
        out = eval_model(images)
    logits = torch.cat(out.topn_cls, dim=1)  # [B, K, C]
    boxes = torch.cat(out.topn_bbox, dim=1).clamp(0, 64)  # [B, K, 4]; the input is 64 x 64
    for b, det in enumerate(sparse_predict(eval_model, images, score_thresh=0.0, max_per_img=20)):
        assert_close(det["scores"], logits[b].sigmoid().flatten().sort(descending=True).values[:20])
        for box, label, score in zip(det["boxes"], det["labels"], det["scores"]):
            (k,) = torch.nonzero((boxes[b] == box).all(dim=1)).flatten().tolist()  # exactly one prediction
            assert_close(score, logits[b, k, label].sigmoid())


@pytest.mark.parametrize("kwargs, message", [
    ({"score_thresh": 1.0}, r"score_thresh must be in \[0, 1\), got 1.0"),
    ({"score_thresh": -0.1}, r"score_thresh must be in \[0, 1\), got -0.1"),
    ({"max_per_img": 0}, r"max_per_img must be an int >= 1, got 0"),
    ({"max_per_img": 2.5}, r"max_per_img must be an int >= 1, got 2.5"),
    ({"nms_thresh": 1.5}, r"nms_thresh must be None \(no NMS\) or an IoU in \[0, 1\], got 1.5"),
])
def test_bad_predict_arguments(eval_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sparse_predict(eval_model, make_images(), **kwargs)
