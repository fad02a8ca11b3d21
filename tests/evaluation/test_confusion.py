import contextlib
import copy
import io
import json

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from pycocotools.coco import COCO

from detviz.datasets.synthetic import make_dataset
from detviz.evaluation.confusion import (BACKGROUND, DetectionConfusion, confusion_matrix, gather_images,
                                         load_ground_truth, one_to_one_pairs)
from tests.evaluation.conftest import coco_in_memory

# listed out of id order on purpose: classes follow ascending id, so cat = 0, dog = 1, background = 2
CATEGORIES = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]
CAT, DOG = 3, 7


def _coco(annotations, num_images=1, categories=CATEGORIES):
    """A COCO ground truth built in memory; ``annotations`` are (image_id, category_id, [x, y, w, h], iscrowd)."""
    return coco_in_memory(annotations, num_images, categories)


def _det(category_id, bbox, score=0.9, image_id=1):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


def _both(coco, results, **kwargs):
    """The matrices of both modes, rows = gt (cat, dog, background), columns = prediction."""
    return (confusion_matrix(coco, results, mode="one_to_one", **kwargs).matrix,
            confusion_matrix(coco, results, mode="many_to_one", **kwargs).matrix)


# ---------------------------------------------------------------- hand-computed cases

def test_duplicate_detection_is_background_in_one_to_one_and_a_second_hit_in_many_to_one():
    coco = _coco([(1, CAT, [0, 0, 10, 10], 0)])
    # IoU 1.0 and 90 / 100 = 0.9 with the one cat
    results = [_det(CAT, [0, 0, 10, 10], 0.9), _det(CAT, [0, 0, 10, 9], 0.8)]
    one, many = _both(coco, results)
    assert_array_equal(one, [[1, 0, 0], [0, 0, 0], [1, 0, 0]])  # the duplicate: [background, cat]
    assert_array_equal(many, [[2, 0, 0], [0, 0, 0], [0, 0, 0]])  # both hit the cat: [cat, cat] twice


def test_one_detection_over_two_objects():
    # cat box [0, 0, 10, 10], dog box [0, 0, 10, 8]; the cat detection [0, 0, 10, 9] has
    # IoU 90 / 100 = 0.9 with the cat and 80 / 90 = 0.889 with the dog
    coco = _coco([(1, CAT, [0, 0, 10, 10], 0), (1, DOG, [0, 0, 10, 8], 0)])
    one, many = _both(coco, [_det(CAT, [0, 0, 10, 9])])
    assert_array_equal(one, [[1, 0, 0], [0, 0, 1], [0, 0, 0]])  # explains the cat only; the dog is missed
    # many-to-one: [cat, cat] and [dog, cat]; no dog detection hit the dog, so also [dog, background]
    assert_array_equal(many, [[1, 0, 0], [1, 0, 1], [0, 0, 0]])


def test_wrong_class_detection():
    coco = _coco([(1, DOG, [0, 0, 10, 10], 0)])
    one, many = _both(coco, [_det(CAT, [0, 0, 10, 10])])
    assert_array_equal(one, [[0, 0, 0], [1, 0, 0], [0, 0, 0]])  # [dog, cat]
    assert_array_equal(many, [[0, 0, 0], [1, 0, 1], [0, 0, 0]])  # and, as mmdetection, [dog, background]


def test_missed_gt_and_background_detection():
    coco = _coco([(1, CAT, [0, 0, 10, 10], 0)])
    one, many = _both(coco, [_det(DOG, [100, 100, 20, 20])])
    expected = [[0, 0, 1], [0, 0, 0], [0, 1, 0]]  # [cat, background] and [background, dog]
    assert_array_equal(one, expected)
    assert_array_equal(many, expected)


def test_crowd_region_is_ignored():
    coco = _coco([(1, CAT, [0, 0, 100, 100], 1), (1, DOG, [150, 150, 10, 10], 0)])
    results = [_det(CAT, [10, 10, 20, 20]),  # inside the crowd: intersection / own area = 1 -> not counted
               _det(DOG, [90, 90, 20, 20]),  # 10 x 10 of its 20 x 20 on the crowd: 0.25 < 0.5 -> background
               _det(DOG, [150, 150, 10, 10])]  # the dog
    one, many = _both(coco, results)
    expected = [[0, 0, 0], [0, 1, 0], [0, 1, 0]]  # the crowd itself is never a miss
    assert_array_equal(one, expected)
    assert_array_equal(many, expected)


