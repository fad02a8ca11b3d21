import contextlib
import copy
import csv
import io
import json
import math

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval, Params

import detviz._io
from detviz.evaluation import matching
from detviz.evaluation.matching import IOU_THRESHOLDS, ObjectRecords, coco_box_iou, match_detections
from tests.evaluation.conftest import coco_from_dataset

AREA_ALL = [0, 1e10]  # COCOeval's areaRng "all", as it appears in evalImgs entries


def _dataset(boxes, images=(1,), categories=(1, 2)):
    """boxes: (image_id, category_id, [x, y, w, h], iscrowd) per annotation, ids 1, 2, ..."""
    return {"images": [{"id": i, "width": 100, "height": 100} for i in images],
            "categories": [{"id": c, "name": f"c{c}"} for c in categories],
            "annotations": [{"id": k + 1, "image_id": image, "category_id": cat, "bbox": box,
                             "area": float(box[2] * box[3]), "iscrowd": crowd}
                            for k, (image, cat, box, crowd) in enumerate(boxes)]}


def _result(image_id, category_id, bbox, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


def _eval_images(dataset: dict, results: list) -> list[dict]:
    """COCOeval.evaluate() (bbox, default params) on copies; its entries for area range "all"."""
    gt = coco_from_dataset(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        cocoeval = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), "bbox")
        cocoeval.evaluate()
    return [e for e in cocoeval.evalImgs if e is not None and e["aRng"] == AREA_ALL]


def _assert_matches_cocoeval(dataset: dict, results: list, records: ObjectRecords) -> None:
    """Every evalImgs entry's dtMatches, gtMatches, dtIgnore, gtIgnore and dtIds order, at every threshold.
    loadRes numbers results 1..N in list order, so result id k is records.detections[k - 1]."""
    gts = {g.ann_id: g for g in records.gts}
    seen = set()
    for entry in _eval_images(dataset, results):
        for j, result_id in enumerate(entry["dtIds"]):
            det = records.detections[result_id - 1]
            seen.add(det.index)
            assert (det.evaluated, det.rank) == (True, j)
            assert det.matched == tuple(None if m == 0 else int(m) for m in entry["dtMatches"][:, j]), det
            assert det.ignored == tuple(bool(v) for v in entry["dtIgnore"][:, j]), det
        for j, ann_id in enumerate(entry["gtIds"]):
            gt = gts[ann_id]
            assert gt.matched == tuple(None if m == 0 else int(m) - 1 for m in entry["gtMatches"][:, j]), gt
            assert gt.ignored == bool(entry["gtIgnore"][j])
    assert seen == {d.index for d in records.detections if d.evaluated}
    assert all(d.matched == (None,) * 10 and not any(d.ignored) for d in records.detections if not d.evaluated)


def _random_gts(rng, image_id: int, first_id: int) -> list[dict]:
    """1-6 integer boxes; some are twins of an earlier one moved by 2 px (IoU ties for a detection
    half way) or crowds around it (a detection may prefer the regular gt to the crowd)."""
    anns = []
    for _ in range(rng.integers(1, 7)):
        x, y, w, h = (int(v) for v in rng.integers([5, 5, 2, 2], [70, 70, 30, 30]))
        category, crowd = int(rng.choice([7, 3, 11])), int(rng.random() < 0.1)
        if anns and rng.random() < 0.4:
            base = anns[rng.integers(len(anns))]
            (x, y, w, h), category = base["bbox"], base["category_id"]
            crowd = int(rng.random() < 0.4)
            x, y, w, h = (x - 4, y - 4, w + 8, h + 8) if crowd else (x + 2 * rng.integers(-1, 2), y, w, h)
        ann = {"id": first_id + len(anns), "image_id": image_id, "category_id": category,
               "bbox": [int(x), int(y), w, h], "area": float(w * h), "iscrowd": crowd}
        if rng.random() < 0.15:
            ann["ignore"] = 1  # COCOeval overwrites it with iscrowd
        anns.append(ann)
    return anns


def _random_detection(rng, image_id: int, own: list[dict]) -> dict:
    """Near a gt of the image (mostly its class), half way between two of its gts, or anywhere."""
    if own and rng.random() < 0.7:
        ann = own[rng.integers(len(own))]
        box = [int(v) for v in np.array(ann["bbox"]) + rng.integers(-3, 4, 4)]
        box[2:] = [max(0, v) for v in box[2:]]
        category = ann["category_id"] if rng.random() < 0.8 else int(rng.choice([7, 3, 11]))
        if rng.random() < 0.3:
            other = own[rng.integers(len(own))]
            box = ((np.array(ann["bbox"]) + np.array(other["bbox"])) / 2).tolist()
    else:
        box, category = rng.uniform(0, 60, 4).round(2).tolist(), int(rng.choice([7, 3, 11]))
    score = float(rng.choice([0.3, 0.6, 0.9])) if rng.random() < 0.3 else float(rng.random())
    return _result(image_id, category, box, score)


