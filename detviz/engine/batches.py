"""Training batches that depend only on (seed, step): the same at any worker count, world size or resume.

The training loop never carries data state from one step to the next:

* epoch ``e`` visits the images in the order ``randperm(N)`` drawn from a generator seeded
  by ``(seed, e)``; an epoch holds ``N // G`` steps of ``G`` images (``G``, the global batch,
  is the per-process batch times the number of processes; the last ``N % G`` images of an
  epoch's order are left out of that epoch);
* the augmentation of the image in slot ``k`` of step ``t`` draws from a generator seeded
  by ``(seed, t, k)``;
* process ``r`` of ``W`` takes slots ``r, r + W, r + 2W, ...`` of every step.

So a resumed run needs only the step count, DataLoader workers may build samples in any
order, and a 2-process run sees the same global batches as a 1-process run of the same
global batch size.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["derived_seed", "epoch_order", "StepBatches", "AugmentedSamples", "collate_square"]


def derived_seed(*keys: int) -> int:
    """A 63-bit seed from non-negative integer keys (numpy's SeedSequence mixes them)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def epoch_order(num_items: int, seed: int, epoch: int) -> list[int]:
    """The visiting order of epoch ``epoch``."""
    generator = torch.Generator().manual_seed(derived_seed(seed, 0, epoch))
    return torch.randperm(num_items, generator=generator).tolist()


class StepBatches:
    """A batch sampler: for steps ``start .. stop - 1``, this process's ``(step, slot, index)`` keys.

    Args:
        num_items: images in the dataset. batch_size: images per process and step.
        seed: the run's seed. start, stop: steps to cover. rank, world_size: this process, all processes.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, start: int, stop: int, *, rank: int = 0,
                 world_size: int = 1):
        global_batch = batch_size * world_size
        if global_batch > num_items:
            raise ValueError(f"batch_size x processes ({batch_size} x {world_size} = {global_batch}) must not "
                             f"exceed the number of images ({num_items})")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start, self.stop, self.rank, self.world_size = start, stop, rank, world_size
        self.steps_per_epoch = num_items // global_batch
        self._order: tuple[int, list[int]] = (-1, [])

    def global_batch(self, step: int) -> list[int]:
        """Image indices of every slot of ``step`` (all processes)."""
        epoch, position = divmod(step, self.steps_per_epoch)
        if self._order[0] != epoch:
            self._order = (epoch, epoch_order(self.num_items, self.seed, epoch))
        g = self.batch_size * self.world_size
        return self._order[1][position * g:(position + 1) * g]

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for step in range(self.start, self.stop):
            indices = self.global_batch(step)
            yield [(step, slot, indices[slot]) for slot in range(self.rank, len(indices), self.world_size)]

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)


class AugmentedSamples(Dataset):
    """``dataset[index]`` passed through ``transform(image, target, generator)`` with the key's generator.

    Items are addressed by ``(step, slot, index)`` keys from :class:`StepBatches`. Returns
    ``(image Tensor[3, S, S], boxes Tensor[M, 4], labels Tensor[M])``.
    """

    def __init__(self, dataset: Dataset, transform: Callable, seed: int):
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[Tensor, Tensor, Tensor]:
        step, slot, index = key
        image, target = self.dataset[index]
        generator = torch.Generator().manual_seed(derived_seed(self.seed, 1, step, slot))
        image, target, _ = self.transform(image, {"boxes": target["boxes"], "labels": target["labels"]}, generator)
        return image, target["boxes"], target["labels"]


def collate_square(samples: list[tuple[Tensor, Tensor, Tensor]]) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """B x (image [3, S, S], boxes, labels) -> (images [B, 3, S, S], B x boxes, B x labels)."""
    images, boxes, labels = zip(*samples)
    return torch.stack(images), list(boxes), list(labels)
