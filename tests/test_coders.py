import math

import pytest
import torch
from torch.testing import assert_close
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder

from detviz.coders import BoxCoder

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
WEIGHTS = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]  # RPN, RoI heads


def _boxes(n, generator, dtype=torch.float32):
    """Sides in [4, 154] px: any two differ by less than the decode clamp's factor 62.5."""
    xy = torch.rand(n, 2, generator=generator, dtype=dtype) * 200
    return torch.cat([xy, xy + 4 + torch.rand(n, 2, generator=generator, dtype=dtype) * 150], dim=1)


def test_encode_by_hand():
    anchor = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), size 10 x 20
    gt = torch.tensor([[2.0, 4.0, 22.0, 24.0]])  # centre (12, 14), size 20 x 20
    expected = torch.tensor([[0.7, 0.2, math.log(2.0), 0.0]])
    assert_close(BoxCoder((1.0, 1.0, 1.0, 1.0)).encode_single(gt, anchor), expected)
    assert_close(BoxCoder((10.0, 10.0, 5.0, 5.0)).encode_single(gt, anchor), expected * torch.tensor([10, 10, 5, 5]))


def test_decode_by_hand_and_clamp_at_log_1000_over_16():
    anchor = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    codes = torch.tensor([[0.7, 0.2, math.log(2.0), 0.0, 0.0, 0.0, 100.0, -1.0]])  # K = 2 boxes per row
    decoded = BoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(codes, anchor)  # [1, 8]
    assert_close(decoded[0, :4], torch.tensor([2.0, 4.0, 22.0, 24.0]))
    # dw = 100 is clamped to log(1000/16): width 10 * 62.5 = 625; dh = -1 is not clamped.
    half_h = 0.5 * 20 * math.exp(-1.0)
    assert_close(decoded[0, 4:], torch.tensor([5 - 312.5, 10 - half_h, 5 + 312.5, 10 + half_h]))


@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_decode_of_encode_is_the_gt(weights, dtype):
    generator = torch.Generator().manual_seed(0)
    anchors, gt = _boxes(500, generator, dtype), _boxes(500, generator, dtype)
    coder = BoxCoder(weights)
    # float32 round-off through log/exp on coordinates up to ~350 px reaches ~2e-5 px.
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else {}
    assert_close(coder.decode_single(coder.encode_single(gt, anchors), anchors), gt, **tol)
    per_image = coder.encode([gt[:200], gt[200:]], [anchors[:200], anchors[200:]])
    assert_close(coder.decode(torch.cat(per_image), [anchors[:200], anchors[200:]]), gt[:, None, :], **tol)


def test_round_trip_breaks_beyond_the_clamp():
    # A gt 100x wider than its anchor encodes to dw = log(100) > log(62.5): it decodes 62.5x wide.
    coder, anchor = BoxCoder((1.0, 1.0, 1.0, 1.0)), torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    decoded = coder.decode_single(coder.encode_single(torch.tensor([[-99.0, 0.0, 101.0, 2.0]]), anchor), anchor)
    assert_close(decoded, torch.tensor([[1 - 62.5, 0.0, 1 + 62.5, 2.0]]))


@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("device", DEVICES)
def test_encode_matches_torchvision(weights, device):
    generator = torch.Generator().manual_seed(1)
    gts = [_boxes(n, generator).to(device) for n in (30, 0, 7)]
    anchors = [_boxes(n, generator).to(device) for n in (30, 0, 7)]
    got = BoxCoder(weights).encode(gts, anchors)
    expected = TVBoxCoder(weights).encode(gts, anchors)
    assert isinstance(got, tuple) and [len(g) for g in got] == [30, 0, 7]
    for g, e in zip(got, expected):
        assert_close(g, e, rtol=0, atol=0)


@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("num_classes", [1, 3])
@pytest.mark.parametrize("device", DEVICES)
def test_decode_matches_torchvision(weights, num_classes, device):
    generator = torch.Generator().manual_seed(2)
    boxes = [_boxes(n, generator).to(device) for n in (20, 5)]
    codes = (torch.randn(25, 4 * num_classes, generator=generator) * 3).to(device)  # some beyond the clamp
    got = BoxCoder(weights).decode(codes, boxes)
    expected = TVBoxCoder(weights).decode(codes, boxes)
    assert got.shape == (25, num_classes, 4)
    assert_close(got, expected, rtol=0, atol=0)
    assert_close(BoxCoder(weights).decode_single(codes, torch.cat(boxes)),
                 TVBoxCoder(weights).decode_single(codes, torch.cat(boxes)), rtol=0, atol=0)


def test_decode_follows_the_codes_dtype():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]], dtype=torch.float64)
    decoded = BoxCoder((1.0, 1.0, 1.0, 1.0)).decode(torch.zeros(1, 4), [boxes])
    assert decoded.dtype == torch.float32
    assert_close(decoded, boxes.float()[:, None, :])


def test_empty_inputs():
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    empty = torch.zeros(0, 4)
    assert [t.shape for t in coder.encode([empty, empty], [empty, empty])] == [(0, 4), (0, 4)]
    assert coder.decode(torch.zeros(0, 12), [empty]).shape == (0, 3, 4)
    assert_close(coder.decode(torch.zeros(0, 12), [empty]).reshape(0, 12),
                 TVBoxCoder((10.0, 10.0, 5.0, 5.0)).decode(torch.zeros(0, 12), [empty]))


def test_bad_inputs():
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    with pytest.raises(ValueError, match=r"weights must be 4 numbers \(wx, wy, ww, wh\), got \(1.0, 1.0\)"):
        BoxCoder((1.0, 1.0))
    with pytest.raises(TypeError, match=r"reference_boxes must be a list of Tensor\[N_i, 4\], one per image, got Tensor"):
        coder.encode(box, [box])
    with pytest.raises(ValueError, match=r"proposals\[0\] must be Tensor\[N_i, 4\] xyxy, got shape \[1, 3\]"):
        coder.encode([box], [box[:, :3]])
    with pytest.raises(ValueError, match=r"must pair up per image, got \[1\] gt boxes and \[2\] proposals"):
        coder.encode([box], [box.repeat(2, 1)])
    with pytest.raises(ValueError, match="at least one image"):
        coder.decode(torch.zeros(0, 4), [])
    with pytest.raises(TypeError, match="rel_codes must be a Tensor of deltas, got list"):
        coder.decode([0.0, 0.0, 0.0, 0.0], [box])
    with pytest.raises(ValueError, match=r"rel_codes must hold 4\*K deltas for each of the 1 boxes, got shape \[1, 6\]"):
        coder.decode(torch.zeros(1, 6), [box])
    with pytest.raises(ValueError, match=r"rel_codes must be Tensor\[1, 4\*K\] for 1 boxes, got shape \[2, 4\]"):
        coder.decode_single(torch.zeros(2, 4), box)
    with pytest.raises(ValueError, match=r"reference_boxes and proposals must both be \[N, 4\], got shapes \[1, 4\] and \[2, 4\]"):
        coder.encode_single(box, box.repeat(2, 1))
