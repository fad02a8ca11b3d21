"""Detection datasets: COCO-format folders read with pycocotools."""
from detviz.datasets.coco import CocoDetection, collate_fn

__all__ = ["CocoDetection", "collate_fn"]
