import contextlib
import copy
import io
import json
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from pycocotools.cocoeval import COCOeval

from detviz.datasets.synthetic import make_dataset
from detviz.evaluation.lrp import lrp_curve, lrp_error, match_image_class, optimal_lrp
from tests.evaluation.conftest import coco_in_memory

CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "bird"}]
CAT, DOG, BIRD = 1, 2, 3


def _coco(annotations, num_images=2, categories=CATEGORIES):
    """A COCO ground truth built in memory; ``annotations`` are (image_id, category_id, [x, y, w, h], iscrowd)."""
    return coco_in_memory(annotations, num_images, categories)


def _det(category_id, bbox, score, image_id=1):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


# ---------------------------------------------------------------- the formula

def test_lrp_error_by_hand():
    # two TPs of IoU 0.9: (0.1 + 0.1) / 0.5 = 0.4; one FP, one FN: (0.4 + 1 + 1) / 4 = 0.6
    assert lrp_error([0.9, 0.9], 1, 1) == pytest.approx(0.6)
    assert lrp_error([1.0, 1.0, 1.0], 0, 0) == 0.0  # perfect
    assert lrp_error([], 0, 3) == 1.0  # nothing found
    assert lrp_error([0.5], 0, 0) == 1.0  # a TP at IoU = tau costs as much as an FP
    assert lrp_error([0.8], 0, 0, iou_threshold=0.6) == pytest.approx(0.2 / 0.4)
    assert math.isnan(lrp_error([], 0, 0))


def test_lrp_error_bad_inputs():
    with pytest.raises(ValueError, match=r"tp_ious must lie in \[iou_threshold, 1\] = \[0.5, 1\]"):
        lrp_error([0.4], 0, 0)
    with pytest.raises(ValueError, match=r"num_fp must be an int >= 0, got -1"):
        lrp_error([], -1, 0)
    with pytest.raises(ValueError, match=r"num_fn must be an int >= 0, got 1.5"):
        lrp_error([], 0, 1.5)
    with pytest.raises(ValueError, match=r"iou_threshold must lie in \(0, 1\), got 1"):
        lrp_error([], 0, 1, iou_threshold=1)


# ---------------------------------------------------------------- matching

def test_match_detections_is_cocos_greedy_rule():
    gt = np.array([[0, 0, 10, 10], [50, 0, 60, 10], [100, 100, 200, 200]], dtype=np.float64)
    crowd = np.array([False, False, True])
    dets = np.array([[0, 0, 10, 9],     # IoU 0.9 with gt 0 -> TP
                     [0, 0, 10, 8],     # gt 0 taken -> FP
                     [110, 110, 130, 130],  # inside the crowd box -> ignored
                     [50, 0, 60, 10]], dtype=np.float64)  # gt 1 -> TP, IoU 1
    tp_iou, ignored = match_image_class(gt, crowd, dets, 0.5)
    assert_allclose(tp_iou, [0.9, np.nan, np.nan, 1.0])
    assert_array_equal(ignored, [False, False, True, False])
    tp_iou, ignored = match_image_class(np.zeros((0, 4)), np.zeros(0, dtype=bool), dets, 0.5)
    assert np.isnan(tp_iou).all() and not ignored.any()


# ---------------------------------------------------------------- hand-computed oLRP

def _hand_case(extra_annotations=(), extra_results=()):
    """3 cats (two in image 1, one in image 2), 4 cat detections; one dog found perfectly; no bird.

    cat detections, by score (tau = 0.5, so a TP costs (1 - IoU) / 0.5):
      0.9  on cat A, IoU 90/100 = 0.9   TP
      0.8  on nothing                   FP
      0.7  on cat B, IoU 0.9            TP
      0.6  on cat A again, IoU 0.8      FP (A is taken)
    cat C (image 2) is never detected.
      s = 0.9: TP 1 (0.2), FP 0, FN 2 -> (0.2 + 0 + 2) / 3 = 0.7333
      s = 0.8: TP 1 (0.2), FP 1, FN 2 -> (0.2 + 1 + 2) / 4 = 0.8
      s = 0.7: TP 2 (0.4), FP 1, FN 1 -> (0.4 + 1 + 1) / 4 = 0.6   <- oLRP, s* = 0.7
      s = 0.6: TP 2 (0.4), FP 2, FN 1 -> (0.4 + 2 + 1) / 5 = 0.68
    at s*: loc = mean(1 - IoU) = 0.1, fp = 1 / 3, fn = 1 / 3.
    """
    annotations = [(1, CAT, [0, 0, 10, 10], 0), (1, CAT, [50, 0, 10, 10], 0), (2, CAT, [0, 0, 10, 10], 0),
                   (2, DOG, [30, 30, 20, 20], 0), *extra_annotations]
    results = [_det(CAT, [0, 0, 10, 9], 0.9), _det(CAT, [100, 100, 10, 10], 0.8), _det(CAT, [50, 0, 10, 9], 0.7),
               _det(CAT, [0, 0, 10, 8], 0.6), _det(DOG, [30, 30, 20, 20], 0.55, image_id=2), *extra_results]
    return _coco(annotations), results


