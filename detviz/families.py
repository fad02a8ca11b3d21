"""The model families the training loop knows, each behind the same small interface.

A :class:`Family` turns the loop's batch (square images in [0, 1], xyxy boxes in input
pixels, labels 0..C-1) into what its model wants, and its outputs back into detections:

==================  ====================================================  ===================
``name``            model                                                 input
==================  ====================================================  ===================
``gfl``             NanoDet-m (ShuffleNetV2 + PAN + GFL head, ATSS)       ImageNet mean/std
``faster_rcnn``     detviz Faster R-CNN, MobileNetV3-Large 320 FPN        [0, 1] (own transform)
``yolov3``          Darknet-53 + FPN, anchors scaled to the input         [0, 1]
``sparse``          ShuffleNetV2 + PAN + the sparse RepPoints head        ImageNet mean/std
==================  ====================================================  ===================

Every family builds its model from ``(num_classes, input_size)`` and a plain dict
(``model_config``, stored in checkpoints, so :meth:`Family.rebuild` needs no other file).

The Faster R-CNN family has the layout of torchvision's
``fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None)``: same
backbone (taken from that builder), anchors ``((32, 64, 128, 256, 512),) * 3``, 320/640
resize, 150 proposals at test time, RPN score threshold 0.05. Its labels count the
background, so the family adds 1 to the labels going in and takes 1 off coming out.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import asdict, fields

import torch
from torch import Tensor, nn

from detviz.predict import gfl_predict, normalize_images

__all__ = ["Family", "FAMILIES", "get_family", "register_family", "autocast"]


def autocast(images: Tensor, enabled: bool):
    """Mixed precision for the forward pass on CUDA (float16); a no-op elsewhere."""
    if not enabled or images.device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.float16)


def _from_dict(config_type, values: dict):
    """A config dataclass from a checkpoint's dict (lists back to tuples, unknown keys ignored)."""
    names = {f.name for f in fields(config_type)}
    return config_type(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names})


