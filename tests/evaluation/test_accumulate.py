import contextlib
import copy
import io
import math

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from pycocotools.cocoeval import COCOeval

from detviz.evaluation import STAT_NAMES, evaluate_coco, precision_recall_curves
from detviz.evaluation.accumulate import coco_metrics
from tests.evaluation.conftest import coco_from_dataset


def _cocoeval(dataset: dict, results: list) -> COCOeval:
    """pycocotools, as its users run it, on copies of the inputs."""
    gt = coco_from_dataset(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        cocoeval = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), "bbox")
        cocoeval.evaluate()
        cocoeval.accumulate()
        cocoeval.summarize()
    return cocoeval


def _random_case(rng: np.random.Generator, num_images: int = 12, num_categories: int = 4):
    """A ground truth and results with what COCOeval's rules turn on: crowds, areas on and around
    the range edges 32^2 and 96^2, an area field unlike w * h, score ties within and across images,
    more than 100 detections in one image-category, images and categories listed out of id order,
    a category without gts, detections on copies of gts (true positives at high IoU)."""
    image_ids = rng.permutation(np.arange(1, num_images + 1) * 7).tolist()
    category_ids = rng.permutation(np.arange(1, num_categories + 1) * 3).tolist()
    images = [{"id": i, "width": 300, "height": 300} for i in image_ids]
    categories = [{"id": c, "name": f"class{c}"} for c in category_ids]
    annotations = []
    for image_id in image_ids:
        for _ in range(rng.integers(0, 6)):
            side = float(rng.choice([20.0, 32.0, 50.0, 96.0, 120.0, rng.uniform(5, 150)]))
            box = [float(rng.uniform(0, 150)), float(rng.uniform(0, 150)), side, float(rng.choice([side, 1024 / side]))]
            area = box[2] * box[3] if rng.random() < 0.8 else float(rng.uniform(0, 20000))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(rng.choice(category_ids[:-1])), "bbox": box, "area": area,
                                "iscrowd": int(rng.random() < 0.1)})
    results = []
    for ann in annotations:  # near copies: true positives at some thresholds, and confusions
        for _ in range(rng.integers(0, 3)):
            x, y, w, h = ann["bbox"]
            jitter = rng.normal(0, 0.08 * w, size=4)
            results.append({"image_id": ann["image_id"], "category_id": ann["category_id"] if rng.random() < 0.8
                            else int(rng.choice(category_ids)),
                            "bbox": [x + jitter[0], y + jitter[1], max(w + jitter[2], 1.0), max(h + jitter[3], 1.0)],
                            "score": float(rng.choice([0.9, 0.5, rng.random()]))})
    for image_id in image_ids:  # background detections
        for _ in range(rng.integers(0, 15)):
            results.append({"image_id": image_id, "category_id": int(rng.choice(category_ids)),
                            "bbox": [float(v) for v in rng.uniform(0, 150, size=2)] + [float(v) for v in
                                                                                      rng.uniform(1, 130, size=2)],
                            "score": float(rng.choice([0.3, rng.random()]))})
    crowded = (image_ids[0], category_ids[0])
    for _ in range(110):  # one image-category past maxDets = 100
        results.append({"image_id": crowded[0], "category_id": crowded[1],
                        "bbox": [float(v) for v in rng.uniform(0, 100, size=2)] + [float(v) for v in
                                                                                  rng.uniform(10, 100, size=2)],
                        "score": float(rng.choice([0.2, rng.random()]))})
    order = rng.permutation(len(results))
    return {"images": images, "categories": categories, "annotations": annotations}, [results[i] for i in order]


@pytest.mark.parametrize("seed", range(25))
def test_equals_pycocotools_on_random_cases(seed):
    dataset, results = _random_case(np.random.default_rng(seed))
    reference = _cocoeval(dataset, results)
    metrics = coco_metrics(coco_from_dataset(dataset), results)
    assert_array_equal(metrics["precision"], reference.eval["precision"])  # every entry, bit for bit
    assert_array_equal(metrics["recall"], reference.eval["recall"])
    assert [metrics[name] for name in STAT_NAMES] == reference.stats.tolist()
    assert metrics["category_ids"] == reference.params.catIds


