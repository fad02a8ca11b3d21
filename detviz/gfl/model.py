"""NanoDet-m: ShuffleNetV2 1.0x stages + a 96-channel PAN + the GFL head.

At 320x320 the backbone gives [B, 116, 40, 40], [B, 232, 20, 20], [B, 464, 10, 10]
(strides 8, 16, 32), the PAN maps each to 96 channels, and the head gives per level
[B, C, H, W] class logits and [B, 4 * (reg_max + 1), H, W] distance logits: the
shapes traced in the NanoDet note. The backbone is torchvision's
``shufflenet_v2_x1_0`` built without weights (everything trains from scratch).

The model takes images normalised by :func:`normalize_images` (NanoDet's ImageNet mean/std,
here in RGB order on [0, 1] pixels), as do the sparse detector built on the same backbone.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import skip_init
from torchvision.models import shufflenet_v2_x1_0

from detviz._validate import check_tensor
from detviz.assigners import ATSSAssigner
from detviz.gfl.head import GFLHead, gfl_loss
from detviz.gfl.targets import GFLTargets, gfl_targets

__all__ = ["IMAGE_MEAN", "IMAGE_STD", "normalize_images", "NanoDetConfig", "CPUFloat32Conv2d", "ShuffleNetV2Stages",
           "PAN", "NanoDet", "build_nanodet"]

# NanoDet's mean/std (BGR, 0-255: [103.53, 116.28, 123.675], [57.375, 57.12, 58.395]) as RGB on [0, 1]
IMAGE_MEAN = (123.675 / 255, 116.28 / 255, 103.53 / 255)
IMAGE_STD = (58.395 / 255, 57.12 / 255, 57.375 / 255)


def normalize_images(images: Tensor) -> Tensor:
    """Args: images (Tensor[B, 3, H, W] float in [0, 1]). Returns: a new tensor, (images - mean) / std."""
    check_tensor(images, "images", ndim=4, floating=True, layout="[B, 3, H, W] float in [0, 1]")
    mean = images.new_tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGE_STD).view(1, 3, 1, 1)
    return (images - mean) / std


@dataclass
class NanoDetConfig:
    """NanoDet-m's settings (legacy ``nanodet-m.yml``)."""

    num_classes: int = 80
    input_size: int = 320
    strides: tuple[int, ...] = (8, 16, 32)
    fpn_channels: int = 96
    stacked_convs: int = 2
    reg_max: int = 7
    octave_base_scale: float = 5.0
    atss_topk: int = 9
    loss_weights: tuple[float, float, float] = (1.0, 2.0, 0.25)  # QFL, GIoU, DFL


def _cpu_autocast_enabled() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4 has no device argument
        return torch.is_autocast_cpu_enabled()


class CPUFloat32Conv2d(nn.Conv2d):
    """An ``nn.Conv2d`` that computes in float32 under the CPU's bfloat16 autocast (elsewhere it is
    ``nn.Conv2d``; same parameters and ``state_dict`` keys).

    ShuffleNetV2's strided depthwise convolutions are slower in bfloat16 than in float32 on the
    CPU, their backward above all (measured at NanoDet-m's shapes, batch 16, 2 threads: forward and
    backward 19-39 ms each in bfloat16 against 4-29 ms in float32;
    ``benchmarks/train_step_benchmark.py`` compares the whole step both ways).
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type == "cpu" and _cpu_autocast_enabled():
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)


def _float32_strided_depthwise(module: nn.Module) -> None:
    """Swap every strided depthwise ``nn.Conv2d`` under ``module`` for a :class:`CPUFloat32Conv2d`
    holding the same parameters (no new random draws: the initial weights stay what they were)."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if (type(child) is nn.Conv2d and child.groups > 1 and child.groups == child.in_channels
                    and child.stride != (1, 1)):
                swapped = skip_init(CPUFloat32Conv2d, child.in_channels, child.out_channels, child.kernel_size,
                                    stride=child.stride, padding=child.padding, dilation=child.dilation,
                                    groups=child.groups, bias=child.bias is not None, padding_mode=child.padding_mode)
                swapped.weight, swapped.bias = child.weight, child.bias
                setattr(parent, name, swapped)


