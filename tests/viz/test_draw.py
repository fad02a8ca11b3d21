"""Tests for detviz.viz: pixel baselines (pytest-mpl) plus behaviour checks on tiny synthetic inputs.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot state) and kept small (dpi 60).
Regenerate the baselines after a deliberate change with
``pytest tests/viz -o addopts="--mpl-generate-path=tests/viz/baseline"``.
"""

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from detviz import viz

MPL = dict(baseline_dir="baseline", style="default", tolerance=2, savefig_kwargs={"dpi": 60})

# ---------------------------------------------------------------------------- synthetic inputs
# A 64x64 input, 2 levels: stride 8 (8x8 cells) and stride 16 (4x4 cells), 80 cells in total.
STRIDES = (8, 16)
FEATMAP_SIZES = ((8, 8), (4, 4))
NUM_LEVEL_BBOXES = [64, 16]
GT_BOXES = torch.tensor([[18.0, 14.0, 44.0, 44.0], [2.0, 3.0, 15.0, 14.0]])  # [M=2, 4] xyxy
GT_LABELS = torch.tensor([1, 0])
CLASS_NAMES = ["cat", "dog", "car"]
# K=3 closest centres per level, rows level-grouped like ATSS. gt 0 has centre (31, 29):
# level 0 centres (28,28) (36,28) (28,36) are cells 3*8+3=27, 28, 35; level 1 centres
# (24,24) (40,24) (24,40) are cells 64 + 1*4+1 = 69, 70, 73.
CANDIDATE_IDXS = torch.tensor([[27, 9], [28, 8], [35, 1], [69, 64], [70, 65], [73, 68]])  # [K*L=6, M=2]
IS_POS = torch.tensor([[True, True], [True, False], [False, False],
                       [True, False], [False, False], [False, False]])  # [K*L, M]
CANDIDATE_IOUS = torch.tensor([0.42, 0.35, 0.21, 0.38, 0.12, 0.09])  # gt 0's column


def grid_cells(scale=2.0):
    """Square priors of side ``scale * stride`` centred on every cell, levels concatenated -> [80, 4]."""
    per_level = []
    for (h, w), s in zip(FEATMAP_SIZES, STRIDES):
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        cx, cy = (xs.flatten() + 0.5) * s, (ys.flatten() + 0.5) * s  # row-major, [h*w]
        half = scale * s / 2
        per_level.append(torch.stack([cx - half, cy - half, cx + half, cy + half], dim=1))
    return torch.cat(per_level)


def gradient_image_hwc(h=64, w=64):
    """A deterministic uint8 RGB image [H, W, 3]: red grows to the right, green downwards."""
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs * 255 // (w - 1), ys * 255 // (h - 1), np.full_like(xs, 90)], axis=-1).astype(np.uint8)


def new_axes(figsize=(3, 3)):
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def rendered_pixels(draw):
    fig = Figure(figsize=(2, 2), dpi=40)
    canvas = FigureCanvasAgg(fig)
    draw(fig.add_axes([0, 0, 1, 1]))
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


# ---------------------------------------------------------------------------- figure baselines
@pytest.mark.mpl_image_compare(**MPL)
def test_figure_boxes_on_image():
    fig, ax = new_axes()
    viz.show_image(ax, gradient_image_hwc())
    boxes = torch.tensor([[4.0, 16.0, 30.0, 40.0], [20.0, 30.0, 60.0, 60.0], [36.0, 10.0, 62.0, 24.0]])
    viz.draw_boxes(ax, boxes, labels=torch.tensor([0, 1, 2]), scores=torch.tensor([0.9, 0.75, 0.4]),
                   class_names=CLASS_NAMES)
    return fig


@pytest.mark.mpl_image_compare(**MPL)
def test_figure_padded_canvas_points_and_filled_boxes():
    fig, ax = new_axes()
    viz.blank_canvas(ax, (48, 64), pad_shape=(64, 80))
    viz.draw_boxes(ax, GT_BOXES, labels=GT_LABELS, linestyle="--", fill=True, show_text=False)
    centres = (GT_BOXES[:, :2] + GT_BOXES[:, 2:]) / 2
    viz.draw_points(ax, centres, labels=GT_LABELS, marker="x", size=40)
    return fig


