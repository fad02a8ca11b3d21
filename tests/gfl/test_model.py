import pytest
import torch

from torch import nn
from torchvision.models import shufflenet_v2_x1_0

from detviz.gfl.model import CPUFloat32Conv2d, NanoDetConfig, ShuffleNetV2Stages, build_nanodet


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


def test_the_strided_depthwise_convs_compute_in_float32_under_cpu_autocast_only():
    torch.manual_seed(0)
    plain = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)
    conv = CPUFloat32Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)
    conv.load_state_dict(plain.state_dict())
    x = torch.randn(2, 8, 16, 16)
    assert torch.equal(conv(x), plain(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, kept = plain(x), conv(x.bfloat16())
    assert low.dtype == torch.bfloat16 and kept.dtype == torch.float32
    assert torch.equal(kept, plain(x.bfloat16().float()))


def test_backbone_swaps_six_convs_and_keeps_torchvision_s_initial_weights():
    torch.manual_seed(0)
    ours = ShuffleNetV2Stages()
    after_ours = torch.rand(4)  # the swap draws no random numbers: what comes next is unchanged
    torch.manual_seed(0)
    reference = shufflenet_v2_x1_0(weights=None)
    after_reference = torch.rand(4)
    assert torch.equal(after_ours, after_reference)
    swapped = sorted(name for name, m in ours.named_modules() if isinstance(m, CPUFloat32Conv2d))
    assert swapped == [f"stage{s}.0.branch{b}" for s in (2, 3, 4) for b in ("1.0", "2.3")]
    assert all(m.stride == (2, 2) and m.groups == m.in_channels for n, m in ours.named_modules() if n in swapped)
    theirs = reference.state_dict()
    for key, value in ours.state_dict().items():
        assert torch.equal(value, theirs[key.replace("stem.0", "conv1").replace("stem.1", "maxpool")]), key
