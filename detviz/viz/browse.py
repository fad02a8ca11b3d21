"""Browse a detection dataset and compare predictions with its gts.

Works on torchvision-style data: images ``Tensor[3, H, W]`` in [0, 1], targets
``dict(boxes=[M, 4] xyxy, labels=[M])`` and predictions ``dict(boxes, labels, scores)`` (one per
image, as a torchvision detector returns them in eval mode), or COCO results json entries
(``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``) converted by
:func:`detviz.evaluation.prediction_from_coco_results`.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from detviz.boxes import box_iou
from detviz.viz.draw import draw_boxes, show_image

__all__ = ["browse_dataset", "show_predictions"]


def browse_dataset(axes, dataset, indices: Sequence[int], transform=None):
    """Draw ``dataset[i]`` (image and gt boxes with class names) on each of ``axes``.

    Args:
        axes: one matplotlib Axes per index (a flat sequence or a numpy array of them).
        dataset: ``(image, target)`` items, e.g. :class:`~detviz.datasets.CocoDetection`.
        indices: dataset indices, as many as axes.
        transform: optional ``(image, target) -> (image, target)`` applied before drawing,
            e.g. a resize to the model input, to see what the model sees.

    Returns:
        the list of axes.
    """
    axes = list(getattr(axes, "flat", axes))
    if len(axes) != len(indices):
        raise ValueError(f"axes must hold one Axes per index, got {len(axes)} axes for {len(indices)} indices")
    names = getattr(dataset, "class_names", None)
    for ax, index in zip(axes, indices):
        image, target = dataset[index]
        if transform is not None:
            image, target = transform(image, target)
        show_image(ax, image)
        draw_boxes(ax, target["boxes"], labels=target["labels"], class_names=names)
        ax.set_title(f"#{index} image_id {target.get('image_id', index)}: {target['boxes'].shape[0]} boxes, "
                     f"{image.shape[-1]} x {image.shape[-2]}", fontsize=9)
    return axes


def show_predictions(ax_gt, ax_pred, image: Tensor, target: dict, prediction: dict, class_names=None,
                     score_thresh: float = 0.5):
    """Gts on ``ax_gt``; on ``ax_pred`` the predictions scoring at least ``score_thresh``, each
    captioned with its score, and the gts dashed underneath. The prediction title counts the gts
    found at IoU >= 0.5 by a same-class prediction.

    Args:
        image: Tensor[3, H, W] in [0, 1]; target: dict(boxes=[M, 4] xyxy, labels=[M]).
        prediction: dict(boxes=[P, 4] xyxy, labels=[P], scores=[P]), pixels of ``image``.
        class_names: dict or list label -> name, or None.

    Returns:
        (ax_gt, ax_pred).
    """
    for key in ("boxes", "labels", "scores"):
        if key not in prediction:
            raise ValueError(f"prediction must be dict(boxes=[P, 4], labels=[P], scores=[P]), missing {key!r}")
    keep = prediction["scores"] >= score_thresh
    boxes, labels, scores = prediction["boxes"][keep], prediction["labels"][keep], prediction["scores"][keep]
    show_image(ax_gt, image)
    draw_boxes(ax_gt, target["boxes"], labels=target["labels"], class_names=class_names)
    ax_gt.set_title(f"ground truth: {target['boxes'].shape[0]} boxes", fontsize=9)
    show_image(ax_pred, image)
    draw_boxes(ax_pred, target["boxes"], colors="white", linestyle="--", linewidth=1.0, show_text=False)
    draw_boxes(ax_pred, boxes.detach(), labels=labels, scores=scores.detach(), class_names=class_names)
    found = 0
    if target["boxes"].shape[0] and boxes.shape[0]:
        iou = box_iou(target["boxes"], boxes.detach())  # [M, P]
        same = target["labels"][:, None] == labels[None, :]
        found = int(((iou >= 0.5) & same).any(dim=1).sum())
    ax_pred.set_title(f"{boxes.shape[0]} predictions with score >= {score_thresh:g}; "
                      f"{found} of {target['boxes'].shape[0]} gts found", fontsize=9)
    return ax_gt, ax_pred
