"""Tests for detviz.yolo.coder: decode_level by hand and as the inverse of raw_box_targets."""
import pytest
import torch
from torch.testing import assert_close

from detviz.yolo.anchors import level_anchors
from detviz.yolo.coder import decode_level, raw_box_targets

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


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


def test_decode_inverts_raw_targets(targets_416):
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