@pytest.mark.mpl_image_compare(**MPL)
def test_figure_level_grid_and_grid_cells():
    fig, ax = new_axes()
    viz.blank_canvas(ax, (64, 64))
    viz.draw_level_grid(ax, FEATMAP_SIZES[1], STRIDES[1])
    viz.draw_grid_cells(ax, grid_cells()[64:], highlight=torch.tensor([5, 10]))
    return fig


@pytest.mark.mpl_image_compare(**MPL)
def test_figure_atss_candidates():
    fig, ax = new_axes((3.5, 3.5))
    viz.blank_canvas(ax, (64, 64))
    viz.draw_level_grid(ax, FEATMAP_SIZES[0], STRIDES[0], color="0.85")
    viz.draw_atss_candidates(ax, grid_cells(), CANDIDATE_IDXS, IS_POS, GT_BOXES, 0, num_level_bboxes=NUM_LEVEL_BBOXES,
                             strides=STRIDES)
    return fig


@pytest.mark.mpl_image_compare(**MPL)
def test_figure_assignment_map_clipped_to_image():
    fig, ax = new_axes()
    viz.blank_canvas(ax, (60, 60), pad_shape=(64, 64))
    labels = torch.full((64,), 3)  # background = num_classes = 3
    labels[[27, 28, 36]] = 1  # three cells inside gt 0 go to class 1
    labels[[0, 9]] = 0
    labels[63] = 2  # the bottom-right cell hangs over the 60x60 image and is cut
    viz.draw_assignment_map(ax, labels, FEATMAP_SIZES[0], STRIDES[0], num_classes=3, image_size=(60, 60))
    viz.draw_level_grid(ax, FEATMAP_SIZES[0], STRIDES[0], image_size=(60, 60))
    viz.draw_boxes(ax, GT_BOXES, labels=GT_LABELS, show_text=False)
    return fig


@pytest.mark.mpl_image_compare(**MPL)
def test_figure_iou_histogram():
    fig, ax = new_axes((4, 3))
    viz.draw_iou_histogram(ax, CANDIDATE_IOUS)
    return fig


@pytest.mark.mpl_image_compare(**MPL)
def test_figure_ltrb_and_distribution():
    fig = Figure(figsize=(6, 3), layout="constrained")
    left, right = fig.subplots(1, 2)
    viz.blank_canvas(left, (64, 64))
    viz.draw_ltrb(left, (28.0, 28.0), torch.tensor([2.0, 1.5, 3.0, 2.5]), stride=8)
    probs = torch.softmax(torch.tensor([-2.0, 0.5, 2.0, 1.2, -1.0, -2.5, -3.0, -3.0]), dim=0)  # R = 8
    viz.draw_distribution(right, probs, target=2.4)
    return fig


# ---------------------------------------------------------------------------- behaviour
def _calls():
    """(name, function of ax) for every public drawing function, with valid tensor inputs."""
    cells = grid_cells()
    return [
        ("show_image", lambda ax: viz.show_image(ax, torch.from_numpy(gradient_image_hwc()).permute(2, 0, 1))),
        ("blank_canvas", lambda ax: viz.blank_canvas(ax, (48, 64), pad_shape=(64, 64))),
        ("draw_boxes", lambda ax: viz.draw_boxes(ax, GT_BOXES, GT_LABELS, torch.tensor([0.5, 0.6]), CLASS_NAMES)),
        ("draw_points", lambda ax: viz.draw_points(ax, GT_BOXES[:, :2], labels=GT_LABELS)),
        ("draw_grid_cells", lambda ax: viz.draw_grid_cells(ax, cells, highlight=cells[:, 0] > 40)),
        ("draw_level_grid", lambda ax: viz.draw_level_grid(ax, (4, 4), 16, image_size=(60, 60))),
        ("draw_atss_candidates", lambda ax: viz.draw_atss_candidates(ax, cells, CANDIDATE_IDXS, IS_POS, GT_BOXES, 1)),
        ("draw_assignment_map", lambda ax: viz.draw_assignment_map(ax, torch.arange(16) % 4, (4, 4), 16, 3)),
        ("draw_iou_histogram", lambda ax: viz.draw_iou_histogram(ax, CANDIDATE_IOUS, threshold=0.3)),
        ("draw_ltrb", lambda ax: viz.draw_ltrb(ax, torch.tensor([30.0, 30.0]), torch.tensor([1.0, 2.0, 1.0, 0.5]), 8)),
        ("draw_distribution", lambda ax: viz.draw_distribution(ax, torch.full((8,), 0.125), target=7.0)),
    ]


