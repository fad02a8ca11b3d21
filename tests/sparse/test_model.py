"""Tests for detviz.sparse.model: ShuffleNetV2 + PAN + the sparse RepPoints head."""
from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from detviz.sparse.head import SparseHeadOutput
from detviz.sparse.model import SparseDetectorConfig, build_sparse_detector
from detviz.sparse.predict import sparse_predict
from tests.sparse.conftest import NUM_CLASSES, SIZE, make_images, make_model

GTS = [torch.tensor([[8.0, 10.0, 40.0, 50.0]]), torch.tensor([[20.0, 4.0, 60.0, 36.0], [2.0, 30.0, 30.0, 62.0]])]
LABELS = [torch.tensor([1]), torch.tensor([0, 2])]
NO_BOXES, NO_LABELS = torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
BATCHES = {
    "gts_in_both": (GTS, LABELS),
    "one_image_without_gts": ([GTS[0], NO_BOXES], [LABELS[0], NO_LABELS]),
    "all_empty": ([NO_BOXES, NO_BOXES], [NO_LABELS, NO_LABELS]),
}

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ---------------------------------------------------------------------------- forward
def test_forward_shapes(eval_model):
    images = make_images()
    with torch.no_grad():
        fpn = eval_model.neck(eval_model.backbone(images))
        out = eval_model(images)
    assert [tuple(f.shape) for f in fpn] == [(2, 96, 8, 8), (2, 96, 4, 4), (2, 96, 2, 2)]
    assert isinstance(out, SparseHeadOutput)
    assert [tuple(o.shape) for o in out.objectness] == [(2, 1, 8, 8), (2, 1, 4, 4), (2, 1, 2, 2)]
    # topn = 30, but the stride-16 and stride-32 levels hold only 16 and 4 locations
    assert [tuple(b.shape) for b in out.topn_bbox] == [(2, 30, 4), (2, 16, 4), (2, 4, 4)]
    assert [tuple(c.shape) for c in out.topn_cls] == [(2, 30, 3), (2, 16, 3), (2, 4, 3)]
    assert [tuple(i.shape) for i in out.topn_idx] == [(2, 30), (2, 16), (2, 4)]
    assert all(i.dtype == torch.int64 for i in out.topn_idx)


def test_forward_non_square(eval_model):
    with torch.no_grad():
        out = eval_model(make_images(batch=1, size=(64, 96)))
    assert [tuple(o.shape[-2:]) for o in out.objectness] == [(8, 12), (4, 6), (2, 3)]
    assert [b.shape[1] for b in out.topn_bbox] == [30, 24, 6]


def test_build_follows_the_config():
    model = make_model(fpn_channels=32, topn=7, hidden_dim=48)
    head = model.head
    assert head.strides == (8, 16, 32) and head.in_channels == 32 and head.topn == 7
    assert head.num_classes == NUM_CLASSES and head.cls_out.in_features == 48
    assert [conv.out_channels for conv in model.neck.laterals] == [32, 32, 32]


# ---------------------------------------------------------------------------- loss
@pytest.mark.parametrize("batch", list(BATCHES))
def test_loss_returns_three_finite_scalars(batch):
    gts, labels = BATCHES[batch]
    model = make_model().train()
    out = model(make_images())
    losses = model.loss(out, gts, labels, SIZE)
    assert list(losses) == ["objectness_loss", "bbox_loss", "cls_loss"]
    assert all(v.dim() == 0 and bool(torch.isfinite(v)) for v in losses.values())
    assert float(losses["objectness_loss"].detach()) > 0 and float(losses["cls_loss"].detach()) > 0
    if batch == "all_empty":
        assert float(losses["bbox_loss"].detach()) == 0
    else:
        assert float(losses["bbox_loss"].detach()) > 0


def test_loss_is_the_heads_loss_without_padding():
    model = make_model().train()
    out = model(make_images())
    metas = [{"img_shape": (64, 64, 3), "pad_shape": (64, 64, 3)}] * 2
    expected = model.head.loss(out.objectness, [b.transpose(1, 2) for b in out.topn_bbox],
                               [c.transpose(1, 2) for c in out.topn_cls], out.topn_idx, GTS, LABELS, metas)
    losses = model.loss(out, GTS, LABELS, SIZE)
    for key, value in expected.items():
        assert_close(losses[key], value)


