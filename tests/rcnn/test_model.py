"""detviz's Faster R-CNN against torchvision's: same weights, same inputs, same numbers.

Measured against torchvision 0.29.2 (torch 2.14.1, CPU); the tests compare with whatever
torchvision is installed.
"""
import pytest
import torch
import torchvision
from torch.testing import assert_close
from torchvision.models.detection import FasterRCNN as TVFasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops import MultiScaleRoIAlign

from detviz.anchors import AnchorGenerator
from detviz.rcnn.model import FasterRCNN

SIZES, RATIOS = ((32, 64, 128, 256, 512),), ((0.5, 1.0, 2.0),)
SMALL = dict(min_size=320, max_size=512)  # keeps the CPU tests quick; the notebooks run 800 x 1248


def _mobilenet_pair(**kwargs):
    """The tutorial model (mobilenet_v2 features, one stride-32 level, 15 anchors) twice, same weights."""
    torch.manual_seed(0)
    backbone = torchvision.models.mobilenet_v2(weights=None).features
    backbone.out_channels = 1280
    reference = TVFasterRCNN(backbone, num_classes=3, rpn_anchor_generator=TVAnchorGenerator(SIZES, RATIOS),
                             box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2), **kwargs)
    backbone = torchvision.models.mobilenet_v2(weights=None).features
    backbone.out_channels = 1280
    ours = FasterRCNN(backbone, num_classes=3, rpn_anchor_generator=AnchorGenerator(SIZES, RATIOS),
                      box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2), **kwargs)
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


def _fpn_pair(**kwargs):
    torch.manual_seed(0)
    reference = TVFasterRCNN(resnet_fpn_backbone(backbone_name="resnet18", weights=None), num_classes=3, **kwargs)
    ours = FasterRCNN(resnet_fpn_backbone(backbone_name="resnet18", weights=None), num_classes=3, **kwargs)
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


def _images(sizes, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=gen) for h, w in sizes]