@pytest.mark.parametrize("name, call", _calls(), ids=[name for name, _ in _calls()])
def test_every_function_returns_the_axes_it_was_given(name, call):
    _, ax = new_axes()
    assert call(ax) is ax


def test_all_public_names_are_covered():
    from detviz.viz import assignment, draw, gfl

    drawers = {*draw.__all__, *assignment.__all__, *gfl.__all__} - {"plot_report", "plot_buckets"}  # test_assignment.py
    assert drawers == {name for name, _ in _calls()}


@pytest.mark.parametrize("as_numpy", [False, True], ids=["tensor", "numpy"])
def test_inputs_are_not_modified(as_numpy):
    convert = (lambda t: t.numpy()) if as_numpy else (lambda t: t)
    inputs = dict(
        image=torch.from_numpy(gradient_image_hwc()) if as_numpy else torch.from_numpy(gradient_image_hwc()).permute(2, 0, 1),
        cells=grid_cells(), boxes=GT_BOXES.clone(), labels=GT_LABELS.clone(), scores=torch.tensor([0.5, 0.6]),
        idxs=CANDIDATE_IDXS.clone(), pos=IS_POS.clone(), ious=CANDIDATE_IOUS.clone(),
        level_labels=torch.arange(64) % 4, ltrb=torch.tensor([1.0, 2.0, 1.0, 0.5]), probs=torch.full((8,), 0.125),
    )
    inputs = {k: convert(v) for k, v in inputs.items()}
    before = {k: torch.as_tensor(v).clone() for k, v in inputs.items()}
    _, ax = new_axes()
    viz.show_image(ax, inputs["image"])
    viz.draw_boxes(ax, inputs["boxes"], inputs["labels"], inputs["scores"], CLASS_NAMES, fill=True)
    viz.draw_points(ax, inputs["boxes"][:, :2], labels=inputs["labels"])
    viz.draw_grid_cells(ax, inputs["cells"], highlight=inputs["idxs"][:, 0])
    viz.draw_atss_candidates(ax, inputs["cells"], inputs["idxs"], inputs["pos"], inputs["boxes"], 0)
    viz.draw_assignment_map(ax, inputs["level_labels"], (8, 8), 8, 3)
    viz.draw_ltrb(ax, inputs["boxes"][0, :2] + 10, inputs["ltrb"], 4)
    viz.draw_iou_histogram(new_axes()[1], inputs["ious"])
    viz.draw_distribution(new_axes()[1], inputs["probs"], target=3.5)
    for key, value in inputs.items():
        assert torch.equal(torch.as_tensor(value), before[key]), key


@pytest.mark.parametrize("dtype", ["uint8", "float"])
def test_chw_tensor_and_hwc_array_draw_the_same_pixels(dtype):
    hwc = gradient_image_hwc(16, 24)
    if dtype == "float":
        hwc = hwc.astype(np.float32) / 255
    chw = torch.from_numpy(hwc.copy()).permute(2, 0, 1)  # [H, W, 3] -> [3, H, W]
    from_array = rendered_pixels(lambda ax: viz.show_image(ax, hwc))
    from_tensor = rendered_pixels(lambda ax: viz.show_image(ax, chw))
    np.testing.assert_array_equal(from_array, from_tensor)
    assert len(np.unique(from_array.reshape(-1, 4), axis=0)) > 10  # the image really was drawn


def test_show_image_frame_is_pixel_edges():
    _, ax = new_axes()
    viz.show_image(ax, gradient_image_hwc(16, 24))
    assert ax.get_xlim() == (0, 24) and ax.get_ylim() == (16, 0)  # y down, pixel edges on integers
    viz.draw_boxes(ax, torch.tensor([[-10.0, -10.0, 100.0, 100.0]]))
    assert ax.get_xlim() == (0, 24)  # later drawing does not rescale the view


def test_single_channel_image_is_drawn_in_grey():
    pixels = rendered_pixels(lambda ax: viz.show_image(ax, torch.rand(1, 8, 8)))
    np.testing.assert_array_equal(pixels[..., 0], pixels[..., 1])