def test_duplicate_on_a_crowd_is_not_counted():
    coco = _coco([(1, CAT, [0, 0, 10, 10], 0), (1, CAT, [0, 0, 50, 50], 1)])
    results = [_det(CAT, [0, 0, 10, 10], 0.9), _det(CAT, [0, 0, 10, 9], 0.8)]
    one, _ = _both(coco, results)
    assert_array_equal(one, [[1, 0, 0], [0, 0, 0], [0, 0, 0]])  # the duplicate lies on the crowd


def test_one_to_one_is_ultralytics_two_pass_not_greedy():
    # xyxy g0 [0, 0, 10, 10], g1 [0, 2, 10, 10]; d0 [0, 0, 10, 9], d1 [0, 0, 10, 8]:
    # IoU(g0, d0) = 0.9, IoU(g0, d1) = 0.8, IoU(g1, d0) = 70 / 100 = 0.7, IoU(g1, d1) = 60 / 100 = 0.6.
    # Best pair per detection: d0 -> g0, d1 -> g0; best per gt: g0 -> d0. g1 and d1 stay unmatched,
    # although a greedy matcher would pair them (0.6 >= 0.5).
    iou = np.array([[0.9, 0.8], [0.7, 0.6]])
    gt_index, det_index = one_to_one_pairs(iou, 0.5)
    assert_array_equal(gt_index, [0])
    assert_array_equal(det_index, [0])
    coco = _coco([(1, CAT, [0, 0, 10, 10], 0), (1, CAT, [0, 2, 10, 8], 0)])
    one, many = _both(coco, [_det(CAT, [0, 0, 10, 9], 0.9), _det(CAT, [0, 0, 10, 8], 0.8)])
    assert_array_equal(one, [[1, 0, 1], [0, 0, 0], [1, 0, 0]])
    assert_array_equal(many, [[4, 0, 0], [0, 0, 0], [0, 0, 0]])  # all four pairs overlap


def test_one_to_one_pairs_edge_cases():
    for iou in (np.zeros((0, 3)), np.zeros((2, 0)), np.full((2, 2), 0.3)):
        gt_index, det_index = one_to_one_pairs(iou, 0.5)
        assert gt_index.shape == det_index.shape == (0,)
    # an exact IoU tie goes to the pair first in (gt, detection) order
    gt_index, det_index = one_to_one_pairs(np.array([[0.7, 0.7], [0.7, 0.7]]), 0.5)
    assert_array_equal(gt_index, [0])
    assert_array_equal(det_index, [0])


def test_iou_exactly_at_the_threshold_matches():
    coco = _coco([(1, CAT, [0, 0, 10, 10], 0)])
    one, many = _both(coco, [_det(CAT, [0, 0, 10, 5])])  # IoU 50 / 100 = 0.5
    assert one[0, 0] == 1 and many[0, 0] == 1
    one, _ = _both(coco, [_det(CAT, [0, 0, 10, 5])], iou_threshold=0.51)
    assert_array_equal(one, [[0, 0, 1], [0, 0, 0], [1, 0, 0]])


def test_score_thresholds_follow_each_reference():
    coco = _coco([(1, CAT, [0, 0, 10, 10], 0)])
    at_default = {"one_to_one": 0.25, "many_to_one": 0.3}
    one = confusion_matrix(coco, [_det(CAT, [0, 0, 10, 10], at_default["one_to_one"])]).matrix
    many = confusion_matrix(coco, [_det(CAT, [0, 0, 10, 10], at_default["many_to_one"])], mode="many_to_one").matrix
    assert_array_equal(one, [[0, 0, 1], [0, 0, 0], [0, 0, 0]])  # Ultralytics keeps score > 0.25 only
    assert_array_equal(many, [[1, 0, 0], [0, 0, 0], [0, 0, 0]])  # mmdetection keeps score >= 0.3
    result = confusion_matrix(coco, [_det(CAT, [0, 0, 10, 10], 0.2)], score_threshold=0.1)
    assert result.matrix[0, 0] == 1 and result.score_threshold == 0.1
    assert confusion_matrix(coco, [], mode="many_to_one").score_threshold == 0.3


