"""YOLOv3 (Redmon & Farhadi 2018) as the Keras port describes it, plus the keypoint variant.

* :class:`Darknet53`: a 3x3 stem and five stride-2 stages with 1/2/8/8/4 residual blocks
  (1x1 halving + 3x3 restoring), every conv followed by BatchNorm and LeakyReLU(0.1); widths
  are ``initial_filters * (1, 2, 4, 8, 16, 32)``. It returns the stride-8/16/32 maps.
* :class:`YOLOv3FPN`: per level a shared 5-conv stack (1-3-1-3-1), an "out" branch
  (3x3 conv + 1x1 head with ``A * (4 + 1 + C)`` channels) and an "up" branch (1x1 conv,
  nearest x2 upsampling) whose result is concatenated with the next finer backbone map.
  Levels follow the note: level 0 = stride 32, 1 = stride 16, 2 = stride 8.
* :class:`YOLOv3`: the two, with outputs reshaped to ``[B, H, W, A, 4 + 1 + C]``.
* :class:`YOLOv3Keypoint`: the same backbone and 5-conv stacks, then anchor-free keypoint
  heads per level, ``reg [B, H, W, 2]`` and ``cls [B, H, W, C + 1]`` (last channel:
  centerness), either YOLO-style shared (one 1x1 head) or RetinaNet-style separated (two
  towers of ``head_convs`` 3x3 convs).

Stride-2 convs pad 1 pixel on every side, as darknet does; keras-yolo3 pads only top and
left (``ZeroPadding2D(((1, 0), (1, 0)))`` + 'valid'). Output sizes are the same for inputs
divisible by 32. Modules are registered in darknet's ``yolov3.cfg`` order (stack, out,
head, up), so the n-th ``nn.Conv2d`` of ``model.modules()`` is darknet's conv n.

Parameter counts: PyTorch counts conv weights (and biases) plus BN weight/bias; Keras also
counts BN's moving mean and variance (non-trainable). :func:`keras_param_count` gives the
Keras figure, :func:`keras_layer_count` Keras's layer count.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from detviz.yolo.anchors import COCO_ANCHORS

__all__ = ["ConvBNLeaky", "Residual", "Darknet53", "YoloLevel", "YOLOv3FPN", "YOLOv3", "YOLOv3Config",
           "build_yolov3", "SharedKeypointHead", "SeparatedKeypointHead", "YOLOv3Keypoint",
           "YOLOv3KeypointConfig", "build_yolov3_keypoint", "keras_param_count", "keras_layer_count",
           "darknet_conv_numbers"]

STAGE_REPEATS = (1, 2, 8, 8, 4)
LEAKY_SLOPE = 0.1


class ConvBNLeaky(nn.Sequential):
    """Conv (no bias unless ``bias``; the BN's beta plays its role) -> BatchNorm -> LeakyReLU(0.1)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, *,
                 bias: bool = False):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=bias),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(LEAKY_SLOPE),
        )


