"""Tests for detviz.roi_ops: torchvision parity (values and gradients, bit for bit on the CPU), results that do
not depend on the chunk size, what autograd keeps, hand-computed 4x4 cases, bad input."""
import pytest
import torch
import torchvision.ops as tv_ops
from torch.testing import assert_close

from detviz.roi_ops import DEFAULT_CHUNK_BYTES, roi_align, roi_pool

pytestmark = pytest.mark.usefixtures("one_thread")

DTYPES = [torch.float32, torch.float64]
SCALES = [1.0, 1 / 16, 1 / 32]
ALIGN_SETTINGS = [(sr, aligned) for sr in (-1, 0, 1, 2, 4) for aligned in (False, True)]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# f[y, x] = 4y + x: linear, so bilinear interpolation inside the map is exact and a bin
# average equals f at the centre of its samples
MAP_4X4 = torch.arange(16.0).reshape(1, 1, 4, 4)
# on the CPU the twins add in the kernels' order, so they agree bit for bit; on CUDA (the
# kernels there add gradients with atomics, in no fixed order) the usual tolerance
EXACT = {"rtol": 0, "atol": 0}


def tolerance(device):
    return EXACT if device == "cpu" else {}


def random_case(seed, dtype=torch.float32, scale=1.0, num_boxes=40, device="cpu"):
    """Two feature maps of odd size and boxes (image pixels) that stick out of the map,
    a few tiny ones and a few inverted ones (x2 < x1), as Tensor[K, 5] with batch index."""
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(2, 3, 11, 13, generator=gen, dtype=dtype)
    image_w, image_h = 13 / scale, 11 / scale
    xy = (torch.rand(num_boxes, 2, generator=gen, dtype=dtype) * 1.4 - 0.2) * torch.tensor([image_w, image_h], dtype=dtype)
    wh = torch.rand(num_boxes, 2, generator=gen, dtype=dtype) * torch.tensor([image_w, image_h], dtype=dtype) * 0.6
    wh[:6] *= 0.02  # tiny: smaller than one feature cell
    wh[6:9] *= -0.05  # inverted
    batch = torch.randint(0, 2, (num_boxes, 1), generator=gen).to(dtype)
    return features.to(device), torch.cat([batch, xy, xy + wh], dim=1).to(device)  # [K, 5]


def notebook_07_like_case(seed, channels=64, rois_per_image=64):
    """Notebook 07's geometry with fewer channels and RoIs: two 800 x 1248 images through a stride-32
    backbone ([2, C, 25, 39]) and proposal-like boxes inside them, 16..900 px wide and 12..800 px tall."""
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(2, channels, 25, 39, generator=gen)
    boxes = []
    for _ in range(2):
        wh = torch.rand(rois_per_image, 2, generator=gen) * torch.tensor([884.0, 788]) + torch.tensor([16.0, 12])
        xy = torch.rand(rois_per_image, 2, generator=gen) * (torch.tensor([1248.0, 800]) - wh)
        boxes.append(torch.cat([xy, xy + wh], dim=1))  # [L, 4]
    return features, boxes


def values_and_gradient(op, features, boxes, grad_seed, *args, **kwargs):
    """``op``'s output and the gradient it sends to ``features`` for a seeded output gradient."""
    x = features.clone().requires_grad_(True)
    out = op(x, boxes, *args, **kwargs)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=out.dtype))
    return out.detach(), x.grad


# ---- parity with torchvision ----

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", SCALES)
def test_roi_pool_matches_torchvision(dtype, scale, device):
    features, rois = random_case(0, dtype, scale, device=device)
    for output_size in (1, 2, (3, 5), 7):
        assert_close(roi_pool(features, rois, output_size, scale), tv_ops.roi_pool(features, rois, output_size, scale),
                     **tolerance(device))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("sampling_ratio, aligned", ALIGN_SETTINGS)
def test_roi_align_matches_torchvision(dtype, scale, sampling_ratio, aligned, device):
    features, rois = random_case(1, dtype, scale, device=device)
    for output_size in (1, (2, 3), 7):
        expected = tv_ops.roi_align(features, rois, output_size, scale, sampling_ratio, aligned)
        assert_close(roi_align(features, rois, output_size, scale, sampling_ratio, aligned), expected, **tolerance(device))