class Family:
    """What the training loop needs from a model family.

    ``loss`` and ``predict`` get ``images`` as Tensor[B, 3, S, S] float in [0, 1];
    ``boxes`` B x Tensor[M_b, 4] xyxy input pixels and ``labels`` B x Tensor[M_b] in [0, C).
    ``model`` is what the forward pass is called on (possibly a DistributedDataParallel
    wrapper), ``module`` the bare model, whose loss methods are called directly.
    """

    name: str = ""
    description: str = ""
    size_multiple: int = 32  # the input side must be a multiple of this

    def build(self, num_classes: int, input_size: int) -> nn.Module:
        raise NotImplementedError

    def model_config(self, module: nn.Module) -> dict:
        return asdict(module.cfg)

    def rebuild(self, model_config: dict) -> nn.Module:
        raise NotImplementedError

    def loss(self, model: nn.Module, module: nn.Module, images: Tensor, boxes: Sequence[Tensor],
             labels: Sequence[Tensor], amp: bool = False) -> dict[str, Tensor]:
        raise NotImplementedError

    def predict(self, module: nn.Module, images: Tensor) -> list[dict[str, Tensor]]:
        """Detections in input pixels, labels in [0, C); the module is in eval mode."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _float(outputs):
    """Network outputs back to float32 before a loss (a no-op without autocast)."""
    if isinstance(outputs, Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs  # indices stay integers
    return type(outputs)(*(_float(o) for o in outputs)) if hasattr(outputs, "_fields") else [
        _float(o) for o in outputs]


class GFLFamily(Family):
    name, description = "gfl", "NanoDet-m: ShuffleNetV2 + PAN + GFL head (ATSS, QFL/DFL/GIoU)"

    def build(self, num_classes, input_size):
        from detviz.models.nanodet import NanoDetConfig, build_nanodet
        return build_nanodet(NanoDetConfig(num_classes=num_classes, input_size=input_size))

    def rebuild(self, model_config):
        from detviz.models.nanodet import NanoDetConfig, build_nanodet
        return build_nanodet(_from_dict(NanoDetConfig, model_config))

    def loss(self, model, module, images, boxes, labels, amp=False):
        inputs = normalize_images(images)
        with autocast(inputs, amp):
            cls_scores, bbox_preds = model(inputs)
        return module.loss(_float(cls_scores), _float(bbox_preds), boxes, labels)

    def predict(self, module, images):
        return gfl_predict(module, normalize_images(images))


class FasterRCNNFamily(Family):
    name, description = "faster_rcnn", "detviz Faster R-CNN, MobileNetV3-Large FPN (torchvision's 320 layout)"
    ANCHOR_SIZES = (32, 64, 128, 256, 512)

    def build(self, num_classes, input_size):
        # the model's own transform batches the images again, so channels-last input changes nothing here
        return self.rebuild({"num_classes": num_classes + 1, "min_size": input_size, "max_size": 2 * input_size})

    def model_config(self, module):
        return dict(module.detviz_config)

    def rebuild(self, model_config):
        from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

        from detviz.anchors import AnchorGenerator
        from detviz.models.faster_rcnn import FasterRCNN

        config = dict(model_config)
        # torchvision's builder gives the backbone (MobileNetV3-Large + FPN, BatchNorm, all layers trainable)
        backbone = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None,
                                                         num_classes=config["num_classes"]).backbone
        anchors = AnchorGenerator((self.ANCHOR_SIZES,) * 3, ((0.5, 1.0, 2.0),) * 3)
        model = FasterRCNN(backbone, config["num_classes"], min_size=config["min_size"],
                           max_size=config["max_size"], rpn_anchor_generator=anchors, rpn_pre_nms_top_n_test=150,
                           rpn_post_nms_top_n_test=150, rpn_score_thresh=0.05)
        model.detviz_config = config
        return model

    def loss(self, model, module, images, boxes, labels, amp=False):
        targets = [{"boxes": b, "labels": lab + 1} for b, lab in zip(boxes, labels)]  # 0 is the background
        with autocast(images, amp):
            losses = model(list(images), targets)
        return {k: v.float() for k, v in losses.items()}

    def predict(self, module, images):
        with torch.no_grad():
            detections = module(list(images))
        return [{**d, "labels": d["labels"] - 1} for d in detections]


class YOLOv3Family(Family):
    name, description = "yolov3", "YOLOv3: Darknet-53 (initial_filters 16) + FPN, COCO anchors scaled to the input"
    INITIAL_FILTERS = 16

    def build(self, num_classes, input_size):
        from detviz.models.yolov3 import YOLOv3Config, build_yolov3
        from detviz.yolo.anchors import COCO_ANCHORS

        model = build_yolov3(YOLOv3Config(num_classes=num_classes, initial_filters=self.INITIAL_FILTERS))
        scale = input_size / 416  # the COCO anchors are pixels of a 416 input
        model.detviz_config = {**asdict(model.cfg), "input_size": input_size,
                               "anchors": [[round(w * scale, 2), round(h * scale, 2)] for w, h in COCO_ANCHORS]}
        return model

    def model_config(self, module):
        return dict(module.detviz_config)

    def rebuild(self, model_config):
        from detviz.models.yolov3 import YOLOv3Config, build_yolov3

        model = build_yolov3(_from_dict(YOLOv3Config, model_config))
        model.detviz_config = dict(model_config)
        return model

    def loss(self, model, module, images, boxes, labels, amp=False):
        from detviz.yolo import build_targets, yolo_loss

        size = tuple(images.shape[-2:])
        anchors = torch.tensor(module.detviz_config["anchors"])
        with autocast(images, amp):
            outputs = model(images)
        y_true = build_targets(boxes, labels, input_size=size, num_classes=module.cfg.num_classes,
                               anchors=anchors).y_true
        return yolo_loss(_float(outputs), [t.to(images.device) for t in y_true], input_size=size,
                         anchors=anchors.to(images.device), box_loss="ciou")

    def predict(self, module, images):
        from detviz.yolo.predict import yolo_predict

        anchors = torch.tensor(module.detviz_config["anchors"], device=images.device)
        with torch.no_grad():
            outputs = module(images)
        return yolo_predict(outputs, input_size=tuple(images.shape[-2:]), anchors=anchors)


class SparseFamily(Family):
    name, description = "sparse", "ShuffleNetV2 + PAN + the sparse RepPoints head (Hungarian matching)"

    def build(self, num_classes, input_size):
        from detviz.models.sparse_detector import SparseDetectorConfig, build_sparse_detector
        return build_sparse_detector(SparseDetectorConfig(num_classes=num_classes, input_size=input_size))

    def rebuild(self, model_config):
        from detviz.models.sparse_detector import SparseDetectorConfig, build_sparse_detector
        return build_sparse_detector(_from_dict(SparseDetectorConfig, model_config))

    def loss(self, model, module, images, boxes, labels, amp=False):
        inputs = normalize_images(images)
        with autocast(inputs, amp):
            output = model(inputs)
        return module.loss(_float(output), boxes, labels, tuple(images.shape[-2:]))

    def predict(self, module, images):
        from detviz.models.sparse_detector import sparse_predict
        return sparse_predict(module, normalize_images(images))


FAMILIES: dict[str, Family] = {f.name: f for f in (GFLFamily(), FasterRCNNFamily(), YOLOv3Family(), SparseFamily())}


def register_family(family: Family) -> None:
    """Make ``family`` trainable by name (e.g. a reference model in a benchmark)."""
    if not isinstance(family, Family) or not family.name:
        raise TypeError(f"family must be a named Family instance, got {family!r}")
    FAMILIES[family.name] = family


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"model must be one of {tuple(FAMILIES)}, got {name!r}")
    return FAMILIES[name]