BAD_INPUTS = [
    (lambda ax: viz.draw_boxes(ax, torch.zeros(3, 5)), r"boxes must be \[N, 4\] xyxy, got shape \[3, 5\]"),
    (lambda ax: viz.draw_boxes(ax, torch.tensor([[10.0, 0.0, 5.0, 5.0]])), r"x2 >= x1"),
    (lambda ax: viz.draw_boxes(ax, torch.tensor([[0.0, 0.0, float("nan"), 5.0]])), r"finite"),
    (lambda ax: viz.draw_boxes(ax, GT_BOXES, labels=torch.tensor([0])), r"labels must be \[N\] class ids.*\(2\)"),
    (lambda ax: viz.draw_boxes(ax, GT_BOXES, labels=torch.tensor([0.0, 1.0])), r"integer dtype"),
    (lambda ax: viz.draw_boxes(ax, GT_BOXES, scores=torch.ones(3)), r"scores must be \[N\] scores"),
    (lambda ax: viz.draw_boxes(ax, GT_BOXES, class_names=CLASS_NAMES), r"class_names \(a list, or a dict label -> name\) needs a name for every label"),
    (lambda ax: viz.draw_boxes(ax, GT_BOXES, colors=["red"] * 3), r"colors must be one colour or a list of 2"),
    (lambda ax: viz.draw_boxes(ax, "not boxes"), r"boxes must be a numeric \[N, 4\] xyxy"),
    (lambda ax: viz.show_image(ax, np.zeros((3, 8, 8), np.uint8)), r"ndarray\[H, W, 3 or 1\] \(HWC\).*other layout"),
    (lambda ax: viz.show_image(ax, torch.zeros(8, 8, 3)), r"Tensor\[3 or 1, H, W\] \(CHW\).*other layout"),
    (lambda ax: viz.show_image(ax, torch.zeros(8, 8)), r"Tensor\[3 or 1, H, W\] \(CHW\)"),
    (lambda ax: viz.show_image(ax, [[0, 1]]), r"Tensor\[3 or 1, H, W\].*got list"),
    (lambda ax: viz.show_image(ax, torch.full((3, 4, 4), 2.0)), r"float image must lie in \[0, 1\]"),
    (lambda ax: viz.show_image(ax, torch.zeros(3, 4, 4, dtype=torch.int64)), r"uint8 or float in \[0, 1\]"),
    (lambda ax: viz.blank_canvas(ax, (64,)), r"size must be \(h, w\)"),
    (lambda ax: viz.blank_canvas(ax, (64, 64), pad_shape=(32, 64)), r"pad_shape must be \(h, w\) >= size"),
    (lambda ax: viz.draw_points(ax, torch.zeros(4, 3)), r"points must be \[N, 2\] xy, got shape \[4, 3\]"),
    (lambda ax: viz.draw_grid_cells(ax, grid_cells(), highlight=torch.tensor([80])), r"indices in \[0, 80\)"),
    (lambda ax: viz.draw_level_grid(ax, (4, 4), 0), r"stride must be a positive number"),
    (lambda ax: viz.draw_level_grid(ax, (4.5, 4), 8), r"featmap_size must be \(h, w\)"),
    (lambda ax: viz.draw_atss_candidates(ax, grid_cells(), CANDIDATE_IDXS, IS_POS[:, :1], GT_BOXES, 0),
     r"\[K\*L, M\] with M = 2"),
    (lambda ax: viz.draw_atss_candidates(ax, grid_cells()[:64], CANDIDATE_IDXS, IS_POS, GT_BOXES, 0),
     r"lie in \[0, 64\)"),
    (lambda ax: viz.draw_atss_candidates(ax, grid_cells(), CANDIDATE_IDXS, IS_POS.long(), GT_BOXES, 0), r"is_pos bool"),
    (lambda ax: viz.draw_atss_candidates(ax, grid_cells(), CANDIDATE_IDXS, IS_POS, GT_BOXES, 2), r"gt_index .*\[0, 2\)"),
    (lambda ax: viz.draw_atss_candidates(ax, grid_cells(), CANDIDATE_IDXS, IS_POS, GT_BOXES, 0, num_level_bboxes=[64, 8]),
     r"num_level_bboxes must sum to the number of grid cells \(80\)"),
    (lambda ax: viz.draw_assignment_map(ax, torch.zeros(80, dtype=torch.long), (8, 8), 8, 3),
     r"labels must be \[h\*w\] = \[64\].*slice one level"),
    (lambda ax: viz.draw_assignment_map(ax, torch.full((64,), 4), (8, 8), 8, 3), r"\[0, 3\] \(3 = background\)"),
    (lambda ax: viz.draw_iou_histogram(ax, torch.zeros(3, 2)), r"overlaps must be \[K\*L\]"),
    (lambda ax: viz.draw_iou_histogram(ax, torch.tensor([0.5])), r"at least 2 IoUs"),
    (lambda ax: viz.draw_ltrb(ax, (1.0, 2.0, 3.0), [1.0, 1.0, 1.0, 1.0]), r"point must be \[2\] xy"),
    (lambda ax: viz.draw_ltrb(ax, (1.0, 2.0), [1.0, -1.0, 1.0, 1.0]), r"distances >= 0"),
    (lambda ax: viz.draw_distribution(ax, torch.tensor([-1.0, 2.0])), r"non-negative probabilities.*softmax"),
    (lambda ax: viz.draw_distribution(ax, torch.full((8,), 0.125), target=7.5), r"\[0, R - 1\] = \[0, 7\]"),
]


