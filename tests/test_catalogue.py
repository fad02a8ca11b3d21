"""The catalogue of bad input and faults: what a user gets wrong, and what detviz says back.

Each case calls the public API (or the command line) the way a user would get it wrong and
checks the error type and that the message names the argument, file or entry and what was
expected; the fault cases check that nothing the user had is lost or left half-written.
The other test files check the same paths in depth; this one keeps them in one list.
"""
import json
import math
import os
import re

import pytest
import torch

from detviz import boxes as B
from detviz import losses as L
from detviz import viz
from detviz._io import write_atomic
from detviz.assigners import ATSSAssigner, Matcher
from detviz.cli import main
from detviz.cli.common import staged_folder
from detviz.coders import BoxCoder
from detviz.datasets import CocoDetection, ImageFolder
from detviz.engine.checkpoints import load_checkpoint
from detviz.engine.config import TrainConfig, check_config
from detviz.engine.families import get_family
from detviz.engine.inference import to_coco_results
from detviz.engine.logs import write_metrics
from detviz.engine.processes import training_device
from detviz.evaluation import coco_metrics, confusion_matrix, evaluate_coco, match_detections, tide_errors
from detviz.gfl.predict import gfl_predict
from detviz.roi_ops import roi_align
from detviz.trace import Trace
from detviz.viz.pictures import new_figure, save_figure

BOX = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
INVERTED = torch.tensor([[10.0, 0.0, 0.0, 10.0]])
GFL = get_family("gfl")


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """A two-image COCO ground truth (pycocotools index) for the evaluation cases."""
    from detviz.datasets.cocofile import load_coco
    folder = tmp_path_factory.mktemp("gt")
    document = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64},
                           {"id": 2, "file_name": "b.png", "width": 64, "height": 64}],
                "categories": [{"id": 1, "name": "cat"}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20], "area": 400,
                                 "iscrowd": 0}]}
    (folder / "gt.json").write_text(json.dumps(document))
    return load_coco(folder / "gt.json")