def test_hand_computed_olrp_components_and_threshold():
    coco, results = _hand_case()
    before = copy.deepcopy(results)
    result = optimal_lrp(coco, results)
    assert results == before
    cat = result.per_class["cat"]
    assert_allclose(cat.curve["threshold"], [0.9, 0.8, 0.7, 0.6])
    assert_allclose(cat.curve["lrp"], [2.2 / 3, 0.8, 0.6, 0.68])
    assert_array_equal(cat.curve["num_tp"], [1, 1, 2, 2])
    assert_array_equal(cat.curve["num_fp"], [0, 1, 1, 2])
    assert_array_equal(cat.curve["num_fn"], [2, 2, 1, 1])
    assert cat.olrp == pytest.approx(0.6) and cat.threshold == 0.7
    assert (cat.loc, cat.fp, cat.fn) == pytest.approx((0.1, 1 / 3, 1 / 3))
    assert (cat.num_tp, cat.num_fp, cat.num_fn, cat.num_gts) == (2, 1, 1, 3)
    assert cat.olrp == pytest.approx(lrp_error([0.9, 0.9], 1, 1))
    dog = result.per_class["dog"]  # one perfect detection
    assert (dog.olrp, dog.loc, dog.fp, dog.fn, dog.threshold) == (0.0, 0.0, 0.0, 0.0, 0.55)
    bird = result.per_class["bird"]  # no ground truth: not evaluated
    assert bird.num_gts == 0 and math.isnan(bird.olrp) and math.isnan(bird.threshold)
    assert list(result.per_class) == ["cat", "dog", "bird"]
    assert result.molrp == pytest.approx((0.6 + 0.0) / 2)  # bird is left out
    assert (result.molrp_loc, result.molrp_fp, result.molrp_fn) == pytest.approx((0.05, 1 / 6, 1 / 6))
    assert (result.iou_threshold, result.max_detections) == (0.5, 100)


def test_crowd_regions_are_ignored():
    # a cat crowd in image 2; a 0.75 detection inside it is neither TP nor FP, and the crowd is no FN
    coco, results = _hand_case(extra_annotations=[(2, CAT, [100, 100, 50, 50], 1)],
                               extra_results=[_det(CAT, [110, 110, 20, 20], 0.75, image_id=2)])
    cat = optimal_lrp(coco, results).per_class["cat"]
    assert cat.num_gts == 3
    assert_allclose(cat.curve["threshold"], [0.9, 0.8, 0.7, 0.6])  # 0.75 counts nowhere
    assert cat.olrp == pytest.approx(0.6) and cat.threshold == 0.7
    # mostly off the crowd (intersection / own area = 100 / 400 < 0.5): a false positive at 0.75
    coco, results = _hand_case(extra_annotations=[(2, CAT, [100, 100, 50, 50], 1)],
                               extra_results=[_det(CAT, [90, 90, 20, 20], 0.75, image_id=2)])
    cat = optimal_lrp(coco, results).per_class["cat"]
    # 0.9: 2.2 / 3; 0.8: 3.2 / 4; 0.75: (0.2 + 2 + 2) / 5; 0.7: (0.4 + 2 + 1) / 5 = 0.68; 0.6: (0.4 + 3 + 1) / 6
    assert_allclose(cat.curve["lrp"], [2.2 / 3, 0.8, 4.2 / 5, 3.4 / 5, 4.4 / 6])
    assert cat.olrp == pytest.approx(0.68) and cat.threshold == 0.7 and (cat.num_fp, cat.num_fn) == (2, 1)


