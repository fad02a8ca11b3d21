"""Detection datasets: COCO-format folders read with pycocotools, and plain image folders."""
from detviz.datasets.coco import CocoDetection, collate_fn
from detviz.datasets.folder import ImageFolder

__all__ = ["CocoDetection", "ImageFolder", "collate_fn"]