def test_equals_evaluate_coco_including_the_table_and_per_class_ap():
    dataset, results = _random_case(np.random.default_rng(100))
    coco = coco_from_dataset(dataset)
    reference, metrics = evaluate_coco(coco, results), coco_metrics(coco, results)
    assert metrics["summary_text"] == reference["summary_text"]
    assert metrics["per_class"].keys() == reference["per_class"].keys()
    for name, value in reference["per_class"].items():
        assert (math.isnan(value) and math.isnan(metrics["per_class"][name])) or metrics["per_class"][name] == value
    assert any(math.isnan(v) for v in metrics["per_class"].values())  # the category without gts
    curves, reference_curves = precision_recall_curves(metrics), precision_recall_curves(reference)
    assert curves.keys() == reference_curves.keys()
    for name, (recall, precision) in reference_curves.items():
        assert_array_equal(curves[name][0], recall)
        assert_array_equal(curves[name][1], precision)


def test_hand_computed_average_precision():
    # One image, one class, two gts; detections by score: TP, FP, TP. Precision 1, 1/2, 2/3 at
    # recall 1/2, 1/2, 1 -> made non-increasing from the right: 1 up to recall 0.5, 2/3 beyond.
    dataset = {"images": [{"id": 1}], "categories": [{"id": 1, "name": "cat"}],
               "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100},
                               {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 10, 10], "area": 100}]}
    results = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},
               {"image_id": 1, "category_id": 1, "bbox": [80, 80, 10, 10], "score": 0.8},
               {"image_id": 1, "category_id": 1, "bbox": [50, 50, 10, 10], "score": 0.7}]
    metrics = coco_metrics(coco_from_dataset(dataset), results)
    expected = (51 * 1.0 + 50 * (2 / 3)) / 101  # recall points 0..0.50 and 0.51..1.00
    assert metrics["AP50"] == pytest.approx(expected, abs=1e-12)
    assert metrics["mAP"] == pytest.approx(expected, abs=1e-12)  # exact boxes: the same at every IoU
    assert metrics["AR1"] == 0.5 and metrics["AR10"] == 1.0
    assert metrics["AP_small"] == pytest.approx(expected, abs=1e-12)
    assert metrics["AP_medium"] == -1.0 and metrics["AR_large"] == -1.0  # no gt of those sizes


def test_empty_results_are_scored_not_special_cased():
    dataset, _ = _random_case(np.random.default_rng(3))
    metrics = coco_metrics(coco_from_dataset(dataset), [])
    assert metrics["mAP"] == 0.0 and metrics["AR100"] == 0.0
    regular = [a for a in dataset["annotations"] if not a["iscrowd"] and a["area"] <= 32 ** 2]
    assert metrics["AP_small"] == (0.0 if regular else -1.0)


def test_annotation_id_zero_is_a_true_positive_where_cocoeval_misreads_it():
    dataset = {"images": [{"id": 1}], "categories": [{"id": 1, "name": "cat"}],
               "annotations": [{"id": 0, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100,
                                "iscrowd": 0}]}
    results = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9}]
    assert coco_metrics(coco_from_dataset(dataset), results)["AP50"] == pytest.approx(1.0)
    assert _cocoeval(dataset, results).stats[1] == 0.0  # COCOeval: matched to id 0, counted as a false positive


def test_bad_entries_are_named():
    dataset, results = _random_case(np.random.default_rng(4))
    with pytest.raises(ValueError, match=r"results\[2\]: image_id 12345 is not an image"):
        coco_metrics(coco_from_dataset(dataset), results[:2] + [dict(results[2], image_id=12345)])
    with pytest.raises(ValueError, match=r"results\[0\]: score must be a finite number"):
        coco_metrics(coco_from_dataset(dataset), [dict(results[0], score=math.nan)])
    with pytest.raises(TypeError, match="results must be a list"):
        coco_metrics(coco_from_dataset(dataset), {"bbox": [0, 0, 1, 1]})