def test_perfect_detector_and_no_detections():
    coco = _coco([(1, CAT, [0, 0, 10, 10], 0), (2, CAT, [5, 5, 20, 20], 0)])
    perfect = optimal_lrp(coco, [_det(CAT, [0, 0, 10, 10], 0.8), _det(CAT, [5, 5, 20, 20], 0.4, image_id=2)])
    cat = perfect.per_class["cat"]
    assert (cat.olrp, cat.loc, cat.fp, cat.fn, cat.threshold) == (0.0, 0.0, 0.0, 0.0, 0.4)
    nothing = optimal_lrp(coco, []).per_class["cat"]
    assert (nothing.olrp, nothing.fn, nothing.num_tp, nothing.num_fp, nothing.num_fn) == (1.0, 1.0, 0, 0, 2)
    assert math.isnan(nothing.loc) and math.isnan(nothing.fp) and math.isnan(nothing.threshold)
    assert nothing.curve["lrp"].shape == (0,)
    # only false positives: no threshold beats keeping nothing, which is reported
    wrong = optimal_lrp(coco, [_det(CAT, [100, 100, 10, 10], 0.9)]).per_class["cat"]
    assert wrong.olrp == 1.0 and math.isnan(wrong.threshold) and wrong.num_fp == 0
    assert_allclose(wrong.curve["lrp"], [1.0])
    assert optimal_lrp(coco, []).molrp == 1.0


def test_ground_truth_as_results_scores_zero(tmp_path):
    _, coco_dict = make_dataset(num_images=4, seed=3, size=96, empty_fraction=0.25)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(coco_dict))
    results = [_det(a["category_id"], a["bbox"], 0.9, a["image_id"]) for a in coco_dict["annotations"]]
    result = optimal_lrp(path, results)
    assert result.molrp == 0.0 and result.molrp_loc == 0.0
    for category in result.per_class.values():
        assert category.num_gts == 0 or (category.olrp, category.threshold, category.num_fn) == (0.0, 0.9, 0)


def test_ties_go_to_the_highest_threshold():
    # 3 cats. s = 0.9: TP with IoU 1 -> (0 + 0 + 2) / 3 = 2/3; s = 0.8: add a TP with IoU 50 / 100 = 0.5
    # (cost 1) -> (1 + 0 + 1) / 3 = 2/3; s = 0.7: add an FP -> 3 / 4. A tie: s* = 0.9.
    coco = _coco([(1, CAT, [0, 0, 10, 10], 0), (1, CAT, [50, 0, 10, 10], 0), (1, CAT, [100, 0, 10, 10], 0)])
    results = [_det(CAT, [0, 0, 10, 10], 0.9), _det(CAT, [50, 0, 10, 5], 0.8), _det(CAT, [0, 100, 5, 5], 0.7)]
    cat = optimal_lrp(coco, results).per_class["cat"]
    assert_allclose(cat.curve["lrp"], [2 / 3, 2 / 3, 0.75])
    assert cat.olrp == pytest.approx(2 / 3) and cat.threshold == 0.9 and cat.num_tp == 1


def test_equal_scores_enter_together():
    coco = _coco([(1, CAT, [0, 0, 10, 10], 0)])
    # FP then TP at the same score: no threshold splits them, so LRP = (0 + 1 + 0) / 2 only
    cat = optimal_lrp(coco, [_det(CAT, [100, 0, 10, 10], 0.5), _det(CAT, [0, 0, 10, 10], 0.5)]).per_class["cat"]
    assert_allclose(cat.curve["threshold"], [0.5])
    assert cat.olrp == 0.5 and cat.num_fp == 1


def test_max_detections_keeps_the_highest_scores_per_image_and_class():
    coco = _coco([(1, CAT, [0, 0, 10, 10], 0)])
    results = [_det(CAT, [100, 0, 10, 10], 0.9), _det(CAT, [100, 50, 10, 10], 0.8), _det(CAT, [0, 0, 10, 10], 0.7)]
    assert optimal_lrp(coco, results, max_detections=2).per_class["cat"].olrp == 1.0  # the TP is cut
    assert optimal_lrp(coco, results, max_detections=None).per_class["cat"].olrp == pytest.approx(2 / 3)