def _random_case(seed: int, num_images: int = 6, crowded_image_dets: int = 130):
    """Seeded images and categories (ids neither contiguous nor sorted) with crowd gts, gts carrying an
    ``ignore`` key, a gt whose area field is outside "all", overlapping gts, near-duplicate and exactly
    duplicated detections, tied scores, an image without gts, a detection of area > 1e10, and one
    image-category with more than 100 detections."""
    rng = np.random.default_rng(seed)
    images = [{"id": 40 - 3 * i, "width": 100, "height": 100} for i in range(num_images)]
    categories = [{"id": c, "name": str(c)} for c in (7, 3, 11)]
    anns = []
    for image in images[:-1]:  # the last image has no gts
        anns += _random_gts(rng, image["id"], first_id=100 + len(anns))
    anns[0]["area"] = 2e10  # outside area range "all": ignored, but not a crowd
    results = []
    for image in images:
        own = [a for a in anns if a["image_id"] == image["id"]]
        for _ in range(rng.integers(0, 40)):
            results.append(_random_detection(rng, image["id"], own))
            if rng.random() < 0.1:
                results.append(dict(results[-1]))  # an exact duplicate, same score
    results.append(_result(images[0]["id"], 7, [0.0, 0.0, 2e5, 2e5], 0.5))  # area 4e10, outside "all"
    for _ in range(crowded_image_dets):
        x, y = rng.uniform(0, 80, 2).round(1)
        results.append(_result(images[1]["id"], 3, [float(x), float(y), 15.0, 15.0], float(rng.random())))
    return {"images": images, "categories": categories, "annotations": anns}, results


# ---------------------------------------------------------------- the oracle: COCOeval.evalImgs

@pytest.mark.parametrize("seed", range(8))
def test_matches_cocoeval_on_generated_cases(seed):
    dataset, results = _random_case(seed)
    records = match_detections(coco_from_dataset(dataset), results)
    assert sum(not d.evaluated for d in records.detections) >= 30  # the > 100 rule was exercised
    _assert_matches_cocoeval(dataset, results, records)


def test_matches_cocoeval_when_image_categories_span_several_blocks(monkeypatch):
    monkeypatch.setattr(matching, "PAIRS_PER_BLOCK", 2)
    dataset, results = _random_case(11)
    _assert_matches_cocoeval(dataset, results, match_detections(coco_from_dataset(dataset), results))


def test_matches_cocoeval_with_fewer_max_dets():
    dataset, results = _random_case(3)
    records = match_detections(coco_from_dataset(dataset), results, max_dets=5)
    gt = coco_from_dataset(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        cocoeval = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), "bbox")
        cocoeval.params.maxDets = [1, 5]
        cocoeval.evaluate()
    for entry in (e for e in cocoeval.evalImgs if e is not None and e["aRng"] == AREA_ALL):
        assert len(entry["dtIds"]) <= 5
        for j, result_id in enumerate(entry["dtIds"]):
            det = records.detections[result_id - 1]
            assert det.matched == tuple(None if m == 0 else int(m) for m in entry["dtMatches"][:, j])
    assert max(d.rank for d in records.detections if d.evaluated) == 4


def test_thresholds_are_cocoevals():
    assert np.array_equal(np.array(IOU_THRESHOLDS), Params(iouType="bbox").iouThrs)  # bit for bit


def test_coco_box_iou_equals_pycocotools_bit_for_bit():
    rng = np.random.default_rng(0)
    dets = np.concatenate([rng.uniform(0, 50, (40, 2)), rng.uniform(0, 30, (40, 2))], axis=1)
    gts = np.concatenate([rng.uniform(0, 50, (25, 2)), rng.uniform(0, 30, (25, 2))], axis=1)
    gts[:3, 2] = 0.0  # zero-width gts
    crowd = rng.random(25) < 0.3
    expected = mask_utils.iou(dets.tolist(), gts.tolist(), crowd.astype(np.uint8).tolist())  # [D, G]
    assert np.array_equal(coco_box_iou(dets[:, None, :], gts[None, :, :], crowd[None, :]), expected)


