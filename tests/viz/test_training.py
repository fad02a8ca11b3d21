"""detviz.viz.training: label statistics, batches and training curves, and the pictures a run writes."""
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from detviz.viz.training import TrainingPictures, batch_figure, labels_figure, results_figure

NAMES = {0: "cat", 1: "dog", 2: "bird"}


def test_labels_figure_counts_each_class_and_places_the_centres():
    boxes = np.array([[0, 0, 10, 10], [10, 20, 30, 60], [50, 50, 150, 100], [0, 0, 4, 4]], dtype=float)
    labels = np.array([0, 1, 1, 0])
    sizes = np.array([[100, 100], [100, 100], [200, 100], [100, 100]])
    fig = labels_figure(boxes, labels, sizes, NAMES)
    bars = [p.get_height() for p in fig.axes[0].patches]
    assert bars == [2, 2, 0]  # bird has none: its bar is there, empty
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["cat", "dog", "bird"]
    centres = np.concatenate([c.get_offsets() for c in fig.axes[2].collections])
    np.testing.assert_allclose(sorted(map(tuple, centres)), [(0.02, 0.02), (0.05, 0.05), (0.2, 0.4), (0.5, 0.75)])
    with pytest.raises(ValueError, match="one label and image size per box"):
        labels_figure(boxes, labels[:3], sizes, NAMES)


def test_batch_figure_shows_at_most_sixteen_images():
    images = torch.rand(20, 3, 32, 32)
    boxes = [torch.tensor([[2.0, 2.0, 20.0, 20.0]])] * 20
    labels = [torch.tensor([2])] * 20
    fig = batch_figure(images, boxes, labels, NAMES, "step 1")
    assert sum(bool(ax.images) for ax in fig.axes) == 16
    assert fig._suptitle.get_text() == "step 1 (the first 16 of 20)"
    assert fig.axes[0].texts[0].get_text() == "bird"


def test_results_figure_plots_every_term_the_rate_and_the_metrics():
    rows = [{"step": str(s), "lr": str(0.1 / s), "loss": str(3.0 / s), "loss_cls": str(1.0 / s)} for s in range(1, 41)]
    metrics = [{"step": 20, "mAP": 0.1, "AP50": 0.3}, {"step": 40, "mAP": None, "AP50": 0.5}]
    fig = results_figure(rows, metrics)
    titles = [ax.get_title() for ax in fig.axes if ax.axison]
    assert titles == ["loss", "loss_cls", "learning rate", "validation"]
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [3.0 / s for s in range(1, 41)])
    assert fig.axes[0].lines[1].get_label() == "mean of 2 steps"
    validation = fig.axes[3]
    np.testing.assert_array_equal(validation.lines[0].get_ydata(), [0.1, np.nan])  # None: not scored
    with pytest.raises(ValueError, match="at least one log row"):
        results_figure([])


def test_a_run_through_the_command_writes_its_pictures(one_step_checkpoint):
    out = one_step_checkpoint.parent
    for name, kind in (("labels.png", "PNG"), ("train_batch0.jpg", "JPEG"), ("results.png", "PNG")):
        with Image.open(out / name) as picture:
            assert picture.format == kind and min(picture.size) > 300
    assert not (out / "train_batch1.jpg").exists()  # a run of one step sees one batch


def test_pictures_follow_the_log_and_the_metrics(tmp_path):
    pictures = TrainingPictures(tmp_path)
    pictures.on_evaluation()  # no log yet: nothing to draw
    assert list(tmp_path.iterdir()) == []
    with (tmp_path / "log.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, ["step", "lr", "loss"])
        writer.writeheader()
        writer.writerows({"step": s, "lr": 0.01, "loss": 1.0 / s} for s in range(1, 5))
    (tmp_path / "metrics.json").write_text(json.dumps([{"step": 4, "mAP": 0.2, "AP50": 0.4}]))
    pictures.on_evaluation()
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".png"] == ["results.png"]
    pictures.on_batch(3, torch.rand(2, 3, 16, 16), [torch.zeros(0, 4)] * 2, [torch.zeros(0, dtype=torch.int64)] * 2)
    assert not (tmp_path / "train_batch3.jpg").exists()  # only the first three steps


def test_a_non_finite_batch_is_still_drawn(tmp_path):
    pictures = TrainingPictures(tmp_path)
    pictures.class_names = NAMES
    images = torch.rand(2, 3, 32, 32)
    images[0, 0, 3, 3] = float("nan")
    boxes = [torch.tensor([[20.0, 2.0, float("nan"), 10.0]]), torch.tensor([[1.0, 1.0, 9.0, 9.0]])]
    pictures.on_nonfinite(4, images, boxes, [torch.tensor([0]), torch.tensor([1])], [7, 8])
    with Image.open(tmp_path / "nonfinite_batch.jpg") as picture:
        assert picture.format == "JPEG"

