"""detviz.analysis.missed: one reason per missed gt, by hand and on the shipped checkpoint."""
import json
import math

import pytest
import torch
from pycocotools.coco import COCO

from detviz.analysis.assignment import ATSSPriorAssigner
from detviz.anchors import center_points
from detviz.analysis.missed import (CONFUSED, CROWDED_OUT, LOW_SCORE, MISLOCALISED, NEVER_ASSIGNED, NO_DETECTION,
                                    REASONS, PriorEvidence, count_reasons, miss_reason, prior_evidence, why_missed)
from detviz.datasets.coco import open_dataset
from detviz.engine.checkpoints import build_model_from_checkpoint, load_checkpoint
from detviz.engine.families import get_family
from detviz.engine.inference import predict_dataset
from detviz.evaluation import to_coco_results
from detviz.evaluation.matching import match_detections
from detviz.fixtures import DATA_DIR
from detviz.gfl.model import NanoDetConfig, build_nanodet

ASSIGNED, UNASSIGNED = PriorEvidence(3, 0.2), PriorEvidence(0, math.nan)


@pytest.mark.parametrize("same, other, evidence, reason", [
    (0.9, 0.9, UNASSIGNED, NEVER_ASSIGNED),  # no loss ever pointed at it: first, whatever is near
    (0.6, 0.9, ASSIGNED, CROWDED_OUT),  # its class at 0.5+, taken by another gt
    (0.6, 0.0, None, CROWDED_OUT),
    (0.3, 0.5, ASSIGNED, CONFUSED),  # another class at exactly 0.5
    (0.1, 0.4, None, MISLOCALISED),  # its class at exactly the 0.1 border
    (0.09, 0.4, ASSIGNED, LOW_SCORE),
    (0.09, 0.4, None, NO_DETECTION),  # without the model nothing tells "never assigned" from "low score"
    (0.0, 0.0, ASSIGNED, LOW_SCORE),
])
def test_reason_precedence(same, other, evidence, reason):
    assert miss_reason(same, other, evidence) == reason


def _coco(tmp_path, anns, images=((1, 100, 100),)):
    data = {"images": [{"id": i, "file_name": f"{i}.png", "width": w, "height": h} for i, w, h in images],
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
            "annotations": [{"id": k + 1, "image_id": img, "category_id": c, "bbox": b, "area": b[2] * b[3],
                             "iscrowd": crowd} for k, (img, c, b, crowd) in enumerate(anns)]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    return COCO(str(path))


def test_every_reason_on_a_hand_made_image(tmp_path):
    gt = _coco(tmp_path, [
        (1, 1, [0, 0, 20, 20], 0),    # 1: found by the 0.9 detection
        (1, 1, [2, 0, 20, 20], 0),    # 2: the 0.9 detection overlaps it at 0.8 but went to gt 1: crowded out
        (1, 1, [50, 50, 20, 20], 0),  # 3: only a class-2 detection on it: confused
        (1, 2, [0, 60, 20, 20], 0),   # 4: a class-2 detection half off it: mislocalised
        (1, 2, [70, 0, 20, 20], 0),   # 5: nothing near; assigned in training: low score
        (1, 1, [90, 90, 4, 4], 0),    # 6: nothing near; no positive prior in training: never assigned
        (1, 1, [30, 30, 10, 10], 1),  # 7: a crowd region is never missed
    ])
    results = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "score": 0.9},
               {"image_id": 1, "category_id": 2, "bbox": [50, 50, 20, 20], "score": 0.8},
               {"image_id": 1, "category_id": 2, "bbox": [10, 60, 20, 20], "score": 0.7}]
    records = match_detections(gt, results)
    evidence = {k: PriorEvidence(0 if k == 6 else 4, 0.3) for k in range(1, 8)}
    missed = why_missed(records, evidence)
    assert {m.ann_id: m.reason for m in missed} == {2: CROWDED_OUT, 3: CONFUSED, 4: MISLOCALISED, 5: LOW_SCORE,
                                                    6: NEVER_ASSIGNED}
    confused = next(m for m in missed if m.ann_id == 3)
    assert confused.other_category_id == 2 and confused.best_other_iou == pytest.approx(1.0)
    assert next(m for m in missed if m.ann_id == 4).best_same_iou == pytest.approx(1 / 3)  # 200 / 600 px^2
    counts = count_reasons(missed)
    assert counts == {"total": 5, NEVER_ASSIGNED: 1, CROWDED_OUT: 1, CONFUSED: 1, MISLOCALISED: 1, LOW_SCORE: 1,
                      NO_DETECTION: 0}
    # results alone: the model-only reasons fall back to "no detection"
    assert count_reasons(why_missed(records))[NO_DETECTION] == 2
    with pytest.raises(ValueError, match="evidence has no entry for annotation id 2"):
        why_missed(records, {1: ASSIGNED})


