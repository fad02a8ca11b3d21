import contextlib
import copy
import io
import json
import math

import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detviz.datasets import CocoDetection
from detviz.datasets.synthetic import make_dataset
from detviz.evaluation import STAT_NAMES, evaluate_coco, precision_recall_curves, to_coco_results
from tests.evaluation.conftest import coco_from_dataset

CATEGORIES = [{"id": 3, "name": "car"}, {"id": 7, "name": "dog"}, {"id": 9, "name": "person"}]  # no person boxes


def _load(tmp_path, coco_dict, name="gt.json"):
    path = tmp_path / name
    path.write_text(json.dumps(coco_dict))
    dataset = CocoDetection(tmp_path, path)  # reads only the json until an item is indexed
    return dataset, path


@pytest.fixture
def hand_made(tmp_path):
    images = [{"id": 5, "file_name": "a.png", "width": 200, "height": 100},
              {"id": 9, "file_name": "b.png", "width": 120, "height": 120}]
    annotations = [
        {"id": 1, "image_id": 5, "category_id": 3, "bbox": [10, 10, 50, 40], "area": 2000, "iscrowd": 0},
        {"id": 2, "image_id": 5, "category_id": 7, "bbox": [100, 20, 60, 60], "area": 3600, "iscrowd": 0},
        {"id": 3, "image_id": 9, "category_id": 3, "bbox": [0, 0, 100, 100], "area": 10000, "iscrowd": 0},
    ]
    return _load(tmp_path, {"images": images, "annotations": annotations, "categories": CATEGORIES})


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    _, coco = make_dataset(num_images=4, seed=1, size=96, empty_fraction=0.25)
    assert len(coco["annotations"]) >= 4 and len({a["category_id"] for a in coco["annotations"]}) >= 2
    return _load(tmp_path_factory.mktemp("synthetic"), coco)


def _ground_truth_predictions(dataset, shift=0.0):
    """Each image's ground-truth boxes as predictions, moved right by ``shift`` times their width."""
    predictions = []
    for image_id in dataset.image_ids:
        anns = dataset.coco.loadAnns(dataset.coco.getAnnIds(imgIds=[image_id]))
        boxes = torch.tensor([[x + shift * w, y, x + w + shift * w, y + h] for x, y, w, h in
                              (a["bbox"] for a in anns)], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([dataset.category_id_to_label[a["category_id"]] for a in anns], dtype=torch.int64)
        scores = torch.linspace(1.0, 0.5, len(anns)) if shift else torch.ones(len(anns))
        predictions.append({"boxes": boxes, "labels": labels, "scores": scores})
    return predictions


def _raw_cocoeval(ann_file, results_file):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(ann_file))
        cocoeval = COCOeval(coco_gt, coco_gt.loadRes(str(results_file)), "bbox")
        cocoeval.evaluate()
        cocoeval.accumulate()
        cocoeval.summarize()
    return cocoeval


# ---------------------------------------------------------------- to_coco_results

def test_to_coco_results_converts_xyxy_to_rounded_xywh_and_category_ids():
    predictions = [{"boxes": torch.tensor([[10.0, 20.0, 40.0, 60.123456]]), "labels": torch.tensor([1]),
                    "scores": torch.tensor([0.75])},
                   {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, dtype=np.int64), "scores": np.zeros(0)},
                   {"boxes": np.array([[1.004, 2.0, 3.0, 2.0]]), "labels": [0], "scores": [0.5]}]
    results = to_coco_results(predictions, torch.tensor([5, 9, 11]), {0: 3, 1: 7})
    assert results == [{"image_id": 5, "category_id": 7, "bbox": [10.0, 20.0, 30.0, 40.12], "score": 0.75},
                       {"image_id": 11, "category_id": 3, "bbox": [1.0, 2.0, 2.0, 0.0], "score": 0.5}]
    assert type(results[0]["image_id"]) is int and type(results[0]["category_id"]) is int
    assert_array_equal(predictions[2]["boxes"], [[1.004, 2.0, 3.0, 2.0]])  # inputs untouched


