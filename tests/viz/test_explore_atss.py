"""detviz.viz.explore_atss: the ATSS state of note 002's traced samples, its drawing and its widget."""
import matplotlib
import pytest
import torch

from detviz.datasets.coco import coco80_class_names
from detviz.fixtures import load_trace
from detviz.viz.explore_atss import MAX_TOPK, ATSSState, atss_explorer, atss_state, draw_atss_state

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TRACE = load_trace("seed002_nanodet_gfl")
NAMES = coco80_class_names()


def _printed(name):
    """The entry's value as a tensor and half a unit of its last printed digit (+ float32 slack)."""
    entry = TRACE.entry(name)
    return TRACE.tensor(name), 0.5 * 10.0 ** -(entry["decimals"] or 0) + 1e-6


def _assert_printed(computed, name, column):
    expected, tol = _printed(name)
    torch.testing.assert_close(torch.as_tensor(computed, dtype=torch.float64),
                               expected[..., column].to(torch.float64), atol=tol, rtol=0)


@pytest.mark.parametrize("gt_index", [0, 1, 2])
def test_sample1_at_topk_9_is_the_traced_assignment(gt_index):
    state = atss_state(1, gt_index, 9)
    assert isinstance(state, ATSSState) and (state.sample, state.gt_index, state.topk) == (1, gt_index, 9)
    assert state.label == TRACE["ann.labels"][gt_index]
    assert torch.equal(state.candidate_idxs, TRACE.tensor("sample1.candidate_idxs")[:, gt_index])
    _assert_printed(state.candidate_overlaps, "sample1.candidate_overlaps", gt_index)
    _assert_printed(state.mean, "sample1.overlaps_mean", gt_index)
    _assert_printed(state.std, "sample1.overlaps_std", gt_index)
    assert state.threshold == pytest.approx(state.mean + state.std, abs=1e-6)
    is_pos = TRACE.tensor("sample1.is_pos")[:, gt_index].bool()
    assert torch.equal(state.is_pos, is_pos)
    assert torch.equal(state.positives, TRACE.tensor("sample1.candidate_idxs")[:, gt_index][is_pos])
    # after one gt per cell: the note's positives whose 0-based gt is this one
    owner = TRACE.tensor("sample1.assigned_gt_inds_0based")
    assert torch.equal(state.assigned, TRACE.tensor("sample1.pos_inds")[owner == gt_index])


@pytest.mark.parametrize("gt_index", [0, 1, 2])
def test_sample2_at_topk_9_is_the_traced_assignment(gt_index):
    state = atss_state(2, gt_index)
    assert torch.equal(state.candidate_idxs, TRACE.tensor("sample2.candidate_idxs")[:, gt_index])
    _assert_printed(state.threshold, "sample2.overlaps_thr", gt_index)
    assert torch.equal(state.is_pos_iou, TRACE.tensor("sample2.is_pos_before_centre_check")[:, gt_index])
    is_pos = TRACE.tensor("sample2.is_pos")[:, gt_index]
    assert torch.equal(state.is_pos, is_pos)
    assert torch.equal(state.positives, TRACE.tensor("sample2.candidate_idxs")[:, gt_index][is_pos])
    label = TRACE["ann.labels"][gt_index]
    assert torch.equal(state.assigned, TRACE.tensor("sample2.pos_inds")[TRACE.tensor("sample2.pos_labels") == label])


def test_levels_split_the_candidates():
    state = atss_state(1, 2, 4)
    assert [len(c) for c in state.level_candidates] == [4, 4, 4]
    assert torch.equal(torch.cat(state.level_candidates), state.candidate_idxs)
    assert torch.equal(torch.cat(state.level_overlaps), state.candidate_overlaps)
    for level, (lo, hi) in enumerate([(0, 1600), (1600, 2000), (2000, 2100)]):
        assert ((state.level_candidates[level] >= lo) & (state.level_candidates[level] < hi)).all()


def test_topk_1_by_hand():
    # One candidate per level: the cell holding gt 0's centre, rows 0, 9 and 18 of the note's table,
    # IoUs 0.1691, 0.4662, 0.3697: mean 0.3350, unbiased std 0.1516, threshold 0.4866 lies above
    # all three, so the horse gets no positive at all.
    state = atss_state(1, 0, 1)
    table, ious = TRACE.tensor("sample1.candidate_idxs"), TRACE.tensor("sample1.candidate_overlaps", torch.float64)
    assert torch.equal(state.candidate_idxs, table[[0, 9, 18], 0])
    three = ious[[0, 9, 18], 0]
    assert state.threshold == pytest.approx((three.mean() + three.std()).item(), abs=2e-4)
    assert state.threshold == pytest.approx(0.4866, abs=1e-4)
    assert len(state.positives) == 0 and len(state.assigned) == 0