@pytest.mark.parametrize("sampling_ratio, aligned", ALIGN_SETTINGS)
def test_roi_align_gradient_matches_torchvision(sampling_ratio, aligned):
    features, rois = random_case(2, torch.float64, 1 / 16)
    grad_out = torch.randn(rois.shape[0], 3, 5, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    grads = []
    for op in (roi_align, tv_ops.roi_align):
        x = features.clone().requires_grad_(True)
        op(x, rois, (5, 4), 1 / 16, sampling_ratio, aligned).backward(grad_out)
        grads.append(x.grad)
    assert grads[0].abs().sum() > 0
    assert_close(grads[0], grads[1], **EXACT)


@pytest.mark.parametrize("op", [roi_pool, roi_align])
def test_boxes_get_no_gradient_like_torchvision(op):
    features, rois = random_case(9)
    features.requires_grad_(True)
    for fn in (op, getattr(tv_ops, op.__name__)):
        boxes = rois.clone().requires_grad_(True)
        fn(features, boxes, 2, 0.5).sum().backward()
        assert boxes.grad is None


@pytest.mark.parametrize("op, kwargs", [
    (roi_align, {"sampling_ratio": 2, "aligned": True}),
    (roi_align, {"sampling_ratio": -1, "aligned": False, "chunk_bytes": 1}),  # one RoI per chunk
    (roi_pool, {"chunk_bytes": 1}),
], ids=["align-2x2", "align-adaptive-one-roi-per-chunk", "pool-one-roi-per-chunk"])
def test_gradcheck(op, kwargs):
    features, rois = random_case(4, torch.float64, 1.0, num_boxes=6)
    x = features[:, :, :5, :6].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: op(t, rois / 2, 2, 1.0, **kwargs), (x,))


@pytest.mark.parametrize("op, args", [(roi_align, (7, 1 / 32, 2)), (roi_pool, (7, 1 / 32))], ids=["align", "pool"])
def test_notebook_07_like_input_matches_torchvision_bit_for_bit(op, args):
    features, boxes = notebook_07_like_case(11)
    ours = values_and_gradient(op, features, boxes, 12, *args)
    reference = values_and_gradient(getattr(tv_ops, op.__name__), features, boxes, 12, *args)
    assert ours[1].abs().sum() > 0
    assert_close(ours, reference, **EXACT)


# ---- chunks change memory, never results ----

@pytest.mark.parametrize("sampling_ratio, aligned", [(-1, False), (0, True), (2, False)])
def test_roi_align_result_does_not_depend_on_chunk_size(sampling_ratio, aligned):
    features, rois = random_case(10, torch.float64, 1 / 16)
    # one RoI per chunk, 3 per chunk in the forward (a RoI's output is 3 * 4 * 5 float64), the default, all at once
    results = [values_and_gradient(roi_align, features, rois, 13, (4, 5), 1 / 16, sampling_ratio, aligned,
                                   chunk_bytes=chunk_bytes)
               for chunk_bytes in (1, 3 * (3 * 4 * 5 * 8), DEFAULT_CHUNK_BYTES, 2**40)]
    for other in results[1:]:
        assert_close(other, results[0], **EXACT)


def test_roi_pool_result_does_not_depend_on_chunk_size():
    features, rois = random_case(14, torch.float64, 1 / 16)
    results = [values_and_gradient(roi_pool, features, rois, 15, (4, 5), 1 / 16, chunk_bytes=chunk_bytes)
               for chunk_bytes in (1, 3 * (3 * 4 * 5 * 8), DEFAULT_CHUNK_BYTES, 2**40)]
    for other in results[1:]:
        assert_close(other, results[0], **EXACT)