def test_lrp_curve_empty():
    curve = lrp_curve(np.zeros(0), np.zeros(0), 4)
    assert all(values.shape == (0,) for values in curve.values())


# ---------------------------------------------------------------- independent checks on random cases

def _random_case(rng, num_images=3):
    """Integer boxes in a 60 x 60 image, 2 classes, some crowds, scores on a 0.1 grid (so some tie)."""
    annotations, results = [], []
    for image_id in range(1, num_images + 1):
        for _ in range(int(rng.integers(0, 5))):
            x, y = rng.integers(0, 40, 2).tolist()
            w, h = rng.integers(2, 20, 2).tolist()
            annotations.append((image_id, int(rng.integers(1, 3)), [x, y, w, h], int(rng.random() < 0.15)))
        gts = [a for a in annotations if a[0] == image_id]
        for _ in range(int(rng.integers(0, 7))):
            if gts and rng.random() < 0.6:  # a jittered copy of a gt
                _, category_id, (x, y, w, h), _ = gts[int(rng.integers(0, len(gts)))]
                dx, dy, dh = rng.integers(-3, 4, 3).tolist()
                x, y, h = x + dx, y + dy, max(h + dh, 1)
            else:
                category_id = int(rng.integers(1, 3))
                (x, y), (w, h) = rng.integers(0, 40, 2).tolist(), rng.integers(2, 20, 2).tolist()
            results.append(_det(category_id, [x, y, w, h], round(float(rng.integers(1, 10)) / 10, 1), image_id))
    return annotations, results


def _overlap(a, b, crowd):
    """xywh boxes: IoU, or intersection / area of ``a`` when ``b`` is a crowd."""
    iw = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3]) if crowd else inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _brute_force_lrps(annotations, results, category_id, tau=0.5):
    """LRP at every distinct score of one class, matching from scratch at each threshold."""
    gts = [a for a in annotations if a[1] == category_id]
    num_gts = sum(1 for a in gts if not a[3])
    dets = [r for r in results if r["category_id"] == category_id]
    lrps = {}
    for s in sorted({r["score"] for r in dets}, reverse=True):
        tp_ious, num_fp = [], 0
        for image_id in {r["image_id"] for r in dets}:
            kept = sorted((r for r in dets if r["image_id"] == image_id and r["score"] >= s), key=lambda r: -r["score"])
            ordinary = [a[2] for a in gts if a[0] == image_id and not a[3]]
            crowds = [a[2] for a in gts if a[0] == image_id and a[3]]
            taken = set()
            for r in kept:
                best, best_iou = None, tau
                for j, g in enumerate(ordinary):
                    iou = _overlap(r["bbox"], g, False)
                    if j not in taken and iou >= best_iou:
                        best, best_iou = j, iou
                if best is not None:
                    taken.add(best)
                    tp_ious.append(best_iou)
                elif not any(_overlap(r["bbox"], c, True) >= tau for c in crowds):
                    num_fp += 1
        num_fn = num_gts - len(tp_ious)
        total = len(tp_ious) + num_fp + num_fn
        if total:
            lrps[s] = (sum(1 - v for v in tp_ious) / (1 - tau) + num_fp + num_fn) / total
    return lrps, num_gts


@pytest.mark.parametrize("seed", range(60))
def test_olrp_equals_a_brute_force_search(seed):
    rng = np.random.default_rng(seed)
    annotations, results = _random_case(rng)
    result = optimal_lrp(_coco(annotations, num_images=3), results)
    for category in CATEGORIES[:2]:
        lrps, num_gts = _brute_force_lrps(annotations, results, category["id"])
        got = result.per_class[category["name"]]
        assert got.num_gts == num_gts
        # the curve skips scores held only by ignored (crowd) detections: there, LRP is that of the
        # next higher threshold it has, or of keeping nothing
        curve_thresholds, curve_lrps = got.curve["threshold"].tolist(), got.curve["lrp"].tolist()
        for s, value in lrps.items():
            higher = [v for t, v in zip(curve_thresholds, curve_lrps) if t >= s]
            assert (higher[-1] if higher else 1.0) == pytest.approx(value, abs=1e-12)
        if num_gts == 0:
            assert math.isnan(got.olrp)
            continue
        candidates = [(1.0, math.nan)] + [(lrps[s], s) for s in sorted(lrps, reverse=True)]  # keep nothing first
        best = min(value for value, _ in candidates)
        expected_value, expected_threshold = next(c for c in candidates if c[0] <= best + 1e-12)
        assert got.olrp == pytest.approx(expected_value, abs=1e-12)
        assert got.threshold == expected_threshold or (math.isnan(got.threshold) and math.isnan(expected_threshold))