def _result(**changes):
    return {**{"image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20], "score": 0.9}, **changes}


API = [
    # boxes
    ("box_iou inverted", lambda: B.box_iou(INVERTED, BOX), ValueError, "x2 >= x1"),
    ("box_iou [N, 3]", lambda: B.box_iou(torch.zeros(2, 3), BOX), ValueError, r"boxes1 must be Tensor\[N, 4\]"),
    ("box_iou NaN", lambda: B.box_iou(torch.tensor([[0.0, 0, math.nan, 4]]), BOX), ValueError, "finite"),
    ("box_area of a list", lambda: B.box_area([[0, 0, 1, 1]]), TypeError,
     r"boxes must be Tensor\[N, 4\] xyxy, got list"),
    ("nms lengths", lambda: B.nms(BOX, torch.tensor([0.5, 0.4]), 0.5), ValueError, "scores"),
    ("batched_nms idxs length", lambda: B.batched_nms(BOX, torch.tensor([0.5]), torch.tensor([0, 1]), 0.5),
     ValueError, "idxs"),
    ("clip to a negative size", lambda: B.clip_boxes_to_image(BOX, (-1, 10)), ValueError,
     r"size must be \(height, width\) >= 0, got \(-1, 10\)"),
    ("distance2bbox rows", lambda: B.distance2bbox(torch.zeros(3, 2), torch.zeros(2, 4)), ValueError, "distance"),
    # losses
    ("weight_reduce tensor 0", lambda: L.weight_reduce(torch.ones(3), avg_factor=torch.tensor(0.0)), ValueError,
     "avg_factor must be > 0"),
    ("weight_reduce NaN", lambda: L.weight_reduce(torch.ones(3), avg_factor=math.nan), ValueError,
     "avg_factor must be > 0"),
    ("weight_reduce weight shape", lambda: L.weight_reduce(torch.ones(3), torch.ones(2)), ValueError,
     "weight must have the shape of loss"),
    ("giou_loss rows", lambda: L.giou_loss(torch.zeros(2, 4), torch.zeros(3, 4)), ValueError,
     "as many rows as boxes1"),
    ("qfl labels beyond background", lambda: L.quality_focal_loss(torch.zeros(2, 3), torch.tensor([0, 4]),
                                                                  torch.zeros(2)), ValueError, "labels must lie in"),
    ("distribution channels", lambda: L.distribution_project(torch.zeros(2, 20), reg_max=7), ValueError,
     r"reg must be Tensor\[..., 4 \* \(reg_max \+ 1\)\]"),
    # assigners, coders, RoI ops
    ("ATSS level counts", lambda: ATSSAssigner().assign(torch.zeros(10, 4), [4, 4], BOX, gt_labels=torch.tensor([0])),
     ValueError, "num_level_bboxes must be non-negative counts summing to the 10 bboxes, got"),
    ("Matcher thresholds", lambda: Matcher(0.3, 0.7), ValueError, "low_threshold"),
    ("BoxCoder weights", lambda: BoxCoder((1.0, 1.0)), ValueError, "weights"),
    ("roi_align boxes", lambda: roi_align(torch.zeros(1, 1, 8, 8), torch.zeros(2, 4), 2), ValueError, "boxes"),
    # inference and training settings
    ("images in 0..255", lambda: GFL.predict(GFL.build(2, 64).eval(), torch.rand(1, 3, 64, 64) * 255),
     ValueError, "divide by 255"),
    ("uint8 images", lambda: GFL.predict(GFL.build(2, 64).eval(), torch.zeros(1, 3, 64, 64, dtype=torch.uint8)),
     ValueError, "float Tensor"),
    ("gfl_predict odd size", lambda: gfl_predict(GFL.build(2, 64).eval(), torch.zeros(1, 3, 70, 64)), ValueError,
     "multiples of the largest stride 32"),
    ("gfl_predict nms_pre", lambda: gfl_predict(GFL.build(2, 64).eval(), torch.zeros(1, 3, 64, 64), nms_pre=0),
     ValueError, "nms_pre must be an int >= 1"),
    ("unknown optimizer", lambda: check_config(TrainConfig(optimizer="adam"), GFL), ValueError,
     "optimizer must be one of"),
    ("input size not a multiple", lambda: check_config(TrainConfig(input_size=100), GFL), ValueError,
     "input_size must be a multiple of 32"),
    ("overfit with val data", lambda: check_config(TrainConfig(overfit_batch=2, val_data="x"), GFL), ValueError,
     "give no val_data"),
    ("stop_at_ap50 above 1", lambda: check_config(TrainConfig(stop_at_ap50=2.0, val_data="x"), GFL), ValueError,
     r"stop_at_ap50 must be in \(0, 1\]"),
    ("device gpu", lambda: training_device("gpu"), ValueError, "device must be 'cpu', 'cuda' or 'cuda:N'"),
    ("to_coco_results inverted", lambda: to_coco_results(
        [{"boxes": INVERTED, "labels": torch.tensor([0]), "scores": torch.tensor([0.5])}], [1], {0: 1}),
     ValueError, "x2 >= x1"),
    ("to_coco_results unknown label", lambda: to_coco_results(
        [{"boxes": BOX, "labels": torch.tensor([3]), "scores": torch.tensor([0.5])}], [1], {0: 1}),
     ValueError, r"labels \[3\] without a COCO category"),
    # drawing
    ("draw a float image in 0..255", lambda: viz.show_image(new_figure(2, 2)[1][0], torch.rand(3, 8, 8) * 255),
     ValueError, "must lie in"),
    ("save a figure as gif", lambda: save_figure(new_figure(2, 2)[0], "x.gif"), ValueError, "suffix '.gif'"),
]

EVALUATION = [
    ("results: unknown image", lambda c: match_detections(c, [_result(image_id=9)]), ValueError,
     r"results\[0\]: image_id 9 is not an image"),
    ("results: unknown category", lambda c: coco_metrics(c, [_result(category_id=5)]), ValueError,
     r"results\[0\]: category_id 5 is not a category"),
    ("results: NaN score", lambda c: coco_metrics(c, [_result(score=math.nan)]), ValueError,
     "score must be a finite number"),
    ("results: xyxy as xywh", lambda c: match_detections(c, [_result(bbox=[30, 30, 10, -5])]), ValueError,
     "not xyxy"),
    ("results: not a list", lambda c: coco_metrics(c, {"bbox": [0, 0, 1, 1]}), TypeError,
     "results must be a list"),
    ("results: 3-number bbox", lambda c: tide_errors(c, [_result(bbox=[1, 2, 3])]), ValueError, "bbox"),
    ("results: unknown image for COCOeval", lambda c: evaluate_coco(c, [_result(image_id=9)]), ValueError,
     r"image ids \[9\] that are not in the ground truth"),
    ("confusion: unknown mode", lambda c: confusion_matrix(c, [_result()], mode="both"), ValueError, "mode"),
]


@pytest.mark.parametrize("name, call, error, message", API, ids=[case[0] for case in API])
def test_api(name, call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("name, call, error, message", EVALUATION, ids=[case[0] for case in EVALUATION])
def test_evaluation(coco, name, call, error, message):
    with pytest.raises(error, match=message):
        call(coco)


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _ann_file(tmp_path, **changes) -> str:
    document = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20], "area": 400}],
                "categories": [{"id": 1, "name": "cat"}]}
    document.update(changes)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(document))
    return path


