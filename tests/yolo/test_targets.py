"""Tests for detviz.yolo.targets (build_targets, featmap_sizes) and the seed-004 trace's transcription."""
import math
import re

import pytest
import torch
from torch.testing import assert_close

from detviz.fixtures import ENTRY_KEYS, QUOTE_KINDS, load_trace
from detviz.yolo.anchors import level_anchors
from detviz.yolo.coder import raw_box_targets
from detviz.yolo.targets import build_targets, featmap_sizes

TRACE = load_trace("seed004_yolov3")

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ---- the trace: schema and transcription ----

def test_trace_schema():
    for name in TRACE.names():
        entry = TRACE.entry(name)
        assert set(entry) <= set(ENTRY_KEYS) | {"remark", "also_lines", "not_checked"}, name
        assert entry["quote"] in QUOTE_KINDS and entry["decimals"] is None, name
        first, last = entry["lines"]
        assert 1 <= first <= last <= len(TRACE.note_lines()), name


def _leaves(value):
    if isinstance(value, dict):
        return [x for v in value.values() for x in _leaves(v)]
    if isinstance(value, list):
        return [x for v in value for x in _leaves(v)]
    return [value]


def _digits_in_order(value, text: str) -> bool:
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 2,556,808 -> 2556808
    pos = 0
    for leaf in _leaves(value):
        found = re.compile(rf"(?<!\d){leaf}(?!\d)").search(text, pos) if leaf >= 10 else None
        found = found or re.compile(str(leaf)).search(text, pos)
        if found is None:
            return False
        pos = found.end()
    return True


@pytest.mark.parametrize("name", [n for n in TRACE.names() if TRACE.entry(n)["quote"] == "numbers"])
def test_trace_numbers_appear_in_their_lines(name):
    entry = TRACE.entry(name)
    assert _digits_in_order(entry["value"], TRACE.quote(name)), (name, TRACE.quote(name))


def test_transcription_check_can_fail():
    assert not _digits_in_order(40638497, TRACE.quote("params.backbone_f32"))
    assert not _digits_in_order([16, 32, 8], TRACE.quote("targets.output_strides"))  # order matters


# ---- targets ----

def test_targets_hand_computed(targets_416):
    # w 60, h 100, centre (130, 200): shape IoU with 59x119 = 5900 / 7121 is the best -> anchor 5,
    # level 1 (stride 16), slot 2, cell col floor(130 / 16) = 8, row floor(200 / 16) = 12
    t = targets_416([[100.0, 150.0, 160.0, 250.0]], [1])
    assert [tuple(y.shape) for y in t.y_true] == [(1, 13, 13, 3, 8), (1, 26, 26, 3, 8), (1, 52, 52, 3, 8)]
    m = t.matches
    assert (m.level.tolist(), m.anchor.tolist(), m.slot.tolist(), m.row.tolist(), m.col.tolist()) == (
        [1], [5], [2], [12], [8])
    assert_close(m.iou, torch.tensor([5900 / 7121]))
    expected = torch.tensor([130 / 416, 200 / 416, 60 / 416, 100 / 416, 1, 0, 1, 0])
    assert_close(t.y_true[1][0, 12, 8, 2], expected)
    assert t.y_true[1].count_nonzero() == 6 and t.y_true[0].count_nonzero() == 0 and t.y_true[2].count_nonzero() == 0
    raw_xy, raw_wh = raw_box_targets(t.y_true[1], level_anchors(1), (416, 416))
    assert_close(raw_xy[0, 12, 8, 2], torch.tensor([0.125, 0.5]))
    assert_close(raw_wh[0, 12, 8, 2], torch.tensor([math.log(60 / 59), math.log(100 / 119)]))
    assert raw_wh.count_nonzero() == 2


def test_targets_empty_and_zero_area_gt():
    t = build_targets([torch.zeros(0, 4), torch.tensor([[5.0, 5.0, 5.0, 30.0]])],
                      [torch.zeros(0, dtype=torch.int64), torch.tensor([0])], input_size=(64, 96), num_classes=2)
    assert [tuple(y.shape) for y in t.y_true] == [(2, 2, 3, 3, 7), (2, 4, 6, 3, 7), (2, 8, 12, 3, 7)]
    assert all(y.count_nonzero() == 0 for y in t.y_true)
    assert t.matches.image.numel() == 0 and t.matches.iou.dtype == torch.float32