# ---------------------------------------------------------------- hand-computed cases

def test_coco_box_iou_crowd_union_is_the_detection_area():
    # det [0, 0, 5, 10] on gt [0, 0, 10, 10]: intersection 50, det area 50, gt area 100
    iou = coco_box_iou(np.array([[0.0, 0, 5, 10]])[:, None], np.array([[0.0, 0, 10, 10]])[None], np.array([[True]]))
    assert iou.tolist() == [[1.0]]  # 50 / 50, where the plain IoU is 50 / 100
    plain = coco_box_iou(np.array([[0.0, 0, 5, 10]])[:, None], np.array([[0.0, 0, 10, 10]])[None], False)
    assert plain.tolist() == [[0.5]]
    apart = coco_box_iou(np.array([[0.0, 0, 0, 0]])[:, None], np.array([[0.0, 0, 0, 0]])[None], False)
    assert apart.tolist() == [[0.0]]  # two empty boxes: 0, not NaN


def test_crowd_gt_takes_several_detections_and_ignores_them():
    dataset = _dataset([(1, 1, [0, 0, 10, 10], 1)])
    results = [_result(1, 1, [0, 0, 5, 10], 0.9), _result(1, 1, [5, 0, 5, 10], 0.8)]
    records = match_detections(coco_from_dataset(dataset), results)
    assert [d.matched for d in records.detections] == [(1,) * 10, (1,) * 10]  # crowd IoU 50 / 50 = 1.0 each
    assert [d.ignored for d in records.detections] == [(True,) * 10, (True,) * 10]
    crowd = records.gts[0]
    assert (crowd.ignored, crowd.iscrowd, crowd.matched) == (True, True, (1,) * 10)  # the last detection
    assert records.tp_fp_fn(0.5) == {"iou": 0.5, "tp": 0, "fp": 0, "fn": 0, "ignored": 2}
    assert records.detections[0].best_gt_iou == 0.0 and records.detections[0].best_gt_ann_id is None
    assert crowd.best_same_iou == 0.5  # plain IoU 50 / 100
    _assert_matches_cocoeval(dataset, results, records)


def test_a_regular_gt_beats_a_crowd_and_the_next_detection_falls_to_the_crowd():
    dataset = _dataset([(1, 1, [0, 0, 10, 10], 0), (1, 1, [0, 0, 20, 20], 1)])
    results = [_result(1, 1, [0, 0, 10, 10], 0.9), _result(1, 1, [0, 0, 10, 10], 0.8)]
    records = match_detections(coco_from_dataset(dataset), results)
    first, second = records.detections
    assert (first.matched, first.ignored) == ((1,) * 10, (False,) * 10)  # IoU 1.0 with both; regular first
    assert (second.matched, second.ignored) == ((2,) * 10, (True,) * 10)  # crowd IoU 100 / 100
    assert records.tp_fp_fn(0.95) == {"iou": IOU_THRESHOLDS[-1], "tp": 1, "fp": 0, "fn": 0, "ignored": 1}
    _assert_matches_cocoeval(dataset, results, records)


def test_a_detection_takes_a_lower_iou_gt_when_its_best_is_taken():
    # A = [0, 0, 10, 10], B = [4, 0, 10, 10] (x 4..14). det1 = A exactly (IoU 1.0) takes A first.
    # det2 = [1, 0, 10, 10] (x 1..11): IoU with A = 90 / 110 = 0.818 (taken), with B = 70 / 130 = 0.538.
    dataset = _dataset([(1, 1, [0, 0, 10, 10], 0), (1, 1, [4, 0, 10, 10], 0)])
    results = [_result(1, 1, [1, 0, 10, 10], 0.8), _result(1, 1, [0, 0, 10, 10], 0.9)]
    records = match_detections(coco_from_dataset(dataset), results)
    det2, det1 = records.detections
    assert det1.matched == (1,) * 10 and det1.rank == 0 and det2.rank == 1
    assert det2.matched == (2,) + (None,) * 9  # only at 0.50: 0.538 < 0.55
    assert det2.best_gt_ann_id == 1 and det2.best_gt_iou == pytest.approx(90 / 110)
    assert det2.best_same_iou == pytest.approx(90 / 110)
    assert records.gts[1].matched == (0,) + (None,) * 9  # results index of det2
    assert records.tp_fp_fn(0.5) == {"iou": 0.5, "tp": 2, "fp": 0, "fn": 0, "ignored": 0}
    assert records.tp_fp_fn(0.55) == {"iou": IOU_THRESHOLDS[1], "tp": 1, "fp": 1, "fn": 1, "ignored": 0}
    _assert_matches_cocoeval(dataset, results, records)


