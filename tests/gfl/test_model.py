import pytest
import torch

from detviz.gfl.model import NanoDetConfig, build_nanodet


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_nanodet(NanoDetConfig(num_classes=80)).eval()


def test_traced_shapes_at_320(model):
    images = torch.zeros(1, 3, 320, 320)
    with torch.no_grad():
        backbone = model.backbone(images)
        fpn = model.neck(backbone)
        cls, reg = model.head(fpn)
    assert [list(x.shape) for x in backbone] == [[1, 116, 40, 40], [1, 232, 20, 20], [1, 464, 10, 10]]
    assert [list(x.shape) for x in fpn] == [[1, 96, 40, 40], [1, 96, 20, 20], [1, 96, 10, 10]]
    assert [list(x.shape) for x in cls] == [[1, 80, 40, 40], [1, 80, 20, 20], [1, 80, 10, 10]]
    assert [list(x.shape) for x in reg] == [[1, 32, 40, 40], [1, 32, 20, 20], [1, 32, 10, 10]]


def test_non_square_input(model):
    with torch.no_grad():
        cls, reg = model(torch.zeros(2, 3, 256, 416))
    assert [tuple(c.shape[-2:]) for c in cls] == [(32, 52), (16, 26), (8, 13)]
    assert reg[2].shape == (2, 32, 8, 13)


@pytest.mark.parametrize("images, message", [
    (torch.zeros(3, 320, 320), r"images must be Tensor\[B, 3, H, W\], got \[3, 320, 320\]"),
    (torch.zeros(1, 1, 320, 320), r"images must be Tensor\[B, 3, H, W\], got \[1, 1, 320, 320\]"),
    (torch.zeros(1, 3, 300, 320), r"multiples of 32, got \[300, 320\]"),
])
def test_bad_images(model, images, message):
    with pytest.raises(ValueError, match=message):
        model(images)


def test_a_few_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = build_nanodet(NanoDetConfig(num_classes=3)).train()
    images = torch.rand(2, 3, 128, 128)
    gts = [torch.tensor([[20.0, 30, 90, 100]]), torch.tensor([[10.0, 10, 50, 40], [60, 64, 120, 120]])]
    labels = [torch.tensor([0]), torch.tensor([1, 2])]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    totals = []
    for _ in range(8):
        losses = model.loss(*model(images), gts, labels)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(total.item())
    assert all(torch.isfinite(torch.tensor(totals)))
    assert totals[-1] < 0.8 * totals[0], totals