@pytest.mark.parametrize("call, message", BAD_INPUTS, ids=[f"bad{i}" for i in range(len(BAD_INPUTS))])
def test_bad_inputs_raise_value_error_naming_what_was_expected(call, message):
    _, ax = new_axes()
    with pytest.raises(ValueError, match=message):
        call(ax)


def test_class_color_is_deterministic_with_grey_background():
    assert viz.class_color(3) == viz.class_color(torch.tensor(3)) == viz.class_color(np.int64(3))
    assert viz.class_color(0) != viz.class_color(1)
    assert viz.class_color(16) == viz.class_color(0)  # the palette cycles (tab20 less four near-greys)
    assert viz.class_color(80, num_classes=80) == viz.BACKGROUND_COLOR
    with pytest.raises(ValueError, match=r"class id >= 0, 80 = background"):
        viz.class_color(81, num_classes=80)


def test_captions_never_leave_the_view_nor_cover_each_other():
    _, ax = new_axes()
    viz.blank_canvas(ax, (100, 100))
    boxes = torch.tensor([[10.0, 0.0, 40.0, 30.0], [50.0, 50.0, 90.0, 90.0], [50.0, 50.0, 90.0, 90.0]])
    viz.draw_boxes(ax, boxes, torch.tensor([0, 1, 1]), torch.tensor([0.9, 0.3, 0.8]), CLASS_NAMES)
    placed = {t.get_text(): t.get_verticalalignment() for t in ax.texts}
    # the box at the top edge: its caption inside; of the two equal boxes, the better score above and the
    # other one inside; nothing is drawn twice at one place
    assert placed == {"cat 0.90": "top", "dog 0.80": "bottom", "dog 0.30": "top"}
    _, ax = new_axes()
    viz.blank_canvas(ax, (100, 100))
    viz.draw_boxes(ax, boxes[[1, 1, 1]], torch.tensor([1, 1, 1]), torch.tensor([0.2, 0.7, 0.5]), CLASS_NAMES)
    assert [t.get_text() for t in ax.texts] == ["dog 0.70", "dog 0.50"]  # a third caption has no room: left out


def test_no_class_colour_is_grey():
    """A grey class would vanish against the background grey (class 17, the traced horse, once did)."""
    background = np.array(viz.BACKGROUND_COLOR[:3])
    for label in range(80):
        rgb = np.array(viz.class_color(label)[:3])
        assert rgb.max() - rgb.min() > 0.15 and np.linalg.norm(rgb - background) > 0.2, (label, rgb)


def test_draw_boxes_colours_by_class_and_writes_name_score():
    _, ax = new_axes()
    viz.draw_boxes(ax, GT_BOXES, GT_LABELS, torch.tensor([0.5, 0.25]), CLASS_NAMES)
    assert [p.get_edgecolor() for p in ax.patches] == [viz.class_color(1), viz.class_color(0)]
    assert [t.get_text() for t in ax.texts] == ["dog 0.50", "cat 0.25"]


def test_draw_boxes_accepts_no_boxes():
    _, ax = new_axes()
    viz.draw_boxes(ax, torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long), class_names=CLASS_NAMES)
    assert not ax.patches and not ax.texts


def test_atss_candidates_solid_for_positives_dashed_for_rejected():
    _, ax = new_axes()
    viz.blank_canvas(ax, (64, 64))
    viz.draw_atss_candidates(ax, grid_cells(), CANDIDATE_IDXS, IS_POS, GT_BOXES, 0, legend=False, show_boxes=True)
    candidates = [p for p in ax.patches if p.get_linewidth() < 2]  # the gt box is the thick one
    solid = [p.get_linestyle() == "-" for p in candidates]
    assert solid == IS_POS[:, 0].tolist()
    edge = [p.get_edgecolor() for p in candidates]
    assert edge[:3] == [matplotlib.colors.to_rgba(viz.LEVEL_COLORS[0])] * 3
    assert edge[3:] == [matplotlib.colors.to_rgba(viz.LEVEL_COLORS[1])] * 3