FILES = [
    ("annotation file missing", lambda t: CocoDetection(t, t / "none.json"), FileNotFoundError, "does not exist"),
    ("annotation file not JSON", lambda t: CocoDetection(t, _write(t / "x.json", b"{")), ValueError,
     "is not a readable COCO annotation file"),
    ("no categories", lambda t: CocoDetection(t, _ann_file(t, categories=[])), ValueError, "'categories' is empty"),
    ("annotation without bbox", lambda t: CocoDetection(t, _ann_file(t, annotations=[{"id": 1, "image_id": 1,
                                                                                     "category_id": 1}])),
     ValueError, r"annotations\[0\] \(id 1\) has no 'bbox'"),
    ("image without file_name", lambda t: CocoDetection(t, _ann_file(t, images=[{"id": 1}], annotations=[])),
     ValueError, r"images\[0\] has no 'file_name'"),
    ("NaN in a bbox", lambda t: CocoDetection(t, _ann_file(t, annotations=[
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, math.nan, 20, 20]}])), ValueError, "finite"),
    ("normalised boxes", lambda t: CocoDetection(t, _ann_file(t, annotations=[
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0.1, 0.1, 0.5, 0.5]}])), ValueError, "normalised"),
    ("unknown category id", lambda t: CocoDetection(t, _ann_file(t, annotations=[
        {"id": 1, "image_id": 1, "category_id": 9, "bbox": [4, 4, 20, 20]}])), ValueError,
     r"category ids \[9\] that are not in"),
    ("image folder missing", lambda t: ImageFolder(t / "nowhere"), FileNotFoundError, "does not exist"),
    ("image folder empty", lambda t: ImageFolder(t), ValueError, "holds no images"),
    ("corrupt image", lambda t: ImageFolder(_write(t / "a.jpg", b"xx").parent)[0], OSError, "cannot read image"),
    ("checkpoint missing", lambda t: load_checkpoint(t / "model.pt"), FileNotFoundError, "does not exist"),
    ("checkpoint corrupt", lambda t: load_checkpoint(_write(t / "c.pt", b"garbage")), ValueError,
     "cannot read checkpoint"),
    ("checkpoint foreign", lambda t: torch.save({"a": 1}, t / "f.pt") or load_checkpoint(t / "f.pt"), ValueError,
     "not a detviz checkpoint"),
    ("trace truncated", lambda t: Trace.load(_write(t / "t.pt", b"PK\x03\x04")), ValueError, "cannot read trace"),
]


@pytest.mark.parametrize("name, call, error, message", FILES, ids=[case[0] for case in FILES])
def test_files(tmp_path, name, call, error, message):
    with pytest.raises(error, match=message) as raised:
        call(tmp_path)
    assert str(tmp_path) in str(raised.value) or error is TypeError  # the message names the file


