"""detviz.analysis.assignment on a hand-made COCO json (the ``two_image_coco`` fixture)."""
import json

import pytest
import torch
import torchvision
from torch import nn
from torch.testing import assert_close
from torchvision.models.detection import FasterRCNN as TVFasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops import MultiScaleRoIAlign

from detviz.analysis import assignment
from detviz.anchors import AnchorGenerator
from detviz.boxes import box_iou
from detviz.datasets import CocoDetection
from detviz.gfl.model import NanoDetConfig, build_nanodet
from detviz.rcnn.model import FasterRCNN

NANODET_M = dict(strides=(8, 16, 32), octave_base_scale=5.0, topk=9)  # written out by hand from nanodet-m.yml


def test_buckets():
    assert [assignment.size_bucket(w, h) for w, h in ((31, 31), (32, 32), (95, 96), (96, 96))] == \
        ["small", "medium", "medium", "large"]
    assert [assignment.aspect_bucket(w, h) for w, h in ((100, 49), (100, 50), (50, 99), (10, 20))] == \
        ["wide", "square", "square", "tall"]


def test_atss_report_lists_the_tiny_unassigned_gt(two_image_coco):
    report = assignment.assignment_report(two_image_coco, assignment.ATSSPriorAssigner.from_config(NanoDetConfig()))
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


def test_max_iou_report_and_side_by_side(two_image_coco):
    generator = AnchorGenerator(((32,), (64,), (128,)), ((0.5, 1.0, 2.0),) * 3)
    matcher = assignment.MaxIoUPriorAssigner.from_anchor_generator(generator, (320, 320), (8, 16, 32))
    assert matcher.priors.shape == (3 * (40 * 40 + 20 * 20 + 10 * 10), 4)
    atss = assignment.assignment_report(two_image_coco, assignment.ATSSPriorAssigner.from_config(NanoDetConfig()))
    iou = assignment.assignment_report(two_image_coco, matcher)
    # with low-quality matches every gt keeps at least its best anchor here, the 6 x 6 speck included
    assert [r["num_pos"] > 0 for r in iou.rows] == [True, True, True, True]
    text = assignment.compare_reports([atss, iou])
    assert "no positive, size small: [0] 1/1 | [1] 0/1" in text
    strict = assignment.MaxIoUPriorAssigner.from_anchor_generator(generator, (320, 320), (8, 16, 32),
                                                                  allow_low_quality_matches=False)
    assert assignment.assignment_report(two_image_coco, strict).rows[1]["num_pos"] == 0
    with pytest.raises(ValueError, match="same gts"):
        assignment.compare_reports([atss, assignment.assignment_report(two_image_coco, matcher, indices=[0])])


def test_from_config_equals_the_explicit_constructor(two_image_coco):
    explicit = assignment.ATSSPriorAssigner((320, 320), **NANODET_M)
    configured = assignment.ATSSPriorAssigner.from_config(NanoDetConfig())
    assert configured.input_size == explicit.input_size == (320, 320)
    assert configured.num_level_priors == explicit.num_level_priors == [1600, 400, 100]
    assert_close(configured.priors, explicit.priors, rtol=0, atol=0)
    assert configured.name == explicit.name == "ATSS top9, grid cells 5x stride"
    assert assignment.assignment_report(two_image_coco, configured).to_dict() == \
        assignment.assignment_report(two_image_coco, explicit).to_dict()


def test_from_config_reads_every_setting():
    other = assignment.ATSSPriorAssigner.from_config(NanoDetConfig(input_size=256, strides=(16, 32), atss_topk=5,
                                                                   octave_base_scale=4.0))
    assert other.input_size == (256, 256) and other.num_level_priors == [16 * 16, 8 * 8]
    assert other.level_names == ["stride 16", "stride 32"] and other.assigner.topk == 5
    assert_close(other.priors[0], torch.tensor([-24.0, -24.0, 40.0, 40.0]))  # centre 8, side 4 * 16
    wide = assignment.ATSSPriorAssigner.from_config(NanoDetConfig(), input_size=(320, 480), name="wide")
    assert wide.input_size == (320, 480) and wide.num_level_priors == [40 * 60, 20 * 30, 10 * 15]
    assert wide.name == "wide"


def test_from_model_reads_model_cfg():
    torch.manual_seed(0)
    model = build_nanodet(NanoDetConfig(num_classes=3))
    assigner = assignment.ATSSPriorAssigner.from_model(model)
    assert_close(assigner.priors, assignment.ATSSPriorAssigner((320, 320), **NANODET_M).priors, rtol=0, atol=0)
    assert assignment.ATSSPriorAssigner.from_model(model, input_size=(160, 160)).num_level_priors == [400, 100, 25]


