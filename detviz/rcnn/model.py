"""Faster R-CNN composed from detviz parts, a drop-in for torchvision's ``FasterRCNN``.

Same keyword arguments, defaults and ``state_dict`` keys as
``torchvision.models.detection.FasterRCNN``: a torchvision model's weights load with
``load_state_dict(strict=True)``, so a trained torchvision detector can be stepped
through with detviz. The flow (``forward``):

    images -> transform (normalise, resize 800/1333, pad to 32) -> backbone -> RPN
    -> RoI heads -> detections mapped back to the original image sizes

Train mode returns ``{"loss_classifier", "loss_box_reg", "loss_objectness",
"loss_rpn_box_reg"}``, eval mode ``list[dict(boxes, labels, scores)]``. Labels count
the background: class 0 is background and the user's classes start at 1.

:func:`build_faster_rcnn` makes the model the training loop uses from a
:class:`FasterRCNNConfig`: the layout of torchvision's
``fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None)`` (same backbone,
taken from that builder; anchors ``((32, 64, 128, 256, 512),) * 3``; 150 proposals at test
time; RPN score threshold 0.05), with the resize of the config.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from torch import Tensor, nn
from torchvision.ops import MultiScaleRoIAlign

from detviz._validate import check_detection_targets
from detviz.anchors import AnchorGenerator
from detviz.rcnn.roi_heads import FastRCNNPredictor, RoIHeads, TwoMLPHead
from detviz.rcnn.rpn import RegionProposalNetwork, RPNHead
from detviz.rcnn.transform import GeneralizedRCNNTransform

__all__ = ["FasterRCNN", "FasterRCNNConfig", "build_faster_rcnn", "check_detection_targets"]


def _default_anchor_generator() -> AnchorGenerator:
    sizes = ((32,), (64,), (128,), (256,), (512,))
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))


class FasterRCNN(nn.Module):
    """Faster R-CNN; see torchvision's ``FasterRCNN`` for the meaning of every argument.

    Args:
        backbone: returns a Tensor or an OrderedDict of feature maps and has ``out_channels``.
        num_classes: classes including the background (None when ``box_predictor`` is given).
    """

    def __init__(self, backbone: nn.Module, num_classes: int | None = None,
                 min_size=800, max_size=1333, image_mean=None, image_std=None,
                 rpn_anchor_generator=None, rpn_head=None,
                 rpn_pre_nms_top_n_train=2000, rpn_pre_nms_top_n_test=1000,
                 rpn_post_nms_top_n_train=2000, rpn_post_nms_top_n_test=1000,
                 rpn_nms_thresh=0.7, rpn_fg_iou_thresh=0.7, rpn_bg_iou_thresh=0.3,
                 rpn_batch_size_per_image=256, rpn_positive_fraction=0.5, rpn_score_thresh=0.0,
                 box_roi_pool=None, box_head=None, box_predictor=None,
                 box_score_thresh=0.05, box_nms_thresh=0.5, box_detections_per_img=100,
                 box_fg_iou_thresh=0.5, box_bg_iou_thresh=0.5,
                 box_batch_size_per_image=512, box_positive_fraction=0.25, bbox_reg_weights=None, **kwargs):
        super().__init__()
        if not hasattr(backbone, "out_channels"):
            raise ValueError("backbone must have an `out_channels` attribute: the channels of its feature maps")
        if (num_classes is None) == (box_predictor is None):
            raise ValueError("give exactly one of num_classes (classes including background) and box_predictor, "
                             f"got num_classes={num_classes} and box_predictor={type(box_predictor).__name__}")
        out_channels = backbone.out_channels
        anchor_generator = rpn_anchor_generator if rpn_anchor_generator is not None else _default_anchor_generator()
        if rpn_head is None:
            rpn_head = RPNHead(out_channels, anchor_generator.num_anchors_per_location()[0])
        rpn = RegionProposalNetwork(
            anchor_generator, rpn_head, rpn_fg_iou_thresh, rpn_bg_iou_thresh, rpn_batch_size_per_image,
            rpn_positive_fraction, dict(training=rpn_pre_nms_top_n_train, testing=rpn_pre_nms_top_n_test),
            dict(training=rpn_post_nms_top_n_train, testing=rpn_post_nms_top_n_test), rpn_nms_thresh,
            score_thresh=rpn_score_thresh)
        if box_roi_pool is None:
            box_roi_pool = MultiScaleRoIAlign(featmap_names=["0", "1", "2", "3"], output_size=7, sampling_ratio=2)
        if box_head is None:
            resolution = box_roi_pool.output_size[0]
            box_head = TwoMLPHead(out_channels * resolution ** 2, 1024)
        if box_predictor is None:
            box_predictor = FastRCNNPredictor(1024, num_classes)
        roi_heads = RoIHeads(box_roi_pool, box_head, box_predictor, box_fg_iou_thresh, box_bg_iou_thresh,
                             box_batch_size_per_image, box_positive_fraction, bbox_reg_weights,
                             box_score_thresh, box_nms_thresh, box_detections_per_img)
        # registered in torchvision's order, so parameters() enumerates the same tensors in the same order
        self.transform = GeneralizedRCNNTransform(
            min_size, max_size, image_mean if image_mean is not None else [0.485, 0.456, 0.406],
            image_std if image_std is not None else [0.229, 0.224, 0.225], **kwargs)
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads

    def features(self, image_tensors: Tensor) -> "OrderedDict[str, Tensor]":
        """Backbone feature maps by name; a single tensor is named '0' as torchvision does."""
        features = self.backbone(image_tensors)
        return OrderedDict([("0", features)]) if isinstance(features, Tensor) else features

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        """Args: images, a list of [3, H, W] float tensors in [0, 1] of any sizes; targets in
        training, boxes in pixels of those images. Returns losses (train) or detections (eval)."""
        if self.training:
            check_detection_targets(targets, len(images))
        for index, image in enumerate(images):
            if not isinstance(image, Tensor) or image.dim() != 3:
                got = list(image.shape) if isinstance(image, Tensor) else type(image).__name__
                raise ValueError(f"images[{index}] must be a Tensor[3, H, W], got {got}")
        original_image_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        image_list, targets = self.transform(images, targets)
        features = self.features(image_list.tensors)
        proposals, proposal_losses = self.rpn(image_list, features, targets)
        detections, detector_losses = self.roi_heads(features, proposals, image_list.image_sizes, targets)
        if self.training:
            return {**detector_losses, **proposal_losses}
        return self.transform.postprocess(detections, image_list.image_sizes, original_image_sizes)


@dataclass
class FasterRCNNConfig:
    """The trainable Faster R-CNN's settings: torchvision's MobileNetV3-Large 320 FPN layout."""

    num_classes: int = 91  # including the background, as torchvision counts
    min_size: int = 320
    max_size: int = 640
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)  # on each of the three feature maps
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_pre_nms_top_n_test: int = 150
    rpn_post_nms_top_n_test: int = 150
    rpn_score_thresh: float = 0.05


def build_faster_rcnn(cfg: FasterRCNNConfig | None = None) -> FasterRCNN:
    """A randomly initialised :class:`FasterRCNN` on torchvision's MobileNetV3-Large FPN backbone
    (BatchNorm, every layer trainable; seed torch first for repeatability). ``model.cfg`` is ``cfg``."""
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    cfg = cfg if cfg is not None else FasterRCNNConfig()
    backbone = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None,
                                                     num_classes=cfg.num_classes).backbone
    levels = 3  # the backbone's FPN gives three feature maps
    anchors = AnchorGenerator((tuple(cfg.anchor_sizes),) * levels, (tuple(cfg.aspect_ratios),) * levels)
    model = FasterRCNN(backbone, cfg.num_classes, min_size=cfg.min_size, max_size=cfg.max_size,
                       rpn_anchor_generator=anchors, rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
                       rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test, rpn_score_thresh=cfg.rpn_score_thresh)
    model.cfg = cfg
    return model