@pytest.fixture(scope="module")
def shipped():
    checkpoint = load_checkpoint(DATA_DIR / "checkpoints" / "nanodet_m_synthetic.pt", model_family="gfl")
    model = build_model_from_checkpoint(checkpoint).eval()
    return model, checkpoint["train_config"]["input_size"], open_dataset(DATA_DIR / "synthetic" / "val")


def test_the_reasons_partition_the_missed_gts_of_the_shipped_checkpoint(shipped):
    model, size, dataset = shipped
    predictions = predict_dataset(get_family("gfl"), model, dataset, size)
    results = to_coco_results(predictions, dataset.image_ids, dataset.label_to_category_id)
    # at the operating point 0.3: with every detection kept, this checkpoint misses no gt
    records = match_detections(dataset.coco, [r for r in results if r["score"] >= 0.3])
    evidence = prior_evidence("gfl", model, dataset, size)
    missed = why_missed(records, evidence)
    unmatched = {g.ann_id for g in records.gts if not g.ignored and g.matched[0] is None}  # thresholds[0] = 0.5
    assert records.iou_thresholds[0] == 0.5
    assert [m.ann_id for m in missed] == [g.ann_id for g in records.gts if g.ann_id in unmatched]
    counts = count_reasons(missed)
    assert counts["total"] == len(unmatched) > 0
    assert sum(counts[r] for r in REASONS) == counts["total"]
    for m in missed:  # each reason holds for its gt
        if m.reason == NEVER_ASSIGNED:
            assert m.num_pos == 0
        elif m.reason == LOW_SCORE:
            assert m.num_pos > 0 and m.best_same_iou < 0.1 and m.best_other_iou < 0.5


def test_prior_evidence_is_the_training_assignment(shipped):
    model, size, dataset = shipped
    evidence = prior_evidence("gfl", model, dataset, size)
    assert len(evidence) == sum(1 for a in dataset.coco.anns.values() if not a.get("iscrowd", 0))
    # image 0 by hand: the val images are 320 x 320, so the inference resize is the identity
    image, target = dataset[0]
    assigner = ATSSPriorAssigner.from_model(model, (size, size))
    gt_inds = assigner.assign(target["boxes"])
    with torch.no_grad():
        from detviz.gfl.model import normalize_images
        cls_scores, _ = model(normalize_images(image[None]))
    scores = torch.cat([s[0].permute(1, 2, 0).reshape(-1, s.shape[1]) for s in cls_scores]).sigmoid()  # [N, C]
    ann_ids = dataset.coco.getAnnIds(imgIds=[dataset.image_ids[0]])
    for g, ann_id in enumerate(ann_ids):
        pos = gt_inds == g
        assert evidence[ann_id].num_pos == int(pos.sum())
        if pos.any():
            label = int(target["labels"][g])
            assert evidence[ann_id].best_score == pytest.approx(float(scores[pos, label].max()), abs=1e-5)