@pytest.mark.parametrize("prediction, image_ids, match", [
    ({"boxes": torch.zeros(1, 4), "labels": torch.tensor([2]), "scores": torch.ones(1)}, [1],
     r"labels \[2\] without a COCO category; label_to_category_id knows labels \[0, 1\]"),
    ({"boxes": torch.zeros(1, 4), "labels": torch.tensor([0]), "scores": torch.ones(1)}, [1, 2],
     "one image id per prediction: got 1 predictions and 2 image ids"),
    ({"boxes": torch.zeros(2, 5), "labels": torch.zeros(2), "scores": torch.ones(2)}, [1],
     r"\['boxes'\] must have shape \[P, 4\] \(xyxy\), got \[2, 5\]"),
    ({"boxes": torch.zeros(4), "labels": torch.zeros(1), "scores": torch.ones(1)}, [1],
     r"must have shape \[P, 4\] \(xyxy\), got \[4\]"),
    ({"boxes": torch.zeros(2, 4), "labels": torch.zeros(1), "scores": torch.ones(2)}, [1],
     r"labels and scores must have shape \[P\] with P = 2 boxes, got labels \[1\]"),
    ({"boxes": torch.tensor([[5.0, 0, 1, 1]]), "labels": torch.zeros(1), "scores": torch.ones(1)}, [1],
     "must be xyxy with x2 >= x1 and y2 >= y1"),
    ({"boxes": torch.tensor([[0.0, 0, math.nan, 1]]), "labels": torch.zeros(1), "scores": torch.ones(1)}, [1],
     "must be finite"),
    ({"boxes": torch.zeros(1, 4), "labels": torch.zeros(1)}, [1],
     r"predictions\[0\] must be dict\(boxes=\[P, 4\] xyxy, labels=\[P\], scores=\[P\]\), got \['boxes', 'labels'\]"),
])
def test_to_coco_results_rejects_bad_inputs(prediction, image_ids, match):
    with pytest.raises(ValueError, match=match):
        to_coco_results([prediction], image_ids, {0: 3, 1: 7})


# ---------------------------------------------------------------- evaluate_coco

def test_perfect_predictions_give_map_one(synthetic):
    dataset, _ = synthetic
    results = to_coco_results(_ground_truth_predictions(dataset), dataset.image_ids, dataset.label_to_category_id)
    metrics = evaluate_coco(dataset.coco, results)
    # pycocotools divides by tp + fp + eps, so a perfect precision reads 1 - 2e-16
    for name in ("mAP", "AP50", "AP75", "AP_small", "AP_medium", "AR10", "AR100"):
        assert metrics[name] == pytest.approx(1.0, abs=1e-12), name
    present = {dataset.coco.cats[a["category_id"]]["name"] for a in dataset.coco.anns.values()}
    assert {name for name, ap in metrics["per_class"].items() if ap == pytest.approx(1.0, abs=1e-12)} == present
    assert all(math.isnan(ap) for name, ap in metrics["per_class"].items() if name not in present)
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 1.000" in metrics["summary_text"]


def test_shifted_boxes_match_pycocotools_run_directly(synthetic, tmp_path):
    dataset, ann_file = synthetic
    predictions = _ground_truth_predictions(dataset, shift=0.2)
    results = to_coco_results(predictions, dataset.image_ids, dataset.label_to_category_id)
    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps(results))
    raw = _raw_cocoeval(ann_file, results_file)

    metrics = evaluate_coco(dataset.coco, results)
    assert [metrics[name] for name in STAT_NAMES] == raw.stats.tolist()
    assert 0.0 < metrics["mAP"] < metrics["AP50"] <= 1.0  # the shift costs AP at strict IoUs only
    assert metrics["summary_text"].splitlines()[0].startswith(" Average Precision  (AP) @[ IoU=0.50:0.95")
    assert all("id" not in r and "area" not in r for r in results)  # loadRes worked on a copy
    for k, category_id in enumerate(raw.params.catIds):
        p = raw.eval["precision"][:, :, k, 0, 2]  # [T, R] at area "all", maxDets 100
        expected = p[p > -1].mean() if (p > -1).any() else math.nan
        assert metrics["per_class"][dataset.coco.cats[category_id]["name"]] == pytest.approx(expected, nan_ok=True)

    curves = precision_recall_curves(metrics, iou=0.75)
    assert list(curves) == [c["name"] for c in dataset.coco.dataset["categories"]]
    for k, (recall, precision) in enumerate(curves.values()):
        expected = raw.eval["precision"][5, :, k, 0, 2].astype(np.float64)  # iouThrs[5] = 0.75
        expected[expected == -1] = np.nan
        assert_array_equal(recall, np.linspace(0, 1, 101))
        assert_array_equal(precision, expected)


def test_hand_computed_ap_and_a_class_without_predictions(hand_made):
    dataset, _ = hand_made  # labels: car 0, dog 1, person 2 (no ground truth)
    predictions = [
        {"boxes": torch.tensor([[10.0, 10, 60, 50], [150, 0, 190, 30]]), "labels": torch.tensor([0, 0]),
         "scores": torch.tensor([0.9, 0.95])},  # a hit and a higher-scored miss; no dog predicted
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)},
    ]
    results = to_coco_results(predictions, dataset.image_ids, dataset.label_to_category_id)
    metrics = evaluate_coco(dataset.coco, results)
    # car: 2 ground-truth boxes; ranked [miss, hit] -> precision 1/2 at recall 1/2, then nothing.
    # Interpolated precision is 0.5 at the 51 recall thresholds 0.00..0.50 and 0 at the other 50.
    car_ap = 0.5 * 51 / 101
    assert metrics["per_class"]["car"] == pytest.approx(car_ap)
    assert metrics["per_class"]["dog"] == 0.0
    assert math.isnan(metrics["per_class"]["person"])
    assert metrics["mAP"] == pytest.approx((car_ap + 0.0) / 2)  # person has no ground truth: left out
    assert metrics["AR100"] == pytest.approx(0.25)  # car recall 1/2, dog recall 0

    recall, precision = precision_recall_curves(metrics["cocoeval"])["car"]  # a COCOeval works too
    assert_array_equal(precision, np.where(recall <= 0.5, 0.5, 0.0))
    assert_array_equal(precision_recall_curves(metrics)["dog"][1], np.zeros(101))


