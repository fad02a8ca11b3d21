"""Models and images shared by the sparse detector's tests."""
import pytest
import torch

from detviz.sparse.model import SparseDetector, SparseDetectorConfig, build_sparse_detector

NUM_CLASSES = 3
SIZE = (64, 64)


def make_model(seed: int = 0, **overrides) -> SparseDetector:
    torch.manual_seed(seed)
    return build_sparse_detector(SparseDetectorConfig(num_classes=NUM_CLASSES, **overrides))


def make_images(batch: int = 2, size=SIZE, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def eval_model() -> SparseDetector:
    return make_model().eval()