def _targets(images, seed=2, empty=()):
    gen = torch.Generator().manual_seed(seed)
    targets = []
    for i, image in enumerate(images):
        h, w = image.shape[-2:]
        if i in empty:
            targets.append({"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)})
            continue
        xy = torch.rand(3, 2, generator=gen) * torch.tensor([w * 0.6, h * 0.6])
        wh = torch.rand(3, 2, generator=gen) * torch.tensor([w * 0.4, h * 0.4]) + 16
        targets.append({"boxes": torch.cat([xy, xy + wh], dim=1), "labels": torch.tensor([1, 2, 1])})
    return targets


@pytest.fixture(scope="module")
def mobilenet_pair():
    return _mobilenet_pair(**SMALL)


@pytest.fixture(scope="module")
def fpn_pair():
    return _fpn_pair(**SMALL)


def test_state_dict_keys_are_torchvisions(mobilenet_pair, fpn_pair):
    for reference, ours in (mobilenet_pair, fpn_pair):
        assert list(ours.state_dict()) == list(reference.state_dict())


@pytest.mark.parametrize("pair_name", ["mobilenet_pair", "fpn_pair"])
@pytest.mark.parametrize("sizes", [[(300, 400), (260, 380)], [(333, 251)]])
def test_eval_step_by_step(pair_name, sizes, request):
    reference, ours = (m.eval() for m in request.getfixturevalue(pair_name))
    images = _images(sizes)
    with torch.no_grad():
        ref_list, _ = reference.transform(images)
        our_list, _ = ours.transform(images)
        assert_close(our_list.tensors, ref_list.tensors)
        assert our_list.image_sizes == ref_list.image_sizes
        features = ours.features(our_list.tensors)
        ref_features = reference.backbone(ref_list.tensors)
        ref_features = ref_features if isinstance(ref_features, dict) else {"0": ref_features}
        feats = list(features.values())
        for a, b in zip(ours.rpn.anchor_generator(our_list, feats),
                        reference.rpn.anchor_generator(ref_list, list(ref_features.values()))):
            assert_close(a, b)
        for a, b in zip(ours.rpn.head(feats), reference.rpn.head(list(ref_features.values()))):
            for x, y in zip(a, b):
                assert_close(x, y)
        proposals, _ = ours.rpn(our_list, features)
        ref_proposals, _ = reference.rpn(ref_list, ref_features)
        assert [len(p) for p in proposals] == [len(p) for p in ref_proposals]
        for a, b in zip(proposals, ref_proposals):
            assert_close(a, b)
        roi_features = ours.roi_heads.box_roi_pool(features, proposals, our_list.image_sizes)
        assert_close(roi_features, reference.roi_heads.box_roi_pool(ref_features, ref_proposals,
                                                                    ref_list.image_sizes))
        detections = ours(images)
        ref_detections = reference(images)
    for a, b in zip(detections, ref_detections):
        assert a.keys() == b.keys() == {"boxes", "labels", "scores"}
        for key in a:
            assert_close(a[key], b[key])


@pytest.mark.parametrize("pair_name", ["mobilenet_pair", "fpn_pair"])
@pytest.mark.parametrize("empty", [(), (1,), (0, 1)])
def test_train_losses_with_the_same_rng(pair_name, empty, request):
    reference, ours = (m.train() for m in request.getfixturevalue(pair_name))
    images = _images([(300, 400), (256, 320)])
    targets = _targets(images, empty=empty)
    for seed in (0, 1):
        torch.manual_seed(seed)
        ref_losses = reference(images, targets)
        torch.manual_seed(seed)
        losses = ours(images, targets)
        assert losses.keys() == ref_losses.keys()
        for key in losses:
            assert_close(losses[key], ref_losses[key])
            assert torch.isfinite(losses[key])
    if empty == (0, 1):
        assert losses["loss_box_reg"] == 0 and losses["loss_rpn_box_reg"] == 0


def test_gradients_match(mobilenet_pair):
    reference, ours = (m.train() for m in mobilenet_pair)
    images = _images([(300, 400)])
    targets = _targets(images)
    for model in (reference, ours):
        model.zero_grad()
        torch.manual_seed(3)
        sum(model(images, targets).values()).backward()
    for (name, p), (_, q) in zip(ours.named_parameters(), reference.named_parameters()):
        if q.grad is None:
            assert p.grad is None, name
        else:
            assert_close(p.grad, q.grad, msg=name)


@pytest.mark.parametrize("targets, error, message", [
    (None, ValueError, "targets must be given in training mode"),
    ([{"boxes": torch.zeros(4), "labels": torch.zeros(1, dtype=torch.int64)}], ValueError,
     r"targets\[0\]\['boxes'\] must be Tensor\[M, 4\] xyxy, got \[4\]"),
    ([{"boxes": torch.zeros(1, 5), "labels": torch.zeros(1, dtype=torch.int64)}], ValueError,
     r"must be Tensor\[M, 4\] xyxy, got \[1, 5\]"),
    ([{"boxes": torch.tensor([[1.0, 3, 1, 4], [2, 4, 3, 4]]), "labels": torch.ones(2, dtype=torch.int64)}],
     ValueError, r"targets\[0\]\['boxes'\]\[0\] = \[1.0, 3.0, 1.0, 4.0\] has no positive width"),
])
def test_bad_targets_are_rejected_like_torchvision(mobilenet_pair, targets, error, message):
    reference, ours = (m.train() for m in mobilenet_pair)
    images = _images([(200, 240)])
    with pytest.raises(error, match=message):
        ours(images, targets)
    with pytest.raises((ValueError, AssertionError, TypeError)):
        reference(images, targets)


def test_integer_boxes_are_rejected_where_torchvision_converts_them(mobilenet_pair):
    reference, ours = (m.train() for m in mobilenet_pair)
    images = _images([(200, 240)])
    targets = [{"boxes": torch.tensor([[0, 0, 10, 10]]), "labels": torch.ones(1, dtype=torch.int64)}]
    with pytest.raises(TypeError, match="float"):
        ours(images, targets)
    torch.manual_seed(0)
    assert torch.isfinite(sum(reference(images, targets).values()))  # torchvision casts them silently


def test_non_float_images_are_rejected(mobilenet_pair):
    _, ours = mobilenet_pair
    ours.eval()
    with pytest.raises(TypeError, match="float"):
        ours([torch.zeros(3, 64, 64, dtype=torch.uint8)])


def test_anchor_sizes_must_match_the_feature_maps():
    torch.manual_seed(0)
    model = FasterRCNN(resnet_fpn_backbone(backbone_name="resnet18", weights=None), num_classes=2,
                       rpn_anchor_generator=AnchorGenerator(SIZES, RATIOS), **SMALL).eval()
    with pytest.raises(ValueError, match="5 feature maps"):
        model(_images([(128, 128)]))


def test_rpn_and_roi_heads_check_targets_on_their_own(mobilenet_pair):
    _, ours = mobilenet_pair
    ours.train()
    images = _images([(200, 240)])
    image_list, _ = ours.transform(images)
    features = ours.features(image_list.tensors)
    with pytest.raises(ValueError, match=r"targets\[0\]\['boxes'\] must be Tensor\[M, 4\] xyxy, got NoneType"):
        ours.rpn(image_list, features, [{"labels": torch.ones(1, dtype=torch.int64)}])
    with pytest.raises(ValueError, match="targets must be given in training mode"):
        ours.roi_heads(features, [torch.tensor([[0.0, 0, 50, 50]])], image_list.image_sizes, None)
    with pytest.raises(ValueError, match=r"targets\[0\]\['labels'\] must be Tensor\[1\] int64"):
        ours.roi_heads(features, [torch.tensor([[0.0, 0, 50, 50]])], image_list.image_sizes,
                       [{"boxes": torch.tensor([[0.0, 0, 10, 10]])}])
