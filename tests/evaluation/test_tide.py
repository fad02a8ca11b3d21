"""detviz.evaluation.tide: hand-computed micro cases, bad inputs, and tidecv 1.0.1 as the oracle.

The oracle runs tidecv's own ``TIDE().evaluate`` on the same json files. One intervention, and
only while a test builds its ``TIDE``: ``TIDE.__init__`` makes a seaborn ``Plotter`` that
restyles matplotlib for the whole process (rcParams, and the colours "b", "g", "r", ...) and
creates a data folder in the home directory; the figure tests would inherit both. The plotter
is replaced by a stub (monkeypatch undoes it) and ``TIDE_PATH`` points into ``tmp_path``. No
numpy 2 or Python 3.11 shim is needed: tidecv 1.0.1 runs as shipped.
"""
import contextlib
import copy
import io
import json
import math

import numpy as np
import pytest

from detviz.evaluation.tide import (BEYOND_MAX_DETS, CROWD, FOUND, MAIN_ERRORS, SPECIAL_ERRORS, TRUE_POSITIVE,
                                    tide_errors)
from tests.evaluation.conftest import coco_from_dataset

AP_TOLERANCE = 0.01  # AP points
IMAGE_W, IMAGE_H = 640, 480
GT_CATEGORIES = (2, 5, 9)
NO_GT_CATEGORY = 11  # listed in the json, never annotated: tidecv scores its detections as AP 0
FATES = ("tp", "loc", "cls", "both", "dupe", "miss", "tp", "loc_and_cls")


# ---------------------------------------------------------------- building cases

def _ann(ann_id, image_id, category_id, bbox, crowd=False):
    x, y, w, h = bbox
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": list(bbox), "area": w * h,
            "iscrowd": int(crowd), "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}


def _coco(annotations, num_images=1):
    return {"images": [{"id": i, "file_name": f"{i}.jpg", "width": IMAGE_W, "height": IMAGE_H}
                       for i in range(1, num_images + 1)],
            "categories": [{"id": c, "name": f"c{c}"} for c in (*GT_CATEGORIES, NO_GT_CATEGORY)],
            "annotations": annotations}


