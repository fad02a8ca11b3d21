"""Tests for detviz.rcnn.transform: parity with torchvision's GeneralizedRCNNTransform,
the 800/1333 rule by hand, padding, postprocess round trip, bad input, no mutation."""
import copy

import pytest
import torch
from torch.testing import assert_close
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import GeneralizedRCNNTransform as TorchvisionTransform
from torchvision.ops import MultiScaleRoIAlign

from detviz.rcnn.transform import GeneralizedRCNNTransform, resize_boxes, resized_size

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
MULTI_SCALE = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)
CONFIGS = {  # name -> constructor arguments (min_size, max_size, mean, std, **kwargs)
    "default": ((800,), dict()),
    "multi-scale": ((MULTI_SCALE,), dict()),
    "small-divisible-7": ((64, 96), dict(size_divisible=7)),
    "fixed-size": ((800,), dict(fixed_size=(96, 64))),
    "skip-resize": ((800,), dict(_skip_resize=True)),
}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
BATCHES = {  # name -> (h, w) of each image
    "one": [(375, 500)],
    "mixed-odd": [(375, 500), (333, 777), (101, 53), (481, 481)],
    "already-800": [(800, 1333), (1333, 800)],
}


def make_transforms(name, training):
    (min_size, *rest), kwargs = CONFIGS[name]
    max_size = rest[0] if rest else 1333
    ours = GeneralizedRCNNTransform(min_size, max_size, MEAN, STD, **kwargs).train(training)
    theirs = TorchvisionTransform(min_size, max_size, MEAN, STD, **kwargs).train(training)
    return ours, theirs


def make_batch(sizes, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, h, w, generator=gen, dtype=dtype) for h, w in sizes]
    targets = []
    for h, w in sizes:
        xy = torch.rand(4, 2, generator=gen, dtype=dtype) * torch.tensor([w, h], dtype=dtype) * 0.6
        wh = torch.rand(4, 2, generator=gen, dtype=dtype) * torch.tensor([w, h], dtype=dtype) * 0.4 + 1
        targets.append({"boxes": torch.cat([xy, xy + wh], dim=1), "labels": torch.arange(1, 5)})
    return images, targets


def run_seeded(transform, *args, seed=123):
    """Run with a fixed seed; also return the next random number, which shows the RNG state afterwards."""
    torch.manual_seed(seed)
    out = transform(*args)
    return out, torch.rand(3)


# ---- parity with torchvision ----

@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("batch", list(BATCHES))
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("with_targets", [True, False], ids=["targets", "no-targets"])
def test_forward_matches_torchvision(config, batch, training, with_targets):
    ours, theirs = make_transforms(config, training)
    images, targets = make_batch(BATCHES[batch])
    args = (images, targets) if with_targets else (images,)
    (ours_list, ours_targets), ours_next = run_seeded(ours, *args)
    (tv_list, tv_targets), tv_next = run_seeded(theirs, *args)
    assert isinstance(ours_list, ImageList)
    assert ours_list.image_sizes == tv_list.image_sizes
    assert_close(ours_list.tensors, tv_list.tensors, rtol=0, atol=0)
    assert_close(ours_next, tv_next)  # the same number of draws from the global generator
    if with_targets:
        assert_close(ours_targets, tv_targets, rtol=0, atol=0)
    else:
        assert ours_targets is None


def test_multi_scale_training_draws_several_sizes_like_torchvision():
    ours, theirs = make_transforms("multi-scale", training=True)
    images, _ = make_batch([(300, 400)] * 12)
    (ours_list, _), _ = run_seeded(ours, images, seed=7)
    (tv_list, _), _ = run_seeded(theirs, images, seed=7)
    assert ours_list.image_sizes == tv_list.image_sizes
    assert len({h for h, _ in ours_list.image_sizes}) > 3  # the draw really varies per image


