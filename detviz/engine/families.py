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

Every family builds its model from ``(num_classes, input_size)`` through the config dataclass
of its folder (``NanoDetConfig``, ``FasterRCNNConfig``, ``YOLOv3Config``,
``SparseDetectorConfig``), kept as ``model.cfg``; checkpoints store it as a plain dict
(``model_config``), so :meth:`Family.rebuild` needs no other file.

The Faster R-CNN family's labels count the background, so it adds 1 to the labels going in
and takes 1 off coming out. YOLOv3's config carries the input size and the COCO anchors
scaled from 416 to it, which its loss and inference read.

The four families are :data:`FAMILIES` (read-only); :func:`get_family` resolves a name. A
family of your own (a subclass of :class:`Family`) is passed to
``detviz.engine.train.train(config, family=...)`` and the checkpoint functions directly.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import asdict, fields
from types import MappingProxyType

import torch
from torch import Tensor, nn

from detviz.gfl.model import normalize_images
from detviz.gfl.predict import gfl_predict

__all__ = ["Family", "FAMILIES", "get_family", "autocast", "AMP_DTYPES", "check_images"]

AMP_DTYPES = {"cuda": torch.float16, "cpu": torch.bfloat16}  # what autocast computes in, per device


def autocast(images: Tensor, enabled: bool):
    """Mixed precision for the forward pass: float16 on CUDA, bfloat16 on the CPU (fast where the
    CPU has AVX-512 BF16 or AMX instructions); a no-op when not ``enabled`` or on other devices."""
    if not enabled or images.device.type not in AMP_DTYPES:
        return contextlib.nullcontext()
    return torch.autocast(images.device.type, dtype=AMP_DTYPES[images.device.type])


def _tuples(value):
    """Lists (as JSON and checkpoints keep sequences) back to tuples, nested ones too."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _from_dict(config_type, values: dict):
    """A config dataclass from a checkpoint's dict (lists back to tuples, unknown keys ignored)."""
    names = {f.name for f in fields(config_type)}
    return config_type(**{k: _tuples(v) for k, v in values.items() if k in names})


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
        """The model's config dataclass as a plain dict (what checkpoints store)."""
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


def check_images(images: Tensor) -> Tensor:
    """``images`` as every family takes them: a float Tensor[B, 3, H, W] in [0, 1]. Pixels in 0..255
    would not fail later, they would give confident nonsense: refuse them here."""
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
        got = f"{images.dtype} of shape {list(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a float Tensor[B, 3, H, W] in [0, 1], got {got}")
    if images.numel():
        low, high = float(images.min()), float(images.max())
        # NaN and Inf pass: training's non-finite finder names them and blames the batch
        if math.isfinite(low) and math.isfinite(high) and not (-1e-3 <= low and high <= 1 + 1e-3):
            hint = " (pixels in 0..255: divide by 255)" if high > 1.5 else ""
            raise ValueError(f"images must lie in [0, 1], got values in [{low:.4g}, {high:.4g}]{hint}")
    return images