def _det(image_id, category_id, bbox, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": [float(v) for v in bbox], "score": score}


def _moved(rng, bbox, shift):
    """``bbox`` moved by ``shift`` times its size, in a random direction, plus a little jitter."""
    x, y, w, h = bbox
    dx, dy = rng.choice([-1, 1], size=2) * shift
    return [x + dx * w + rng.normal(0, 1), y + dy * h * rng.random() + rng.normal(0, 1), w, h]


def _detections_for(fate, rng, image_id, category_id, bbox):
    others = [c for c in (*GT_CATEGORIES, NO_GT_CATEGORY) if c != category_id]
    tight, off = _moved(rng, bbox, 0.03), _moved(rng, bbox, rng.uniform(0.45, 0.75))
    boxes = {"tp": [(category_id, tight)], "loc": [(category_id, off)], "cls": [(rng.choice(others), tight)],
             "both": [(rng.choice(others), off)], "dupe": [(category_id, tight), (category_id, _moved(rng, bbox, 0.05))],
             "miss": [], "loc_and_cls": [(category_id, off), (rng.choice(others), tight)]}[fate]
    return [_det(image_id, int(c), b, 0.0) for c, b in boxes]


def _random_box(rng):
    w, h = rng.uniform(20, 160, size=2)
    return [rng.uniform(0, IMAGE_W - w), rng.uniform(0, IMAGE_H - h), w, h]


def _make_case(seed, num_images=8, score_decimals=None, crowded_image=False):
    """A seeded COCO dict and results list meant to hold every TIDE type (the oracle decides).

    Image 1 has only a crowd region, image 2 nothing at all; the rest get 0..5 objects (one in
    eight a crowd, with a detection inside), a fate each, and 0..2 stray detections. Scores are
    random, rounded to ``score_decimals`` to force ties; ``crowded_image`` adds 110 detections to
    the last image so that tidecv's 100-per-image limit bites.
    """
    rng = np.random.default_rng(seed)
    annotations, results = [_ann(1, 1, GT_CATEGORIES[0], [100, 100, 200, 150], crowd=True)], []
    results += [_det(1, GT_CATEGORIES[0], [120, 120, 60, 60], 0.0), _det(1, GT_CATEGORIES[1], [400, 300, 50, 50], 0.0)]
    for image_id in range(3, num_images + 1):
        for _ in range(int(rng.integers(0, 6))):
            category_id, bbox, crowd = int(rng.choice(GT_CATEGORIES)), _random_box(rng), rng.random() < 0.125
            annotations.append(_ann(len(annotations) + 1, image_id, category_id, bbox, crowd=crowd))
            fate = "tp" if crowd else FATES[int(rng.integers(len(FATES)))]
            results += _detections_for(fate, rng, image_id, category_id, bbox)
        results += [_det(image_id, int(rng.choice([*GT_CATEGORIES, NO_GT_CATEGORY])), _random_box(rng), 0.0)
                    for _ in range(int(rng.integers(0, 3)))]
    if crowded_image:
        results += [_det(num_images, int(rng.choice(GT_CATEGORIES)), _random_box(rng), 0.0) for _ in range(110)]
    for r in results:
        score = float(rng.uniform(0.05, 1.0))
        r["score"] = round(score, score_decimals) if score_decimals is not None else score
    return _coco(annotations, num_images), results


# ---------------------------------------------------------------- the oracle

@pytest.fixture
def run_tidecv(tmp_path, monkeypatch):
    """``run_tidecv(coco_dict, results)`` -> tidecv's figures in ``tide_errors``' layout."""
    import tidecv.quantify
    from tidecv import TIDE, datasets
    from tidecv.errors.main_errors import FalsePositiveError

    monkeypatch.setenv("TIDE_PATH", str(tmp_path / "tide_path"))
    monkeypatch.setattr(tidecv.quantify.P, "Plotter", lambda *args, **kwargs: None)

    def run(coco_dict, results):
        (tmp_path / "gt.json").write_text(json.dumps(coco_dict))
        (tmp_path / "results.json").write_text(json.dumps(results))
        tide = TIDE()
        tide_run = tide.evaluate(datasets.COCO(str(tmp_path / "gt.json")),
                                 datasets.COCOResult(str(tmp_path / "results.json")), mode=TIDE.BOX)
        figures = {"ap50": tide_run.ap, **{k: v[tide_run.preds.name] for k, v in tide.get_all_errors().items()}}
        fixed = {error.short_name: tide_run.fix_errors(lambda e, error=error: isinstance(e, error))
                 for error in TIDE._error_types}
        fixed["FalsePos"] = tide_run.fix_errors(transform=FalsePositiveError.fix)
        fixed["FalseNeg"] = tide_run.fix_errors(false_neg_dict=tide_run.false_negatives)
        figures["per_class"] = {}
        for k, obj in sorted(tide_run.ap_data.objs.items()):
            if not obj.is_empty():
                base = obj.get_ap()
                figures["per_class"][k] = {
                    "ap50": base, "main": {n: max(fixed[n].objs[k].get_ap() - base, 0) for n in MAIN_ERRORS},
                    "special": {n: fixed[n].objs[k].get_ap() - base for n in SPECIAL_ERRORS}}
        figures["counts"] = {error.short_name: n for error, n in tide_run.count_errors().items()}
        return {**figures, **_tidecv_types(tide_run, coco_dict)}

    return run


def _tidecv_types(tide_run, coco_dict):
    """Per detection and per gt, the type tidecv assigned (its ``_id`` is the position in the json)."""
    ann_ids = [a["id"] for a in coco_dict["annotations"]]
    preds = tide_run.preds.annotations
    errors = {e.pred["_id"]: e for e in tide_run.errors if hasattr(e, "pred")}
    types, gt_ids = [], []
    for i, pred in enumerate(preds):
        if "used" not in pred:
            types.append(BEYOND_MAX_DETS), gt_ids.append(None)
        elif pred["used"]:
            types.append(TRUE_POSITIVE), gt_ids.append(ann_ids[pred["matched_with"]])
        else:
            error = errors[i]
            blamed = error.gt["_id"] if hasattr(error, "gt") else \
                error.suppressor["matched_with"] if hasattr(error, "suppressor") else None
            types.append(error.short_name), gt_ids.append(None if blamed is None else ann_ids[blamed])
    gt_types = {ann_ids[a["_id"]]: CROWD for a in tide_run.gt.annotations if a["ignore"]}
    gt_types.update({ann_ids[p["matched_with"]]: FOUND for p in preds if p.get("used")})
    for e in tide_run.errors:
        if e.short_name == "Miss" or (e.short_name in ("Cls", "Loc") and e.fixed[1] is not None):
            gt_types[ann_ids[e.gt["_id"]]] = e.short_name
    return {"detection_types": types, "detection_gt_ids": gt_ids, "gt_types": gt_types,
            "detection_ignored": [p.get("used", False) is None for p in preds]}


def _disagreements(ours, theirs) -> list[str]:
    """Every figure and type where ``tide_errors``' result and tidecv's differ."""
    found = []

    def compare(name, a, b):
        if not math.isclose(a, b, rel_tol=0, abs_tol=AP_TOLERANCE):
            found.append(f"{name}: detviz {a:.4f}, tidecv {b:.4f}")

    compare("ap50", ours.ap50, theirs["ap50"])
    for kind in MAIN_ERRORS:
        compare(kind, ours.errors[kind], theirs["main"][kind])
    for kind in SPECIAL_ERRORS:
        compare(kind, ours.special[kind], theirs["special"][kind])
    if list(ours.per_class) != list(theirs["per_class"]):
        found.append(f"classes: detviz {list(ours.per_class)}, tidecv {list(theirs['per_class'])}")
    for k in set(ours.per_class) & set(theirs["per_class"]):
        mine, ref = ours.per_class[k], theirs["per_class"][k]
        compare(f"class {k} ap50", mine.ap50, ref["ap50"])
        for kind in MAIN_ERRORS:
            compare(f"class {k} {kind}", mine.errors[kind], ref["main"][kind])
        for kind in SPECIAL_ERRORS:
            compare(f"class {k} {kind}", mine.special[kind], ref["special"][kind])
    for field in ("detection_types", "detection_gt_ids", "detection_ignored", "gt_types", "counts"):
        if getattr(ours, field) != theirs[field]:
            found.append(f"{field} differ")
    return found


ORACLE_CASES = {"seed0": dict(seed=0), "seed1_ties": dict(seed=1, score_decimals=1),
                "seed2_many_images": dict(seed=2, num_images=14), "seed3_max_dets": dict(seed=3, crowded_image=True),
                "seed4_ties": dict(seed=4, num_images=10, score_decimals=2)}


@pytest.fixture(scope="module")
def oracle_cases():
    return {name: _make_case(**kwargs) for name, kwargs in ORACLE_CASES.items()}


@pytest.mark.parametrize("name", ORACLE_CASES)
def test_agrees_with_tidecv(name, oracle_cases, run_tidecv):
    coco_dict, results = oracle_cases[name]
    theirs = run_tidecv(coco_dict, results)
    ours = tide_errors(coco_from_dataset(coco_dict), results)
    assert _disagreements(ours, theirs) == []
    assert 0 < ours.ap50 < 100


def test_oracle_cases_hold_every_type(oracle_cases):
    detection_types, gt_types, ignored = set(), set(), False
    for coco_dict, results in oracle_cases.values():
        result = tide_errors(coco_from_dataset(coco_dict), results)
        detection_types |= set(result.detection_types)
        gt_types |= set(result.gt_types.values())
        ignored |= any(result.detection_ignored)
        assert len({r["image_id"] for r in results}) >= 6 and len(result.per_class) == 4  # NO_GT_CATEGORY too
    assert detection_types == {TRUE_POSITIVE, BEYOND_MAX_DETS, "Cls", "Loc", "Both", "Dupe", "Bkg"}
    assert gt_types == {FOUND, CROWD, "Miss", "Cls", "Loc"} and ignored


def test_a_perturbed_case_disagrees(oracle_cases, run_tidecv):
    coco_dict, results = oracle_cases["seed0"]
    theirs = run_tidecv(coco_dict, results)
    perturbed = copy.deepcopy(results)
    first_tp = theirs["detection_types"].index(TRUE_POSITIVE)
    perturbed[first_tp]["bbox"][0] += 2 * perturbed[first_tp]["bbox"][2]  # moved off its gt
    found = _disagreements(tide_errors(coco_from_dataset(coco_dict), perturbed), theirs)
    assert "detection_types differ" in found and any("detviz" in line for line in found)  # a figure too


def test_tidecv_cannot_average_zero_classes_where_detviz_gives_zero(run_tidecv):
    coco_dict = _coco([_ann(1, 1, 2, [0, 0, 10, 10])])
    with pytest.raises(ZeroDivisionError):
        run_tidecv(coco_dict, [])  # the Miss fix leaves no class to average
    result = tide_errors(coco_from_dataset(coco_dict), [])
    assert result.ap50 == 0.0 and result.errors == dict.fromkeys(MAIN_ERRORS, 0.0)
    assert result.special == dict.fromkeys(SPECIAL_ERRORS, 0.0) and result.gt_types == {1: "Miss"}
    assert result.counts == {**dict.fromkeys(MAIN_ERRORS, 0), "Miss": 1}


# ---------------------------------------------------------------- hand-computed micro cases (one image)

def _one_image(gts, dets):
    """gts: (category, xywh[, crowd]) -> ann ids 1, 2, ...; dets: (category, xywh, score)."""
    return (_coco([_ann(i + 1, 1, g[0], g[1], crowd=len(g) > 2 and g[2]) for i, g in enumerate(gts)]),
            [_det(1, c, b, s) for c, b, s in dets])


def _dupe_case():
    return _one_image([(2, [0, 0, 10, 10]), (2, [50, 50, 10, 10])],
                      [(2, [0, 0, 10, 10], 0.9), (2, [0, 0, 10, 11], 0.8), (2, [50, 50, 10, 10], 0.7)])


def _bkg_case():
    return _one_image([(2, [0, 0, 10, 10])], [(2, [100, 100, 10, 10], 0.9), (2, [0, 0, 10, 10], 0.8)])


def _loc_case():  # the second detection has IoU 50 / 150 with the second gt
    return _one_image([(2, [0, 0, 10, 10]), (2, [50, 50, 10, 10])],
                      [(2, [0, 0, 10, 10], 0.9), (2, [55, 50, 10, 10], 0.8)])


def _cls_case():  # category 5 has no gt boxes
    return _one_image([(2, [0, 0, 10, 10])], [(5, [0, 0, 10, 10], 0.9)])


def _crowd_and_miss_case():
    return _one_image([(2, [0, 0, 100, 100], True), (2, [200, 200, 10, 10]), (2, [300, 300, 10, 10])],
                      [(2, [10, 10, 20, 20], 0.9), (2, [200, 200, 10, 10], 0.5)])


def _thresholds_case():
    """IoUs of exactly 0.5 and 0.1 at every rule that compares with them."""
    return _one_image(
        [(2, [0, 0, 10, 10]), (2, [100, 0, 10, 10]), (5, [200, 0, 10, 10]), (2, [300, 0, 10, 10], True)],
        [(2, [0, 0, 10, 20], 0.9),  # IoU 0.5 with gt 1: a match (>= 0.5)
         (2, [0, 0, 10, 10], 0.8),  # IoU 1 with the matched gt 1: Dupe
         (2, [0, 0, 20, 10], 0.7),  # IoU 0.5 with the matched gt 1: Loc (<= 0.5 comes first), not fixable
         (2, [100, 0, 1, 10], 0.6),  # IoU 0.1 with gt 2: Loc (>= 0.1), claims gt 2
         (2, [200, 0, 1, 10], 0.5),  # IoU 0.1 with gt 3 of class 5: Bkg (<= 0.1)
         (2, [300, 0, 10, 20], 0.4),  # crowd IoU 0.5: not ignored (needs > 0.5), Bkg
         (2, [300, 0, 10, 19], 0.3),  # crowd IoU 100 / 190: ignored, still typed Bkg
         (5, [0, 0, 20, 10], 0.2)])  # IoU 0.5 with gt 1 of class 2: Cls (>= 0.5), not fixable


def _max_dets_case():  # 101 equal scores: results order decides, and the true positive comes last
    return _one_image([(2, [0, 0, 10, 10])], [(2, [200, 200, 10, 10], 0.5)] * 100 + [(2, [0, 0, 10, 10], 0.5)])


MICRO_CASES = {"dupe": _dupe_case, "bkg": _bkg_case, "loc": _loc_case, "cls": _cls_case,
               "crowd_and_miss": _crowd_and_miss_case, "thresholds": _thresholds_case, "max_dets": _max_dets_case}


def _zeros_but(**nonzero):
    return {kind: nonzero.get(kind, 0.0) for kind in (*MAIN_ERRORS, *SPECIAL_ERRORS)}


def _all_errors(result):
    return {**result.errors, **result.special}


def test_a_single_dupe():
    # ranking T F T over 2 gts: precision 1 up to recall 0.5 (51 recall points), then 2/3 (50 points)
    result = tide_errors(coco_from_dataset(_dupe_case()[0]), _dupe_case()[1])
    assert result.ap50 == pytest.approx((51 + 50 * 2 / 3) / 101 * 100)  # 83.50
    assert _all_errors(result) == pytest.approx(_zeros_but(Dupe=100 - result.ap50, FalsePos=100 - result.ap50))
    assert result.detection_types == [TRUE_POSITIVE, "Dupe", TRUE_POSITIVE]
    assert result.detection_gt_ids == [1, 1, 2] and result.gt_types == {1: FOUND, 2: FOUND}
    assert result.counts == {**dict.fromkeys(MAIN_ERRORS, 0), "Dupe": 1}


def test_a_single_bkg():
    result = tide_errors(coco_from_dataset(_bkg_case()[0]), _bkg_case()[1])  # ranking F T: precision 1/2 at every recall
    assert result.ap50 == pytest.approx(50.0)
    assert _all_errors(result) == pytest.approx(_zeros_but(Bkg=50.0, FalsePos=50.0))
    assert result.detection_types == ["Bkg", TRUE_POSITIVE] and result.detection_gt_ids == [None, 1]


def test_fixing_a_loc_error_finds_its_gt():
    result = tide_errors(coco_from_dataset(_loc_case()[0]), _loc_case()[1])
    assert result.ap50 == pytest.approx(51 / 101 * 100)  # recall stops at 0.5: 51 of 101 points
    assert _all_errors(result) == pytest.approx(_zeros_but(Loc=50 / 101 * 100, FalseNeg=50 / 101 * 100))
    assert result.gt_types == {1: FOUND, 2: "Loc"}  # claimed, so not a Miss
    assert result.detection_types == [TRUE_POSITIVE, "Loc"] and result.detection_gt_ids == [1, 2]


def test_a_cls_error_and_a_category_without_gt():
    # classes 2 (a gt, nothing found) and 5 (a detection, no gt) both have AP 0; the fix moves the
    # detection to class 2 (AP 100) and leaves class 5 empty, out of the mean
    result = tide_errors(coco_from_dataset(_cls_case()[0]), _cls_case()[1])
    assert result.ap50 == 0.0 and _all_errors(result) == pytest.approx(_zeros_but(Cls=100.0))
    assert list(result.per_class) == [2, 5] and result.per_class[2].errors["Cls"] == pytest.approx(100.0)
    assert result.per_class[5].ap50 == 0.0 and result.per_class[5].errors["Cls"] == 0.0
    assert result.gt_types == {1: "Cls"} and result.detection_types == ["Cls"]


def test_a_crowd_region_and_a_miss():
    result = tide_errors(coco_from_dataset(_crowd_and_miss_case()[0]), _crowd_and_miss_case()[1])
    assert result.ap50 == pytest.approx(51 / 101 * 100)  # the detection in the crowd is not ranked
    assert _all_errors(result) == pytest.approx(_zeros_but(Miss=50 / 101 * 100, FalseNeg=50 / 101 * 100))
    assert result.detection_types == ["Bkg", TRUE_POSITIVE] and result.detection_ignored == [True, False]
    assert result.gt_types == {1: CROWD, 2: FOUND, 3: "Miss"}


def test_iou_thresholds_are_compared_as_tidecv_does():
    result = tide_errors(coco_from_dataset(_thresholds_case()[0]), _thresholds_case()[1])
    assert result.detection_types == [TRUE_POSITIVE, "Dupe", "Loc", "Loc", "Bkg", "Bkg", "Bkg", "Cls"]
    assert result.detection_gt_ids == [1, 1, 1, 2, None, None, None, 1]
    assert result.detection_ignored == [False] * 6 + [True, False]
    assert result.gt_types == {1: FOUND, 2: "Loc", 3: "Miss", 4: CROWD}
    # class 2 ranks T F F F F F over 2 gts (AP 51/101), class 5 F over 1 gt (AP 0); fixing Loc drops the
    # unfixable one and turns the claimant of gt 2 into a TP: T F T F F, AP (51 + 50 * 2/3) / 101
    assert result.ap50 == pytest.approx(51 / 101 * 100 / 2)
    assert result.errors["Loc"] == pytest.approx((51 + 50 * 2 / 3 - 51) / 101 * 100 / 2)


def test_only_the_first_100_detections_of_an_image_count():
    result = tide_errors(coco_from_dataset(_max_dets_case()[0]), _max_dets_case()[1])
    assert result.detection_types == ["Bkg"] * 100 + [BEYOND_MAX_DETS]
    assert result.gt_types == {1: "Miss"} and result.ap50 == 0.0


@pytest.mark.parametrize("name", MICRO_CASES)
def test_micro_cases_agree_with_tidecv(name, run_tidecv):
    coco_dict, results = MICRO_CASES[name]()
    assert _disagreements(tide_errors(coco_from_dataset(coco_dict), results), run_tidecv(coco_dict, results)) == []


# ---------------------------------------------------------------- inputs

def test_a_json_path_gives_the_same_result_and_results_are_not_modified(tmp_path):
    coco_dict, results = _make_case(seed=5)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(coco_dict))
    before = copy.deepcopy(results)
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        from_path = tide_errors(path, results)
    assert from_path == tide_errors(coco_from_dataset(coco_dict), results) == tide_errors(str(path), results)
    assert results == before and printed.getvalue() == ""