def test_an_iou_tie_goes_to_the_later_gt():
    # det [1, 0, 10, 10] overlaps A = [0, 0, 10, 10] and B = [2, 0, 10, 10] by 90 / 110 = 0.818 each
    dataset = _dataset([(1, 1, [0, 0, 10, 10], 0), (1, 1, [2, 0, 10, 10], 0)])
    results = [_result(1, 1, [1, 0, 10, 10], 0.9)]
    records = match_detections(coco_from_dataset(dataset), results)
    assert records.detections[0].matched == (2,) * 7 + (None,) * 3  # up to 0.80; 0.818 < 0.85
    _assert_matches_cocoeval(dataset, results, records)


def test_equal_scores_keep_results_order_and_a_duplicate_is_a_false_positive():
    dataset = _dataset([(1, 1, [0, 0, 10, 10], 0)])
    results = [_result(1, 1, [0, 0, 10, 10], 0.7), _result(1, 1, [0, 0, 10, 10], 0.7)]
    records = match_detections(coco_from_dataset(dataset), results)
    assert [d.rank for d in records.detections] == [0, 1]
    assert [d.matched[0] for d in records.detections] == [1, None]
    assert records.gts[0].matched == (0,) * 10
    assert records.tp_fp_fn() == {"iou": 0.5, "tp": 1, "fp": 1, "fn": 0, "ignored": 0}
    _assert_matches_cocoeval(dataset, results, records)


def test_an_ignore_key_without_iscrowd_changes_nothing():
    dataset = _dataset([(1, 1, [0, 0, 10, 10], 0)])
    dataset["annotations"][0]["ignore"] = 1
    results = [_result(1, 1, [0, 0, 10, 10], 0.7)]
    records = match_detections(coco_from_dataset(dataset), results)
    assert records.gts[0].ignored is False and records.detections[0].matched == (1,) * 10
    _assert_matches_cocoeval(dataset, results, records)


def test_only_max_dets_per_image_and_category_are_evaluated():
    dataset = _dataset([(1, 1, [0, 0, 10, 10], 0)])
    results = [_result(1, 1, [50, 50, 5, 5], 1.0 - i / 1000) for i in range(101)]  # 101 of class 1
    results += [_result(1, 2, [50, 50, 5, 5], 0.01)]  # class 2 has its own 100
    results += [_result(1, 1, [0, 0, 10, 10], 0.0001)]  # would match, but is 102nd by score
    records = match_detections(coco_from_dataset(dataset), results)
    assert [d.evaluated for d in records.detections] == [True] * 100 + [False, True, False]
    assert records.detections[-1].matched == (None,) * 10 and records.detections[-1].best_same_iou == 1.0
    assert records.tp_fp_fn() == {"iou": 0.5, "tp": 0, "fp": 101, "fn": 1, "ignored": 0}
    _assert_matches_cocoeval(dataset, results, records)
    assert match_detections(coco_from_dataset(dataset), results, max_dets=200).tp_fp_fn()["tp"] == 1


def test_best_overlaps_across_classes():
    # gt 1: class 1 at [0, 0, 10, 10]; the only detection is class 2 at [0, 0, 10, 5]: IoU 50 / 100
    dataset = _dataset([(1, 1, [0, 0, 10, 10], 0), (1, 2, [40, 40, 10, 10], 0)])
    results = [_result(1, 2, [0, 0, 10, 5], 0.9)]
    det = match_detections(coco_from_dataset(dataset), results).detections[0]
    gt1, gt2 = match_detections(coco_from_dataset(dataset), results).gts
    assert (det.best_gt_iou, det.best_gt_ann_id, det.best_gt_category_id, det.best_same_iou) == (0.5, 1, 1, 0.0)
    assert (gt1.best_same_iou, gt1.best_other_iou, gt1.best_other_category_id) == (0.0, 0.5, 2)
    assert (gt2.best_same_iou, gt2.best_other_iou, gt2.best_other_category_id) == (0.0, 0.0, None)
    assert det.box == (0.0, 0.0, 10.0, 5.0) and gt2.box == (40.0, 40.0, 50.0, 50.0)  # xyxy