class Residual(nn.Module):
    """Darknet block: ``x + conv3x3(conv1x1(x))``, the 1x1 halving the channels."""

    def __init__(self, channels: int, *, bias: bool = False):
        super().__init__()
        self.body = nn.Sequential(ConvBNLeaky(channels, channels // 2, 1, bias=bias),
                                  ConvBNLeaky(channels // 2, channels, 3, bias=bias))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Darknet53(nn.Module):
    """Darknet-53 without its classifier ("exclude top"): 52 convs, strides 2 ... 32.

    Args:
        initial_filters: width of the stem; stage k has ``initial_filters * 2**k`` channels
            (32 in the paper, 8 in the note for small datasets).
        in_channels: channels of the input image.
        conv_bias: give every conv a bias (Keras ``Conv2D`` default); darknet and keras-yolo3 don't.
    """

    def __init__(self, initial_filters: int = 32, *, in_channels: int = 3, conv_bias: bool = False):
        super().__init__()
        if not isinstance(initial_filters, int) or initial_filters < 2 or initial_filters % 2:
            raise ValueError(f"initial_filters must be an even int >= 2, got {initial_filters!r}")
        self.stem = ConvBNLeaky(in_channels, initial_filters, 3, bias=conv_bias)
        stages, c = [], initial_filters
        for repeats in STAGE_REPEATS:
            down = ConvBNLeaky(c, 2 * c, 3, stride=2, bias=conv_bias)
            c *= 2
            stages.append(nn.Sequential(down, *(Residual(c, bias=conv_bias) for _ in range(repeats))))
        self.stages = nn.ModuleList(stages)
        self.out_channels = (8 * initial_filters, 16 * initial_filters, 32 * initial_filters)  # C3, C4, C5

    def stage_outputs(self, images: Tensor) -> list[Tensor]:
        """Stem and every stage: strides 1, 2, 4, 8, 16, 32."""
        x = self.stem(images)
        outs = [x]
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs

    def forward(self, images: Tensor) -> list[Tensor]:
        """[B, 3, H, W] -> [C3 (stride 8), C4 (stride 16), C5 (stride 32)]."""
        return self.stage_outputs(images)[-3:]


class YoloLevel(nn.Module):
    """One level of the note's FPN: shared 5-conv stack, "out" branch, optional "up" branch.

    Args:
        in_channels: channels entering the stack (backbone map, concatenated with the
            coarser level's up branch for levels 1 and 2).
        mid_channels: width of the 1x1 convs (the 3x3 convs use twice as many).
        out_channels: channels of the 1x1 head, ``A * (4 + 1 + C)``; None: no out branch.
        up_channels: channels of the up branch; None: none (the finest level).
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int | None,
                 up_channels: int | None, *, bias: bool = False):
        super().__init__()
        m = mid_channels
        self.stack = nn.Sequential(ConvBNLeaky(in_channels, m, 1, bias=bias), ConvBNLeaky(m, 2 * m, 3, bias=bias),
                                   ConvBNLeaky(2 * m, m, 1, bias=bias), ConvBNLeaky(m, 2 * m, 3, bias=bias),
                                   ConvBNLeaky(2 * m, m, 1, bias=bias))
        self.out = None if out_channels is None else nn.Sequential(
            ConvBNLeaky(m, 2 * m, 3, bias=bias), nn.Conv2d(2 * m, out_channels, 1))  # linear head, with bias
        self.up = None if up_channels is None else nn.Sequential(
            ConvBNLeaky(m, up_channels, 1, bias=bias), nn.Upsample(scale_factor=2, mode="nearest"))


class YOLOv3FPN(nn.Module):
    """The note's neck: levels 0, 1, 2 at strides 32, 16, 8, coarse to fine.

    Args:
        in_channels: backbone channels (C3, C4, C5), fine to coarse, e.g. (256, 512, 1024).
        out_channels: head channels ``A * (4 + 1 + C)``, or None to stop after the stacks.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int | None, *, bias: bool = False):
        super().__init__()
        c3, c4, c5 = in_channels
        self.levels = nn.ModuleList([
            YoloLevel(c5, c5 // 2, out_channels, c4 // 2, bias=bias),  # level 0, stride 32
            YoloLevel(c4 + c4 // 2, c4 // 2, out_channels, c3 // 2, bias=bias),  # level 1, stride 16
            YoloLevel(c3 + c3 // 2, c3 // 2, out_channels, None, bias=bias),  # level 2, stride 8
        ])
        self.feature_channels = (c5 // 2, c4 // 2, c3 // 2)

    def features(self, feats: Sequence[Tensor]) -> list[Tensor]:
        """[C3, C4, C5] -> the 5-conv stack outputs of levels 0, 1, 2 (strides 32, 16, 8)."""
        if len(feats) != 3:
            raise ValueError(f"feats must be the 3 backbone maps [C3, C4, C5], got {len(feats)}")
        x, outs = feats[2], []
        for level, raw in zip(self.levels, (None, feats[1], feats[0])):
            if raw is not None:
                x = torch.cat([x, raw], dim=1)  # [B, up + raw channels, H, W]: upsampled first, as darknet's route
            x = level.stack(x)
            outs.append(x)
            if level.up is not None:
                x = level.up(x)  # [B, up, 2H, 2W]
        return outs

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        """[C3, C4, C5] -> raw head maps [B, A*(4+1+C), H, W] of levels 0, 1, 2."""
        if any(level.out is None for level in self.levels):
            raise RuntimeError("this FPN was built with out_channels=None; call features() instead")
        return [level.out(x) for level, x in zip(self.levels, self.features(feats))]


def _check_images(images) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = list(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be Tensor[B, C, H, W], got {shape}")
    if images.shape[-2] % 32 or images.shape[-1] % 32:
        raise ValueError(f"image height and width must be multiples of 32, got {list(images.shape[-2:])}")


@dataclass
class YOLOv3Config:
    """YOLOv3 settings; the defaults are keras-yolo3's COCO model."""

    num_classes: int = 80
    initial_filters: int = 32
    in_channels: int = 3
    num_anchors: int = 3  # per level
    conv_bias: bool = False  # True: a bias on every conv, as a plain Keras Conv2D
    # what the loss and inference need: the input side and the 9 anchors (w, h) in its pixels
    input_size: int = 416
    anchors: tuple[tuple[float, float], ...] = COCO_ANCHORS


class YOLOv3(nn.Module):
    """Darknet-53 + the note's FPN; ``forward`` gives ``[B, H, W, A, 4 + 1 + C]`` raw outputs per level."""

    def __init__(self, cfg: YOLOv3Config, backbone: Darknet53, fpn: YOLOv3FPN):
        super().__init__()
        self.cfg = cfg
        self.backbone, self.fpn = backbone, fpn

    def forward(self, images: Tensor) -> list[Tensor]:
        """[B, 3, H, W] (H, W multiples of 32) -> levels 0, 1, 2 (strides 32, 16, 8), each
        [B, H/s, W/s, A, 4 + 1 + C]: raw tx, ty, tw, th, objectness logit, class logits."""
        _check_images(images)
        a, k = self.cfg.num_anchors, 5 + self.cfg.num_classes
        outs = []
        for raw in self.fpn(self.backbone(images)):
            b, _, h, w = raw.shape
            outs.append(raw.view(b, a, k, h, w).permute(0, 3, 4, 1, 2))  # [B, A*K, H, W] -> [B, H, W, A, K]
        return outs


def build_yolov3(cfg: YOLOv3Config | None = None) -> YOLOv3:
    """YOLOv3 from its config (randomly initialised; seed torch first for repeatability)."""
    cfg = cfg if cfg is not None else YOLOv3Config()
    backbone = Darknet53(cfg.initial_filters, in_channels=cfg.in_channels, conv_bias=cfg.conv_bias)
    fpn = YOLOv3FPN(backbone.out_channels, cfg.num_anchors * (5 + cfg.num_classes), bias=cfg.conv_bias)
    return YOLOv3(cfg, backbone, fpn)


# ---------------------------------------------------------------------------- keypoint variant
class SharedKeypointHead(nn.Module):
    """YOLO-style: one 3x3 conv and one 1x1 conv give xy, classes and centerness together."""

    def __init__(self, in_channels: int, num_classes: int, *, bias: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.body = nn.Sequential(ConvBNLeaky(in_channels, 2 * in_channels, 3, bias=bias),
                                  nn.Conv2d(2 * in_channels, 2 + num_classes + 1, 1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.body(x).permute(0, 2, 3, 1)  # [B, 2+C+1, H, W] -> [B, H, W, 2+C+1]
        return out[..., :2], out[..., 2:]  # reg [B, H, W, 2], cls [B, H, W, C+1]


class SeparatedKeypointHead(nn.Module):
    """RetinaNet-style: a regression tower and a classification tower, ``num_convs`` 3x3 convs each."""

    def __init__(self, in_channels: int, num_classes: int, *, num_convs: int = 4, bias: bool = False):
        super().__init__()
        self.num_classes = num_classes

        def tower(out_channels: int) -> nn.Sequential:
            convs = [ConvBNLeaky(in_channels, in_channels, 3, bias=bias) for _ in range(num_convs)]
            return nn.Sequential(*convs, nn.Conv2d(in_channels, out_channels, 1))

        self.reg, self.cls = tower(2), tower(num_classes + 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # [B, K, H, W] -> [B, H, W, K]
        return self.reg(x).permute(0, 2, 3, 1), self.cls(x).permute(0, 2, 3, 1)


@dataclass
class YOLOv3KeypointConfig:
    """The note's "kp model": Darknet-53 + 5-conv stacks + anchor-free keypoint heads."""

    num_classes: int = 1
    initial_filters: int = 32
    in_channels: int = 3
    head: str = "separated"  # or "shared"
    head_convs: int = 4  # per tower of a separated head
    conv_bias: bool = False


class YOLOv3Keypoint(nn.Module):
    """Backbone -> FPN stacks -> one keypoint head per level (level 0 = stride 32)."""

    def __init__(self, cfg: YOLOv3KeypointConfig, backbone: Darknet53, fpn: YOLOv3FPN, heads: nn.ModuleList):
        super().__init__()
        self.cfg = cfg
        self.backbone, self.fpn, self.heads = backbone, fpn, heads

    def forward(self, images: Tensor) -> list[tuple[Tensor, Tensor]]:
        """[B, 3, H, W] -> per level (reg logits [B, H, W, 2], cls logits [B, H, W, C + 1])."""
        _check_images(images)
        return [head(x) for head, x in zip(self.heads, self.fpn.features(self.backbone(images)))]


def build_yolov3_keypoint(cfg: YOLOv3KeypointConfig | None = None) -> YOLOv3Keypoint:
    """The keypoint model from its config: one shared or separated head per level (randomly initialised)."""
    cfg = cfg if cfg is not None else YOLOv3KeypointConfig()
    if cfg.head not in ("shared", "separated"):
        raise ValueError(f"head must be 'shared' or 'separated', got {cfg.head!r}")
    backbone = Darknet53(cfg.initial_filters, in_channels=cfg.in_channels, conv_bias=cfg.conv_bias)
    fpn = YOLOv3FPN(backbone.out_channels, None, bias=cfg.conv_bias)
    if cfg.head == "shared":
        heads = [SharedKeypointHead(c, cfg.num_classes, bias=cfg.conv_bias) for c in fpn.feature_channels]
    else:
        heads = [SeparatedKeypointHead(c, cfg.num_classes, num_convs=cfg.head_convs, bias=cfg.conv_bias)
                 for c in fpn.feature_channels]
    return YOLOv3Keypoint(cfg, backbone, fpn, nn.ModuleList(heads))


# ---------------------------------------------------------------------------- counting conventions
def keras_param_count(module: nn.Module) -> int:
    """Keras's "Total params": every parameter plus each BatchNorm's moving mean and variance.

    PyTorch's ``sum(p.numel() for p in module.parameters())`` leaves out the moving statistics
    (they are buffers), i.e. 2 values per BN channel fewer.
    """
    total = sum(p.numel() for p in module.parameters())
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            total += m.running_mean.numel() + m.running_var.numel()
    return total


def keras_layer_count(module: nn.Module, *, zero_padding: bool = False) -> int:
    """How many layers ``keras.Model.summary()`` lists for the same network.

    One Input layer; Conv2D, BatchNormalization and LeakyReLU one each; one Add per residual
    block; UpSampling2D + Concatenate per up branch; with ``zero_padding`` one ZeroPadding2D
    before every stride-2 conv (keras-yolo3's way to pad only top and left).
    """
    count = 1
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.modules.batchnorm._BatchNorm, nn.LeakyReLU, Residual)):
            count += 1
        elif isinstance(m, nn.Upsample):
            count += 2  # UpSampling2D, then the Concatenate that consumes it
        if zero_padding and isinstance(m, nn.Conv2d) and m.stride != (1, 1):
            count += 1
    return count


def darknet_conv_numbers(module: nn.Module) -> dict[str, int]:
    """Module name -> darknet's 1-based conv number (``[convolutional]`` sections of yolov3.cfg)."""
    convs = [name for name, m in module.named_modules() if isinstance(m, nn.Conv2d)]
    return {name: i + 1 for i, name in enumerate(convs)}