def test_tiny_and_degenerate_gts_are_never_assigned(tmp_path):
    _one_black_image(tmp_path, [[10, 10, 30, 30], [46, 46, 2, 2], [20, 20, 0, 9]])  # a box, a speck, no width
    torch.manual_seed(0)
    model = build_nanodet(NanoDetConfig(num_classes=1, input_size=64)).eval()
    with pytest.warns(UserWarning, match="dropped 1 boxes without positive width and height"):
        dataset = open_dataset(tmp_path)
    evidence = prior_evidence("gfl", model, dataset, 64)
    assert evidence[1].num_pos > 0 and 0 <= evidence[1].best_score <= 1
    assert evidence[2] == PriorEvidence(0, evidence[2].best_score) and math.isnan(evidence[2].best_score)
    assert evidence[3].num_pos == 0  # no width: training drops it, so it is never assigned


def test_bad_arguments_are_named(shipped):
    model, size, dataset = shipped
    with pytest.raises(ValueError, match=r"family_name must be one of \('gfl', 'faster_rcnn', 'yolov3', 'sparse'\)"
                                         r".*got 'retinanet'"):
        prior_evidence("retinanet", model, dataset, size)
    model.train()
    try:
        with pytest.raises(ValueError, match="model must be in eval mode"):
            prior_evidence("gfl", model, dataset, size)
    finally:
        model.eval()


def _one_black_image(folder, boxes, size=64):
    """``folder/images/a.png`` (black, size x size) and ``folder/annotations.json`` with class-1 gts (xywh)."""
    from PIL import Image

    (folder / "images").mkdir()
    Image.new("RGB", (size, size)).save(folder / "images" / "a.png")
    (folder / "annotations.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": size, "height": size}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [{"id": k + 1, "image_id": 1, "category_id": 1, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
                        for k, b in enumerate(boxes)]}))
    return folder


def test_yolov3_evidence_is_the_best_anchor_and_a_collision_loses_it(tmp_path):
    from detviz.engine.families import get_family

    boxes = [[4, 4, 40, 40], [6, 6, 40, 40], [44, 44, 6, 6]]  # the first two share a cell and an anchor
    _one_black_image(tmp_path, boxes)
    torch.manual_seed(0)
    model = get_family("yolov3").build(1, 64).eval()
    evidence = prior_evidence("yolov3", model, open_dataset(tmp_path), 64)
    assert [evidence[k].num_pos for k in (1, 2, 3)] == [0, 1, 1]  # gt 2 overwrote gt 1, as in y_true
    assert math.isnan(evidence[1].best_score) and 0 < evidence[3].best_score < 1
    # gt 2's prior read from build_targets and the raw outputs (the image is black, as the dataset's)
    from detviz.yolo.targets import build_targets

    matches = build_targets([torch.tensor([[6.0, 6, 46, 46]])], [torch.tensor([0])], input_size=(64, 64),
                            num_classes=1, anchors=model.cfg.anchors).matches
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 64))[int(matches.level[0])][0, matches.row[0], matches.col[0], matches.slot[0]]
    assert evidence[2].best_score == pytest.approx(float(out[4].sigmoid() * out[5].sigmoid()), abs=1e-6)


def test_sparse_evidence_is_the_objectness_target(tmp_path):
    from detviz.engine.families import get_family
    from detviz.gfl.model import normalize_images
    from detviz.sparse.targets import centerness_targets

    # a 20 px box, and a 3 px one between the stride-8 centres (4, 12, ...): no location inside it
    boxes = [[10, 10, 20, 20], [5, 5, 3, 3]]
    _one_black_image(tmp_path, boxes)
    torch.manual_seed(0)
    model = get_family("sparse").build(1, 64).eval()
    evidence = prior_evidence("sparse", model, open_dataset(tmp_path), 64)
    # the library's own objectness targets say the same: positive where the gt contains the location
    points = torch.cat([center_points((64 // s, 64 // s), s) for s in model.cfg.strides])
    positive = centerness_targets(points, torch.tensor([[10.0, 10, 30, 30]])) > 0
    assert evidence[1].num_pos == int(positive.sum()) > 0
    assert evidence[2].num_pos == 0 and math.isnan(evidence[2].best_score)
    with torch.no_grad():
        objectness = torch.cat([o.flatten() for o in model(normalize_images(torch.zeros(1, 3, 64, 64))).objectness])
    assert evidence[1].best_score == pytest.approx(float(objectness[positive].max()), abs=1e-6)
