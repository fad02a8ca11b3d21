"""YOLOv3 (walkthroughs 08-09): anchors, targets, box coder, loss, the model and inference.

* ``anchors.py``: the COCO anchors and masks, shape-only IoU, k-means anchor estimation;
* ``targets.py``: ``build_targets`` -> ``y_true`` per level and the anchor/cell matches;
* ``coder.py``: ``decode_level`` (raw t -> normalised / pixel boxes) and its inverse on targets;
* ``loss.py``: ``yolo_loss`` (xy BCE, wh L2, confidence with the ignore mask, class BCE) and CIoU;
* ``predict.py``: ``yolo_predict`` (objectness * class probability, clipping, per-class NMS);
* ``model.py``: ``Darknet53``, the note's FPN, ``YOLOv3Config``, ``build_yolov3``, the keypoint variant.

Levels follow the note: level 0 = stride 32 (13x13 at 416), 1 = stride 16, 2 = stride 8.
Outputs and targets are ``[B, H, W, A, 4 + 1 + C]``: x, y, w, h, objectness, C classes.
"""
from detviz.yolo.anchors import (ANCHOR_MASKS, COCO_ANCHORS, LEVEL_STRIDES, KMeansAnchors, best_anchors, kmeans_anchors,
                                 level_anchors, wh_iou)
from detviz.yolo.coder import YoloDecoded, decode_level, grid_offsets, raw_box_targets
from detviz.yolo.loss import (IGNORE_THRESH, YoloLevelTerms, aligned_complete_box_iou, ciou_loss, gt_boxes_from_y_true,
                              ignore_mask, yolo_loss, yolo_loss_per_level)
from detviz.yolo.predict import YOLO_NMS_PRE, decode_yolo_outputs, yolo_predict
from detviz.yolo.targets import AnchorMatches, YoloTargets, build_targets, featmap_sizes

__all__ = ["ANCHOR_MASKS", "COCO_ANCHORS", "LEVEL_STRIDES", "KMeansAnchors", "best_anchors", "kmeans_anchors",
           "level_anchors", "wh_iou", "YoloDecoded", "decode_level", "grid_offsets", "raw_box_targets",
           "IGNORE_THRESH", "YoloLevelTerms", "aligned_complete_box_iou", "ciou_loss", "gt_boxes_from_y_true",
           "ignore_mask", "yolo_loss", "yolo_loss_per_level", "AnchorMatches", "YoloTargets", "build_targets",
           "featmap_sizes", "YOLO_NMS_PRE", "decode_yolo_outputs", "yolo_predict"]
