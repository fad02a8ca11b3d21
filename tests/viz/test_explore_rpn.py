"""detviz.viz.explore_rpn: the RPN filter's counts per stage, its drawing and its widget."""
import matplotlib
import pytest
import torch
from torchvision.models.detection.rpn import RegionProposalNetwork as TVRegionProposalNetwork

from detviz.anchors import AnchorGenerator
from detviz.boxes import box_iou
from detviz.rcnn.rpn import RegionProposalNetwork, RPNHead
from detviz.viz.explore_rpn import STAGES, RPNFilterState, draw_rpn_filter_state, rpn_explorer, rpn_filter_state

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# torchvision's fasterrcnn_* defaults for the RPN
TRAINING, TESTING = 2000, 1000
TV_DEFAULTS = dict(fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=256, positive_fraction=0.5,
                   pre_nms_top_n=dict(training=TRAINING, testing=TESTING),
                   post_nms_top_n=dict(training=TRAINING, testing=TESTING), nms_thresh=0.7, score_thresh=0.0)
IMAGE_SIZE = (120, 160)  # (h, w) of the resized image
LEVELS = [2400, 600]  # two levels, so that the per-level top-n and the per-level NMS both matter
SMALL = [480, 120]  # for the tests that filter many times


def _rpn(training=True):
    rpn = RegionProposalNetwork(AnchorGenerator(((16, 32),), ((0.5, 1.0, 2.0),)), RPNHead(4, 6), **TV_DEFAULTS)
    return rpn.train(training)


def _inputs(seed=0, levels=LEVELS):
    """Random proposals of one image ([N, 4] xyxy, some past the image, 40 tiny) and their logits."""
    g = torch.Generator().manual_seed(seed)
    n = sum(levels)
    centres = torch.rand(n, 2, generator=g) * torch.tensor([180.0, 140.0]) - 10  # some outside the image
    sizes = torch.rand(n, 2, generator=g) * 60
    sizes[:40] = 1e-4  # 40 boxes under min_size
    proposals = torch.cat([centres - sizes / 2, centres + sizes / 2], dim=1)
    # distinct logits in [-4, 4): with tied scores torchvision's batched_nms (over 1000 boxes) orders
    # the kept boxes by an unstable sort, detviz's by a stable one
    logits = (torch.randperm(n, generator=g) / n - 0.5) * 8
    return proposals, logits


def _torchvision_keeps(proposals, objectness, training):
    reference = TVRegionProposalNetwork(None, None, **TV_DEFAULTS).train(training)
    boxes, scores = reference.filter_proposals(proposals[None], objectness[:, None], [IMAGE_SIZE], LEVELS)
    return boxes[0], scores[0]


@pytest.mark.parametrize("training", [True, False])
def test_at_torchvisions_defaults_the_state_is_what_torchvision_keeps(training):
    proposals, objectness = _inputs()
    rpn = _rpn(training)
    state = rpn_filter_state(rpn, proposals, objectness, LEVELS, IMAGE_SIZE)
    boxes, scores = _torchvision_keeps(proposals, objectness, training)
    assert isinstance(state, RPNFilterState)
    torch.testing.assert_close(state.boxes, boxes, rtol=0, atol=0)
    torch.testing.assert_close(state.scores, scores, rtol=0, atol=0)
    top_n = TRAINING if training else TESTING
    assert state.settings == dict(pre_nms_top_n=top_n, post_nms_top_n=top_n, nms_thresh=0.7, score_thresh=0.0,
                                  min_size=1e-3)
    # the same values given explicitly
    explicit = rpn_filter_state(_rpn(not training), proposals, objectness, LEVELS, IMAGE_SIZE, pre_nms_top_n=top_n,
                                post_nms_top_n=top_n, nms_thresh=0.7, score_thresh=0.0, min_size=1e-3)
    torch.testing.assert_close(explicit.boxes, boxes, rtol=0, atol=0)
    assert list(state.counts) == list(STAGES)
    assert state.counts["anchors"] == 3000
    assert state.counts["top_n"] == min(top_n, 2400) + min(top_n, 600)
    assert state.counts["post_nms_top_n"] == len(boxes)