def test_an_image_without_gts_and_empty_results():
    dataset = _dataset([(1, 1, [0, 0, 10, 10], 0), (1, 1, [30, 30, 10, 10], 1)], images=(1, 2))
    records = match_detections(coco_from_dataset(dataset), [_result(2, 1, [0, 0, 10, 10], 0.9)])
    det = records.detections[0]
    assert (det.matched, det.ignored, det.best_gt_iou, det.best_gt_ann_id) == ((None,) * 10, (False,) * 10, 0.0, None)
    assert records.tp_fp_fn() == {"iou": 0.5, "tp": 0, "fp": 1, "fn": 1, "ignored": 0}
    empty = match_detections(coco_from_dataset(dataset), [])
    assert empty.detections == [] and [g.matched for g in empty.gts] == [(None,) * 10] * 2
    assert empty.tp_fp_fn(0.75) == {"iou": 0.75, "tp": 0, "fp": 0, "fn": 1, "ignored": 0}  # the crowd is no FN
    no_gts = match_detections(coco_from_dataset(_dataset([])), [_result(1, 2, [0, 0, 1, 1], 0.5)])
    assert no_gts.gts == [] and no_gts.detections[0].matched == (None,) * 10


def test_inputs_are_not_modified_and_a_path_works(tmp_path):
    dataset, results = _random_case(5)
    coco, before = coco_from_dataset(dataset), copy.deepcopy(results)
    records = match_detections(coco, results)
    assert results == before and coco.dataset == dataset
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(dataset))
    assert match_detections(path, results) == records
    assert match_detections(str(path), results) == records


def test_generated_counts_add_up():
    dataset, results = _random_case(2)
    records = match_detections(coco_from_dataset(dataset), results)
    regular_gts = sum(not g.ignored for g in records.gts)
    evaluated = sum(d.evaluated for d in records.detections)
    for iou in IOU_THRESHOLDS:
        counts = records.tp_fp_fn(iou)
        assert counts["tp"] + counts["fn"] == regular_gts
        assert counts["tp"] + counts["fp"] + counts["ignored"] == evaluated
    with pytest.raises(ValueError, match=r"iou must be one of \[0.5, 0.55"):
        records.tp_fp_fn(0.52)


# ---------------------------------------------------------------- bad inputs

GOOD = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.5}


@pytest.mark.parametrize("entry, message", [
    ([0, 0, 10, 10], r"results\[1\] must be a dict with keys \['image_id', 'category_id', 'bbox', 'score'\]"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}, r"results\[1\] must be a dict .* got \['bbox'"),
    ({**GOOD, "image_id": 9}, r"results\[1\]: image_id 9 is not an image of the ground truth"),
    ({**GOOD, "image_id": [1]}, r"results\[1\]: image_id \[1\] is not an image"),
    ({**GOOD, "category_id": 5}, r"results\[1\]: category_id 5 is not a category of the ground truth"),
    ({**GOOD, "score": math.nan}, r"results\[1\]: score must be a finite number, got nan"),
    ({**GOOD, "score": math.inf}, r"results\[1\]: score must be a finite number, got inf"),
    ({**GOOD, "score": "0.5"}, r"results\[1\]: score must be a finite number, got '0.5'"),
    ({**GOOD, "score": None}, r"results\[1\]: score must be a finite number, got None"),
    ({**GOOD, "bbox": [0, 0, 10]}, r"results\[1\]: bbox must be 4 finite numbers \[x, y, w, h\], got \[0, 0, 10\]"),
    ({**GOOD, "bbox": [0, 0, 10, math.nan]}, r"results\[1\]: bbox must be 4 finite numbers"),
    ({**GOOD, "bbox": [0, 0, "10", 10]}, r"results\[1\]: bbox must be 4 finite numbers"),
    ({**GOOD, "bbox": [0, 0, -1, 10]}, r"results\[1\]: bbox must be \[x, y, w, h\] with w >= 0 and h >= 0"),
    ({**GOOD, "bbox": [5, 5, 10, 2]}, None),  # fine: only the next entry is bad
])
def test_bad_results_name_the_entry(entry, message):
    coco = coco_from_dataset(_dataset([(1, 1, [0, 0, 10, 10], 0)]))
    if message is None:
        assert len(match_detections(coco, [GOOD, entry]).detections) == 2
        return
    with pytest.raises(ValueError, match=message):
        match_detections(coco, [GOOD, entry, GOOD])