@pytest.mark.parametrize("seed", range(20))
def test_matches_equal_pycocotools_at_iou_half(seed):
    """Per image and class, TP / FP / ignored counts equal COCOeval's at IoU 0.5, area "all", 100 detections."""
    rng = np.random.default_rng(seed)
    annotations, results = _random_case(rng)
    if not results:
        return
    coco = _coco(annotations, num_images=3)
    with contextlib.redirect_stdout(io.StringIO()):
        cocoeval = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), "bbox")
        cocoeval.evaluate()
    result = optimal_lrp(coco, results)
    for category in CATEGORIES[:2]:
        evals = [e for e in cocoeval.evalImgs if e and e["category_id"] == category["id"] and e["aRng"] == [0, 1e10]]
        tps = sum(int(((e["dtMatches"][0] > 0) & ~e["dtIgnore"][0]).sum()) for e in evals)
        fps = sum(int(((e["dtMatches"][0] == 0) & ~e["dtIgnore"][0]).sum()) for e in evals)
        curve = result.per_class[category["name"]].curve
        assert (int(curve["num_tp"][-1]) if len(curve["num_tp"]) else 0) == tps
        assert (int(curve["num_fp"][-1]) if len(curve["num_fp"]) else 0) == fps


# ---------------------------------------------------------------- bad inputs

def test_bad_inputs_are_named():
    coco = _coco([(1, CAT, [0, 0, 10, 10], 0)])
    with pytest.raises(ValueError, match=r"results\[1\]: category_id 9 is not a ground-truth category"):
        optimal_lrp(coco, [_det(CAT, [0, 0, 10, 10], 0.5), _det(9, [0, 0, 10, 10], 0.5)])
    with pytest.raises(ValueError, match=r"results\[0\]: 'score' must be a finite number, got None"):
        optimal_lrp(coco, [_det(CAT, [0, 0, 10, 10], None)])
    with pytest.raises(ValueError, match=r"results\[0\]: 'bbox' must be \[x, y, w, h\] with w >= 0 and h >= 0"):
        optimal_lrp(coco, [_det(CAT, [0, 0, 10, -1], 0.5)])
    with pytest.raises(ValueError, match=r"results must be a list of COCO result dicts, got str"):
        optimal_lrp(coco, "results.json")
    for bad in (0.0, 1.0, 2.0):
        with pytest.raises(ValueError, match=r"iou_threshold must lie in \(0, 1\)"):
            optimal_lrp(coco, [], iou_threshold=bad)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=r"max_detections must be an int >= 1 or None"):
            optimal_lrp(coco, [], max_detections=bad)
    with pytest.raises(TypeError, match=r"coco_gt must be a pycocotools COCO or a path to a COCO json, got list"):
        optimal_lrp([], [])


@pytest.mark.parametrize("seed", range(60))
def test_lrp_from_coco_matching_records_equals_optimal_lrp(seed):
    from detviz.evaluation.lrp import lrp_from_records
    from detviz.evaluation.matching import match_detections

    annotations, results = _random_case(np.random.default_rng(seed))
    coco = _coco(annotations, num_images=3)
    expected = optimal_lrp(coco, results)
    got = lrp_from_records(coco, results, match_detections(coco, results))
    assert got.molrp == pytest.approx(expected.molrp, abs=1e-12, nan_ok=True)
    for name, want in expected.per_class.items():
        have = got.per_class[name]
        assert (have.num_gts, have.num_tp, have.num_fp, have.num_fn) == (want.num_gts, want.num_tp, want.num_fp,
                                                                          want.num_fn)
        for field in ("olrp", "loc", "fp", "fn", "threshold"):
            assert getattr(have, field) == pytest.approx(getattr(want, field), abs=1e-12, nan_ok=True), field
        assert_allclose(have.curve["lrp"], want.curve["lrp"], atol=1e-12)
