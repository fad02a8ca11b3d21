"""torchvision's own test cases for the box operations detviz re-implements, run against detviz.

The inputs and expected values are torchvision's (its test/test_ops.py, at the commit named above each
group); the test code is detviz's. Where torchvision's expected value is the output of one of its ops or
of a reference loop inside its test (NMS, RoI Align, RoI Pool), the torchvision op is the oracle here,
with the tolerance torchvision's test allows. Where torchvision draws unseeded random inputs, a seeded
generator draws them by the same recipe. Cases that detviz treats differently on purpose are pinned,
each with its reason.
"""
import pytest
import torch
import torchvision.ops as tv_ops
from torch.autograd import gradcheck
from torch.testing import assert_close

from detviz import boxes as B
from detviz.losses import giou_loss, weight_reduce
from detviz.roi_ops import roi_align, roi_pool
from detviz.yolo.loss import ciou_loss

pytestmark = [
    pytest.mark.usefixtures("one_thread"),  # tests/conftest.py: gradcheck's many tiny calls spin on two threads
    # torch deprecates quantized tensors; they serve here only to build torchvision's dequantized inputs
    # and to check that detviz refuses them
    pytest.mark.filterwarnings(r"ignore:torch\.quantize_per_tensor:UserWarning"),
]


def gen(seed):
    return torch.Generator().manual_seed(seed)


def exactly(actual, expected):
    assert_close(actual, expected, rtol=0, atol=0)


# ---- box format conversions (TestBoxConvert) ----
# inputs and expected values: pytorch/vision test/test_ops.py @ 00673be3960268a837860cd6a05373d9861221d3

CONVERT_XYXY = [[0, 0, 100, 100], [0, 0, 0, 0], [10, 15, 30, 35], [23, 35, 93, 95]]
CONVERT_XYWH = [[0, 0, 100, 100], [0, 0, 0, 0], [10, 15, 20, 20], [23, 35, 70, 60]]
CONVERT_CXCYWH = [[50, 50, 100, 100], [0, 0, 0, 0], [20, 25, 20, 20], [58, 65, 70, 60]]


def as_float(rows):
    return torch.tensor(rows, dtype=torch.float)


def test_xyxy_to_xywh_and_back_are_exact():
    xyxy, xywh = as_float(CONVERT_XYXY), as_float(CONVERT_XYWH)
    exactly(B.box_xyxy_to_xywh(xyxy), xywh)
    exactly(B.box_xywh_to_xyxy(B.box_xyxy_to_xywh(xyxy)), xyxy)


def test_xyxy_to_cxcywh_and_back_are_exact():
    xyxy, cxcywh = as_float(CONVERT_XYXY), as_float(CONVERT_CXCYWH)
    exactly(B.box_xyxy_to_cxcywh(xyxy), cxcywh)
    exactly(B.box_cxcywh_to_xyxy(B.box_xyxy_to_cxcywh(xyxy)), xyxy)


def test_xywh_to_cxcywh_and_back_through_xyxy_are_exact():
    # detviz has no direct xywh <-> cxcywh function: both directions go through xyxy
    xywh, cxcywh = as_float(CONVERT_XYWH), as_float(CONVERT_CXCYWH)
    exactly(B.box_xyxy_to_cxcywh(B.box_xywh_to_xyxy(xywh)), cxcywh)
    exactly(B.box_xyxy_to_xywh(B.box_cxcywh_to_xyxy(cxcywh)), xywh)


@pytest.mark.parametrize("ours, out_fmt", [(B.box_xyxy_to_xywh, "xywh"), (B.box_xyxy_to_cxcywh, "cxcywh")])
def test_conversions_equal_box_convert_on_the_scripting_case(ours, out_fmt):
    # torchvision's scripting case, whose expected value is box_convert's own output
    boxes = as_float(CONVERT_XYXY)
    assert_close(ours(boxes), tv_ops.box_convert(boxes, in_fmt="xyxy", out_fmt=out_fmt))


# ---- box_area (TestBoxArea) ----
# inputs and expected values: pytorch/vision test/test_ops.py @ 00673be3960268a837860cd6a05373d9861221d3