def test_the_rpn_passed_in_keeps_its_settings():
    proposals, objectness = _inputs()
    rpn = _rpn()
    rpn_filter_state(rpn, proposals, objectness, LEVELS, IMAGE_SIZE, pre_nms_top_n=5, post_nms_top_n=3,
                     nms_thresh=0.2, score_thresh=0.9, min_size=4.0)
    assert (rpn.pre_nms_top_n(), rpn.post_nms_top_n(), rpn.nms_thresh, rpn.score_thresh, rpn.min_size) == \
        (TRAINING, TRAINING, 0.7, 0.0, 1e-3)


def test_counts_by_hand_on_four_boxes():
    # one level of 5 anchors in a 20 x 20 image: box 3 is tiny, box 4 lies half outside and is clipped
    # to [15, 0, 20, 10]; boxes 0 and 1 overlap at IoU 0.6; box 2 is alone
    proposals = torch.tensor([[0.0, 0, 10, 10], [2, 0, 12, 10], [0, 12, 6, 18], [5, 5, 5.0001, 5.0001],
                              [15, 0, 30, 10]])
    objectness = torch.tensor([3.0, 2.0, 1.0, 4.0, -1.0])  # probabilities 0.95, 0.88, 0.73, 0.98, 0.27
    rpn = _rpn()
    state = rpn_filter_state(rpn, proposals, objectness, [5], (20, 20), pre_nms_top_n=4, score_thresh=0.5)
    # top 4 by logit drops box 4; min_size drops box 3; NMS at 0.7 keeps 0 and 1 (IoU 0.67)
    assert state.counts == dict(anchors=5, top_n=4, clip=4, min_size=3, score_thresh=3, nms=3, post_nms_top_n=3)
    state = rpn_filter_state(rpn, proposals, objectness, [5], (20, 20), nms_thresh=0.5, score_thresh=0.5)
    assert state.counts == dict(anchors=5, top_n=5, clip=5, min_size=4, score_thresh=3, nms=2, post_nms_top_n=2)
    torch.testing.assert_close(state.boxes, proposals[[0, 2]])
    torch.testing.assert_close(state.scores, objectness[[0, 2]].sigmoid())
    state = rpn_filter_state(rpn, proposals, objectness, [5], (20, 20))
    torch.testing.assert_close(state.boxes[-1], torch.tensor([15.0, 0, 20, 10]))  # clipped, not dropped


def _assert_monotone_along_stages(state):
    counts = list(state.counts.values())
    assert all(a >= b for a, b in zip(counts, counts[1:])), state.counts


@pytest.mark.parametrize("name, values", [
    ("pre_nms_top_n", [1, 10, 100, 200, 400, 480, 2000]),
    ("post_nms_top_n", [1, 10, 100, 300, 2000]),
    ("score_thresh", [0.0, 0.2, 0.5, 0.8, 0.95, 1.0]),
])
def test_counts_are_monotone_along_the_stages_and_in_the_parameter(name, values):
    proposals, objectness = _inputs(seed=1, levels=SMALL)
    states = [rpn_filter_state(_rpn(), proposals, objectness, SMALL, IMAGE_SIZE, **{name: v}) for v in values]
    for state in states:
        _assert_monotone_along_stages(state)
    sign = -1 if name == "score_thresh" else 1  # a higher threshold keeps fewer
    for smaller, larger in zip(states, states[1:]):
        for stage in STAGES:
            assert sign * (larger.counts[stage] - smaller.counts[stage]) >= 0, (name, stage)


@pytest.mark.parametrize("name, values, last_monotone", [
    ("nms_thresh", [0.0, 0.3, 0.5, 0.7, 0.9, 1.0], "score_thresh"),
    ("min_size", [0.0, 1.0, 5.0, 20.0, 50.0], "score_thresh"),
])
def test_counts_before_nms_are_monotone_in_nms_thresh_and_min_size(name, values, last_monotone):
    # after NMS they need not be: see test_nms_count_is_not_monotone_in_nms_thresh
    proposals, objectness = _inputs(seed=2, levels=SMALL)
    states = [rpn_filter_state(_rpn(), proposals, objectness, SMALL, IMAGE_SIZE, **{name: v}) for v in values]
    sign = 1 if name == "nms_thresh" else -1
    for smaller, larger in zip(states, states[1:]):
        _assert_monotone_along_stages(larger)
        for stage in STAGES[:STAGES.index(last_monotone) + 1]:
            assert sign * (larger.counts[stage] - smaller.counts[stage]) >= 0, (name, stage)
    if name == "nms_thresh":  # nothing overlaps at IoU > 1; everything but the best overlaps at IoU > 0
        assert states[-1].counts["nms"] == states[-1].counts["score_thresh"]
        assert states[0].counts["nms"] < states[-1].counts["nms"]


