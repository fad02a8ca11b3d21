"""detviz.analysis.augmentation: each gt's fate over random training warps, on hand-made COCO jsons."""
import json

import pytest

from detviz.analysis.assignment import ATSSPriorAssigner, assignment_report
from detviz.analysis.augmentation import OUTCOMES, augmentation_audit
from detviz.datasets.augment import NanoDetWarp
from detviz.datasets.coco import CocoDetection
from detviz.gfl.model import NanoDetConfig

IDENTITY = dict(scale=(1.0, 1.0), translate=0.0, flip=0.0)


def _dataset(tmp_path, boxes, size=(320, 320)):
    """One image of ``size`` (W, H) with class-1 gts at ``boxes`` (xywh); no image file: sizes come from the json."""
    coco = {"images": [{"id": 7, "file_name": "none.png", "width": size[0], "height": size[1]}],
            "categories": [{"id": 1, "name": "thing"}],
            "annotations": [{"id": k + 1, "image_id": 7, "category_id": 1, "bbox": b, "area": b[2] * b[3],
                             "iscrowd": 0} for k, b in enumerate(boxes)]}
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    return CocoDetection(tmp_path, tmp_path / "ann.json")


def _atss(size=320):
    return ATSSPriorAssigner.from_config(NanoDetConfig(input_size=size))


def test_identity_warp_is_the_assignment_report(tmp_path):
    # a large box, a 6 x 6 speck between cell centres, and a 120 x 16 strip
    dataset = _dataset(tmp_path, [[50, 50, 100, 100], [205, 205, 6, 6], [10, 250, 120, 16]])
    audit = augmentation_audit(dataset, NanoDetWarp((320, 320), **IDENTITY), _atss(), draws=3)
    report = assignment_report(dataset, _atss())
    assert [r["assigned"] for r in audit.rows] == [float(r["num_pos"] > 0) for r in report.rows]
    assert [r["clipped_away"] for r in audit.rows] == [0.0, 0.0, 0.0]
    assert audit.rows[1]["too_small"] == 1.0  # 6 px < stride 8 and no positive prior
    assert audit.min_stride == 8.0
    for row in audit.rows:
        assert sum(row[o] for o in OUTCOMES) == pytest.approx(1.0)


def test_shifts_clip_gts_at_the_border_away(tmp_path):
    dataset = _dataset(tmp_path, [[0, 150, 3, 20], [140, 140, 40, 40]])  # a 3 px sliver on the left edge
    warp = NanoDetWarp((320, 320), scale=(1.0, 1.0), translate=0.2, flip=0.5)
    audit = augmentation_audit(dataset, warp, _atss(), draws=40, seed=1)
    sliver, centre = audit.rows
    assert 0 < sliver["clipped_away"] < 1  # shifted out of the input in some draws, not all
    assert centre["clipped_away"] == 0 and centre["assigned"] == 1.0
    again = augmentation_audit(dataset, warp, _atss(), draws=40, seed=1)
    assert again.rows == audit.rows  # seeded
    other = augmentation_audit(dataset, warp, _atss(), draws=40, seed=2)
    assert other.rows[0]["clipped_away"] != sliver["clipped_away"] or other.rows != audit.rows


def test_summary_by_size_and_class(tmp_path):
    dataset = _dataset(tmp_path, [[50, 50, 100, 100], [205, 205, 6, 6]])
    audit = augmentation_audit(dataset, NanoDetWarp((320, 320), **IDENTITY), _atss(), draws=2)
    by_size = audit.summary("size")
    assert by_size["small"] == {"gts": 1, "clipped_away": 0.0, "too_small": 1.0, "unassigned": 0.0, "assigned": 0.0}
    assert by_size["large"]["assigned"] == 1.0 and "medium" not in by_size
    assert audit.summary("class_name")["thing"]["gts"] == 2
    assert "too_small" in audit.table()


def test_bad_arguments_are_named(tmp_path):
    dataset = _dataset(tmp_path, [[50, 50, 100, 100]])
    with pytest.raises(ValueError, match="draws must be an int >= 1, got 0"):
        augmentation_audit(dataset, NanoDetWarp((320, 320)), _atss(), draws=0)
    with pytest.raises(ValueError, match=r"assigner.input_size \(320, 320\) must be the warp's output"):
        augmentation_audit(dataset, NanoDetWarp((256, 256)), _atss(), draws=1)
    audit = augmentation_audit(dataset, NanoDetWarp((320, 320)), _atss(), draws=1)
    with pytest.raises(ValueError, match="key must be 'size' or 'class_name'"):
        audit.summary("aspect")