FLOAT_BOXES = [
    [285.3538, 185.5758, 1193.5110, 851.4551],
    [285.1472, 188.7374, 1192.4984, 851.0669],
    [279.2440, 197.9812, 1189.4746, 849.2019],
]


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.int64])
def test_box_area_refuses_integer_boxes_and_measures_them_as_float(dtype):
    boxes = torch.tensor([[0, 0, 100, 100], [0, 0, 0, 0]], dtype=dtype)
    # deliberate difference: torchvision measures integer boxes (integer areas); detviz takes float boxes
    # only and names the dtype. The same boxes as float give torchvision's expected areas.
    with pytest.raises(TypeError, match=rf"boxes must be Tensor\[N, 4\] xyxy of a floating dtype, got {dtype}"):
        B.box_area(boxes)
    assert_close(B.box_area(boxes.float()), torch.tensor([10000.0, 0.0]), rtol=0.0, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_box_area_float_boxes(dtype):
    area = B.box_area(torch.tensor(FLOAT_BOXES, dtype=dtype))
    assert area.dtype == dtype
    assert_close(area, torch.tensor([604723.0806, 600965.4666, 592761.0085], dtype=dtype), rtol=0.0, atol=1e-4)


def test_box_area_float16_boxes_come_back_in_float32():
    boxes = torch.tensor([[2.825, 1.8625, 3.90, 4.85], [2.825, 4.875, 19.20, 5.10], [2.925, 1.80, 8.90, 4.90]],
                         dtype=torch.float16)
    area = B.box_area(boxes)
    assert area.dtype == torch.float32  # measured in float32, as torchvision
    expected = torch.tensor([3.2170, 3.7108, 18.5071], dtype=torch.float16)
    assert_close(area, expected, rtol=0.0, atol=0.01, check_dtype=False)


def test_box_area_equals_torchvision_on_the_scripting_case():
    boxes = as_float([[0, 0, 100, 100], [0, 0, 0, 0]])
    assert_close(B.box_area(boxes), tv_ops.box_area(boxes))


# ---- pairwise IoU family (TestBoxIou, TestGeneralizedBoxIou, TestDistanceBoxIoU, TestCompleteBoxIou) ----
# inputs and expected values: pytorch/vision test/test_ops.py @ 00673be3960268a837860cd6a05373d9861221d3

INT_BOXES = [[0, 0, 100, 100], [0, 0, 50, 50], [200, 200, 300, 300], [0, 0, 25, 25]]
INT_BOXES2 = [[0, 0, 100, 100], [0, 0, 50, 50], [200, 200, 300, 300]]
# FLOAT_BOXES against themselves: the same table for all four variants (near-identical boxes)
FLOAT_EXPECTED = [[1.0, 0.9933, 0.9673], [0.9933, 1.0, 0.9737], [0.9673, 0.9737, 1.0]]
# INT_BOXES are squares, so the aspect term of CIoU is 0 and CIoU equals DIoU
DIOU_INT_EXPECTED = [
    [1.0000, 0.1875, -0.4444],
    [0.1875, 1.0000, -0.5625],
    [-0.4444, -0.5625, 1.0000],
    [-0.0781, 0.1875, -0.6267],
]
PAIRWISE = {
    "box_iou": (B.box_iou, tv_ops.box_iou, [[1.0, 0.25, 0.0], [0.25, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0625, 0.25, 0.0]]),
    "generalized_box_iou": (B.generalized_box_iou, tv_ops.generalized_box_iou,
                            [[1.0, 0.25, -0.7778], [0.25, 1.0, -0.8611], [-0.7778, -0.8611, 1.0],
                             [0.0625, 0.25, -0.8819]]),
    "distance_box_iou": (B.distance_box_iou, tv_ops.distance_box_iou, DIOU_INT_EXPECTED),
    "complete_box_iou": (B.complete_box_iou, tv_ops.complete_box_iou, DIOU_INT_EXPECTED),
}


@pytest.mark.parametrize("name", sorted(PAIRWISE))
@pytest.mark.parametrize("dtype, atol", [(torch.float16, 0.002), (torch.float32, 1e-3), (torch.float64, 1e-3)])
def test_pairwise_iou_float_boxes(name, dtype, atol):
    ours = PAIRWISE[name][0]
    boxes = torch.tensor(FLOAT_BOXES, dtype=dtype)
    result = ours(boxes, boxes)
    assert result.dtype == (torch.float32 if dtype == torch.float16 else dtype)  # float16 measured in float32
    assert_close(result, torch.tensor(FLOAT_EXPECTED), rtol=0.0, atol=atol, check_dtype=False)


@pytest.mark.parametrize("name", sorted(PAIRWISE))
@pytest.mark.parametrize("dtype", [torch.int16, torch.int32, torch.int64])
def test_pairwise_iou_refuses_integer_boxes_and_measures_them_as_float(name, dtype):
    ours, _, int_expected = PAIRWISE[name]
    boxes1, boxes2 = torch.tensor(INT_BOXES, dtype=dtype), torch.tensor(INT_BOXES2, dtype=dtype)
    # deliberate difference: torchvision computes IoUs of integer boxes; detviz takes float boxes only
    # and names the dtype. The same boxes as float give torchvision's expected values.
    with pytest.raises(TypeError, match=rf"boxes1 must be Tensor\[N, 4\] xyxy of a floating dtype, got {dtype}"):
        ours(boxes1, boxes2)
    assert_close(ours(boxes1.float(), boxes2.float()), torch.tensor(int_expected), rtol=0.0, atol=1e-4)


@pytest.mark.parametrize("name", sorted(PAIRWISE))
def test_pairwise_iou_equals_torchvision_on_the_scripting_case(name):
    ours, theirs, _ = PAIRWISE[name]
    boxes = as_float(INT_BOXES)
    assert_close(ours(boxes, boxes), theirs(boxes, boxes))


def gen_box(size, seed):
    """torchvision's random boxes: corners in [0, 1), sides in [0, 1)."""
    g = gen(seed)
    xy1 = torch.rand((size, 2), generator=g)
    return torch.cat([xy1, xy1 + torch.rand((size, 2), generator=g)], dim=-1)


@pytest.mark.parametrize("name", sorted(PAIRWISE))
def test_pairwise_iou_equals_one_pair_at_a_time(name):
    ours = PAIRWISE[name][0]
    boxes1, boxes2 = gen_box(5, seed=0), gen_box(7, seed=1)
    one_by_one = torch.tensor([[ours(b1[None], b2[None]).item() for b2 in boxes2] for b1 in boxes1])
    assert_close(ours(boxes1, boxes2), one_by_one)


# ---- IoU losses (TestGeneralizedBoxIouLoss, TestCompleteBoxIouLoss, TestDistanceBoxIouLoss) ----
# inputs and expected values: pytorch/vision test/test_ops.py @ 00673be3960268a837860cd6a05373d9861221d3

LOSS_BOXES = {"box1": [-1, -1, 1, 1], "box2": [0, 0, 1, 1], "box3": [0, 1, 1, 2], "box4": [1, 1, 2, 2]}


def diou_loss(boxes1, boxes2):
    """detviz has no DIoU loss: torchvision's DIoU-loss cases are checked as 1 - the pairwise DIoU's diagonal."""
    return 1 - B.distance_box_iou(boxes1, boxes2).diagonal()


LOSSES = {"generalized_box_iou_loss": giou_loss, "complete_box_iou_loss": ciou_loss, "distance_box_iou_loss": diou_loss}
CIOU_AND_DIOU_PAIRS = [("box1", "box1", 0.0), ("box1", "box2", 0.8125), ("box1", "box3", 1.1923),
                       ("box1", "box4", 1.2500)]
LOSS_PAIRS = {
    "generalized_box_iou_loss": [("box1", "box1", 0.0), ("box1", "box2", 0.75), ("box2", "box3", 1.0),
                                 ("box2", "box4", 1.5)],
    "complete_box_iou_loss": CIOU_AND_DIOU_PAIRS,
    "distance_box_iou_loss": CIOU_AND_DIOU_PAIRS,
}
# box1s = (box2, box2) against box2s = (box3, box4): (sum, mean) of the two losses
LOSS_BATCH = {"generalized_box_iou_loss": (2.5, 1.25), "complete_box_iou_loss": (2.4500, 1.2250),
              "distance_box_iou_loss": (2.4500, 1.2250)}
LOSS_DTYPES = [torch.float32, torch.half]


def loss_boxes(names, dtype):
    return torch.tensor([LOSS_BOXES[name] for name in names], dtype=dtype)  # [len(names), 4]


@pytest.mark.parametrize("dtype", LOSS_DTYPES)
@pytest.mark.parametrize("name, first, second, expected",
                         [(name, *case) for name, cases in LOSS_PAIRS.items() for case in cases])
def test_iou_loss_of_one_pair(name, first, second, expected, dtype):
    # torchvision passes one box as Tensor[4]; detviz's losses take Tensor[N, 4] (see the test below)
    loss = LOSSES[name](loss_boxes([first], dtype), loss_boxes([second], dtype))
    assert_close(loss, torch.tensor([expected]))  # float32 for half boxes too, as torchvision


@pytest.mark.parametrize("dtype", LOSS_DTYPES)
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_iou_loss_of_a_batch_summed_and_averaged_by_the_caller(name, dtype):
    # detviz's losses are per pair: torchvision's reduction="sum" / "mean" are .sum() / .mean() here
    loss = LOSSES[name](loss_boxes(["box2", "box2"], dtype), loss_boxes(["box3", "box4"], dtype))
    expected_sum, expected_mean = LOSS_BATCH[name]
    assert_close(loss.sum(), torch.tensor(expected_sum))
    assert_close(loss.mean(), torch.tensor(expected_mean))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_iou_loss_refuses_a_single_box_and_has_no_reduction_argument(name):
    loss_fn = LOSSES[name]
    # deliberate difference: torchvision takes a single box as Tensor[4] and reduces with reduction=...
    # (refusing "xyz" with a ValueError); detviz's losses take Tensor[N, 4] and return one loss per pair,
    # leaving the reduction to the caller (weight_reduce), so there is no reduction argument to refuse
    with pytest.raises(ValueError, match=r"boxes1 must be Tensor\[N, 4\] xyxy, got shape \[4\]"):
        loss_fn(as_float(LOSS_BOXES["box1"]), as_float(LOSS_BOXES["box2"]))
    with pytest.raises(TypeError, match="unexpected keyword argument 'reduction'"):
        loss_fn(loss_boxes(["box2", "box2"], torch.float), loss_boxes(["box3", "box4"], torch.float), reduction="xyz")


@pytest.mark.parametrize("dtype", LOSS_DTYPES)
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_iou_loss_of_no_boxes(name, dtype):
    boxes1 = torch.randn([0, 4], dtype=dtype, generator=gen(0)).requires_grad_()
    boxes2 = torch.randn([0, 4], dtype=dtype, generator=gen(1)).requires_grad_()
    loss = LOSSES[name](boxes1, boxes2)
    assert loss.numel() == 0
    # torchvision's reduction="mean" of no boxes is 0; a plain .mean() of no losses is NaN, so detviz's
    # reducer weight_reduce returns their (zero) sum instead, still differentiable
    reduced = weight_reduce(loss)
    reduced.backward()
    assert_close(reduced, torch.tensor(0.0))
    assert boxes1.grad is not None and boxes2.grad is not None


# ---- NMS (TestNMS) ----
# inputs and expected values: pytorch/vision test/test_ops.py @ 00673be3960268a837860cd6a05373d9861221d3

NMS_THRESHOLDS = [0.2, 0.5, 0.8]


def boxes_with_iou(n, iou_threshold, generator):
    """torchvision's NMS input: n random boxes, the last a copy of the first widened so that
    their IoU lies just above ``iou_threshold``, and n random scores."""
    boxes = torch.rand(n, 4, generator=generator) * 100
    boxes[:, 2:] += boxes[:, :2]
    boxes[-1] = boxes[0]
    x0, _, x1, _ = boxes[-1].tolist()
    target = iou_threshold + 1e-5
    boxes[-1, 2] += (x1 - x0) * (1 - target) / target
    return boxes, torch.rand(n, generator=generator)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("iou", NMS_THRESHOLDS)
def test_nms_against_the_reference(iou, seed):
    boxes, scores = boxes_with_iou(1000, iou, gen(seed))
    keep = B.nms(boxes, scores, iou)
    assert keep.dtype == torch.int64
    assert keep.tolist() == tv_ops.nms(boxes, scores, iou).tolist()
    assert not {0, 999} <= set(keep.tolist())  # IoU just above the threshold: never both kept


@pytest.mark.parametrize("scale, zero_point", [(1, 0), (2, 50), (3, 10)])
@pytest.mark.parametrize("iou", NMS_THRESHOLDS)
def test_nms_of_dequantized_boxes(iou, scale, zero_point):
    boxes, scores = boxes_with_iou(1000, iou, gen(0))
    scores = scores * 100  # torchvision's scaling, else most quantized scores would be 0 or 1
    qboxes = torch.quantize_per_tensor(boxes, scale=scale, zero_point=zero_point, dtype=torch.quint8)
    qscores = torch.quantize_per_tensor(scores, scale=scale, zero_point=zero_point, dtype=torch.quint8)
    boxes, scores = qboxes.dequantize(), qscores.dequantize()  # many tied scores and coordinates
    assert B.nms(boxes, scores, iou).tolist() == tv_ops.nms(boxes, scores, iou).tolist()
    # deliberate difference: torchvision also runs NMS on the quantized tensors; detviz takes float tensors only
    with pytest.raises(TypeError, match=r"of a floating dtype, got torch\.quint8"):
        B.nms(qboxes, qscores, iou)


def test_nms_of_float16_boxes_keeps_what_float32_keeps():
    # torchvision runs this case on CUDA and MPS only; detviz compares half-precision boxes in float32 on any device
    boxes, scores = torch.tensor(FLOAT_BOXES), torch.tensor([0.6370, 0.7569, 0.3966])
    keep32 = B.nms(boxes, scores, 0.2)
    keep16 = B.nms(boxes.to(torch.float16), scores.to(torch.float16), 0.2)
    assert keep16.tolist() == keep32.tolist() == tv_ops.nms(boxes, scores, 0.2).tolist() == [1]


@pytest.mark.parametrize("seed", range(10))
def test_batched_nms_equals_torchvision(seed):
    g = gen(seed)
    boxes = torch.cat((torch.rand(1000, 2, generator=g), torch.rand(1000, 2, generator=g) + 10), dim=1)
    scores = torch.rand(1000, generator=g)
    idxs = torch.randint(0, 4, size=(1000,), generator=g)
    keep = B.batched_nms(boxes, scores, idxs, 0.9)
    assert keep.tolist() == tv_ops.batched_nms(boxes, scores, idxs, 0.9).tolist()


def test_batched_nms_of_no_boxes():
    # deliberate difference: torchvision returns an empty result for any empty boxes, even Tensor[0] with
    # scores, idxs and threshold None; detviz checks every argument first, so no boxes are Tensor[0, 4]
    # with Tensor[0] scores and idxs
    with pytest.raises(ValueError, match=r"boxes must be Tensor\[N, 4\] xyxy, got shape \[0\]"):
        B.batched_nms(torch.empty((0,), dtype=torch.int64), None, None, None)
    keep = B.batched_nms(torch.empty(0, 4), torch.empty(0), torch.empty(0, dtype=torch.int64), 0.9)
    assert_close(keep, torch.empty((0,), dtype=torch.int64))


@pytest.mark.parametrize("boxes_shape, scores_shape, message", [
    ((4,), (3,), r"boxes must be Tensor\[N, 4\] xyxy, got shape \[4\]"),
    ((3, 5), (3,), r"boxes must be Tensor\[N, 4\] xyxy, got shape \[3, 5\]"),
    ((3, 4), (3, 2), r"scores must be Tensor\[N\] float, got shape \[3, 2\]"),
    ((3, 4), (4,), r"scores must have one score per box \(3\), got 4"),
])
def test_nms_input_errors(boxes_shape, scores_shape, message):
    # deliberate difference: torchvision's kernel raises RuntimeError; detviz raises ValueError naming the argument.
    # The random boxes are sorted along their last axis, so every row is a valid xyxy box and the shape is the error.
    g = gen(0)
    boxes = torch.rand(boxes_shape, generator=g).sort(dim=-1).values
    with pytest.raises(ValueError, match=message):
        B.nms(boxes, torch.rand(scores_shape, generator=g), 0.5)


# ---- RoI Pool and RoI Align (TestRoiPool, TestRoIAlign, TestBoxConversionToRoi) ----
# inputs and expected values: pytorch/vision test/test_ops.py @ 00673be3960268a837860cd6a05373d9861221d3

ROIS = [[0, 0, 0, 9, 9], [0, 0, 5, 4, 9], [0, 5, 5, 9, 9], [1, 0, 0, 9, 9]]  # (batch index, x1, y1, x2, y2)
BACKWARD_ROIS = [[0, 0, 0, 4, 4], [0, 0, 2, 3, 4], [0, 2, 2, 4, 4]]
FORWARD_TOL = {torch.float16: 4e-3, torch.float32: 1e-5, torch.float64: 1e-5}
ROI_OPS = [(roi_pool, tv_ops.roi_pool), (roi_align, tv_ops.roi_align)]


def feature_maps(shape, seed, dtype=torch.float, contiguous=True):
    """torch.rand feature maps; torchvision's non-contiguous case is the same draw with H and W swapped."""
    x = torch.rand(shape, generator=gen(seed), dtype=dtype)
    return x if contiguous else x.permute(0, 1, 3, 2)


@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [True, False])
def test_roi_align_forward(aligned, dtype, contiguous):
    x = feature_maps((2, 50, 10, 10), 0, dtype, contiguous)
    rois = torch.tensor(ROIS, dtype=dtype)
    out = roi_align(x, rois, (5, 5), spatial_scale=1, sampling_ratio=-1, aligned=aligned)
    assert out.dtype == dtype
    # torchvision's reference is computed in double on the same values, then cast to the input's dtype
    expected = tv_ops.roi_align(x.double(), rois.double(), (5, 5), spatial_scale=1, sampling_ratio=-1, aligned=aligned)
    assert_close(out, expected.to(dtype), rtol=FORWARD_TOL[dtype], atol=FORWARD_TOL[dtype])