def test_nms_count_is_not_monotone_in_nms_thresh():
    # A > B > C, D by score. IoU(A, B) = 0.65; C and D are B moved 1.6 px right / down: IoU 0.72 with B,
    # under 0.6 with A and with each other. At 0.6, A suppresses B and C, D survive: 3 boxes. At 0.7,
    # B survives and suppresses C and D: 2 boxes. A higher threshold keeps fewer.
    a, b = [0.0, 0, 10, 10], [2.12, 0, 12.12, 10]
    boxes = torch.tensor([a, b, [3.72, 0, 13.72, 10], [2.12, 1.6, 12.12, 11.6]])
    iou = box_iou(boxes, boxes)
    assert 0.6 < iou[0, 1] < 0.7 and (iou[1, 2:] > 0.7).all() and (iou[0, 2:] < 0.6).all() and iou[2, 3] < 0.6
    logits = torch.tensor([4.0, 3.0, 2.0, 1.0])
    counts = [rpn_filter_state(_rpn(), boxes, logits, [4], (20, 20), nms_thresh=t).counts["nms"] for t in (0.6, 0.7)]
    assert counts == [3, 2]


@pytest.mark.parametrize("kwargs, argument", [
    (dict(pre_nms_top_n=0), "pre_nms_top_n"), (dict(pre_nms_top_n=2.5), "pre_nms_top_n"),
    (dict(pre_nms_top_n=True), "pre_nms_top_n"), (dict(post_nms_top_n=0), "post_nms_top_n"),
    (dict(nms_thresh=-0.1), "nms_thresh"), (dict(nms_thresh=1.5), "nms_thresh"),
    (dict(nms_thresh=float("nan")), "nms_thresh"), (dict(score_thresh=1.01), "score_thresh"),
    (dict(score_thresh="0.5"), "score_thresh"), (dict(min_size=-1.0), "min_size"),
    (dict(proposals=torch.zeros(3000, 5)), "proposals"), (dict(proposals=torch.zeros(3000, 4, dtype=torch.int64)),
                                                          "proposals"),
    (dict(objectness=torch.zeros(2999)), "objectness"), (dict(objectness=torch.zeros(3000, 2)), "objectness"),
    (dict(num_anchors_per_level=[2400, 601]), "num_anchors_per_level"),
    (dict(num_anchors_per_level=[3000.0]), "num_anchors_per_level"),
    (dict(image_size=(120,)), "image_size"), (dict(image_size=(0, 160)), "image_size"),
    (dict(rpn=object()), "rpn"),
])
def test_bad_arguments_name_the_argument(kwargs, argument):
    proposals, objectness = _inputs()
    args = dict(rpn=_rpn(), proposals=proposals, objectness=objectness, num_anchors_per_level=LEVELS,
                image_size=IMAGE_SIZE)
    settings = {k: kwargs.pop(k) for k in list(kwargs) if k not in args}
    args.update(kwargs)
    with pytest.raises(ValueError, match=rf"^{argument} must be"):
        rpn_filter_state(args.pop("rpn"), *args.values(), **settings)