def test_other_bad_inputs():
    coco = coco_from_dataset(_dataset([(1, 1, [0, 0, 10, 10], 0)]))
    with pytest.raises(TypeError, match="results must be a list of COCO result dicts, got dict"):
        match_detections(coco, GOOD)
    with pytest.raises(TypeError, match="coco_gt must be a pycocotools COCO or the path of a COCO json, got dict"):
        match_detections(coco.dataset, [GOOD])
    for max_dets in (0, 2.5, True):
        with pytest.raises(ValueError, match="max_dets must be a positive int"):
            match_detections(coco, [GOOD], max_dets=max_dets)
    with pytest.raises(ValueError, match="not readable as float64"):
        match_detections(coco, [{**GOOD, "score": 10 ** 30}])  # a Python int numpy cannot hold
    bad_gt = _dataset([(1, 1, [0, 0, 10, 10], 0), (1, 1, [0, 0, 10, -2], 0)])
    with pytest.raises(ValueError, match=r"annotations\[1\]: bbox must be \[x, y, w, h\] with w >= 0"):
        match_detections(coco_from_dataset(bad_gt), [GOOD])
    unknown = _dataset([(1, 4, [0, 0, 10, 10], 0)])
    with pytest.raises(ValueError, match=r"annotations\[0\]: category_id 4 is not a category"):
        match_detections(coco_from_dataset(unknown), [])
    twice = _dataset([(1, 1, [0, 0, 10, 10], 0)] * 2)
    twice["annotations"][1]["id"] = 1
    with pytest.raises(ValueError, match="annotation ids must be unique"):
        match_detections(coco_from_dataset(twice), [])


# ---------------------------------------------------------------- exports

@pytest.fixture
def records():
    dataset = _dataset([(1, 1, [0, 0, 10, 10], 0), (1, 1, [4, 0, 10, 10], 0), (1, 2, [50, 50, 10, 10], 1)])
    results = [_result(1, 1, [1, 0, 10, 10], 0.8), _result(1, 1, [0, 0, 10, 10], 0.9)]
    return match_detections(coco_from_dataset(dataset), results)


def test_rows_are_flat_with_a_column_per_threshold(records):
    rows = records.to_rows()
    assert [row["kind"] for row in rows] == ["detection"] * 2 + ["gt"] * 3
    det = rows[0]
    assert (det["index"], det["x1"], det["x2"], det["matched@0.50"], det["matched@0.55"]) == (0, 1.0, 11.0, 2, None)
    assert det["ignored@0.95"] is False and "matched" not in det and "box" not in det
    gt = rows[3]
    assert (gt["ann_id"], gt["matched@0.50"], gt["matched@0.55"], gt["ignored"]) == (2, 0, None, False)
    assert rows[4]["iscrowd"] is True and rows[4]["ignored"] is True


def test_csv_and_json_round_trip(records, tmp_path):
    records.write_csv(tmp_path / "objects.csv")
    with open(tmp_path / "objects.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 5 and rows[0]["matched@0.50"] == "2" and rows[0]["matched@0.55"] == ""
    assert rows[3]["ann_id"] == "2" and rows[3]["index"] == "" and rows[0]["ann_id"] == ""
    assert list(rows[0])[:4] == ["kind", "index", "image_id", "category_id"]
    records.write_json(tmp_path / "objects.json")
    document = json.loads((tmp_path / "objects.json").read_text())
    assert document["iou_thresholds"] == list(IOU_THRESHOLDS) and document["max_dets"] == 100
    assert document["detections"][0]["matched"] == [2] + [None] * 9
    assert document["gts"] == [json.loads(json.dumps(g._asdict())) for g in records.gts]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["objects.csv", "objects.json"]  # no temporaries left


@pytest.mark.parametrize("write", ["write_csv", "write_json"])
def test_a_failing_write_keeps_the_old_file(records, tmp_path, monkeypatch, write):
    path = tmp_path / "objects.out"
    path.write_text("old contents")

    def disk_full(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(detviz._io.os, "fsync", disk_full)  # fails after the text is in the temporary file
    with pytest.raises(OSError, match="No space left"):
        getattr(records, write)(path)
    assert path.read_text() == "old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["objects.out"]
    monkeypatch.undo()
    getattr(records, write)(path)
    assert path.read_text() != "old contents"


def test_unserialisable_records_keep_the_old_file(records, tmp_path):
    path = tmp_path / "objects.json"
    path.write_text("old contents")
    broken = ObjectRecords([records.detections[0]._replace(score=math.nan)], [], IOU_THRESHOLDS, 100)
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        broken.write_json(path)
    assert path.read_text() == "old contents" and [p.name for p in tmp_path.iterdir()] == ["objects.json"]
