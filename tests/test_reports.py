"""detviz.reports and detviz.browse on a hand-made COCO json."""
import json

import matplotlib
import pytest
import torch
from PIL import Image

from detviz.anchors import AnchorGenerator
from detviz.datasets import CocoDetection
from detviz.fixtures import DATA_DIR
from detviz import browse, reports

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture
def dataset(tmp_path):
    """Image 1 at 640 x 640 (halved to 320 x 320): a 100 x 100 box, a 6 x 6 box and a 120 x 16 strip.
    Image 2 at 320 x 320: one tall box."""
    for name, size in (("a.png", 640), ("b.png", 320)):
        Image.new("RGB", (size, size)).save(tmp_path / name)
    anns = [([100, 100, 200, 200], 1), ([410, 410, 12, 12], 2), ([20, 500, 240, 32], 1), ([50, 20, 40, 160], 2)]
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 640, "height": 640},
                       {"id": 2, "file_name": "b.png", "width": 320, "height": 320}],
            "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "speck"}],
            "annotations": [{"id": i + 1, "image_id": 1 if i < 3 else 2, "category_id": c, "bbox": b,
                             "area": b[2] * b[3], "iscrowd": 0} for i, (b, c) in enumerate(anns)]}
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    return CocoDetection(tmp_path, tmp_path / "ann.json")


def test_buckets():
    assert [reports.size_bucket(w, h) for w, h in ((31, 31), (32, 32), (95, 96), (96, 96))] == \
        ["small", "medium", "medium", "large"]
    assert [reports.aspect_bucket(w, h) for w, h in ((100, 49), (100, 50), (50, 99), (10, 20))] == \
        ["wide", "square", "square", "tall"]


def test_atss_report_lists_the_tiny_unassigned_gt(dataset):
    report = reports.assignment_report(dataset, reports.ATSSPriorAssigner((320, 320)))
    rows = report.rows
    assert [(r["image_id"], r["gt"]) for r in rows] == [(1, 0), (1, 1), (1, 2), (2, 0)]
    assert rows[0]["box"] == [50.0, 50.0, 150.0, 150.0] and rows[0]["size"] == "large"  # halved to the input
    # the 6 x 6 box at (205, 205)-(211, 211) lies between the stride-8 and stride-16 cell centres
    assert rows[1]["width"] == 6.0 and rows[1]["size"] == "small" and rows[1]["num_pos"] == 0
    # the 120 x 16 strip (a wide gt) gets none either
    assert report.unassigned() == [rows[1], rows[2]]
    assert rows[0]["num_pos"] > 0 and sum(rows[0]["pos_per_level"]) == rows[0]["num_pos"]
    assert 0 < rows[1]["best_iou"] < 0.1 and rows[1]["best_level"] == "stride 8"
    summary = report.summary()
    assert summary["size"]["small"] == {"gts": 1, "no_positive": 1}
    assert summary["no_positive"] == 2 and summary["gts"] == 4
    assert summary["aspect"]["wide"] == {"gts": 1, "no_positive": 1}
    assert rows[2]["aspect"] == "wide" and rows[3]["aspect"] == "tall"
    text = report.table()
    assert "<- no positive" in text and "small 1/1" in text
    json.dumps(report.to_dict())  # plain Python values only


def test_max_iou_report_and_side_by_side(dataset):
    generator = AnchorGenerator(((32,), (64,), (128,)), ((0.5, 1.0, 2.0),) * 3)
    matcher = reports.MaxIoUPriorAssigner.from_anchor_generator(generator, (320, 320), (8, 16, 32))
    assert matcher.priors.shape == (3 * (40 * 40 + 20 * 20 + 10 * 10), 4)
    atss = reports.assignment_report(dataset, reports.ATSSPriorAssigner((320, 320)))
    iou = reports.assignment_report(dataset, matcher)
    # with low-quality matches every gt keeps at least its best anchor here, the 6 x 6 speck included
    assert [r["num_pos"] > 0 for r in iou.rows] == [True, True, True, True]
    text = reports.compare_reports([atss, iou])
    assert "no positive, size small: [0] 1/1 | [1] 0/1" in text
    strict = reports.MaxIoUPriorAssigner.from_anchor_generator(generator, (320, 320), (8, 16, 32),
                                                               allow_low_quality_matches=False)
    assert reports.assignment_report(dataset, strict).rows[1]["num_pos"] == 0
    with pytest.raises(ValueError, match="same gts"):
        reports.compare_reports([atss, reports.assignment_report(dataset, matcher, indices=[0])])