def test_empty_ground_truth_and_results():
    result = tide_errors(coco_from_dataset(_coco([])), [])
    assert result.ap50 == 0.0 and result.per_class == {} and result.gt_types == {}
    assert _all_errors(result) == _zeros_but() and result.detection_types == []


@pytest.mark.parametrize("results, error, match", [
    ({"image_id": 1}, ValueError, r"results must be a list of COCO result dicts, got dict"),
    ([[1, 2]], ValueError, r"results\[0\] must be a dict with keys \['image_id', 'category_id', 'bbox', 'score'\]"),
    ([_det(1, 2, [0, 0, 1, 1], 0.5), {"image_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}], ValueError,
     r"results\[1\] must be a dict with keys .*, got \['bbox', 'image_id', 'score'\]"),
    ([{**_det(1, 2, [0, 0, 1, 1], 0.5), "bbox": [0, 0, 1]}], ValueError,
     r"results\[0\]\['bbox'\] must be \[x, y, w, h\]: 4 finite numbers with w, h >= 0, got \[0, 0, 1\]"),
    ([{**_det(1, 2, [0, 0, 1, 1], 0.5), "bbox": [0, 0, math.nan, 1]}], ValueError, r"results\[0\]\['bbox'\] must be"),
    ([{**_det(1, 2, [0, 0, 1, 1], 0.5), "bbox": [0, 0, -1, 1]}], ValueError, r"with w, h >= 0, got \[0, 0, -1, 1\]"),
    ([_det(1, 2, [0, 0, 1, 1], math.inf)], ValueError, r"results\[0\]\['score'\] must be a finite number, got inf"),
    ([_det(1, 2, [0, 0, 1, 1], "0.5")], ValueError, r"results\[0\]\['score'\] must be a finite number, got '0.5'"),
    ([_det(1, 2, [0, 0, 1, 1], 0.5), _det(7, 2, [0, 0, 1, 1], 0.5)], ValueError,
     r"results\[1\]\['image_id'\] = 7 is not an image id of the ground truth"),
    ([_det(1, 3, [0, 0, 1, 1], 0.5)], ValueError,
     r"results\[0\]\['category_id'\] = 3 is not a category id of the ground truth, which has \[2, 5, 9, 11\]"),
])
def test_bad_results_are_rejected(results, error, match):
    with pytest.raises(error, match=match):
        tide_errors(coco_from_dataset(_coco([])), results)


def test_bad_ground_truth_is_rejected():
    with pytest.raises(TypeError, match="coco_gt must be a pycocotools COCO or a path to a COCO json, got dict"):
        tide_errors(_coco([]), [])