def _tutorial_rcnn(rcnn=FasterRCNN, generator=AnchorGenerator):
    """The tutorial model of tests/rcnn/test_model.py (mobilenet_v2 features, one stride-32 level, 15 anchors),
    with 2 x 2 RoI features to keep the box head small."""
    torch.manual_seed(0)
    backbone = torchvision.models.mobilenet_v2(weights=None).features
    backbone.out_channels = 1280
    return rcnn(backbone, num_classes=3, min_size=320, max_size=512, box_roi_pool=MultiScaleRoIAlign(["0"], 2, 2),
                rpn_anchor_generator=generator(((32, 64, 128, 256, 512),), ((0.5, 1.0, 2.0),)))


def test_from_rpn_equals_anchors_at_hand_written_strides():
    torch.manual_seed(0)
    model = FasterRCNN(resnet_fpn_backbone(backbone_name="resnet18", weights=None), num_classes=3,
                       rpn_fg_iou_thresh=0.6, rpn_bg_iou_thresh=0.4)
    from_rpn = assignment.MaxIoUPriorAssigner.from_rpn(model, (256, 256))
    by_hand = assignment.MaxIoUPriorAssigner.from_anchor_generator(
        model.rpn.anchor_generator, (256, 256), (4, 8, 16, 32, 64), high_threshold=0.6, low_threshold=0.4)
    assert from_rpn.level_names == ["stride 4", "stride 8", "stride 16", "stride 32", "stride 64"]
    assert from_rpn.num_level_priors == by_hand.num_level_priors == [3 * 64 * 64, 3 * 32 * 32, 3 * 16 * 16,
                                                                    3 * 8 * 8, 3 * 4 * 4]
    assert_close(from_rpn.priors, by_hand.priors, rtol=0, atol=0)
    assert repr(from_rpn.matcher) == repr(by_hand.matcher) == \
        "Matcher(high_threshold=0.6, low_threshold=0.4, allow_low_quality_matches=True)"
    assert from_rpn.name == "max-IoU 0.6/0.4 + low-quality"


def test_from_rpn_reads_torchvision_faster_rcnn_alike():
    ours = assignment.MaxIoUPriorAssigner.from_rpn(_tutorial_rcnn(), (128, 192))
    theirs = assignment.MaxIoUPriorAssigner.from_rpn(_tutorial_rcnn(TVFasterRCNN, TVAnchorGenerator), (128, 192))
    assert ours.level_names == theirs.level_names == ["stride 32"]
    assert ours.num_level_priors == theirs.num_level_priors == [15 * 4 * 6]
    assert_close(ours.priors, theirs.priors, rtol=0, atol=0)
    assert repr(ours.matcher) == repr(theirs.matcher)