@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_roi_pool_forward(dtype, contiguous):
    x = feature_maps((2, 50, 10, 10), 0, dtype, contiguous)
    rois = torch.tensor(ROIS, dtype=dtype)
    out = roi_pool(x, rois, (5, 5), spatial_scale=1)
    assert out.dtype == dtype
    expected = tv_ops.roi_pool(x.double(), rois.double(), (5, 5), spatial_scale=1)
    assert_close(out, expected.to(dtype), rtol=FORWARD_TOL[dtype], atol=FORWARD_TOL[dtype])


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("op", [roi_pool, roi_align])
def test_roi_op_gradcheck(op, contiguous, seed):
    x = torch.rand(1, 8, 5, 5, generator=gen(seed), dtype=torch.float64, requires_grad=True)
    if not contiguous:
        x = x.permute(0, 1, 3, 2)
    rois = torch.tensor(BACKWARD_ROIS, dtype=torch.float64)
    kwargs = {"sampling_ratio": 1} if op is roi_align else {}
    assert gradcheck(lambda z: op(z, rois, 2, spatial_scale=1, **kwargs), (x,), atol=1e-5)


@pytest.mark.parametrize("op, tv_op", ROI_OPS)
def test_rois_reaching_past_a_small_map(op, tv_op):
    # the inputs of torchvision's tracing case: the RoIs drawn for a 10 x 10 map, on a 5 x 5 one
    x = feature_maps((2, 50, 5, 5), 1)
    rois = torch.tensor(ROIS, dtype=torch.float)
    assert_close(op(x, rois, (5, 5)), tv_op(x, rois, (5, 5)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op, tv_op", ROI_OPS)
def test_transposed_rois_in_a_list(op, tv_op):
    # the inputs of torchvision's scripting case: ROIS transposed, i.e. five [x1, y1, x2, y2] rows
    # (one of them inverted, y2 < y1), given once per image
    x = feature_maps((2, 1, 10, 10), 2)
    roi = torch.tensor(ROIS, dtype=torch.float).t()  # [5, 4]
    out = op(x, [roi, roi], [3, 3])
    assert out.shape == (10, 1, 3, 3)
    assert_close(out, tv_op(x, [roi, roi], [3, 3]))


@pytest.mark.parametrize("op", [roi_pool, roi_align])
def test_boxes_of_the_wrong_width_are_refused(op):
    # deliberate difference: torchvision fails an assert (AssertionError); detviz raises ValueError naming the layout
    a = torch.linspace(1, 8 * 8, 8 * 8).reshape(1, 1, 8, 8)
    with pytest.raises(ValueError, match=r"boxes must be Tensor\[K, 5\] .*, got shape \[1, 4\]"):
        op(a, torch.tensor([[0, 0, 3, 3]], dtype=a.dtype), output_size=(2, 2))
    with pytest.raises(ValueError, match=r"boxes\[0\] must be Tensor\[L, 4\] xyxy, got shape \[1, 3\]"):
        op(a, [torch.tensor([[0, 0, 3]], dtype=a.dtype)], output_size=(2, 2))


@pytest.mark.parametrize("op, tv_op", ROI_OPS)
def test_boxes_as_tensor_list_and_tuple_agree(op, tv_op):
    box_tensor = torch.tensor([[0, 0, 0, 100, 100], [1, 0, 0, 100, 100]], dtype=torch.float)
    box_list = [as_float([[0, 0, 100, 100]]), as_float([[0, 0, 100, 100]])]
    x = feature_maps((2, 3, 10, 10), 3)
    out = op(x, box_tensor, 2, spatial_scale=0.1)  # 100 px boxes cover the 10 x 10 map
    assert_close(out, tv_op(x, box_tensor, 2, spatial_scale=0.1))
    for boxes in (box_list, tuple(box_list)):
        exactly(op(x, boxes, 2, spatial_scale=0.1), out)


def quantized_roi_inputs(num_imgs, channels, num_rois, seed):
    """torchvision's quantized RoI Align inputs: integer features in [50, 100) on 10 x 10 maps and
    integer boxes of corners in [0, 5) and sides in [0, 5)."""
    g = gen(seed)
    x = torch.randint(50, 100, size=(num_imgs, channels, 10, 10), generator=g).to(torch.float)
    rois = torch.randint(0, 10 // 2, size=(num_rois, 5), generator=g).to(torch.float)
    rois[:, 0] = torch.randint(0, num_imgs, size=(num_rois,), generator=g)  # batch index
    rois[:, 3:] += rois[:, 1:3]  # not degenerate
    return x, rois


@pytest.mark.parametrize("qdtype", [torch.qint8, torch.quint8, torch.qint32])
@pytest.mark.parametrize("scale, zero_point", [(1, 0), (2, 10), (0.1, 50)])
@pytest.mark.parametrize("aligned", [True, False])
def test_roi_align_of_dequantized_inputs(aligned, scale, zero_point, qdtype):
    x, rois = quantized_roi_inputs(num_imgs=1, channels=2, num_rois=1000, seed=0)
    qx = torch.quantize_per_tensor(x, scale=scale, zero_point=zero_point, dtype=qdtype)
    qrois = torch.quantize_per_tensor(rois, scale=scale, zero_point=zero_point, dtype=qdtype)
    x, rois = qx.dequantize(), qrois.dequantize()
    out = roi_align(x, rois, 5, spatial_scale=1, sampling_ratio=-1, aligned=aligned)
    expected = tv_ops.roi_align(x, rois, 5, spatial_scale=1, sampling_ratio=-1, aligned=aligned)
    assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # deliberate difference: torchvision also runs RoI Align on the quantized tensors; detviz takes float tensors only
    with pytest.raises(TypeError, match=rf"input must be Tensor\[B, C, H, W\] of a floating dtype, got {qdtype}"):
        roi_align(qx, qrois, 5, spatial_scale=1, sampling_ratio=-1, aligned=aligned)


def test_roi_align_of_two_images():
    # deliberate difference: torchvision's quantized kernel refuses two images ("Only one image per batch is
    # allowed"); detviz refuses quantized tensors at all, and its float RoI Align takes any batch
    x, rois = quantized_roi_inputs(num_imgs=2, channels=3, num_rois=10, seed=1)
    qx = torch.quantize_per_tensor(x, scale=1, zero_point=0, dtype=torch.qint8)
    qrois = torch.quantize_per_tensor(rois, scale=1, zero_point=0, dtype=torch.qint8)
    with pytest.raises(TypeError, match=r"of a floating dtype, got torch\.qint8"):
        roi_align(qx, qrois, output_size=5)
    assert_close(roi_align(x, rois, output_size=5), tv_ops.roi_align(x, rois, output_size=5))