def test_float64_images_and_keypoints_match_torchvision():
    ours, theirs = make_transforms("default", training=False)
    images, targets = make_batch([(101, 53), (200, 300)], dtype=torch.float64)
    for t in targets:
        t["keypoints"] = torch.cat([t["boxes"][:, None, :2], torch.ones(4, 1, 1, dtype=torch.float64)], dim=2)  # [M, 1, 3]
    ours_list, ours_targets = ours(images, targets)
    tv_list, tv_targets = theirs(copy.deepcopy(images), copy.deepcopy(targets))
    assert_close(ours_list.tensors, tv_list.tensors, rtol=0, atol=0)
    assert_close(ours_targets, tv_targets, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_postprocess_matches_torchvision_and_round_trips(device):
    ours, theirs = make_transforms("default", training=False)
    images, targets = make_batch(BATCHES["mixed-odd"], seed=1)
    images = [img.to(device) for img in images]
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    original_sizes = [tuple(img.shape[-2:]) for img in images]
    image_list, resized_targets = ours(images, targets)
    assert image_list.tensors.device == images[0].device
    assert_close(image_list.tensors, theirs(images)[0].tensors, rtol=0, atol=0)
    predictions = [{"boxes": t["boxes"], "scores": torch.rand(4, device=device), "labels": t["labels"]}
                   for t in resized_targets]
    restored = ours.postprocess(predictions, image_list.image_sizes, original_sizes)
    expected = theirs.postprocess(copy.deepcopy(predictions), image_list.image_sizes, original_sizes)
    assert_close(restored, expected, rtol=0, atol=0)
    assert_close([r["boxes"] for r in restored], [t["boxes"] for t in targets])  # back to the input pixels


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_resize_method_matches_torchvision(training):
    ours, theirs = make_transforms("multi-scale", training)
    images, targets = make_batch([(241, 319)], seed=4)
    (ours_image, ours_target), ours_next = run_seeded(ours.resize, images[0], targets[0])
    (tv_image, tv_target), tv_next = run_seeded(theirs.resize, images[0], dict(targets[0]))
    assert_close(ours_image, tv_image, rtol=0, atol=0)
    assert_close(ours_target, tv_target, rtol=0, atol=0)
    assert_close(ours_next, tv_next)
    assert ours.resize(images[0])[1] is None


def test_postprocess_in_training_returns_result_unchanged():
    ours, _ = make_transforms("default", training=True)
    result = [{"boxes": torch.tensor([[1.0, 2, 3, 4]])}]
    assert ours.postprocess(result, [(10, 10)], [(20, 20)]) is result


def test_drop_in_for_a_torchvision_faster_rcnn():
    backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=16, padding=1), torch.nn.ReLU())
    backbone.out_channels = 8
    torch.manual_seed(0)
    anchors = AnchorGenerator(sizes=((16, 32),), aspect_ratios=((0.5, 1.0, 2.0),))  # one feature map
    pooler = MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2)
    model = FasterRCNN(backbone, num_classes=3, min_size=96, max_size=128, box_score_thresh=0.0,
                       rpn_anchor_generator=anchors, box_roi_pool=pooler).eval()
    images, _ = make_batch([(70, 90), (131, 57)], seed=2)
    with torch.no_grad():
        expected = model(images)
        model.transform = GeneralizedRCNNTransform(96, 128, MEAN, STD).eval()  # a new module starts in train mode
        got = model(images)
    assert sum(len(d["boxes"]) for d in got) > 0
    assert_close(got, expected)


# ---- the 800 / 1333 rule and padding, by hand ----

@pytest.mark.parametrize("h, w, expected", [
    (480, 640, (800, 1066)),   # 4:3: short side wins, 640 * 5/3 = 1066.7 floors to 1066
    (400, 1600, (333, 1333)),  # 4:1: the long side caps at 1333
    (800, 1333, (800, 1333)),  # already there
    (1000, 1000, (800, 800)),  # shrinks too
])
def test_resized_size_worked_examples(h, w, expected):
    assert resized_size(h, w, 800, 1333) == expected


def test_resized_size_matches_the_resized_images():
    transform = GeneralizedRCNNTransform(800, 1333, MEAN, STD).eval()
    gen = torch.Generator().manual_seed(3)
    for h, w in torch.randint(20, 1500, (25, 2), generator=gen).tolist():
        assert tuple(transform.resize(torch.zeros(3, h, w))[0].shape[-2:]) == resized_size(h, w, 800, 1333)


def test_normalize_and_zero_padding_by_hand():
    transform = GeneralizedRCNNTransform(8, 100, [0.5], [0.25], size_divisible=4).eval()
    small, large = torch.full((1, 2, 3), 0.75), torch.full((1, 4, 5), 0.25)  # resized to 8 x 12 and 8 x 10
    image_list, _ = transform([small, large])
    assert image_list.image_sizes == [(8, 12), (8, 10)]
    expected = torch.zeros(2, 1, 8, 12)  # height 8 stays, width 12 is already a multiple of 4
    expected[0] = (0.75 - 0.5) / 0.25
    expected[1, :, :, :10] = (0.25 - 0.5) / 0.25
    assert_close(image_list.tensors, expected)