@pytest.mark.parametrize("batch", list(BATCHES))
def test_every_parameter_gets_a_gradient(batch):
    # DDP (find_unused_parameters=False) needs a grad for every parameter after each backward.
    gts, labels = BATCHES[batch]
    model = make_model().train()
    sum(model.loss(model(make_images()), gts, labels, SIZE).values()).backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    if batch != "gts_in_both":
        return
    for name in ("backbone.stem.0.0.weight", "backbone.stage4.0.branch2.0.weight", "neck.laterals.0.weight",
                 "neck.laterals.2.weight", "head.objectness_branch.0.weight", "head.points_branch.2.weight",
                 "head.mlp.0.weight", "head.reg_out.weight", "head.cls_out.weight"):
        assert float(model.get_parameter(name).grad.abs().sum()) > 0, name
    # The points branch's last conv starts at zero, so at initialisation no gradient passes through it
    # to the first conv: a zero grad (fine for DDP), and the only one.
    zero = [name for name, p in model.named_parameters() if float(p.grad.abs().sum()) == 0]
    assert zero == ["head.points_branch.0.weight", "head.points_branch.0.bias"]


def test_thirty_adam_steps_lower_the_loss():
    model = make_model(seed=1, fpn_channels=32, hidden_dim=64, topn=10).train()
    images = make_images(batch=1, seed=1)
    gts, labels = [torch.tensor([[8.0, 10.0, 40.0, 50.0], [36.0, 30.0, 60.0, 62.0]])], [torch.tensor([1, 2])]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(30):
        losses = model.loss(model(images), gts, labels, SIZE)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append({"total": float(total.detach()), **{k: float(v.detach()) for k, v in losses.items()}})
    for key in ("total", "objectness_loss", "bbox_loss", "cls_loss"):
        first, last = history[0][key], sum(h[key] for h in history[-5:]) / 5
        assert math.isfinite(last) and last < (0.4 if key == "total" else 0.9) * first, f"{key}: {first} -> {last}"


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("images, message", [
    (torch.zeros(3, 64, 64), r"images must be Tensor\[B, 3, H, W\], got \[3, 64, 64\]"),
    (torch.zeros(1, 1, 64, 64), r"images must be Tensor\[B, 3, H, W\], got \[1, 1, 64, 64\]"),
    ([torch.zeros(3, 64, 64)], r"images must be Tensor\[B, 3, H, W\], got list"),
    (torch.zeros(1, 3, 48, 64), r"H and W positive multiples of 32, got \[1, 3, 48, 64\]"),
    (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), r"images must be a float Tensor\[B, 3, H, W\].*torch.uint8"),
])
def test_bad_images(eval_model, images, message):
    with pytest.raises(ValueError, match=message):
        eval_model(images)
    with pytest.raises(ValueError, match=message):
        sparse_predict(eval_model, images)


def test_bad_loss_input():
    model = make_model().train()
    out = model(make_images())
    with pytest.raises(ValueError, match=r"input_size must be the \(height, width\) of the images given to forward, "
                                         r"\(64, 64\) .* got \(64, 96\)"):
        model.loss(out, GTS, LABELS, (64, 96))
    with pytest.raises(ValueError, match=r"\(64, 64\) for objectness maps .* got \(70, 64\)"):
        model.loss(out, GTS, LABELS, (70, 64))  # the same feature-map sizes by floor division, not the input
    with pytest.raises(ValueError, match=r"input_size must be \(height, width\), two positive ints, got 64"):
        model.loss(out, GTS, LABELS, 64)
    with pytest.raises(ValueError, match="output must be the SparseHeadOutput that forward returned, got tuple"):
        model.loss(tuple(out), GTS, LABELS, SIZE)
    with pytest.raises(ValueError, match=r"gt_labels must lie in \[0, 2\]"):
        model.loss(out, GTS, [torch.tensor([3]), LABELS[1]], SIZE)
    with pytest.raises(ValueError, match=r"one entry per image \(2\), got 1, 1 and 2"):
        model.loss(out, GTS[:1], LABELS[:1], SIZE)
    with pytest.raises(ValueError, match="gt_bboxes must be xyxy with x2 >= x1"):
        model.loss(out, [torch.tensor([[40.0, 10.0, 8.0, 50.0]]), GTS[1]], LABELS, SIZE)


@pytest.mark.parametrize("overrides, message", [
    ({"strides": (8, 16, 32, 64)}, r"strides must be \(8, 16, 32\), the strides of the ShuffleNetV2 stages"),
    ({"input_size": 300}, "input_size must be a positive multiple of 32, got 300"),
    ({"topn": 0}, "topn must be a positive int, got 0"),
])
def test_bad_config(overrides, message):
    with pytest.raises(ValueError, match=message):
        build_sparse_detector(SparseDetectorConfig(num_classes=NUM_CLASSES, **overrides))
