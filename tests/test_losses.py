"""Tests for detviz.losses: hand-computed QFL/DFL, independent re-derivations, normalisation, bad input."""
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.ops as tv_ops
from torch.testing import assert_close

from detviz import losses as L

LN3 = math.log(3.0)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def random_boxes(n, seed):
    g = gen(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    return torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 50 + 1], dim=1)  # [n, 4] xyxy


def qfl_reference(pred, labels, score, beta):
    """QFL written the NanoDet way: negative term everywhere, then overwrite the positive entries."""
    prob = pred.sigmoid()
    loss = F.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred), reduction="none") * prob.pow(beta)
    pos = torch.nonzero(labels < pred.shape[1]).flatten()
    pos_label = labels[pos]
    pos_term = F.binary_cross_entropy_with_logits(pred[pos, pos_label], score[pos], reduction="none")
    loss = loss.index_put((pos, pos_label), pos_term * (score[pos] - prob[pos, pos_label]).abs().pow(beta))
    return loss.sum(dim=1)


# ---- quality focal loss ----

def test_qfl_hand_computed_2x3():
    # sigmoid(0) = 0.5, sigmoid(ln 3) = 0.75, sigmoid(-ln 3) = 0.25
    pred = torch.tensor([[0.0, LN3, -LN3], [0.0, 0.0, 0.0]])
    labels = torch.tensor([1, 3])  # row 0: class 1 with IoU 0.5; row 1: background (C = 3)
    score = torch.tensor([0.5, 0.0])
    row0 = (
        math.log(2) * 0.5**2                                        # class 0: BCE(0, 0) * 0.5^2
        - (0.5 * math.log(0.75) + 0.5 * math.log(0.25)) * 0.25**2  # class 1: BCE(ln3, 0.5) * |0.5 - 0.75|^2
        - math.log(0.75) * 0.25**2                                  # class 2: BCE(-ln3, 0) * 0.25^2
    )
    row1 = 3 * math.log(2) * 0.5**2
    assert_close(L.quality_focal_loss(pred, labels, score), torch.tensor([row0, row1]))


@pytest.mark.parametrize("beta", [2.0, 1.5])
def test_qfl_equals_independent_bce_form(beta):
    g = gen(0)
    pred = torch.randn(50, 5, generator=g) * 3
    labels = torch.randint(0, 6, (50,), generator=g)  # 5 = background
    score = torch.rand(50, generator=g) * (labels < 5)
    assert_close(L.quality_focal_loss(pred, labels, score, beta=beta), qfl_reference(pred, labels, score, beta))


def test_qfl_gradient_matches_independent_form():
    g = gen(1)
    pred = torch.randn(20, 4, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 5, (20,), generator=g)
    score = torch.rand(20, generator=g, dtype=torch.float64)
    grads = []
    for fn in (L.quality_focal_loss, lambda *a: qfl_reference(*a, 2.0)):
        p = pred.clone().requires_grad_()
        fn(p, labels, score).sum().backward()
        grads.append(p.grad)
    assert_close(grads[0], grads[1])


def test_qfl_without_positives_and_empty_input_are_finite():
    pred = torch.randn(6, 3, generator=gen(2))
    labels = torch.full((6,), 3)
    loss = L.quality_focal_loss(pred, labels, torch.zeros(6))
    expected = (F.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred), reduction="none")
                * pred.sigmoid() ** 2).sum(dim=1)
    assert_close(loss, expected)
    empty = L.quality_focal_loss(torch.zeros(0, 3, requires_grad=True), torch.zeros(0, dtype=torch.int64), torch.zeros(0))
    assert empty.shape == (0,)
    total = L.weight_reduce(empty, avg_factor=1.0)
    assert_close(total, torch.tensor(0.0))
    total.backward()  # still differentiable


# ---- distribution focal loss and the integral ----