def test_draw_on_a_new_figure_and_on_given_axes():
    proposals, objectness = _inputs(levels=SMALL)
    state = rpn_filter_state(_rpn(), proposals, objectness, SMALL, IMAGE_SIZE)
    ax = draw_rpn_filter_state(None, state, gt_boxes=torch.tensor([[10.0, 10, 50, 60]]), max_boxes=20)
    counts_ax = ax.figure.axes[0]
    assert len(ax.figure.axes) == 2 and ax.get_title() == f"best 20 of {len(state.boxes)} kept proposals (cyan; gts red)"
    assert len(ax.patches) == 20 + 1
    assert [t.get_text() for t in counts_ax.get_yticklabels()] == list(STAGES)
    assert [round(p.get_width()) for p in counts_ax.patches] == list(state.counts.values())
    assert "nms_thresh 0.70, score_thresh 0.00" in counts_ax.get_title()
    fig, axes = plt.subplots(1, 2)
    image = torch.rand(3, *IMAGE_SIZE)
    assert draw_rpn_filter_state(axes[1], state, image=image) is axes[1]
    assert axes[1].get_title().startswith("best 50 of") and not axes[0].has_data()
    draw_rpn_filter_state(axes[1], state, counts_ax=axes[0], image=image)
    assert axes[0].has_data()
    with pytest.raises(ValueError, match=r"^image must be the resized image of size \(120, 160\)"):
        draw_rpn_filter_state(axes[1], state, image=torch.rand(3, 100, 100))
    with pytest.raises(ValueError, match="^max_boxes must be"):
        draw_rpn_filter_state(axes[1], state, max_boxes=-1)
    plt.close(fig)


def test_the_explorer_builds_and_its_controls_redraw():
    proposals, objectness = _inputs(levels=SMALL)
    rpn = _rpn()
    box = rpn_explorer(rpn, proposals, objectness, SMALL, IMAGE_SIZE, image=torch.rand(3, *IMAGE_SIZE))
    (pre, post, nms, score), summary, picture = box.children[0].children, box.children[1], box.children[2]
    assert [c.description for c in (pre, post, nms, score)] == ["pre_nms_top_n", "post_nms_top_n", "nms_thresh",
                                                                 "score_thresh"]
    assert (pre.value, post.value, nms.value, score.value) == (TRAINING, TRAINING, 0.7, 0.0)
    assert (pre.max, post.max) == (TRAINING, TRAINING)  # the defaults pass the 480 / 600 anchors
    first = rpn_filter_state(rpn, proposals, objectness, SMALL, IMAGE_SIZE)
    assert summary.value == "<pre>" + first.summary().replace(">", "&gt;") + "</pre>"
    first_picture = bytes(picture.value)
    assert first_picture.startswith(b"\x89PNG")

    nms.value = 0.3
    after = rpn_filter_state(rpn, proposals, objectness, SMALL, IMAGE_SIZE, nms_thresh=0.3)
    assert summary.value == "<pre>" + after.summary().replace(">", "&gt;") + "</pre>"
    assert after.counts["nms"] < first.counts["nms"]
    assert bytes(picture.value) != first_picture
    pre.value, post.value, score.value = 10, 5, 0.5
    last = rpn_filter_state(rpn, proposals, objectness, SMALL, IMAGE_SIZE, pre_nms_top_n=10, post_nms_top_n=5,
                            nms_thresh=0.3, score_thresh=0.5)
    assert summary.value == "<pre>" + last.summary().replace(">", "&gt;") + "</pre>"
    assert last.counts["top_n"] == 20 and last.counts["post_nms_top_n"] == min(5, last.counts["nms"])
    smaller = rpn_explorer(rpn, proposals, objectness, SMALL, IMAGE_SIZE, pre_nms_top_n=100, post_nms_top_n=50)
    assert [(c.value, c.max) for c in smaller.children[0].children[:2]] == [(100, 480), (50, 600)]


def test_the_explorer_checks_its_settings():
    proposals, objectness = _inputs(levels=SMALL)
    with pytest.raises(ValueError, match=r"^settings must be among"):
        rpn_explorer(_rpn(), proposals, objectness, SMALL, IMAGE_SIZE, nms=0.5)
    with pytest.raises(ValueError, match="^nms_thresh must be"):
        rpn_explorer(_rpn(), proposals, objectness, SMALL, IMAGE_SIZE, nms_thresh=2.0)


def test_ipywidgets_is_imported_only_by_the_explorer():
    import ast
    import inspect

    import detviz.viz.explore_rpn as module

    tree = ast.parse(inspect.getsource(module))
    top_level = [alias.name for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)
                 for alias in node.names] + [node.module for node in tree.body if isinstance(node, ast.ImportFrom)]
    assert not [name for name in top_level if name and name.startswith("ipywidgets")]