def test_from_rpn_leaves_the_model_as_it_was():
    model = _tutorial_rcnn()
    model.train()
    model.backbone[0].eval()  # a mixed state must come back as it was, not all-train
    flags = {name: m.training for name, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assignment.MaxIoUPriorAssigner.from_rpn(model, (128, 128))
    assert {name: m.training for name, m in model.named_modules()} == flags
    after = model.state_dict()
    assert after.keys() == state.keys()
    for key, value in state.items():  # BatchNorm running statistics and counters included
        assert_close(after[key], value, rtol=0, atol=0, msg=key)


def test_bad_inputs_name_what_was_expected():
    with pytest.raises(ValueError, match="multiples of every stride"):
        assignment.ATSSPriorAssigner((300, 300), **NANODET_M)
    with pytest.raises(ValueError, match="multiples of every stride"):
        assignment.ATSSPriorAssigner.from_config(NanoDetConfig(input_size=300))
    with pytest.raises(TypeError, match="'strides', 'octave_base_scale', and 'topk'"):
        assignment.ATSSPriorAssigner((320, 320))
    with pytest.raises(ValueError, match=r"input_size must be \(H, W\)"):
        assignment.ATSSPriorAssigner(320, **NANODET_M)
    with pytest.raises(ValueError, match="strides must be a non-empty sequence of positive ints"):
        assignment.ATSSPriorAssigner((320, 320), **{**NANODET_M, "strides": ()})
    with pytest.raises(ValueError, match="topk must be a positive int"):
        assignment.ATSSPriorAssigner((320, 320), **{**NANODET_M, "topk": 0})
    with pytest.raises(ValueError, match="octave_base_scale must be a positive number"):
        assignment.ATSSPriorAssigner((320, 320), **{**NANODET_M, "octave_base_scale": -1.0})
    with pytest.raises(TypeError, match="cfg must be a detviz.gfl.model.NanoDetConfig, got dict"):
        assignment.ATSSPriorAssigner.from_config({"strides": (8, 16, 32)})
    with pytest.raises(TypeError, match="model must be an nn.Module whose .cfg is a .*NanoDetConfig"):
        assignment.ATSSPriorAssigner.from_model(nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"model must be a Faster R-CNN .* \.rpn\.anchor_generator"):
        assignment.MaxIoUPriorAssigner.from_rpn(nn.Linear(2, 2), (320, 320))
    with pytest.raises(ValueError, match="sum to the 4 anchors"):
        assignment.MaxIoUPriorAssigner(torch.zeros(4, 4), [3], (32, 32))


class _AssignOnly:
    """An assigner seen through ``assign`` alone: the report must compute the IoU itself."""

    def __init__(self, assigner):
        self._assigner = assigner
        for key in ("priors", "num_level_priors", "input_size", "level_names", "name"):
            setattr(self, key, getattr(assigner, key))

    def assign(self, gt_boxes):
        return self._assigner.assign(gt_boxes)


class _ItemsOnly:
    """A dataset seen through ``len`` and ``[]`` alone: every image is loaded to be measured."""

    def __init__(self, dataset):
        self._dataset, self.class_names = dataset, dataset.class_names

    def __len__(self):
        return len(self._dataset)

    def __getitem__(self, index):
        return self._dataset[index]


def _anchor_matcher():
    generator = AnchorGenerator(((32,), (64,), (128,)), ((0.5, 1.0, 2.0),) * 3)
    return assignment.MaxIoUPriorAssigner.from_anchor_generator(generator, (320, 320), (8, 16, 32))


@pytest.mark.parametrize("make", [lambda: assignment.ATSSPriorAssigner.from_config(NanoDetConfig()), _anchor_matcher],
                         ids=["atss", "max_iou"])
def test_the_report_reads_the_assigners_iou_once_per_image(two_image_coco, monkeypatch, make):
    assigner = make()
    computed_again = assignment.assignment_report(_ItemsOnly(two_image_coco), _AssignOnly(assigner)).to_dict()
    calls = []

    def counted_iou(boxes1, boxes2):
        calls.append((len(boxes1), len(boxes2)))
        return box_iou(boxes1, boxes2)

    monkeypatch.setattr("detviz.assigners.box_iou", counted_iou)
    monkeypatch.setattr("detviz.analysis.assignment.box_iou", counted_iou)
    report = assignment.assignment_report(two_image_coco, assigner)
    assert report.to_dict() == computed_again  # best IoU and level included, to the last bit
    assert len(calls) == 2  # two images, one IoU matrix each
    gt_inds, ious = assigner.assign_with_ious(torch.tensor([[10.0, 10.0, 90.0, 60.0]]))
    assert ious.shape == (assigner.priors.shape[0], 1)
    assert_close(ious, box_iou(assigner.priors, torch.tensor([[10.0, 10.0, 90.0, 60.0]])), rtol=0, atol=0)
    assert torch.equal(gt_inds, assigner.assign(torch.tensor([[10.0, 10.0, 90.0, 60.0]])))
    assert assigner.assign_with_ious(torch.zeros(0, 4))[1].shape == (assigner.priors.shape[0], 0)


def test_sizes_missing_from_the_json_come_from_the_image_header(two_image_coco, tmp_path):
    coco = json.loads((tmp_path / "ann.json").read_text())
    for image in coco["images"]:
        del image["width"], image["height"]
    folder = tmp_path / "no_sizes"
    folder.mkdir()
    (folder / "ann.json").write_text(json.dumps(coco))
    whole = (tmp_path / "a.png").read_bytes()
    (folder / "a.png").write_bytes(whole[:60])  # signature and IHDR (640 x 640) intact, the pixels cut off
    assert len(whole) > 60
    (folder / "b.png").write_bytes((tmp_path / "b.png").read_bytes())
    headers_only = CocoDetection(folder, folder / "ann.json")
    with pytest.raises(OSError, match="cannot read image"):
        headers_only[0]  # the pixels cannot be decoded
    atss = assignment.ATSSPriorAssigner.from_config(NanoDetConfig())
    assert assignment.assignment_report(headers_only, atss).to_dict() == \
        assignment.assignment_report(two_image_coco, atss).to_dict()  # sizes as the json gave them
    (folder / "a.png").unlink()
    with pytest.raises(OSError, match=r"cannot read image .*a\.png"):
        assignment.assignment_report(headers_only, atss)
