"""Batches fixed by (seed, step): epochs, process shares, augmentation seeds."""
import pytest
import torch

from detviz.engine.batches import AugmentedSamples, StepBatches, collate_square, derived_seed, epoch_order


def test_epochs_visit_every_image_once_and_differ():
    batches = StepBatches(10, 3, seed=0, start=0, stop=6)  # 3 steps per epoch, one image left out each epoch
    steps = [b for b in batches]
    assert len(steps) == 6 and all(len(b) == 3 for b in steps)
    first = [k[2] for b in steps[:3] for k in b]
    second = [k[2] for b in steps[3:] for k in b]
    assert len(set(first)) == 9 and len(set(second)) == 9
    assert first == epoch_order(10, 0, 0)[:9] and second == epoch_order(10, 0, 1)[:9]
    assert first != second
    assert [k[:2] for k in steps[4]] == [(4, 0), (4, 1), (4, 2)]  # (step, slot)


def test_processes_share_each_global_batch():
    single = list(StepBatches(12, 4, seed=5, start=0, stop=5))
    shares = [list(StepBatches(12, 2, seed=5, start=0, stop=5, rank=r, world_size=2)) for r in range(2)]
    for step in range(5):
        merged = sorted(shares[0][step] + shares[1][step], key=lambda k: k[1])
        assert merged == single[step]  # the same images in the same slots as one process with batch 4


def test_resume_start_gives_the_same_keys():
    full = list(StepBatches(7, 2, seed=1, start=0, stop=9))
    assert list(StepBatches(7, 2, seed=1, start=4, stop=9)) == full[4:]


def test_batch_larger_than_data_is_refused():
    with pytest.raises(ValueError, match=r"batch_size x processes \(4 x 2 = 8\) must not exceed the number of "
                                         r"images \(7\)"):
        StepBatches(7, 4, seed=0, start=0, stop=1, world_size=2)


def test_derived_seeds_are_fixed_and_distinct():
    assert derived_seed(0, 1, 2) == derived_seed(0, 1, 2)
    assert len({derived_seed(0, 1, s, k) for s in range(50) for k in range(8)}) == 400
    assert 0 <= derived_seed(3) < 2 ** 63


def test_augmented_samples_depend_only_on_the_key():
    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return torch.full((3, 4, 4), float(i)), {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0).long()}

    def noisy(image, target, generator):
        return image + torch.rand(1, generator=generator), target, {}

    samples = AugmentedSamples(Images(), noisy, seed=0)
    a, b, c = samples[(3, 1, 2)], samples[(3, 1, 2)], samples[(3, 0, 2)]
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    images, boxes, labels = collate_square([a, c])
    assert images.shape == (2, 3, 4, 4) and len(boxes) == len(labels) == 2
