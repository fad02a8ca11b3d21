"""COCO-format detection data (an image folder + an annotation json), read with pycocotools.

Every image becomes ``(image, target)``: a float ``Tensor[3, H, W]`` in [0, 1] and
``dict(boxes=[M, 4] float32 xyxy pixels, labels=[M] int64, image_id=int, area=[M],
iscrowd=[M], ignore_boxes=[I, 4])``. At load time:

* COCO's ``[x, y, w, h]`` becomes xyxy (the internal format everywhere in detviz);
* crowd annotations (``iscrowd=1``) go to ``ignore_boxes``, not to ``boxes``;
* images without annotations are kept, with ``boxes`` of shape [0, 4] (negative examples);
* boxes without positive width and height are dropped, with one warning per dataset
  naming how many and in which images;
* category ids map to contiguous labels ``label_offset, label_offset + 1, ...`` in
  ascending id order. Use ``label_offset=1`` for torchvision's R-CNN family, where label 0
  is the background, and ``label_offset=0`` for dense heads (background = num_classes).
  ``label_to_category_id`` maps predictions back for COCO results files.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from detviz.datasets.cocofile import load_coco

__all__ = ["CocoDetection", "coco80_class_names", "collate_fn", "open_dataset", "read_image"]


class CocoDetection(Dataset):
    """Detection dataset over ``image_dir`` and the COCO json ``ann_file``.

    Args:
        image_dir: folder of the images named by ``file_name`` in the json.
        ann_file: COCO instances json.
        label_offset: label of the category with the smallest id (1 when 0 is background).
    """

    def __init__(self, image_dir: str | Path, ann_file: str | Path, label_offset: int = 0):
        self.image_dir = Path(image_dir)
        ann_file = Path(ann_file)
        self.coco = load_coco(ann_file)  # every entry checked; errors name the file and the entry
        self.image_ids = sorted(self.coco.getImgIds())
        category_ids = sorted(self.coco.getCatIds())
        unknown = sorted({ann["category_id"] for ann in self.coco.anns.values()} - set(category_ids))
        if unknown:
            raise ValueError(f"{ann_file}: annotations use category ids {unknown} that are not in its "
                             f"'categories' (ids {category_ids})")
        self.category_id_to_label = {cid: label_offset + i for i, cid in enumerate(category_ids)}
        self.label_to_category_id = {label: cid for cid, label in self.category_id_to_label.items()}
        self.class_names = {label: self.coco.cats[cid]["name"] for cid, label in self.category_id_to_label.items()}
        self._warn_degenerate()

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        return self._load_image(info["file_name"]), self._target(image_id)

    def _load_image(self, file_name: str) -> Tensor:
        return read_image(self.image_dir / file_name)

    def _annotations(self, image_id: int) -> list[dict]:
        return self.coco.loadAnns(self.coco.getAnnIds(imgIds=[image_id]))

    def _target(self, image_id: int) -> dict:
        boxes, labels, areas, crowd_boxes = [], [], [], []
        for ann in self._annotations(image_id):
            x, y, w, h = ann["bbox"]
            if w <= 0 or h <= 0:
                continue
            if ann.get("iscrowd", 0):
                crowd_boxes.append([x, y, x + w, y + h])
                continue
            boxes.append([x, y, x + w, y + h])
            labels.append(self.category_id_to_label[ann["category_id"]])
            areas.append(ann.get("area", w * h))
        return {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "image_id": int(image_id),
            "area": torch.tensor(areas, dtype=torch.float32),
            "iscrowd": torch.zeros(len(boxes), dtype=torch.int64),
            "ignore_boxes": torch.tensor(crowd_boxes, dtype=torch.float32).reshape(-1, 4),
        }

    def _warn_degenerate(self) -> None:
        bad = [ann["image_id"] for ann in self.coco.anns.values() if ann["bbox"][2] <= 0 or ann["bbox"][3] <= 0]
        if bad:
            warnings.warn(f"dropped {len(bad)} boxes without positive width and height, in image ids "
                          f"{sorted(set(bad))}", stacklevel=3)


def coco80_class_names() -> dict[int, str]:
    """COCO's 80 detection classes by contiguous label 0..79 (person 0, horse 17, backpack 24), the
    labels mmdetection and NanoDet use; read from torchvision's weight metadata (no download)."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    categories = FasterRCNN_ResNet50_FPN_Weights.DEFAULT.meta["categories"]  # 91 ids, with gaps as "N/A"
    names = [n for n in categories if n not in ("__background__", "N/A")]
    return dict(enumerate(names))


WIDE_MODES = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I": 65535.0}  # 16-bit grey, as PIL opens it


def read_image(path: Path) -> Tensor:
    """The image file at ``path`` as RGB ``Tensor[3, H, W]`` float32 in [0, 1]; OSError naming the file.

    8-bit images are divided by 255; 16-bit grey ones (PIL modes ``I;16``, ``I``) by 65535 and
    repeated over three channels (``convert("RGB")`` would clip them to a constant white)."""
    try:
        with Image.open(path) as image:
            if image.mode in WIDE_MODES:
                grey = np.asarray(image, dtype=np.float32) / WIDE_MODES[image.mode]  # [H, W]
                array = np.repeat(np.clip(grey, 0.0, 1.0)[:, :, None], 3, axis=2)
            else:
                array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0  # [H, W, 3]
    except (FileNotFoundError, UnidentifiedImageError, OSError) as err:
        raise OSError(f"cannot read image {path}: {err}") from err
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()  # [H, W, 3] -> [3, H, W]


def collate_fn(batch: list[tuple[Tensor, dict]]) -> tuple[list[Tensor], list[dict]]:
    """Keep a detection batch as lists: images differ in size, targets in box count."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def open_dataset(folder: str | Path) -> CocoDetection:
    """``folder/images`` + ``folder/annotations.json`` with labels 0..C-1."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder {folder} does not exist (expected images/ + annotations.json)")
    return CocoDetection(folder / "images", folder / "annotations.json", label_offset=0)