COMMANDS = [
    ("train: batch size 0", ["train", "--model", "gfl", "--batch-size", "0"], 2, "expected a positive integer"),
    ("train: unknown model", ["train", "--model", "ssd"], 2, "invalid choice: 'ssd'"),
    ("train: stop above 1", ["train", "--model", "gfl", "--stop-at-ap50", "2"], 2, r"expected a number in \[0, 1\]"),
    ("evaluate: no checkpoint", ["evaluate", "--checkpoint", "{t}/none.pt", "--data", "data/synthetic/val",
                                 "--out", "{t}/o"], 1, "does not exist"),
    ("evaluate: device gpu", ["evaluate", "--checkpoint", "data/checkpoints/nanodet_m_synthetic.pt", "--data",
                              "data/synthetic/val", "--device", "gpu", "--out", "{t}/o"], 1, "device must be"),
    ("predict: no image folder", ["predict", "--checkpoint", "data/checkpoints/nanodet_m_synthetic.pt", "--images",
                                  "{t}/none", "--out", "{t}/o"], 1, "does not exist"),
    ("analyze: empty results", ["analyze", "--results", "{t}/empty.json", "--data", "data/synthetic/val",
                                "--out", "{t}/o"], 1, "is empty"),
    ("analyze: results not JSON", ["analyze", "--results", "{t}/broken.json", "--data", "data/synthetic/val",
                                   "--out", "{t}/o"], 1, "is not readable JSON"),
    ("data: existing folder", ["data", "--seed", "0", "--num-images", "2", "--out", "data/synthetic/val"], 1,
     "overwrite"),
    ("score threshold 1", ["analyze", "--results", "x", "--data", "y", "--score-thresh", "1"], 2,
     r"expected a number in \[0, 1\)"),
]


@pytest.mark.parametrize("name, argv, code, message", COMMANDS, ids=[case[0] for case in COMMANDS])
def test_commands(tmp_path, capsys, monkeypatch, name, argv, code, message):
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the README's paths
    (tmp_path / "empty.json").write_text("[]")
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(SystemExit) as stop:
        main([arg.format(t=tmp_path) for arg in argv])
    assert stop.value.code == code
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "o").exists()  # a failed command leaves no output folder


# ---------------------------------------------------------------- faults: nothing lost, nothing half-written

def _disk_full(*args):
    raise OSError(28, "No space left on device")


def test_a_full_disk_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_metrics(path, [{"step": 1, "mAP": 0.5}])
    monkeypatch.setattr("detviz._io.os.fsync", _disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_metrics(path, [{"step": 1, "mAP": 0.5}, {"step": 2, "mAP": 0.6}])
    assert json.loads(path.read_text()) == [{"step": 1, "mAP": 0.5}]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left behind


def test_a_truncated_metrics_file_is_named_on_resume(tmp_path):
    from detviz.engine.logs import metrics_history
    path = tmp_path / "metrics.json"
    path.write_text('[{"step": 1, "mAP": 0.5}, {"st')
    with pytest.raises(ValueError, match=f"{path} is not readable JSON .*restore it, or move it away"):
        metrics_history(path, resumed_step=4)


def test_an_interrupt_while_writing_a_folder_leaves_nothing(tmp_path):
    out = tmp_path / "report"
    with pytest.raises(KeyboardInterrupt), staged_folder(out) as work:
        (work / "half.txt").write_text("half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "objects.csv"
    path.write_text("old")
    monkeypatch.setattr("detviz._io.os.replace", _disk_full)
    with pytest.raises(OSError):
        write_atomic(path, "new " * 1000)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["objects.csv"]


def test_a_file_in_the_way_of_an_output_folder_is_left_alone(tmp_path, capsys):
    out = tmp_path / "report"
    out.write_text("the user's file")
    with pytest.raises(SystemExit):
        main(["evaluate", "--checkpoint", "x", "--data", "y", "--out", str(out)])
    assert "already exists and is not an empty folder" in capsys.readouterr().err
    assert out.read_text() == "the user's file"
