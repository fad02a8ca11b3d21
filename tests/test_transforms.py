import pytest
import torch
from torch.testing import assert_close

from detviz.transforms import scale_flip_translate_matrix, warp_boxes

BOXES = torch.tensor([[10.0, 20, 50, 60], [0, 0, 100, 80]])


def test_identity_and_round_trip():
    assert_close(warp_boxes(BOXES, torch.eye(3)), BOXES)
    m = scale_flip_translate_matrix(0.5, (7.0, -3.0), flip_width=100)
    there = warp_boxes(BOXES, m)
    back = warp_boxes(there, torch.linalg.inv(m))
    assert_close(back, BOXES, atol=1e-5, rtol=0)


def test_scale_flip_translate_by_hand():
    m = scale_flip_translate_matrix(0.5, (1.0, 2.0), flip_width=100)
    # x -> 100 - x, then * 0.5 + 1: [10, 50] -> [50, 90] -> [26, 46]; y: [20, 60] -> [12, 32]
    assert_close(warp_boxes(BOXES[:1], m), torch.tensor([[26.0, 12, 46, 32]]))


def test_rotation_takes_the_hull_and_clips():
    rot90 = torch.tensor([[0.0, -1, 100], [1, 0, 0], [0, 0, 1]])  # (x, y) -> (100 - y, x)
    assert_close(warp_boxes(BOXES[:1], rot90), torch.tensor([[40.0, 10, 80, 50]]))
    assert_close(warp_boxes(BOXES[1:], torch.eye(3), width=64, height=48), torch.tensor([[0.0, 0, 64, 48]]))


def test_empty_and_input_untouched():
    assert warp_boxes(torch.zeros(0, 4), torch.eye(3)).shape == (0, 4)
    copy = BOXES.clone()
    warp_boxes(BOXES, scale_flip_translate_matrix(2.0))
    assert torch.equal(BOXES, copy)


def test_bad_input():
    with pytest.raises(ValueError, match=r"matrix must be Tensor\[3, 3\], got shape \[2, 3\]"):
        warp_boxes(BOXES, torch.eye(3)[:2])
    with pytest.raises(ValueError, match=r"boxes must be Tensor\[M, 4\] xyxy, got shape \[2, 5\]"):
        warp_boxes(torch.zeros(2, 5), torch.eye(3))