def test_empty_predictions_give_zeros_with_a_note(hand_made):
    dataset, _ = hand_made
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)}] * 2
    results = to_coco_results(empty, dataset.image_ids, dataset.label_to_category_id)
    assert results == []
    metrics = evaluate_coco(dataset.coco, results)
    assert {name: metrics[name] for name in STAT_NAMES} == {name: 0.0 for name in STAT_NAMES}
    assert metrics["per_class"]["car"] == 0.0 and metrics["per_class"]["dog"] == 0.0
    assert math.isnan(metrics["per_class"]["person"])
    assert "No detections" in metrics["summary_text"] and "loadRes" in metrics["summary_text"]
    recall, precision = precision_recall_curves(metrics)["car"]
    assert recall.shape == (101,)
    assert_array_equal(precision, np.zeros(101))


def test_evaluate_rejects_bad_inputs(hand_made):
    dataset, _ = hand_made
    good = [{"image_id": 5, "category_id": 3, "bbox": [10.0, 10.0, 50.0, 40.0], "score": 1.0}]
    with pytest.raises(ValueError, match=r"iou_type must be one of \('bbox', 'segm'\), got 'keypoints'"):
        evaluate_coco(dataset.coco, good, iou_type="keypoints")
    with pytest.raises(ValueError, match=r"image ids \[1234\] that are not in the ground truth"):
        evaluate_coco(dataset.coco, [{**good[0], "image_id": 1234}])
    with pytest.raises(ValueError, match="results must be a list of COCO result dicts, got dict"):
        evaluate_coco(dataset.coco, good[0])
    metrics = evaluate_coco(dataset.coco, good)
    with pytest.raises(ValueError, match=r"iou must be one of the evaluated thresholds \[0.5, 0.55, .*0.95\], got 0.3"):
        precision_recall_curves(metrics, iou=0.3)
    with pytest.raises(ValueError, match="need an accumulated COCOeval"):
        precision_recall_curves({"mAP": 1.0})


def _segm_ground_truth():
    """One 100 x 80 image with two polygon objects (a square and a triangle)."""
    square, triangle = [10.0, 10.0, 50.0, 10.0, 50.0, 50.0, 10.0, 50.0], [60.0, 70.0, 90.0, 70.0, 75.0, 40.0]
    return coco_from_dataset({
        "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 80}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [{"id": k + 1, "image_id": 1, "category_id": 1, "segmentation": [polygon],
                         "area": area, "bbox": bbox, "iscrowd": 0}
                        for k, (polygon, area, bbox) in enumerate([(square, 1600.0, [10.0, 10.0, 40.0, 40.0]),
                                                                   (triangle, 450.0, [60.0, 40.0, 30.0, 30.0])])]})


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_evaluate_coco_leaves_the_callers_results_as_they_were(iou_type):
    """loadRes and COCOeval add keys to each result dict (id, area, iscrowd, segmentation, and for segm a
    bbox and an RLE): evaluate_coco hands them copies of the dicts, and their lists are only read."""
    gt = _segm_ground_truth()
    if iou_type == "bbox":
        results = [{"image_id": 1, "category_id": 1, "bbox": [11.0, 9.0, 40.0, 41.0], "score": 0.9},
                   {"image_id": 1, "category_id": 1, "bbox": [58.0, 41.0, 30.0, 30.0], "score": 0.6}]
    else:
        rows, cols = np.arange(80)[:, None], np.arange(100)[None, :]
        square = mask_utils.encode(np.asfortranarray((rows >= 12) & (rows < 50) & (cols >= 10) & (cols < 48),
                                                     dtype=np.uint8))
        square["counts"] = square["counts"].decode("ascii")  # as a results json holds it
        triangle = mask_utils.merge(mask_utils.frPyObjects([[60.0, 70.0, 90.0, 70.0, 75.0, 42.0]], 80, 100))  # bytes
        results = [{"image_id": 1, "category_id": 1, "segmentation": square, "score": 0.9},
                   {"image_id": 1, "category_id": 1, "segmentation": triangle, "score": 0.6}]
    before = copy.deepcopy(results)
    nested = [list(r.values()) for r in results]
    metrics = evaluate_coco(gt, results, iou_type=iou_type)
    assert 0.0 < metrics["mAP"] <= 1.0  # the detections were scored
    assert results == before  # no key added, no value changed
    assert [list(r.values()) for r in results] == nested
    assert all(a is b for r, values in zip(results, nested) for a, b in zip(r.values(), values))  # same objects