@pytest.mark.parametrize("op", [roi_align, roi_pool])
def test_autograd_keeps_no_tensor_per_chunk(op):
    features, boxes = notebook_07_like_case(16)
    x = features.clone().requires_grad_(True)
    saved = []

    def keep(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        out = op(x, boxes, 7, 1 / 32, chunk_bytes=2**12)  # 128 chunks of one RoI
    num_rois = out.shape[0]
    if op is roi_align:  # the boxes alone: the backward recomputes the samples chunk by chunk
        assert [list(t.shape) for t in saved] == [[num_rois, 5]]
    else:  # the image of each RoI and the int32 cell of each max, as torchvision's argmax
        assert [(list(t.shape), t.dtype) for t in saved] == [([num_rois], torch.int64), (list(out.shape), torch.int32)]


@pytest.mark.parametrize("scale", SCALES)
def test_roi_pool_gradient_matches_torchvision(scale):
    features, rois = random_case(5, torch.float64, scale)
    grad_out = torch.randn(rois.shape[0], 3, 3, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    grads = []
    for op in (roi_pool, tv_ops.roi_pool):
        x = features.clone().requires_grad_(True)
        op(x, rois, (3, 2), scale).backward(grad_out)
        grads.append(x.grad)
    assert grads[0].abs().sum() > 0
    assert_close(grads[0], grads[1], **EXACT)


@pytest.mark.parametrize("op", [roi_pool, roi_align])
def test_list_of_boxes_equals_batch_index_rows(op):
    features, rois = random_case(7)
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    order = torch.cat([torch.nonzero(rois[:, 0] == i)[:, 0] for i in range(2)])
    assert_close(op(features, per_image, 3, 0.5), op(features, rois, 3, 0.5)[order])
    assert_close(op(features, per_image, 3, 0.5), getattr(tv_ops, op.__name__)(features, per_image, 3, 0.5))


# ---- hand-computed cases on the 4x4 map f[y, x] = 4y + x ----

def test_roi_pool_hand_values():
    # box (0, 0, 3, 3) covers all 4x4 cells; 2x2 bins are the quadrants, each keeps its bottom-right cell
    assert_close(roi_pool(MAP_4X4, [torch.tensor([[0.0, 0, 3, 3]])], 2), torch.tensor([[[[5.0, 7], [13, 15]]]]))
    # x2 = 2.5 rounds away from zero to 3 (torch.round would give 2): columns 0..3 in two bins of 2, row 1
    assert_close(roi_pool(MAP_4X4, [torch.tensor([[0.4, 0.6, 2.5, 1.4]])], (1, 2)), torch.tensor([[[[5.0, 7]]]]))
    # 3 cells in 2 bins: bin edges floor/ceil of 1.5, so both bins include cell 1
    assert_close(roi_pool(MAP_4X4, [torch.tensor([[0.0, 0, 2, 0]])], (1, 2)), torch.tensor([[[[1.0, 2]]]]))
    # a box past the bottom-right corner: its bins fall off the map and give 0
    assert_close(roi_pool(MAP_4X4, [torch.tensor([[10.0, 10, 12, 12]])], 1), torch.zeros(1, 1, 1, 1))


def test_roi_align_hand_values():
    box = [torch.tensor([[0.0, 0, 4, 4]])]
    # aligned: the box is shifted to (-0.5, -0.5, 3.5, 3.5); bin 0 samples at 0 and 1 -> the quadrant means
    assert_close(roi_align(MAP_4X4, box, 2, sampling_ratio=2, aligned=True), torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    # legacy: samples at 0.5, 1.5 | 2.5, 3.5; 3.5 lies past the last cell centre and reads row/column 3,
    # so the mean coordinates are 1 and 2.75
    assert_close(roi_align(MAP_4X4, box, 2, sampling_ratio=2, aligned=False),
                 torch.tensor([[[[4 * 1 + 1.0, 4 * 1 + 2.75], [4 * 2.75 + 1, 4 * 2.75 + 2.75]]]]))


def test_roi_align_zero_only_beyond_one_cell_off_the_map():
    # one sample per bin at the box centre; x = -1.0 is clamped onto column 0, x = -1.1 reads zero
    on_edge = roi_align(MAP_4X4, [torch.tensor([[-1.5, 2, -0.5, 3]])], 1, sampling_ratio=1)
    off_map = roi_align(MAP_4X4, [torch.tensor([[-1.6, 2, -0.6, 3]])], 1, sampling_ratio=1)
    assert_close(on_edge, torch.tensor([[[[4 * 2.5 + 0]]]]))
    assert_close(off_map, torch.zeros(1, 1, 1, 1))


def test_roi_align_min_size_and_empty_aligned_roi():
    # legacy mode grows a zero-size box to 1 cell: sample at (1.5, 1.5); aligned mode keeps 0 samples -> 0
    point = [torch.tensor([[1.0, 1, 1, 1]])]
    assert_close(roi_align(MAP_4X4, point, 1, aligned=False), torch.tensor([[[[4 * 1.5 + 1.5]]]]))
    assert_close(roi_align(MAP_4X4, point, 1, aligned=True), torch.zeros(1, 1, 1, 1))


# ---- empty input, no mutation ----

@pytest.mark.parametrize("op", [roi_pool, roi_align])
@pytest.mark.parametrize("boxes", [torch.zeros(0, 5), [], [torch.zeros(0, 4), torch.zeros(0, 4)]],
                         ids=["tensor", "empty-list", "list-of-empty"])
def test_no_boxes_give_empty_output(op, boxes):
    features = torch.rand(2, 3, 5, 5)
    assert_close(op(features, boxes, (2, 3)), torch.zeros(0, 3, 2, 3))


@pytest.mark.parametrize("op", [roi_pool, roi_align])
def test_arguments_are_not_modified(op):
    features, rois = random_case(8)
    per_image = [rois[:5, 1:].clone(), rois[5:, 1:].clone()]
    before = (features.clone(), rois.clone(), [b.clone() for b in per_image])
    op(features, rois, 2, 0.5)
    op(features, per_image, 2, 0.5)
    assert_close(features, before[0])
    assert_close(rois, before[1])
    assert_close(per_image, before[2])


# ---- bad input: the error names what was expected ----

@pytest.mark.parametrize("op", [roi_pool, roi_align])
@pytest.mark.parametrize("chunk_bytes, error, got", [
    (0, ValueError, "got 0"), (-1, ValueError, "got -1"), (2.5, TypeError, "got float"), (True, TypeError, "got bool"),
])
def test_bad_chunk_bytes_raises(op, chunk_bytes, error, got):
    with pytest.raises(error, match=rf"chunk_bytes must be a positive int \(bytes of scratch per chunk\), {got}"):
        op(torch.rand(1, 1, 4, 4), torch.zeros(1, 5), 2, chunk_bytes=chunk_bytes)


@pytest.mark.parametrize("op", [roi_pool, roi_align])
@pytest.mark.parametrize("features, boxes, output_size, error, expected", [
    (torch.rand(3, 4, 4), torch.zeros(1, 5), 2, ValueError, r"input must be Tensor\[B, C, H, W\]"),
    (torch.ones(1, 1, 4, 4, dtype=torch.int64), torch.zeros(1, 5), 2, TypeError, "floating dtype"),
    (torch.rand(1, 1, 4, 4), torch.zeros(1, 4), 2, ValueError, r"Tensor\[K, 5\] \(batch index, x1, y1, x2, y2\)"),
    (torch.rand(1, 1, 4, 4), [torch.zeros(1, 5)], 2, ValueError, r"boxes\[0\] must be Tensor\[L, 4\]"),
    (torch.rand(1, 1, 4, 4), "boxes", 2, TypeError, r"boxes must be Tensor\[K, 5\]"),
    (torch.rand(1, 1, 4, 4), torch.zeros(1, 5, dtype=torch.float64), 2, TypeError, "dtype of input"),
    (torch.rand(1, 1, 4, 4), torch.tensor([[1.0, 0, 0, 2, 2]]), 2, ValueError, r"batch indices must lie in \[0, 0\]"),
    (torch.rand(1, 1, 4, 4), torch.zeros(1, 5), 0, ValueError, "output_size must be a positive int"),
    (torch.rand(1, 1, 4, 4), torch.zeros(1, 5), (2, 2, 2), ValueError, r"pair \(height, width\)"),
])
def test_bad_input_raises(op, features, boxes, output_size, error, expected):
    with pytest.raises(error, match=expected):
        op(features, boxes, output_size)