class ShuffleNetV2Stages(nn.Module):
    """torchvision's ShuffleNetV2 1.0x without its classifier, returning stages 2-4.

    NanoDet-m builds the same stages with LeakyReLU; torchvision's use ReLU. Shapes and
    parameter counts are the same, and everything here trains from scratch anyway. The six
    stride-2 depthwise convolutions are :class:`CPUFloat32Conv2d` (float32 under the CPU's
    bfloat16 autocast, which training uses with ``amp``).
    """

    out_channels = (116, 232, 464)

    def __init__(self):
        super().__init__()
        net = shufflenet_v2_x1_0(weights=None)
        _float32_strided_depthwise(net)
        self.stem = nn.Sequential(net.conv1, net.maxpool)  # stride 4
        self.stage2, self.stage3, self.stage4 = net.stage2, net.stage3, net.stage4  # strides 8, 16, 32

    def forward(self, x: Tensor) -> list[Tensor]:
        c2 = self.stage2(self.stem(x))
        c3 = self.stage3(c2)
        c4 = self.stage4(c3)
        return [c2, c3, c4]


class PAN(nn.Module):
    """NanoDet's light PAN: 1x1 laterals, a top-down then a bottom-up pass of
    bilinear resizes and additions, no extra convolutions."""

    def __init__(self, in_channels: Sequence[int], out_channels: int):
        super().__init__()
        self.laterals = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        if len(feats) != len(self.laterals):
            raise ValueError(f"feats must hold {len(self.laterals)} levels, got {len(feats)}")
        lat = [conv(f) for conv, f in zip(self.laterals, feats)]
        for i in range(len(lat) - 1, 0, -1):  # top-down: coarse into fine
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[-2:], mode="bilinear",
                                                    align_corners=False)
        for i in range(len(lat) - 1):  # bottom-up: fine into coarse
            lat[i + 1] = lat[i + 1] + F.interpolate(lat[i], size=lat[i + 1].shape[-2:], mode="bilinear",
                                                    align_corners=False)
        return lat


class NanoDet(nn.Module):
    """Backbone -> PAN -> GFL head, with the GFL targets and loss."""

    def __init__(self, cfg: NanoDetConfig, backbone: nn.Module, neck: nn.Module, head: GFLHead,
                 assigner: ATSSAssigner):
        super().__init__()
        self.cfg = cfg
        self.backbone, self.neck, self.head = backbone, neck, head
        self.assigner = assigner

    def forward(self, images: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """[B, 3, H, W] (H, W multiples of the largest stride) -> (cls_scores, bbox_preds), per level."""
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = list(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images must be Tensor[B, 3, H, W], got {shape}")
        largest = max(self.cfg.strides)
        if images.shape[-2] % largest or images.shape[-1] % largest:
            raise ValueError(f"image height and width must be multiples of {largest}, got {list(images.shape[-2:])}")
        return self.head(self.neck(self.backbone(images)))

    def targets(self, cls_scores: Sequence[Tensor], gt_bboxes: Sequence[Tensor], gt_labels: Sequence[Tensor],
                gt_bboxes_ignore: Sequence[Tensor | None] | None = None) -> GFLTargets:
        featmap_sizes = [tuple(s.shape[-2:]) for s in cls_scores]
        return gfl_targets(featmap_sizes, self.cfg.strides, self.cfg.octave_base_scale, gt_bboxes, gt_labels,
                           self.cfg.num_classes, self.assigner, gt_bboxes_ignore)

    def loss(self, cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor], gt_bboxes: Sequence[Tensor],
             gt_labels: Sequence[Tensor], gt_bboxes_ignore=None) -> dict[str, Tensor]:
        """GFL losses; gt boxes are xyxy pixels of the network input, labels in [0, C)."""
        targets = self.targets(cls_scores, gt_bboxes, gt_labels, gt_bboxes_ignore)
        return gfl_loss(cls_scores, bbox_preds, targets, self.cfg.strides, reg_max=self.cfg.reg_max,
                        loss_weights=self.cfg.loss_weights)


def build_nanodet(cfg: NanoDetConfig | None = None) -> NanoDet:
    """NanoDet-m from its config (randomly initialised; seed torch first for repeatability)."""
    cfg = cfg if cfg is not None else NanoDetConfig()
    backbone = ShuffleNetV2Stages()
    neck = PAN(backbone.out_channels, cfg.fpn_channels)
    head = GFLHead(cfg.num_classes, cfg.fpn_channels, feat_channels=cfg.fpn_channels,
                   stacked_convs=cfg.stacked_convs, num_levels=len(cfg.strides), reg_max=cfg.reg_max)
    return NanoDet(cfg, backbone, neck, head, ATSSAssigner(topk=cfg.atss_topk))
