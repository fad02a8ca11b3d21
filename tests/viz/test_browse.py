"""detviz.viz.browse: a dataset's boxes, and predictions next to the gts."""
import matplotlib
import pytest
import torch

from detviz import viz
from detviz.datasets import CocoDetection
from detviz.evaluation import prediction_from_coco_results
from detviz.fixtures import DATA_DIR

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MPL = dict(baseline_dir="baseline", style="default", tolerance=2, savefig_kwargs={"dpi": 60})
PHOTOS = CocoDetection(DATA_DIR / "photos", DATA_DIR / "photos" / "annotations.json")


def test_show_predictions_and_coco_results(two_image_coco):
    image, target = two_image_coco[1]
    results = [{"image_id": 2, "category_id": 2, "bbox": [50, 20, 40, 160], "score": 0.9},
               {"image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.2},
               {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.8}]
    prediction = prediction_from_coco_results(results, 2, two_image_coco.category_id_to_label)
    torch.testing.assert_close(prediction["boxes"][0], torch.tensor([50.0, 20.0, 90.0, 180.0]))
    fig, (ax_gt, ax_pred) = plt.subplots(1, 2)
    viz.show_predictions(ax_gt, ax_pred, image, target, prediction, two_image_coco.class_names, score_thresh=0.5)
    assert "1 predictions with score >= 0.5; 1 of 1 gts found" == ax_pred.get_title()
    with pytest.raises(ValueError, match="missing 'scores'"):
        viz.show_predictions(ax_gt, ax_pred, image, target, {"boxes": prediction["boxes"], "labels": prediction["labels"]})
    plt.close(fig)


@pytest.mark.mpl_image_compare(**MPL)
def test_figure_gt_next_to_predictions():
    image, target = PHOTOS[0]
    prediction = {"boxes": torch.tensor([[170.0, 10, 400, 300], [300, 50, 430, 320]]),
                  "labels": torch.tensor([3, 4]), "scores": torch.tensor([0.9, 0.3])}
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    viz.show_predictions(axes[0], axes[1], image, target, prediction, class_names=PHOTOS.class_names,
                            score_thresh=0.5)
    fig.tight_layout()
    return fig