def _float(outputs):
    """Network outputs back to float32 before a loss (a no-op without autocast)."""
    if isinstance(outputs, Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs  # indices stay integers
    return type(outputs)(*(_float(o) for o in outputs)) if hasattr(outputs, "_fields") else [
        _float(o) for o in outputs]


class GFLFamily(Family):
    name, description = "gfl", "NanoDet-m: ShuffleNetV2 + PAN + GFL head (ATSS, QFL/DFL/GIoU)"

    def build(self, num_classes, input_size):
        from detviz.gfl.model import NanoDetConfig, build_nanodet
        return build_nanodet(NanoDetConfig(num_classes=num_classes, input_size=input_size))

    def rebuild(self, model_config):
        from detviz.gfl.model import NanoDetConfig, build_nanodet
        return build_nanodet(_from_dict(NanoDetConfig, model_config))

    def loss(self, model, module, images, boxes, labels, amp=False):
        check_images(images)
        inputs = normalize_images(images)
        with autocast(inputs, amp):
            cls_scores, bbox_preds = model(inputs)
        return module.loss(_float(cls_scores), _float(bbox_preds), boxes, labels)

    def predict(self, module, images):
        check_images(images)
        return gfl_predict(module, normalize_images(images))


class FasterRCNNFamily(Family):
    name, description = "faster_rcnn", "detviz Faster R-CNN, MobileNetV3-Large FPN (torchvision's 320 layout)"

    def build(self, num_classes, input_size):
        from detviz.rcnn.model import FasterRCNNConfig

        # the model's own transform batches the images again, so channels-last input changes nothing here
        cfg = FasterRCNNConfig(num_classes=num_classes + 1, min_size=input_size, max_size=2 * input_size)
        return self.rebuild(asdict(cfg))  # one place builds the model: a subclass overrides rebuild alone

    def rebuild(self, model_config):
        from detviz.rcnn.model import FasterRCNNConfig, build_faster_rcnn
        return build_faster_rcnn(_from_dict(FasterRCNNConfig, model_config))

    def loss(self, model, module, images, boxes, labels, amp=False):
        check_images(images)
        targets = [{"boxes": b, "labels": lab + 1} for b, lab in zip(boxes, labels)]  # 0 is the background
        with autocast(images, amp):
            losses = model(list(images), targets)
        return {k: v.float() for k, v in losses.items()}

    def predict(self, module, images):
        check_images(images)
        with torch.no_grad():
            detections = module(list(images))
        return [{**d, "labels": d["labels"] - 1} for d in detections]


class YOLOv3Family(Family):
    name, description = "yolov3", ("YOLOv3: Darknet-53 (initial_filters 16) + FPN, COCO anchors scaled to the input; "
                                   "its losses are sums over every prior per image (keras-yolo3), so loss_conf "
                                   "starts near 4,900 at 320 px")
    INITIAL_FILTERS = 16

    def build(self, num_classes, input_size):
        from detviz.yolo.anchors import COCO_ANCHORS
        from detviz.yolo.model import YOLOv3Config, build_yolov3

        scale = input_size / 416  # the COCO anchors are pixels of a 416 input
        anchors = tuple((round(w * scale, 2), round(h * scale, 2)) for w, h in COCO_ANCHORS)
        return build_yolov3(YOLOv3Config(num_classes=num_classes, initial_filters=self.INITIAL_FILTERS,
                                         input_size=input_size, anchors=anchors))

    def rebuild(self, model_config):
        from detviz.yolo.model import YOLOv3Config, build_yolov3
        return build_yolov3(_from_dict(YOLOv3Config, model_config))

    def loss(self, model, module, images, boxes, labels, amp=False):
        check_images(images)
        from detviz.yolo import build_targets, yolo_loss

        size = tuple(images.shape[-2:])
        anchors = torch.tensor(module.cfg.anchors)
        with autocast(images, amp):
            outputs = model(images)
        y_true = build_targets(boxes, labels, input_size=size, num_classes=module.cfg.num_classes,
                               anchors=anchors).y_true
        return yolo_loss(_float(outputs), [t.to(images.device) for t in y_true], input_size=size,
                         anchors=anchors.to(images.device), box_loss="ciou")

    def predict(self, module, images):
        check_images(images)
        from detviz.yolo.predict import yolo_predict

        anchors = torch.tensor(module.cfg.anchors, device=images.device)
        with torch.no_grad():
            outputs = module(images)
        return yolo_predict(outputs, input_size=tuple(images.shape[-2:]), anchors=anchors)


class SparseFamily(Family):
    name, description = "sparse", "ShuffleNetV2 + PAN + the sparse RepPoints head (Hungarian matching)"

    def build(self, num_classes, input_size):
        from detviz.sparse.model import SparseDetectorConfig, build_sparse_detector
        return build_sparse_detector(SparseDetectorConfig(num_classes=num_classes, input_size=input_size))

    def rebuild(self, model_config):
        from detviz.sparse.model import SparseDetectorConfig, build_sparse_detector
        return build_sparse_detector(_from_dict(SparseDetectorConfig, model_config))

    def loss(self, model, module, images, boxes, labels, amp=False):
        check_images(images)
        inputs = normalize_images(images)
        with autocast(inputs, amp):
            output = model(inputs)
        return module.loss(_float(output), boxes, labels, tuple(images.shape[-2:]))

    def predict(self, module, images):
        check_images(images)
        from detviz.sparse.predict import sparse_predict
        return sparse_predict(module, normalize_images(images))


FAMILIES = MappingProxyType({f.name: f for f in (GFLFamily(), FasterRCNNFamily(), YOLOv3Family(), SparseFamily())})


def get_family(name: str) -> Family:
    """The built-in family called ``name`` (``gfl``, ``faster_rcnn``, ``yolov3`` or ``sparse``)."""
    if name not in FAMILIES:
        raise ValueError(f"model must be one of {tuple(FAMILIES)}, got {name!r}")
    return FAMILIES[name]
