"""Fixtures shared by the tests of detviz.yolo."""
import pytest
import torch

from detviz.yolo.targets import build_targets


@pytest.fixture
def targets_416():
    """``targets_416(boxes, labels, num_classes=3, **kw)``: build_targets for one 416 x 416 image."""
    def build(boxes, labels, num_classes=3, **kw):
        return build_targets([torch.tensor(boxes, dtype=torch.float32)], [torch.tensor(labels)],
                             input_size=(416, 416), num_classes=num_classes, **kw)
    return build