def test_dfl_hand_computed_y_2_3():
    pred = torch.tensor([[0.0, 1.0, 2.0, 3.0, 0.0]])  # R = 5, reg_max = 4
    lse = math.log(1 + math.e + math.e**2 + math.e**3 + 1)
    # 0.7 * CE(pred, 2) + 0.3 * CE(pred, 3) = 0.7 (lse - 2) + 0.3 (lse - 3) = lse - 2.3
    assert_close(L.distribution_focal_loss(pred, torch.tensor([2.3])), torch.tensor([lse - 2.3]))
    # an integer target puts all the weight on one bin
    assert_close(L.distribution_focal_loss(pred, torch.tensor([2.0])), torch.tensor([lse - 2.0]))


def test_dfl_equals_soft_target_cross_entropy():
    g = gen(3)
    pred = torch.randn(40, 8, generator=g)
    target = torch.rand(40, generator=g) * 6.999
    left = target.floor().long()
    soft = F.one_hot(left, 8) * (left + 1 - target)[:, None] + F.one_hot(left + 1, 8) * (target - left)[:, None]
    assert_close(L.distribution_focal_loss(pred, target), F.cross_entropy(pred, soft, reduction="none"))


def test_dfl_optimum_projects_back_to_target():
    # the distribution with mass 0.7 on bin 2 and 0.3 on bin 3 has expectation 2.3 (4 sides, reg_max = 4)
    probs = torch.tensor([0.0, 0.0, 0.7, 0.3, 0.0]).repeat(4)  # [4R]
    assert_close(L.distribution_project(probs.log()[None], reg_max=4), torch.full((1, 4), 2.3))


def test_distribution_project_matches_linear_form_and_integral():
    reg_max = 7
    reg = torch.randn(2, 10, 4 * (reg_max + 1), generator=gen(4))
    bins = torch.linspace(0, reg_max, reg_max + 1)
    expected = F.linear(F.softmax(reg.reshape(-1, reg_max + 1), dim=1), bins).reshape(2, 10, 4)
    assert_close(L.distribution_project(reg, reg_max), expected)
    integral = L.Integral(reg_max)
    assert_close(integral(reg), expected)
    assert_close(integral.state_dict()["project"], bins)
    assert_close(L.distribution_project(torch.zeros(3, 32), reg_max), torch.full((3, 4), 3.5))  # uniform -> mean bin


# ---- GIoU loss and normalisation ----

def test_giou_loss_hand_values_and_nanodet_eps():
    pred = torch.tensor([[0.0, 0, 10, 10], [10, 10, 20, 20], [4, 4, 4, 4]])
    target = torch.tensor([[0.0, 0, 10, 20], [0, 10, 10, 19], [4, 4, 4, 4]])
    # GIoU 0.5, -0.05, and 0 for two identical points (areas floored at eps = 1e-6, not NaN)
    assert_close(L.giou_loss(pred, target), torch.tensor([0.5, 1.05, 1.0]))


def test_giou_loss_matches_torchvision_on_regular_boxes():
    pred, target = random_boxes(30, seed=5), random_boxes(30, seed=6)
    assert_close(L.giou_loss(pred, target), tv_ops.generalized_box_iou_loss(pred, target, reduction="none"))


def test_weight_reduce_hand_values():
    loss, weight = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 0.0, 2.0])
    assert_close(L.weight_reduce(loss), torch.tensor(2.0))
    assert_close(L.weight_reduce(loss, weight), torch.tensor(7.0 / 3))
    assert_close(L.weight_reduce(loss, weight, avg_factor=2.0), torch.tensor(3.5))
    assert_close(L.weight_reduce(loss, weight, avg_factor=torch.tensor(4.0)), torch.tensor(1.75))
    assert_close(L.weight_reduce(torch.zeros(0)), torch.tensor(0.0))  # empty mean is 0, not NaN


# ---- inputs are never modified ----

