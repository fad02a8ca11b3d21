"""What a training run looks like: label statistics, the first batches as the model saw them, and the
loss, learning-rate and mAP curves.

:class:`TrainingPictures` is a training observer (``train(config, observers=[...])``, as the
``train`` command passes it): it writes ``labels.png`` when the run starts,
``train_batch0.jpg`` .. ``train_batch2.jpg`` for the run's first three steps, ``results.png``
at every evaluation and at the end, and ``nonfinite_batch.jpg`` when a step meets a NaN or an Inf,
each atomically into the run's folder. The figure functions
take plain arrays and lists, for use on their own.
"""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from detviz.viz.common import class_color, plain_log_axis
from detviz.viz.draw import draw_boxes, show_image
from detviz.viz.pictures import new_figure, save_figure

__all__ = ["labels_figure", "batch_figure", "results_figure", "TrainingPictures"]

BATCH_PICTURES = 3  # train_batch0.jpg .. train_batch2.jpg
MAX_BATCH_IMAGES = 16  # images shown of one batch
NOT_LOSSES = ("step", "lr")  # log.csv columns that are not loss terms


def labels_figure(boxes, labels, image_sizes, class_names: Mapping[int, str]):
    """Four panels of a dataset's boxes: instances per class, width against height, centres in
    image-relative coordinates, and the box size sqrt(w * h) per class.

    Args:
        boxes: ``[N, 4]`` xyxy pixels; labels: ``[N]`` class ids (keys of ``class_names``);
        image_sizes: ``[N, 2]`` (width, height) of each box's image.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    sizes = np.asarray(image_sizes, dtype=np.float64).reshape(-1, 2)
    if not len(boxes) == len(labels) == len(sizes):
        raise ValueError(f"need one label and image size per box, got {len(boxes)} boxes, {len(labels)} labels "
                         f"and {len(sizes)} sizes")
    fig, axes = new_figure(11, 8.5, ncols=2, nrows=2)
    ids = sorted(class_names)
    counts = [int((labels == k).sum()) for k in ids]
    axes[0].bar(range(len(ids)), counts, color=[class_color(k, len(ids)) for k in ids])
    for x, n in enumerate(counts):
        axes[0].text(x, n, str(n), ha="center", va="bottom", fontsize=8)
    axes[0].set_xticks(range(len(ids)))
    axes[0].set_xticklabels([class_names[k] for k in ids], rotation=30, ha="right", fontsize=8)
    axes[0].set_ylabel("instances")
    axes[0].set_title(f"{len(labels)} boxes in {len(ids)} classes", fontsize=9)
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2 / sizes[:, 0]
    centre_y = (boxes[:, 1] + boxes[:, 3]) / 2 / sizes[:, 1]
    side = np.sqrt(np.clip(width * height, 0, None))
    low = max(float(side.min()), 1.0) if side.size else 1.0
    bins = np.geomspace(low, max(float(side.max()) if side.size else 2.0, 2 * low), 25)
    for k in ids:
        mine = labels == k
        if not mine.any():
            continue
        color = class_color(k, len(ids))
        axes[1].scatter(width[mine], height[mine], s=6, alpha=0.5, color=color, label=class_names[k])
        axes[2].scatter(centre_x[mine], centre_y[mine], s=6, alpha=0.5, color=color)
        axes[3].hist(side[mine], bins=bins, histtype="step", linewidth=1.5, color=color)
    plain_log_axis(axes[1], "xy")
    axes[1].set_xlabel("width (px)")
    axes[1].set_ylabel("height (px)")
    axes[1].set_title("box width and height", fontsize=9)
    axes[1].legend(fontsize=7, markerscale=2, loc="upper left")
    axes[2].set_xlim(0, 1)
    axes[2].set_ylim(1, 0)  # image frame: y down
    axes[2].set_aspect("equal")
    axes[2].set_xlabel("centre x / image width")
    axes[2].set_ylabel("centre y / image height")
    axes[2].set_title("box centres", fontsize=9)
    plain_log_axis(axes[3], "x")
    axes[3].set_xlabel("sqrt(w * h) (px); COCO small < 32 <= medium < 96 <= large")
    axes[3].set_ylabel("boxes")
    for edge in (32, 96):
        axes[3].axvline(edge, color="0.5", linestyle=":", linewidth=1)
    axes[3].set_title("box size per class", fontsize=9)
    fig.tight_layout()
    return fig


def batch_figure(images, boxes: Sequence, labels: Sequence, class_names: Mapping[int, str], title: str,
                 image_ids: Sequence | None = None):
    """A grid of a batch's images (``[B, 3, S, S]`` in [0, 1]) with their gt boxes and class names,
    each titled with its image id (when given) and its box count."""
    count = min(len(images), MAX_BATCH_IMAGES)
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    fig, axes = new_figure(3.2 * columns, 3.2 * rows + 0.4, ncols=columns, nrows=rows)
    for ax in axes:
        ax.set_axis_off()
    for i in range(count):
        show_image(axes[i], images[i].clamp(0, 1))
        draw_boxes(axes[i], boxes[i], labels=labels[i], class_names=class_names)
        axes[i].set_axis_off()
        what = f"{len(boxes[i])} box" + ("" if len(boxes[i]) == 1 else "es")
        axes[i].set_title(what if image_ids is None else f"image {image_ids[i]}: {what}", fontsize=8)
    shown = "" if count == len(images) else f" (the first {count} of {len(images)})"
    fig.suptitle(f"{title}{shown}", fontsize=10)
    fig.tight_layout()
    return fig


def results_figure(rows: Sequence[Mapping], metrics: Sequence[Mapping] = ()):
    """One panel per loss term and the learning rate over the steps, and with ``metrics`` (entries of
    ``metrics.json``) the mAP and AP50 at each evaluation.

    Args:
        rows: ``log.csv`` rows: ``step``, ``lr``, ``loss`` and the family's loss terms (numbers or text).
    """
    if not rows:
        raise ValueError("results_figure needs at least one log row")
    names = [k for k in rows[0] if k not in NOT_LOSSES] + ["lr"] + (["mAP and AP50"] if metrics else [])
    columns = min(4, len(names))
    fig, axes = new_figure(3.6 * columns, 2.8 * math.ceil(len(names) / columns), ncols=columns,
                           nrows=math.ceil(len(names) / columns))
    for ax in axes:
        ax.set_axis_off()
    steps = np.array([float(r["step"]) for r in rows])
    for ax, name in zip(axes, names):
        ax.set_axis_on()
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        if name == "mAP and AP50":
            at = [m["step"] for m in metrics]
            for key, style in (("mAP", "o-"), ("AP50", "s--")):
                ax.plot(at, [math.nan if m.get(key) is None else m[key] for m in metrics], style, markersize=3,
                        label=key)
            ax.set_ylim(0, 1)
            ax.legend(fontsize=7)
            ax.set_title("validation", fontsize=9)
            continue
        values = np.array([float(r[name]) for r in rows])
        ax.plot(steps, values, linewidth=0.8, color="tab:blue" if name != "lr" else "tab:green", label="per step")
        if name != "lr" and len(values) >= 20:  # a running mean shows the trend through the noise
            width = max(len(values) // 20, 2)
            smooth = np.convolve(values, np.ones(width) / width, mode="valid")
            ax.plot(steps[width - 1:], smooth, linewidth=1.5, color="tab:orange", label=f"mean of {width} steps")
            if name == names[0]:
                ax.legend(fontsize=7)
        ax.set_title(name if name != "lr" else "learning rate", fontsize=9)
    fig.tight_layout()
    return fig


class TrainingPictures:
    """The pictures of one run, written into its folder ``out`` as the run goes.

    Args:
        out: the run's folder (where ``log.csv`` and ``metrics.json`` are written).
    """

    def __init__(self, out: str | Path):
        self.out, self.class_names = Path(out), {}

    def on_start(self, dataset) -> None:
        """``labels.png`` from the training dataset's gts (a ``CocoDetection``: its COCO index)."""
        coco, label_of, self.class_names = dataset.coco, dataset.category_id_to_label, dict(dataset.class_names)
        boxes, labels, sizes = [], [], []
        for ann in coco.dataset.get("annotations", []):
            x, y, w, h = ann["bbox"]
            if ann.get("iscrowd", 0) or w <= 0 or h <= 0:
                continue
            info = coco.imgs[ann["image_id"]]
            boxes.append((x, y, x + w, y + h))
            labels.append(label_of[ann["category_id"]])
            sizes.append((info.get("width", 1), info.get("height", 1)))
        save_figure(labels_figure(boxes, labels, sizes, self.class_names), self.out / "labels.png")

    def on_batch(self, step: int, images, boxes, labels, image_ids=None) -> None:
        """``train_batch<step>.jpg`` for the run's steps 0 .. BATCH_PICTURES - 1 (before the step is taken)."""
        if step < BATCH_PICTURES:
            figure = batch_figure(images, boxes, labels, self.class_names,
                                  f"step {step + 1}: the batch after augmentation, as the model sees it", image_ids)
            save_figure(figure, self.out / f"train_batch{step}.jpg")

    def on_nonfinite(self, step: int, images, boxes, labels, image_ids=None) -> None:
        """``nonfinite_batch.jpg``: the batch of the step that met a NaN or an Inf."""
        images = torch.nan_to_num(images, nan=0.0, posinf=1.0, neginf=0.0)  # a NaN pixel must not stop the drawing
        boxes = [torch.nan_to_num(b).reshape(-1, 4) for b in boxes]
        boxes = [torch.cat([torch.minimum(b[:, :2], b[:, 2:]), torch.maximum(b[:, :2], b[:, 2:])], dim=1)
                 for b in boxes]  # corners a NaN turned into 0 may cross: draw the box they span
        figure = batch_figure(images, boxes, labels, self.class_names,
                              f"step {step + 1}: the batch that met a NaN or an Inf (see nonfinite.txt)", image_ids)
        save_figure(figure, self.out / "nonfinite_batch.jpg")

    def on_evaluation(self) -> None:
        """``results.png`` from ``log.csv`` and ``metrics.json`` as they are now."""
        log, metrics = self.out / "log.csv", self.out / "metrics.json"
        if not log.is_file():
            return
        with log.open(newline="") as file:
            rows = list(csv.DictReader(file))
        if rows:
            history = json.loads(metrics.read_text()) if metrics.is_file() else []
            save_figure(results_figure(rows, history), self.out / "results.png")
