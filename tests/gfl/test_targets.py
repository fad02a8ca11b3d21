import pytest
import torch
from torch.testing import assert_close

from detviz.assigners import ATSSAssigner
from detviz.gfl.targets import gfl_targets, images_to_levels

SIZES, STRIDES = [(8, 8), (4, 4)], [8, 16]  # a 64x64 input


def _targets(gts, labels, **kwargs):
    return gfl_targets(SIZES, STRIDES, 5, gts, labels, num_classes=3, **kwargs)


def test_one_gt_targets_by_hand():
    gt = torch.tensor([[16.0, 16, 48, 48]])
    targets = _targets([gt], [torch.tensor([2])])
    image = targets.per_image[0]
    pos = image.pos_inds
    assert pos.numel() > 0
    assert (image.labels[pos] == 2).all()
    background = torch.ones(80, dtype=torch.bool)
    background[pos] = False
    assert (image.labels[background] == 3).all()
    assert_close(image.label_weights, torch.ones(80))
    assert_close(image.bbox_targets[pos], gt.expand(len(pos), 4))
    assert_close(image.bbox_targets[background], torch.zeros(int(background.sum()), 4))
    assert_close(image.bbox_weights.sum(dim=1), background.logical_not().float() * 4)
    assert targets.num_total_pos == pos.numel()
    assert targets.num_total_neg == 80 - pos.numel()
    assert sorted(torch.cat([image.pos_inds, image.neg_inds]).tolist()) == list(range(80))


def test_split_per_level_matches_the_concatenated_targets():
    gts = [torch.tensor([[4.0, 4, 30, 40]]), torch.tensor([[20.0, 10, 60, 60], [0, 0, 12, 12]])]
    labels = [torch.tensor([0]), torch.tensor([1, 2])]
    targets = _targets(gts, labels)
    assert [t.shape for t in targets.labels] == [(2, 64), (2, 16)]
    assert [t.shape for t in targets.bbox_targets] == [(2, 64, 4), (2, 16, 4)]
    assert [t.shape for t in targets.grid_cells] == [(2, 64, 4), (2, 16, 4)]
    for b, image in enumerate(targets.per_image):
        assert torch.equal(torch.cat([t[b] for t in targets.labels]), image.labels)
        assert torch.equal(torch.cat([t[b] for t in targets.bbox_targets]), image.bbox_targets)


def test_image_without_objects_is_all_background_and_counts_one_positive():
    targets = _targets([torch.zeros(0, 4), torch.tensor([[16.0, 16, 48, 48]])],
                       [torch.zeros(0, dtype=torch.long), torch.tensor([1])])
    empty = targets.per_image[0]
    assert (empty.labels == 3).all() and empty.pos_inds.numel() == 0
    assert_close(empty.label_weights, torch.ones(80))
    assert_close(empty.bbox_weights, torch.zeros(80, 4))
    # NanoDet counts max(P, 1) per image so the QFL normaliser is never 0.
    assert targets.num_total_pos == 1 + targets.per_image[1].pos_inds.numel()


def test_ignored_cells_get_zero_label_weight():
    assigner = ATSSAssigner(ignore_iof_thr=0.5)
    targets = _targets([torch.tensor([[0.0, 0, 20, 20]])], [torch.tensor([0])], assigner=assigner,
                       gt_bboxes_ignore_list=[torch.tensor([[24.0, 24, 64, 64]])])
    image = targets.per_image[0]
    ignored = image.label_weights == 0
    assert ignored.any()
    assert (image.labels[ignored] == 3).all()
    assert image.neg_inds.numel() + image.pos_inds.numel() + int(ignored.sum()) == 80


def test_images_to_levels():
    a, b = torch.arange(6), torch.arange(6) + 10
    levels = images_to_levels([a, b], [4, 2])
    assert_close(levels[0], torch.tensor([[0, 1, 2, 3], [10, 11, 12, 13]]))
    assert_close(levels[1], torch.tensor([[4, 5], [14, 15]]))


def test_bad_batches():
    with pytest.raises(ValueError, match="one entry per image, got 2 and 1"):
        _targets([torch.zeros(0, 4)] * 2, [torch.zeros(0, dtype=torch.long)])
    with pytest.raises(ValueError, match="got an empty batch"):
        _targets([], [])
    with pytest.raises(ValueError, match=r"gt_labels must lie in \[0, 2\]"):
        _targets([torch.tensor([[0.0, 0, 8, 8]])], [torch.tensor([3])])