def test_resize_boxes_by_hand():
    boxes = torch.tensor([[10.0, 20, 30, 40]])
    assert_close(resize_boxes(boxes, (100, 50), (200, 25)), torch.tensor([[5.0, 40, 15, 80]]))  # h x2, w x0.5


# ---- no mutation ----

def test_inputs_and_targets_are_not_modified():
    ours, _ = make_transforms("multi-scale", training=True)
    images, targets = make_batch(BATCHES["mixed-odd"])
    images_before, targets_before = copy.deepcopy(images), copy.deepcopy(targets)
    target_dicts = [dict(t) for t in targets]
    _, new_targets = ours(images, targets)
    assert_close(images, images_before, rtol=0, atol=0)
    assert_close(targets, targets_before, rtol=0, atol=0)
    assert [t.keys() for t in targets] == [t.keys() for t in target_dicts]
    assert all(new is not old for new, old in zip(new_targets, targets))
    predictions = [{"boxes": t["boxes"]} for t in new_targets]
    predictions_before = copy.deepcopy(predictions)
    ours.eval().postprocess(predictions, [(800, 800)] * 4, [(400, 400)] * 4)
    assert_close(predictions, predictions_before, rtol=0, atol=0)


# ---- bad input: the error names what was expected ----

def test_integer_images_raise_type_error_like_torchvision():
    image = torch.zeros(3, 10, 10, dtype=torch.uint8)
    with pytest.raises(TypeError, match=r"images must be float tensors with values in \[0, 1\].*uint8"):
        GeneralizedRCNNTransform(800, 1333, MEAN, STD)([image])
    with pytest.raises(TypeError):
        TorchvisionTransform(800, 1333, MEAN, STD)([image])


@pytest.mark.parametrize("images, targets, error, expected", [
    (torch.rand(1, 3, 8, 8), None, TypeError, r"images must be a list of Tensor\[3, H, W\], got Tensor"),
    ([torch.rand(8, 8)], None, ValueError, r"images\[0\] must be Tensor\[C, H, W\], got shape \[8, 8\]"),
    ([torch.rand(1, 8, 8)], None, ValueError, r"images\[0\] must have 3 channels"),
    ([torch.rand(3, 8, 8)], [], ValueError, r"targets must be a list of 1 dicts"),
    ([torch.rand(3, 8, 8)], [{"labels": torch.ones(1)}], ValueError, r"targets\[0\] must be a dict with a 'boxes' entry"),
    ([torch.rand(3, 8, 8)], [{"boxes": torch.zeros(2, 5)}], ValueError, r"targets\[0\]\['boxes'\] must be Tensor\[M, 4\] xyxy"),
    ([torch.rand(3, 8, 8)], [{"boxes": torch.zeros(2, 4, dtype=torch.int64)}], TypeError,
     r"target boxes must be a floating Tensor\[M, 4\] xyxy, got torch.int64 in targets\[0\]"),
    ([torch.rand(3, 8, 8)], [{"boxes": torch.zeros(0, 4), "masks": torch.zeros(0, 8, 8)}], ValueError, "boxes and keypoints only"),
])
def test_bad_input_raises(images, targets, error, expected):
    with pytest.raises(error, match=expected):
        GeneralizedRCNNTransform(800, 1333, MEAN, STD)(images, targets)


def test_bad_constructor_arguments_raise():
    with pytest.raises(TypeError, match=r"accepts only the keyword _skip_resize.*\['min_szie'\]"):
        GeneralizedRCNNTransform(800, 1333, MEAN, STD, min_szie=600)
    with pytest.raises(ValueError, match="one value per channel each, got 3 and 2"):
        GeneralizedRCNNTransform(800, 1333, MEAN, STD[:2])


def test_postprocess_refuses_masks():
    transform = GeneralizedRCNNTransform(800, 1333, MEAN, STD).eval()
    with pytest.raises(ValueError, match="boxes and keypoints only"):
        transform.postprocess([{"boxes": torch.zeros(0, 4), "masks": torch.zeros(0, 1, 8, 8)}], [(8, 8)], [(4, 4)])


def test_empty_targets_pass_through():
    transform = GeneralizedRCNNTransform(16, 32, MEAN, STD).eval()
    _, targets = transform([torch.rand(3, 8, 8)], [{"boxes": torch.zeros(0, 4)}])
    assert_close(targets[0]["boxes"], torch.zeros(0, 4))