def test_bad_inputs_name_what_was_expected():
    with pytest.raises(ValueError, match="multiples of every stride"):
        reports.ATSSPriorAssigner((300, 300))
    with pytest.raises(ValueError, match="sum to the 4 anchors"):
        reports.MaxIoUPriorAssigner(torch.zeros(4, 4), [3], (32, 32))
    with pytest.raises(ValueError, match="'size' or 'aspect'"):
        reports.plot_buckets(None, [], key="colour")


def test_plots_and_browse_draw(dataset):
    report = reports.assignment_report(dataset, reports.ATSSPriorAssigner((320, 320)))
    fig, axes = plt.subplots(1, 4)
    assert reports.plot_report(axes[0], report) is axes[0]
    assert len(axes[0].collections[0].get_offsets()) == 4
    reports.plot_buckets(axes[1], [report, report])
    assert len(axes[1].patches) == 6
    browse.browse_dataset(axes[2:], dataset, [0, 1])
    assert len(axes[2].patches) == 3 and "3 boxes" in axes[2].get_title()
    plt.close(fig)


def test_show_predictions_and_coco_results(dataset):
    image, target = dataset[1]
    results = [{"image_id": 2, "category_id": 2, "bbox": [50, 20, 40, 160], "score": 0.9},
               {"image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.2},
               {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.8}]
    prediction = browse.prediction_from_coco_results(results, 2, dataset.category_id_to_label)
    torch.testing.assert_close(prediction["boxes"][0], torch.tensor([50.0, 20.0, 90.0, 180.0]))
    fig, (ax_gt, ax_pred) = plt.subplots(1, 2)
    browse.show_predictions(ax_gt, ax_pred, image, target, prediction, dataset.class_names, score_thresh=0.5)
    assert "1 predictions with score >= 0.5; 1 of 1 gts found" == ax_pred.get_title()
    with pytest.raises(ValueError, match="missing 'scores'"):
        browse.show_predictions(ax_gt, ax_pred, image, target, {"boxes": prediction["boxes"], "labels": prediction["labels"]})
    plt.close(fig)


# ---------------------------------------------------------------------------- figure regression
PHOTOS = CocoDetection(DATA_DIR / "photos", DATA_DIR / "photos" / "annotations.json")


@pytest.mark.mpl_image_compare(baseline_dir="baseline", style="default", tolerance=2, savefig_kwargs={"dpi": 60})
def test_figure_report_and_buckets():
    report = reports.assignment_report(PHOTOS, reports.ATSSPriorAssigner(input_size=(320, 320)))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    reports.plot_report(axes[0], report)
    reports.plot_buckets(axes[1], [report], key="size")
    fig.tight_layout()
    return fig


@pytest.mark.mpl_image_compare(baseline_dir="baseline", style="default", tolerance=2, savefig_kwargs={"dpi": 60})
def test_figure_gt_next_to_predictions():
    image, target = PHOTOS[0]
    prediction = {"boxes": torch.tensor([[170.0, 10, 400, 300], [300, 50, 430, 320]]),
                  "labels": torch.tensor([3, 4]), "scores": torch.tensor([0.9, 0.3])}
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    browse.show_predictions(axes[0], axes[1], image, target, prediction, class_names=PHOTOS.class_names,
                            score_thresh=0.5)
    fig.tight_layout()
    return fig