def test_atss_candidates_default_to_centres_by_level_named_by_stride():
    _, ax = new_axes()
    viz.blank_canvas(ax, (64, 64))
    viz.draw_atss_candidates(ax, grid_cells(), CANDIDATE_IDXS, IS_POS, GT_BOXES, 0, strides=STRIDES)
    assert len(ax.patches) == 1  # the gt: no candidate boxes unless asked
    (centres,) = ax.collections
    filled = [tuple(f) != matplotlib.colors.to_rgba("white") for f in centres.get_facecolors()]
    assert filled == IS_POS[:, 0].tolist()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [f"stride {STRIDES[0]}", f"stride {STRIDES[1]}", "positive", "rejected", "gt 0"]


def test_atss_levels_from_counts_match_levels_from_prior_size():
    def edge_colours(**kwargs):
        _, ax = new_axes()
        viz.draw_atss_candidates(ax, grid_cells(), CANDIDATE_IDXS, IS_POS, GT_BOXES, 1, legend=False, show_boxes=True,
                                 **kwargs)
        return [p.get_edgecolor() for p in ax.patches]

    assert edge_colours() == edge_colours(num_level_bboxes=torch.tensor(NUM_LEVEL_BBOXES))


def test_assignment_map_fills_only_foreground_cells_cut_at_the_image():
    _, ax = new_axes()
    labels = torch.full((16,), 3)
    labels[5], labels[15] = 1, 2  # cells (x=1, y=1) and (x=3, y=3) of a 4x4 level, stride 16
    viz.draw_assignment_map(ax, labels, (4, 4), 16, num_classes=3, image_size=(60, 60), alpha=0.5)
    (mosaic,) = ax.collections
    corners = [path.vertices[:4] for path in mosaic.get_paths()]
    np.testing.assert_array_equal(corners[0], [[16, 16], [32, 16], [32, 32], [16, 32]])
    np.testing.assert_array_equal(corners[1], [[48, 48], [60, 48], [60, 60], [48, 60]])  # cut at 60
    np.testing.assert_allclose(mosaic.get_facecolor()[:, 3], 0.5)


def test_level_grid_lines_and_centres_stop_at_the_image():
    _, ax = new_axes()
    viz.draw_level_grid(ax, (4, 4), 16, image_size=(60, 40))
    lines, centres = ax.collections
    assert len(lines.get_segments()) == 3 + 4  # x = 0, 16, 32 and y = 0..48; 48 > 40 and 64 > 60 lie outside
    np.testing.assert_array_equal(np.concatenate(lines.get_segments()).max(axis=0), [40, 60])
    assert len(centres.get_offsets()) == 2 * 4  # centre x = 40 lies on the edge and is dropped


def test_iou_histogram_threshold_is_mean_plus_unbiased_std():
    _, ax = new_axes()
    viz.draw_iou_histogram(ax, CANDIDATE_IOUS)
    expected = CANDIDATE_IOUS.mean() + CANDIDATE_IOUS.std()  # torch.std is unbiased, as in NanoDet
    mean_line, threshold_line = ax.lines
    assert mean_line.get_xdata()[0] == pytest.approx(CANDIDATE_IOUS.mean().item())
    assert threshold_line.get_xdata()[0] == pytest.approx(expected.item())
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].startswith("mean = ") and "threshold = mean + std" in labels[1] and "unbiased" in labels[1]


def test_distribution_outlines_the_two_dfl_bins():
    _, ax = new_axes()
    viz.draw_distribution(ax, torch.full((8,), 0.125), target=2.4)
    outlined = [i for i, bar in enumerate(ax.patches) if bar.get_linewidth() == 2]
    assert outlined == [2, 3]
    assert ax.lines[1].get_xdata()[0] == pytest.approx(3.5)  # expectation of a uniform 0..7


def test_ltrb_box_is_the_decoded_box():
    _, ax = new_axes()
    viz.draw_ltrb(ax, (28.0, 28.0), torch.tensor([2.0, 1.5, 3.0, 2.5]), stride=8)
    (box,) = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert (box.get_x(), box.get_y(), box.get_width(), box.get_height()) == (12.0, 16.0, 40.0, 32.0)
