"""detviz.viz.pictures: the commands' pictures, their sizes, what they draw, and atomic writing."""
import numpy as np
import pytest
import torch
from matplotlib.patches import Rectangle
from PIL import Image

from detviz.viz.pictures import (TITLE_PIXELS, confusion_figure, detections_figure, pr_curve_figure,
                                 predictions_grid, save_figure)

NAMES = {0: "cat", 1: "dog"}


def _prediction(scores):
    n = len(scores)
    boxes = torch.tensor([[10.0 + 100 * k, 60.0, 60.0 + 100 * k, 100.0] for k in range(n)]).reshape(-1, 4)
    return {"boxes": boxes, "labels": torch.tensor([0, 1] * (n // 2) + [0] * (n % 2)), "scores": torch.tensor(scores)}


def _boxes(ax) -> int:
    return sum(isinstance(p, Rectangle) and p.get_edgecolor()[3] > 0 for p in ax.patches)


def test_detections_keep_the_image_size_and_draw_what_scores_enough(tmp_path):
    image = torch.rand(3, 300, 400)
    fig = detections_figure(image, _prediction([0.9, 0.2, 0.5]), NAMES, 0.3)
    save_figure(fig, tmp_path / "a.jpg")
    with Image.open(tmp_path / "a.jpg") as written:
        assert written.format == "JPEG" and written.size == (400, 300 + TITLE_PIXELS)
    ax = fig.axes[0]
    assert _boxes(ax) == 2
    assert sorted(t.get_text() for t in ax.texts) == ["cat 0.50", "cat 0.90"]
    assert fig.texts[0].get_text() == "2 detections with score >= 0.3"


def test_small_images_are_enlarged_for_readable_captions(tmp_path):
    fig = detections_figure(torch.rand(3, 96, 120), _prediction([]), NAMES, 0.3, title="empty")
    save_figure(fig, tmp_path / "small.png")
    with Image.open(tmp_path / "small.png") as written:
        assert written.size == (300, 240 + TITLE_PIXELS)  # shorter side 96 -> 240


def test_grid_puts_gts_next_to_predictions():
    target = {"boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0]]), "labels": torch.tensor([1])}
    samples = [(torch.rand(3, 64, 64), target, _prediction([0.9]), f"image {k}") for k in range(3)]
    fig = predictions_grid(samples, NAMES, 0.5)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(fig.axes) == 4 * 2 and titles[0].startswith("image 0: ground truth: 1 boxes")
    assert titles[1] == "1 predictions with score >= 0.5; 0 of 1 gts found"  # a cat on a dog
    assert not fig.axes[6].images and not fig.axes[7].images  # the empty pair of the last row stays blank
    with pytest.raises(ValueError, match="at least one"):
        predictions_grid([], NAMES, 0.5)


def test_confusion_and_pr_figures_have_two_and_one_panels():
    fig = confusion_figure(np.array([[2, 1, 0], [0, 3, 1], [1, 0, 0]]), ["cat", "dog", "background"], 0.3)
    assert [ax.get_title() for ax in fig.axes] == ["confusion matrix, score >= 0.3 (counts)",
                                                   "rows normalised: where each gt class went"]
    recall = np.linspace(0, 1, 101)
    fig = pr_curve_figure({"cat": (recall, 1 - recall)}, ap50=0.5)
    assert fig.axes[0].get_title() == "precision-recall at IoU 0.5 (AP50 0.500)"


def test_save_figure_refuses_other_formats_and_keeps_the_old_file(tmp_path, monkeypatch):
    fig = pr_curve_figure({"cat": (np.linspace(0, 1, 101), np.ones(101))})
    with pytest.raises(ValueError, match=r"written as \.png, \.jpg, \.jpeg, got suffix '\.gif'"):
        save_figure(fig, tmp_path / "a.gif")
    path = tmp_path / "a.png"
    path.write_bytes(b"old")

    def disk_full(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("detviz._io.os.fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_figure(fig, path)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["a.png"]