def test_empty_results_and_images_without_boxes():
    coco = _coco([(1, CAT, [0, 0, 10, 10], 0), (2, DOG, [0, 0, 10, 10], 0), (2, DOG, [50, 0, 10, 10], 0)],
                 num_images=3)
    one, many = _both(coco, [])
    assert_array_equal(one, [[0, 0, 1], [0, 0, 2], [0, 0, 0]])
    assert_array_equal(many, one)
    empty = _coco([], num_images=2)
    assert_array_equal(_both(empty, [])[0], np.zeros((3, 3)))
    assert_array_equal(_both(empty, [_det(DOG, [1, 1, 5, 5], image_id=2)])[0], [[0, 0, 0], [0, 0, 0], [0, 1, 0]])


def test_several_images_add_up_and_results_are_not_modified(tmp_path):
    coco = _coco([(1, CAT, [0, 0, 10, 10], 0), (2, CAT, [0, 0, 10, 10], 0)], num_images=2)
    results = [_det(CAT, [0, 0, 10, 10], image_id=1), _det(DOG, [0, 0, 10, 10], image_id=2)]
    before = copy.deepcopy(results)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(coco.dataset))
    result = confusion_matrix(path, results)  # a path to the json works as well
    assert results == before
    assert_array_equal(result.matrix, [[1, 1, 0], [0, 0, 0], [0, 0, 0]])
    assert result.matrix.dtype == np.int64
    assert result.class_names == ("cat", "dog") and result.category_ids == (3, 7)
    assert result.labels == ("cat", "dog", BACKGROUND)
    assert (result.mode, result.score_threshold, result.iou_threshold) == ("one_to_one", 0.25, 0.5)


def test_normalized_rows_and_columns():
    result = DetectionConfusion(matrix=np.array([[3, 1, 0], [0, 0, 0], [1, 1, 0]], dtype=np.int64),
                                class_names=("cat", "dog"), category_ids=(3, 7), mode="one_to_one",
                                score_threshold=0.25, iou_threshold=0.5)
    rows = result.normalized(axis=1)
    np.testing.assert_allclose(rows[0], [0.75, 0.25, 0.0])
    np.testing.assert_allclose(rows[2], [0.5, 0.5, 0.0])
    assert np.isnan(rows[1]).all()  # no dog in the ground truth: nothing to share out
    columns = result.normalized(axis=0)
    np.testing.assert_allclose(columns[:, 0], [0.75, 0.0, 0.25])
    np.testing.assert_allclose(columns[:, 1], [0.5, 0.0, 0.5])
    assert np.isnan(columns[:, 2]).all()
    with pytest.raises(ValueError, match=r"axis must be 1 \(rows: ground truth\) or 0"):
        result.normalized(axis=2)


def test_ground_truth_as_results_fills_only_the_diagonal():
    _, coco_dict = make_dataset(num_images=4, seed=3, size=96, empty_fraction=0.25)
    coco = COCO()
    coco.dataset = coco_dict
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    results = [_det(a["category_id"], np.array(a["bbox"], dtype=np.float64), 1.0, a["image_id"])  # arrays work too
               for a in coco_dict["annotations"]]
    counts = np.bincount([sorted(coco.cats).index(a["category_id"]) for a in coco_dict["annotations"]],
                         minlength=len(coco.cats))
    one, many = _both(coco, results)
    assert_array_equal(one, np.diag([*counts, 0]))
    # synthetic objects may overlap each other by IoU >= 0.5: many-to-one counts those pairs too
    assert (np.diag(many)[:-1] >= counts).all()
    assert many[-1].sum() == 0 and many[:, -1].sum() == 0


# ---------------------------------------------------------------- the references, transcribed