def test_targets_on_cell_borders_and_image_edge(targets_416):
    # centre x = 32 is the border between stride-32 cells 0 and 1: cell 1, offset 0;
    # centre (416, 416) on the image corner stays in the last cell with offset 1
    t = targets_416([[-168.0, 0.0, 232.0, 400.0], [216.0, 216.0, 616.0, 616.0]], [0, 2])
    assert t.matches.level.tolist() == [0, 0]
    assert (t.matches.row.tolist(), t.matches.col.tolist()) == ([6, 12], [1, 12])
    raw_xy, _ = raw_box_targets(t.y_true[0], level_anchors(0), (416, 416))
    assert_close(raw_xy[0, 6, 1, 2], torch.tensor([0.0, 0.25]))
    assert_close(raw_xy[0, 12, 12, 2], torch.tensor([1.0, 1.0]))


def test_targets_tiny_and_huge_boxes(targets_416):
    t = targets_416([[100.0, 100.0, 101.0, 101.0], [0.0, 0.0, 416.0, 416.0]], [0, 1])
    assert t.matches.anchor.tolist() == [0, 8] and t.matches.level.tolist() == [2, 0]
    assert (t.matches.row.tolist(), t.matches.col.tolist()) == ([12, 6], [12, 6])
    assert_close(t.y_true[0][0, 6, 6, 2, :5], torch.tensor([0.5, 0.5, 1.0, 1.0, 1.0]))


def test_targets_every_scale_and_collision(targets_416):
    one = targets_416([[100.0, 150.0, 160.0, 250.0]], [1])
    every = targets_416([[100.0, 150.0, 160.0, 250.0]], [1], every_scale=True)
    assert every.matches.level.tolist() == [0, 1, 2] and every.matches.anchor.tolist() == [6, 5, 2]
    assert_close(every.y_true[1], one.y_true[1])  # the best level is written as before
    assert every.y_true[0][0, 6, 4, 0, 4] == 1 and every.y_true[2][0, 25, 16, 2, 4] == 1
    # two gts on the same cell and anchor: the later one replaces the first, class included
    clash = targets_416([[100.0, 150.0, 160.0, 250.0], [101.0, 151.0, 161.0, 251.0]], [0, 2])
    cell = clash.y_true[1][0, 12, 8, 2]
    assert_close(cell[5:], torch.tensor([0.0, 0.0, 1.0]))
    assert_close(cell[0], torch.tensor(131 / 416))


def test_targets_keep_dtype():
    t = build_targets([torch.tensor([[0.0, 0.0, 30.0, 30.0]], dtype=torch.float64)], [torch.tensor([0])],
                      input_size=(64, 64), num_classes=1)
    assert all(y.dtype == torch.float64 for y in t.y_true)


def test_targets_bad_input():
    ok_labels = [torch.tensor([0])]
    with pytest.raises(ValueError, match=r"\[M, 4\] xyxy"):
        build_targets([torch.ones(1, 5)], ok_labels, input_size=(64, 64), num_classes=2)
    with pytest.raises(ValueError, match=r"x2 >= x1"):
        build_targets([torch.tensor([[10.0, 0.0, 5.0, 5.0]])], ok_labels, input_size=(64, 64), num_classes=2)
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        build_targets([torch.ones(1, 4)], [torch.tensor([2])], input_size=(64, 64), num_classes=2)
    with pytest.raises(ValueError, match="divisible by every stride"):
        featmap_sizes((64, 70))
    with pytest.raises(TypeError, match="one Tensor per image"):
        build_targets(torch.ones(1, 4), ok_labels, input_size=(64, 64), num_classes=2)
    with pytest.raises(ValueError, match=r"input_size must be \(height, width\)"):
        build_targets([torch.ones(1, 4)], ok_labels, input_size=64, num_classes=2)
