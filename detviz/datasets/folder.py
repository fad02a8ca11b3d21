"""A folder of images without annotations, for prediction: ``(image, info)`` items in file-name order."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset

from detviz.datasets.coco import read_image

__all__ = ["IMAGE_SUFFIXES", "ImageFolder"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class ImageFolder(Dataset):
    """Every image file directly in ``folder`` (suffixes ``IMAGE_SUFFIXES``, any case), sorted by name.

    Item ``i`` is ``(image, {"image_id": i + 1, "file_name": name})``: a ``Tensor[3, H, W]`` in [0, 1]
    as :class:`~detviz.datasets.CocoDetection` gives, and the ids a COCO results list uses.
    Two files with the same stem (``a.jpg``, ``a.png``) are refused: outputs are named by stem.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"image folder {self.folder} does not exist")
        self.paths = sorted(p for p in self.folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise ValueError(f"image folder {self.folder} holds no images (files ending in "
                             f"{', '.join(IMAGE_SUFFIXES)})")
        twice = sorted(stem for stem, n in Counter(p.stem for p in self.paths).items() if n > 1)
        if twice:
            raise ValueError(f"image folder {self.folder}: several images share the name {twice[0]!r} "
                             f"({', '.join(p.name for p in self.paths if p.stem == twice[0])}); rename one")
        self.image_ids = list(range(1, len(self.paths) + 1))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        return read_image(self.paths[index]), {"image_id": self.image_ids[index], "file_name": self.paths[index].name}