def _random_image(rng, num_gts, num_dets):
    """Float boxes (no IoU ties) as xyxy arrays, classes 0/1, scores in (0, 1)."""
    def boxes(n):
        xy = rng.uniform(0, 40, size=(n, 2))
        return np.concatenate([xy, xy + rng.uniform(5, 25, size=(n, 2))], axis=1)
    gt_boxes = boxes(num_gts)
    # half the detections are jittered copies of gts, so that overlaps happen
    copies = gt_boxes[rng.integers(0, max(num_gts, 1), size=num_dets)] if num_gts else boxes(num_dets)
    det_boxes = np.where(rng.random((num_dets, 1)) < 0.5, copies + rng.normal(0, 2, (num_dets, 4)), boxes(num_dets))
    det_boxes[:, 2:] = np.maximum(det_boxes[:, 2:], det_boxes[:, :2] + 1)
    return (gt_boxes, rng.integers(0, 2, num_gts), det_boxes, rng.integers(0, 2, num_dets),
            rng.uniform(0.05, 1, num_dets))


def _iou_numpy(a, b):
    """Plain IoU [len(a), len(b)], written out apart from detviz.boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def _ultralytics_transposed(gt_boxes, gt_cls, det_boxes, det_cls, scores, nc, conf, iou_thres):
    """Ultralytics' process_batch rule (its two np.unique passes, unmatched detections always counted),
    on its own [pred, gt] matrix; returned transposed to detviz's [gt, pred]."""
    matrix = np.zeros((nc + 1, nc + 1), dtype=np.int64)
    keep = scores > conf
    det_boxes, det_cls = det_boxes[keep], det_cls[keep]
    iou = _iou_numpy(gt_boxes, det_boxes)
    rows, cols = np.nonzero(iou > iou_thres)
    matches = np.stack([rows, cols, iou[rows, cols]], axis=1)
    if len(matches) > 1:
        matches = matches[matches[:, 2].argsort()[::-1]]
        matches = matches[np.unique(matches[:, 1], return_index=True)[1]]
        matches = matches[matches[:, 2].argsort()[::-1]]
        matches = matches[np.unique(matches[:, 0], return_index=True)[1]]
    m0, m1 = matches[:, 0].astype(int), matches[:, 1].astype(int)
    for i, gc in enumerate(gt_cls):
        hit = m0 == i
        if hit.sum() == 1:
            matrix[det_cls[m1[hit]][0], gc] += 1
        else:
            matrix[nc, gc] += 1
    for i, dc in enumerate(det_cls):
        if not (m1 == i).any():
            matrix[dc, nc] += 1
    return matrix.T


def _mmdet(gt_boxes, gt_labels, det_boxes, det_labels, scores, nc, score_thr, tp_iou_thr):
    """mmdetection's analyze_per_img_dets rule, [gt, pred] with background last, no NMS."""
    matrix = np.zeros((nc + 1, nc + 1), dtype=np.int64)
    true_positives = np.zeros(len(gt_labels))
    ious = _iou_numpy(det_boxes, gt_boxes)
    for i in range(len(det_boxes)):
        if scores[i] < score_thr:
            continue
        det_match = 0
        for j, gt_label in enumerate(gt_labels):
            if ious[i, j] >= tp_iou_thr:
                det_match += 1
                true_positives[j] += gt_label == det_labels[i]
                matrix[gt_label, det_labels[i]] += 1
        if det_match == 0:
            matrix[-1, det_labels[i]] += 1
    for num_tp, gt_label in zip(true_positives, gt_labels):
        if num_tp == 0:
            matrix[gt_label, -1] += 1
    return matrix


@pytest.mark.parametrize("seed", range(40))
def test_both_modes_equal_the_transcribed_references(seed):
    rng = np.random.default_rng(seed)
    gt_boxes, gt_cls, det_boxes, det_cls, scores = _random_image(rng, int(rng.integers(0, 6)),
                                                                 int(rng.integers(0, 8)))
    ids = (CAT, DOG)
    gt_xywh, det_xywh = (np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1).tolist()
                         for b in (gt_boxes, det_boxes))
    coco = _coco([(1, ids[c], b, 0) for b, c in zip(gt_xywh, gt_cls)])
    results = [_det(ids[c], b, float(s)) for b, c, s in zip(det_xywh, det_cls, scores)]
    # the COCO round trip (xyxy -> xywh -> xyxy) moves coordinates by ~1e-15: compare on the boxes detviz sees
    image = gather_images(coco, results, ids)[1]
    gt_boxes, det_boxes = image.gt_boxes, image.det_boxes
    one, many = _both(coco, results, score_threshold=0.4)
    assert_array_equal(one, _ultralytics_transposed(gt_boxes, gt_cls, det_boxes, det_cls, scores, 2, 0.4, 0.5))
    assert_array_equal(many, _mmdet(gt_boxes, gt_cls, det_boxes, det_cls, scores, 2, 0.4, 0.5))