@pytest.mark.parametrize("sample", [1, 2])
def test_more_candidates_reach_farther_and_lower_the_threshold(sample):
    for g in range(3):
        states = [atss_state(sample, g, k) for k in range(1, MAX_TOPK + 1)]
        assert [len(s.candidate_idxs) for s in states] == [3 * k for k in range(1, MAX_TOPK + 1)]
        for smaller, larger in zip(states, states[1:]):
            for level in range(3):  # topk k + 1 adds the next nearest cell of each level
                d_small = _centre_distances(smaller, level)
                d_large = _centre_distances(larger, level)
                torch.testing.assert_close(d_large[:-1], d_small)
                assert d_large[-1] >= d_small[-1]
        # farther cells overlap the gt less: the threshold drops from topk 1 to 9 to 15
        assert states[0].threshold > states[8].threshold > states[-1].threshold


def _centre_distances(state, level):
    cells = state.grid_cells[state.level_candidates[level]]
    gt = state.gt_bboxes[state.gt_index]
    centres = (cells[:, :2] + cells[:, 2:]) / 2
    return (centres - (gt[:2] + gt[2:]) / 2).norm(dim=1).sort().values


@pytest.mark.parametrize("kwargs, argument", [
    (dict(sample=3), "sample"), (dict(sample=0), "sample"), (dict(sample=True), "sample"),
    (dict(gt_index=3), "gt_index"), (dict(gt_index=-1), "gt_index"), (dict(gt_index=1.0), "gt_index"),
    (dict(topk=0), "topk"), (dict(topk=2.5), "topk"),
])
def test_bad_choices_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=rf"^{argument} must be"):
        atss_state(**kwargs)


def test_the_explorer_checks_its_slider_range():
    with pytest.raises(ValueError, match=rf"topk must be in \[1, {MAX_TOPK}\]"):
        atss_explorer(topk=MAX_TOPK + 1)
    with pytest.raises(ValueError, match="gt_index must be"):
        atss_explorer(gt_index=5)


def test_draw_on_a_new_figure_and_on_given_axes():
    state = atss_state(2, 2)
    ax = draw_atss_state(None, state, class_names=NAMES)
    assert len(ax.figure.axes) == 2
    assert "backpack (label 24)" in ax.get_title() and "2 of 27 candidates positive" in ax.get_title()
    assert "9 reach the" in ax.figure.axes[1].get_title() and "7 of them" in ax.figure.axes[1].get_title()
    fig, axes = plt.subplots(1, 2)
    assert draw_atss_state(axes[0], state) is axes[0]
    assert "gt 2 (label 24)" in axes[0].get_title() and not axes[1].has_data()
    draw_atss_state(axes[0], state, iou_ax=axes[1])
    assert axes[1].has_data()
    plt.close(fig)


def test_the_explorer_builds_and_its_controls_redraw():
    box = atss_explorer(class_names=NAMES)
    (sample, gt, topk), summary, picture = box.children[0].children, box.children[1], box.children[2]
    assert (sample.value, gt.value, topk.value) == (1, 0, 9)
    assert [label for label, _ in gt.options] == ["gt 0: horse (label 17)", "gt 1: person (label 0)",
                                                  "gt 2: backpack (label 24)"]
    assert (topk.min, topk.max) == (1, MAX_TOPK)
    assert "sample 1, gt 0: horse (label 17), topk 9: 27 candidates" in summary.value
    first_picture = bytes(picture.value)
    assert first_picture.startswith(b"\x89PNG")

    topk.value = 1
    assert "topk 1: 3 candidates" in summary.value and "positives []" in summary.value
    assert bytes(picture.value) != first_picture
    sample.value = 2
    gt.value = 2
    expected = atss_state(2, 2, 1).summary(NAMES)
    assert summary.value == "<pre>" + expected.replace(">", "&gt;") + "</pre>"


def test_ipywidgets_is_imported_only_by_the_explorer():
    import ast
    import inspect

    import detviz.viz.explore_atss as module

    tree = ast.parse(inspect.getsource(module))
    top_level = [alias.name for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)
                 for alias in node.names] + [node.module for node in tree.body if isinstance(node, ast.ImportFrom)]
    assert not [name for name in top_level if name and name.startswith("ipywidgets")]
