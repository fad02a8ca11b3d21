"""detviz.analysis.errors: every analysis of one results list, its summary and its per-object rows."""
import json
import math

import pytest
from pycocotools.coco import COCO

from detviz.analysis.errors import analyze_results, object_rows, summary
from detviz.analysis.missed import REASONS, PriorEvidence
from detviz.evaluation import evaluate_coco
from detviz.evaluation.lrp import optimal_lrp
from detviz.evaluation.tide import tide_errors


@pytest.fixture
def gt(tmp_path):
    """Two images, two classes: a found box, a confused one, a duplicate and a background detection."""
    data = {"images": [{"id": 1, "file_name": "1.png", "width": 100, "height": 100},
                       {"id": 2, "file_name": "2.png", "width": 100, "height": 100}],
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 30, 30], "area": 900, "iscrowd": 0},
                {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 50, 30, 30], "area": 900, "iscrowd": 0},
                {"id": 3, "image_id": 2, "category_id": 2, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    return COCO(str(path))


RESULTS = [
    {"image_id": 1, "category_id": 1, "bbox": [0, 0, 30, 30], "score": 0.9},    # found
    {"image_id": 1, "category_id": 1, "bbox": [1, 0, 30, 30], "score": 0.8},    # duplicate of it
    {"image_id": 1, "category_id": 1, "bbox": [50, 50, 30, 30], "score": 0.7},  # the dog called a cat
    {"image_id": 2, "category_id": 2, "bbox": [10, 10, 40, 40], "score": 0.2},  # found, below the operating point
    {"image_id": 2, "category_id": 1, "bbox": [70, 70, 20, 20], "score": 0.6},  # background
]


def test_summary_agrees_with_each_analysis(gt):
    analysis = analyze_results(gt, RESULTS)
    numbers = summary(analysis)
    assert numbers["mAP"] == pytest.approx(evaluate_coco(gt, RESULTS)["mAP"])
    assert numbers["errors"] == pytest.approx({**tide_errors(gt, RESULTS).errors, **tide_errors(gt, RESULTS).special},
                                              abs=1e-4)
    assert numbers["errors"]["Cls"] > 0  # the dupe and the background come after a TP of 1.0 precision: dAP 0
    # at score >= 0.3 the 0.2 dog is dropped: the image-2 dog is missed, with nothing of its class near
    assert numbers["missed"]["total"] == 2
    assert numbers["missed"]["confused"] == 1 and numbers["missed"]["no_detection"] == 1
    assert sum(numbers["missed"][r] for r in REASONS) == numbers["missed"]["total"]
    assert numbers["per_class"]["dog"]["missed"] == 2 and numbers["per_class"]["cat"]["missed"] == 0
    assert numbers["oLRP"] == pytest.approx(optimal_lrp(gt, RESULTS).molrp)  # LRP from the shared matching
    assert 0 <= numbers["oLRP"] <= 1
    json.dumps(numbers, allow_nan=False)  # strict JSON


def test_the_operating_point_moves_the_missed_gts_only(gt):
    low = summary(analyze_results(gt, RESULTS, score_thresh=0.1))
    high = summary(analyze_results(gt, RESULTS, score_thresh=0.3))
    assert low["mAP"] == high["mAP"] and low["errors"] == high["errors"]
    assert low["missed"]["total"] == 1 < high["missed"]["total"]


def test_evidence_tells_never_assigned_from_low_score(gt):
    evidence = {1: PriorEvidence(3, 0.9), 2: PriorEvidence(0, math.nan), 3: PriorEvidence(2, 0.2)}
    numbers = summary(analyze_results(gt, RESULTS, evidence=evidence))
    assert numbers["missed"]["never_assigned"] == 1 and numbers["missed"]["low_score"] == 1
    assert numbers["missed_uses_model"] is True


def test_rows_join_tide_types_and_reasons(gt):
    rows = object_rows(analyze_results(gt, RESULTS))
    detections = [r for r in rows if r["kind"] == "detection"]
    gts = {r["ann_id"]: r for r in rows if r["kind"] == "gt"}
    assert [r["tide_type"] for r in detections] == ["TP", "Dupe", "Cls", "TP", "Bkg"]
    assert gts[2]["missed_reason"] == "confused" and gts[1]["missed_reason"] == ""
    assert gts[1]["class_name"] == "cat"


def test_bad_input_names_the_entry(gt):
    with pytest.raises(ValueError, match="score_thresh must be a number in \\[0, 1\\)"):
        analyze_results(gt, RESULTS, score_thresh=1.0)
    bad = [dict(RESULTS[0], image_id=9)]
    with pytest.raises(ValueError, match=r"results\[0\].*image_id.*9"):
        analyze_results(gt, bad)
    with pytest.raises(ValueError, match=r"results\[0\].*score"):
        analyze_results(gt, [dict(RESULTS[0], score=float("nan"))])