# ---------------------------------------------------------------- bad inputs

@pytest.fixture
def small_coco():
    return _coco([(1, CAT, [0, 0, 10, 10], 0)])


@pytest.mark.parametrize("results, match", [
    ({"image_id": 1}, r"results must be a list of COCO result dicts, got dict"),
    ([_det(CAT, [0, 0, 10, 10]), {"image_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}],
     r"results\[1\] must be a dict with keys \['image_id', 'category_id', 'bbox', 'score'\]"),
    (["not a dict"], r"results\[0\] must be a dict with keys .* got str"),
    ([_det(CAT, [0, 0, 10, 10], image_id=9)], r"results\[0\]: image_id 9 is not an image of the ground truth"),
    ([_det(CAT, [0, 0, 10, 10], image_id=[1])], r"results\[0\]: image_id \[1\] is not an image of the ground truth"),
    ([_det(5, [0, 0, 10, 10])], r"results\[0\]: category_id 5 is not a ground-truth category \(known ids: \[3, 7\]\)"),
    ([_det(CAT, [0, 0, 10])], r"results\[0\]: 'bbox' must be \[x, y, w, h\], four finite numbers"),
    ([_det(CAT, [0, 0, 10, float("nan")])], r"results\[0\]: 'bbox' must be \[x, y, w, h\], four finite numbers"),
    ([_det(CAT, [10, 10, -5, 5])], r"results\[0\]: 'bbox' must be \[x, y, w, h\] with w >= 0 and h >= 0"),
    ([_det(CAT, [0, 0, 10, 10], "high")], r"results\[0\]: 'score' must be a finite number, got 'high'"),
    ([_det(CAT, [0, 0, 10, 10], float("inf"))], r"results\[0\]: 'score' must be a finite number"),
])
def test_bad_results_name_the_entry(small_coco, results, match):
    with pytest.raises(ValueError, match=match):
        confusion_matrix(small_coco, results)


def test_bad_ground_truth_and_settings(small_coco):
    with pytest.raises(ValueError, match=r"ground-truth annotation id 1 \(image 1\): 'bbox' must be \[x, y, w, h\]"):
        confusion_matrix(_coco([(1, CAT, [0, 0, -1, 10], 0)]), [])
    with pytest.raises(ValueError, match=r"category names must be unique"):
        confusion_matrix(_coco([], categories=[{"id": 1, "name": "a"}, {"id": 2, "name": "a"}]), [])
    with pytest.raises(ValueError, match=r"at least one category"):
        confusion_matrix(_coco([], categories=[]), [])
    with pytest.raises(TypeError, match=r"coco_gt must be a pycocotools COCO or a path to a COCO json, got dict"):
        confusion_matrix({"images": []}, [])
    with pytest.raises(ValueError, match=r"mode must be one of \('one_to_one', 'many_to_one'\), got 'greedy'"):
        confusion_matrix(small_coco, [], mode="greedy")
    with pytest.raises(TypeError, match=r"score_threshold must be a finite number or None, got '0.5'"):
        confusion_matrix(small_coco, [], score_threshold="0.5")
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"iou_threshold must lie in \(0, 1\]"):
            confusion_matrix(small_coco, [], iou_threshold=bad)
    with pytest.raises(TypeError, match=r"iou_threshold must be a number in \(0, 1\]"):
        confusion_matrix(small_coco, [], iou_threshold=None)


def test_load_ground_truth_passes_a_coco_through(small_coco, tmp_path):
    assert load_ground_truth(small_coco) is small_coco
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(small_coco.dataset))
    assert sorted(load_ground_truth(str(path)).imgs) == [1]