def test_losses_do_not_modify_inputs():
    g = gen(7)
    pred, labels, score = torch.randn(10, 3, generator=g), torch.randint(0, 4, (10,), generator=g), torch.rand(10, generator=g)
    reg, target = torch.randn(10, 5, generator=g), torch.rand(10, generator=g) * 3.9
    boxes1, boxes2, weight = random_boxes(10, 8), random_boxes(10, 9), torch.rand(10, generator=g)
    inputs = [pred, labels, score, reg, target, boxes1, boxes2, weight]
    before = [x.clone() for x in inputs]
    L.quality_focal_loss(pred, labels, score)
    L.distribution_focal_loss(reg, target)
    L.weight_reduce(L.giou_loss(boxes1, boxes2), weight, avg_factor=3.0)
    L.distribution_project(reg.repeat(1, 4), 4)
    for x, x0 in zip(inputs, before):
        assert_close(x, x0, rtol=0, atol=0)


# ---- bad input ----

def test_qfl_rejects_bad_input():
    pred, score = torch.zeros(2, 3), torch.zeros(2)
    with pytest.raises(ValueError, match=r"pred must be Tensor\[N, C\] logits, got shape \[3\]"):
        L.quality_focal_loss(torch.zeros(3), torch.tensor([0, 1, 2]), torch.zeros(3))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\] \(classes 0..2, background = 3\), got range \[0, 4\]"):
        L.quality_focal_loss(pred, torch.tensor([0, 4]), score)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\].*got range \[-1, 0\]"):
        L.quality_focal_loss(pred, torch.tensor([-1, 0]), score)
    with pytest.raises(TypeError, match="labels must be Tensor.* of an integer dtype, got torch.float32"):
        L.quality_focal_loss(pred, torch.tensor([0.0, 1.0]), score)
    with pytest.raises(ValueError, match=r"score must lie in \[0, 1\]"):
        L.quality_focal_loss(pred, torch.tensor([0, 1]), torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match=r"score must have one value per prior \(2\), got 3"):
        L.quality_focal_loss(pred, torch.tensor([0, 1]), torch.zeros(3))


def test_dfl_rejects_targets_outside_bins_and_bad_shapes():
    pred = torch.zeros(2, 5)
    with pytest.raises(ValueError, match=r"target must lie in \[0, reg_max\) = \[0, 4\) for R = 5 bins"):
        L.distribution_focal_loss(pred, torch.tensor([1.0, 4.0]))
    with pytest.raises(ValueError, match=r"target must lie in \[0, reg_max\)"):
        L.distribution_focal_loss(pred, torch.tensor([-0.1, 1.0]))
    with pytest.raises(ValueError, match=r"pred must be Tensor\[N, R\] logits, got shape \[2, 5, 1\]"):
        L.distribution_focal_loss(torch.zeros(2, 5, 1), torch.zeros(2))
    with pytest.raises(ValueError, match=r"target must have one value per row of pred \(2\), got 1"):
        L.distribution_focal_loss(pred, torch.zeros(1))


def test_giou_weight_reduce_and_projection_reject_bad_input():
    with pytest.raises(ValueError, match=r"boxes1 must be Tensor\[N, 4\] xyxy, got shape \[2, 3\]"):
        L.giou_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"weight must have the shape of loss \[3\], got shape \[2\]"):
        L.weight_reduce(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="avg_factor must be > 0, got 0"):
        L.weight_reduce(torch.zeros(3), avg_factor=0)
    for bad in (torch.tensor(0.0), torch.tensor(float("nan")), torch.tensor(-2.0)):  # a tensor gave inf or NaN
        with pytest.raises(ValueError, match="avg_factor must be > 0, got"):
            L.weight_reduce(torch.ones(3), avg_factor=bad)
    with pytest.raises(ValueError, match=r"reg must be Tensor\[..., 4 \* \(reg_max \+ 1\)\] = \[..., 32\] logits, got shape \[2, 20\]"):
        L.distribution_project(torch.zeros(2, 20), reg_max=7)
    with pytest.raises(ValueError, match="reg_max must be an int >= 1, got 0"):
        L.Integral(0)
