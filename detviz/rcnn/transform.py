"""The input stage of torchvision's Faster R-CNN: normalize, resize, pad into one batch.

:class:`GeneralizedRCNNTransform` is a drop-in for
``torchvision.models.detection.transform.GeneralizedRCNNTransform`` (same constructor,
same outputs, same random draws; tests/test_transform.py compares them). For every
image of a list it:

1. normalizes: ``(image - mean) / std`` per channel, so images must be float in [0, 1];
2. resizes so that the short side becomes ``min_size`` unless the long side would
   then pass ``max_size`` (see :func:`resized_size`), with bilinear interpolation,
   and scales the target boxes by the same factors;
3. pads every image with zeros at the bottom/right to the largest height and width
   in the batch, rounded up to a multiple of ``size_divisible`` (after normalizing,
   so the padding has the mean colour).

It returns torchvision's own ``ImageList`` (padded batch + the pre-padding sizes),
so models built from detviz parts and torchvision parts can swap transforms.
:meth:`GeneralizedRCNNTransform.postprocess` maps predicted boxes back to the
original image sizes. Targets are ``list[dict(boxes=[M, 4] xyxy pixels, ...)]``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList

from detviz._validate import check_tensor

__all__ = ["GeneralizedRCNNTransform", "resized_size", "resize_boxes"]


def resized_size(h: int, w: int, min_size: float, max_size: float) -> tuple[int, int]:
    """Height and width after Faster R-CNN's "shorter side to min_size, longer side at most max_size" rule.

    ``scale = min(min_size / short_side, max_size / long_side)`` and each side becomes
    ``floor(side * scale)``, as ``F.interpolate(scale_factor=scale, recompute_scale_factor=True)``
    computes it. With the defaults 800 / 1333:

    * 480 x 640 (4:3): 800 / 480 = 1.667 and 1333 / 640 = 2.083; the short side wins,
      giving 800 x 1066 (640 * 1.667 = 1066.7, floored).
    * 400 x 1600 (4:1): 800 / 400 = 2 would make the long side 3200, so 1333 / 1600 =
      0.833 wins, giving 333 x 1333: a panorama ends up with a short side below 800.

    Args:
        h, w: image size in pixels.
        min_size, max_size: target short side and cap on the long side, in pixels.

    Returns:
        (height, width) in pixels.
    """
    scale = min(min_size / min(h, w), max_size / max(h, w))
    return math.floor(h * scale), math.floor(w * scale)


def _size_ratios(original_size: Sequence[int], new_size: Sequence[int], device) -> tuple[Tensor, Tensor]:
    """(new_h / old_h, new_w / old_w) as float32 0-d tensors: torchvision divides in
    float32, so computing the ratios the same way keeps resized boxes equal to the bit."""
    ratio_h, ratio_w = (torch.tensor(float(new), dtype=torch.float32, device=device)
                        / torch.tensor(float(old), dtype=torch.float32, device=device)
                        for new, old in zip(new_size, original_size))
    return ratio_h, ratio_w


def resize_boxes(boxes: Tensor, original_size: Sequence[int], new_size: Sequence[int]) -> Tensor:
    """Scale Tensor[M, 4] xyxy boxes from an image of ``original_size`` (h, w) to one of
    ``new_size`` (h, w). Returns a new tensor of the same dtype; ``boxes`` is unchanged."""
    ratio_h, ratio_w = _size_ratios(original_size, new_size, boxes.device)
    x1, y1, x2, y2 = boxes.unbind(1)
    return torch.stack([x1 * ratio_w, y1 * ratio_h, x2 * ratio_w, y2 * ratio_h], dim=1)


def _resize_keypoints(keypoints: Tensor, original_size: Sequence[int], new_size: Sequence[int]) -> Tensor:
    """Scale Tensor[M, P, 3] (x, y, visibility) keypoints like :func:`resize_boxes`."""
    ratio_h, ratio_w = _size_ratios(original_size, new_size, keypoints.device)
    x, y, visibility = keypoints.unbind(-1)
    return torch.stack([x * ratio_w, y * ratio_h, visibility], dim=-1)


class GeneralizedRCNNTransform(nn.Module):
    """Normalize, resize and batch images (and resize their targets) for a two-stage detector.

    Args:
        min_size: short side after resizing, in pixels; a sequence gives a random
            choice per image in training (multi-scale training) and its last entry in eval.
        max_size: cap on the long side after resizing, in pixels.
        image_mean, image_std: per-channel statistics of [0, 1] images (ImageNet's in
            torchvision's detectors).
        size_divisible: the padded batch's height and width are multiples of this.
        fixed_size: resize every image to exactly this size instead, given as
            **(width, height)**, the order torchvision uses.
        _skip_resize (keyword): in training, leave images at their size (torchvision's
            private switch, accepted for compatibility); eval still resizes.

    Unlike torchvision, an image whose channel count differs from ``len(image_mean)``
    is refused rather than broadcast, unknown keywords raise, and neither the targets
    nor the ``result`` given to :meth:`postprocess` are modified.
    """

    def __init__(self, min_size, max_size: int, image_mean: Sequence[float], image_std: Sequence[float],
                 size_divisible: int = 32, fixed_size: tuple[int, int] | None = None, **kwargs):
        super().__init__()
        unknown = set(kwargs) - {"_skip_resize"}
        if unknown:
            raise TypeError(f"GeneralizedRCNNTransform accepts only the keyword _skip_resize besides its "
                            f"named arguments, got {sorted(unknown)}")
        if len(image_mean) != len(image_std):
            raise ValueError(f"image_mean and image_std must have one value per channel each, "
                             f"got {len(image_mean)} and {len(image_std)}")
        self.min_size = tuple(min_size) if isinstance(min_size, (list, tuple)) else (min_size,)
        self.max_size = max_size
        self.image_mean = image_mean
        self.image_std = image_std
        self.size_divisible = size_divisible
        self.fixed_size = fixed_size
        self._skip_resize = kwargs.get("_skip_resize", False)

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
                ) -> tuple[ImageList, list[dict[str, Tensor]] | None]:
        """Args:
            images: list of B Tensor[3, H_i, W_i], float in [0, 1]; sizes may differ.
            targets: optional list of B dicts with ``boxes`` Tensor[M_i, 4] xyxy float
                pixels of the input image; other entries are passed through.

        Returns:
            ``ImageList(tensors=Tensor[B, 3, H, W], image_sizes=[(h_i, w_i), ...])`` with
            H, W multiples of ``size_divisible`` and (h_i, w_i) each resized image's size
            before padding; and new target dicts with boxes in resized-image pixels (or None).
        """
        self._check_inputs(images, targets)
        resized, new_targets = [], []
        for i, image in enumerate(images):
            image, target = self.resize(self.normalize(image), None if targets is None else targets[i])
            resized.append(image)
            new_targets.append(target)
        image_sizes = [(img.shape[-2], img.shape[-1]) for img in resized]
        image_list = ImageList(self.batch_images(resized, self.size_divisible), image_sizes)
        return image_list, (None if targets is None else new_targets)

    def _check_inputs(self, images, targets) -> None:
        if not isinstance(images, (list, tuple)):
            raise TypeError(f"images must be a list of Tensor[3, H, W], got {type(images).__name__}")
        for i, image in enumerate(images):
            check_tensor(image, f"images[{i}]", ndim=3, layout="[C, H, W]")
            if image.shape[0] != len(self.image_mean):
                raise ValueError(f"images[{i}] must have {len(self.image_mean)} channels (one per image_mean "
                                 f"entry), got shape {list(image.shape)}")
        if targets is None:
            return
        if not isinstance(targets, (list, tuple)) or len(targets) != len(images):
            raise ValueError(f"targets must be a list of {len(images)} dicts (one per image), got {targets!r:.80}")
        for i, target in enumerate(targets):
            if not isinstance(target, dict) or "boxes" not in target:
                raise ValueError(f"targets[{i}] must be a dict with a 'boxes' entry, got {target!r:.80}")
            boxes = target["boxes"]
            check_tensor(boxes, f"targets[{i}]['boxes']", ndim=2, last_dim=4, layout="[M, 4] xyxy")
            if not boxes.is_floating_point():  # torchvision would turn them into float32 unasked
                raise TypeError(f"target boxes must be a floating Tensor[M, 4] xyxy, got {boxes.dtype} "
                                f"in targets[{i}]['boxes']")
            if "masks" in target:
                raise ValueError("targets with 'masks' need torchvision's GeneralizedRCNNTransform; "
                                 "detviz's resizes boxes and keypoints only")

    def normalize(self, image: Tensor) -> Tensor:
        """``(image - mean) / std`` per channel, for a float Tensor[C, H, W] in [0, 1]."""
        if not image.is_floating_point():
            raise TypeError(f"images must be float tensors with values in [0, 1] (e.g. uint8 images / 255), "
                            f"got {image.dtype}")
        mean = torch.as_tensor(self.image_mean, dtype=image.dtype, device=image.device)
        std = torch.as_tensor(self.image_std, dtype=image.dtype, device=image.device)
        return (image - mean[:, None, None]) / std[:, None, None]

    def torch_choice(self, choices: Sequence[int]) -> int:
        """A uniformly random entry of ``choices``, drawn from torch's global CPU generator.

        The draw (one ``uniform_`` of a 1-element float tensor per image, even when there
        is a single choice) repeats torchvision's, so ``torch.manual_seed`` gives both
        the same sizes and leaves the generator in the same state.
        """
        position = torch.empty(1).uniform_(0.0, float(len(choices)))
        return choices[int(position.item())]

    def target_size(self, h: int, w: int) -> tuple[int, int] | None:
        """(height, width) this image will be resized to, drawing ``min_size`` in training;
        None when ``_skip_resize`` keeps training images as they are."""
        if self.training:
            if self._skip_resize:
                return None
            min_size = self.torch_choice(self.min_size)
        else:
            min_size = self.min_size[-1]
        if self.fixed_size is not None:
            return self.fixed_size[1], self.fixed_size[0]  # given as (width, height)
        return resized_size(h, w, min_size, self.max_size)

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None
               ) -> tuple[Tensor, dict[str, Tensor] | None]:
        """Bilinearly resize one Tensor[C, H, W] to :meth:`target_size`, and its target's
        boxes (and keypoints) with it. Returns Tensor[C, h, w] and a new dict (or None)."""
        size = self.target_size(*image.shape[-2:])
        # [C, H, W] -> [1, C, H, W] -> [1, C, h, w] -> [C, h, w]; an explicit size interpolates
        # exactly as scale_factor with recompute_scale_factor=True (scale = output / input)
        new_image = image if size is None else F.interpolate(image[None], size=size, mode="bilinear",
                                                             align_corners=False)[0]
        if target is None:
            return new_image, None
        return new_image, self._resize_target(target, image.shape[-2:], new_image.shape[-2:])

    def _resize_target(self, target: dict[str, Tensor], old_hw, new_hw) -> dict[str, Tensor]:
        target = dict(target)  # new dict: the caller's stays as it was
        target["boxes"] = resize_boxes(target["boxes"], old_hw, new_hw)
        if "keypoints" in target:
            target["keypoints"] = _resize_keypoints(target["keypoints"], old_hw, new_hw)
        return target

    def batch_images(self, images: list[Tensor], size_divisible: int = 32) -> Tensor:
        """Zero-pad images at the bottom/right into one Tensor[B, C, H, W].

        H and W are the largest height and width in the list rounded up to a multiple
        of ``size_divisible``, so every level of a stride-``size_divisible`` backbone
        divides evenly: e.g. sizes 800 x 1066 and 600 x 1000 give 800 x 1088.
        """
        height = math.ceil(max(img.shape[-2] for img in images) / size_divisible) * size_divisible
        width = math.ceil(max(img.shape[-1] for img in images) / size_divisible) * size_divisible
        # F.pad takes (left, right, top, bottom) for the last two dims
        padded = [F.pad(img, (0, width - img.shape[-1], 0, height - img.shape[-2])) for img in images]
        return torch.stack(padded)  # [B, C, H, W]

    def postprocess(self, result: list[dict[str, Tensor]], image_shapes: list[tuple[int, int]],
                    original_image_sizes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
        """Map predicted boxes from resized-image pixels back to original-image pixels.

        Args:
            result: list of B dicts with ``boxes`` Tensor[K_i, 4] xyxy (and e.g. scores, labels).
            image_shapes: the ``ImageList.image_sizes`` the model saw.
            original_image_sizes: (h, w) of each input image before :meth:`forward`.

        Returns:
            New dicts with rescaled boxes (and keypoints); other entries are shared.
            In training mode ``result`` is returned unchanged, like torchvision.
        """
        if self.training:
            return result
        restored = []
        for pred, resized_hw, original_hw in zip(result, image_shapes, original_image_sizes):
            if "masks" in pred:
                raise ValueError("predictions with 'masks' need torchvision's GeneralizedRCNNTransform; "
                                 "detviz's rescales boxes and keypoints only")
            restored.append(self._resize_target(pred, resized_hw, original_hw))
        return restored

    def extra_repr(self) -> str:
        return (f"mean={self.image_mean}, std={self.image_std}, min_size={self.min_size}, "
                f"max_size={self.max_size}, size_divisible={self.size_divisible}, fixed_size={self.fixed_size}")
