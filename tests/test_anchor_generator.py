import pytest
import torch
from torch.testing import assert_close
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList

from detviz.anchors import AnchorGenerator, base_anchors, shifted_anchors

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

TUTORIAL = dict(sizes=((32, 64, 128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),))
FPN = dict(sizes=((32,), (64,), (128,), (256,), (512,)), aspect_ratios=((0.5, 1.0, 2.0),) * 5)
MIXED = dict(sizes=((16, 24), (40,)), aspect_ratios=((0.25, 1.0, 3.0), (0.7, 1.3)))
FLAT = dict(sizes=(20, 50), aspect_ratios=(0.5, 1.0, 2.0))  # torchvision's shorthand: one size per level


def _image_list(batch, height, width, device="cpu"):
    images = torch.zeros(batch, 3, height, width, device=device)
    return ImageList(images, [(height - i, width - 2 * i) for i in range(batch)])


def _features(shapes, device="cpu", dtype=torch.float32):
    return [torch.zeros(2, 4, h, w, device=device, dtype=dtype) for h, w in shapes]


def test_base_anchors_for_size_32_by_hand():
    expected = torch.tensor([[-23.0, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]])
    assert_close(base_anchors((32,), (0.5, 1.0, 2.0)), expected, rtol=0, atol=0)


def test_base_anchors_are_ratio_major_with_area_size_squared():
    base = base_anchors((32, 64), (0.5, 2.0))  # rows: (0.5, 32), (0.5, 64), (2, 32), (2, 64)
    assert_close(base[:, 0], torch.tensor([-23.0, -45, -11, -23]), rtol=0, atol=0)  # 45.25 rounds to 45
    assert_close(base[1], torch.tensor([-45.0, -23, 45, 23]), rtol=0, atol=0)
    assert_close(base_anchors((512,), (0.5,))[0], torch.tensor([-362.0, -181, 362, 181]), rtol=0, atol=0)


def test_base_anchors_round_half_to_even():
    # size 5, ratio 1: half side 2.5 rounds to 2 (even), not 3; size 7 -> 3.5 -> 4.
    assert_close(base_anchors((5, 7), (1.0,)), torch.tensor([[-2.0, -2, 2, 2], [-4, -4, 4, 4]]), rtol=0, atol=0)


def test_torchvision_test_vector_15x15_image_3x3_feature_size_10():
    generator = AnchorGenerator(sizes=((10,),), aspect_ratios=((1.0,),))
    anchors = generator(_image_list(2, 15, 15), _features([(3, 3)]))
    expected = torch.tensor([[-5.0, -5, 5, 5], [0, -5, 10, 5], [5, -5, 15, 5],
                             [-5, 0, 5, 10], [0, 0, 10, 10], [5, 0, 15, 10],
                             [-5, 5, 5, 15], [0, 5, 10, 15], [5, 5, 15, 15]])
    assert len(anchors) == 2
    for anchors_per_image in anchors:
        assert_close(anchors_per_image, expected, rtol=0, atol=0)


def test_order_is_y_then_x_then_anchor():
    base = base_anchors((32,), (0.5, 1.0, 2.0))  # A = 3
    anchors = shifted_anchors(base, (2, 3), (16, 8)).reshape(2, 3, 3, 4)  # [H, W, A, 4]
    assert_close(anchors[1, 2, 0], base[0] + torch.tensor([16.0, 16, 16, 16]), rtol=0, atol=0)  # x=2*8, y=1*16
    assert_close(anchors[0, 1], base + torch.tensor([8.0, 0, 8, 0]), rtol=0, atol=0)


def test_tutorial_generator_gives_15_anchors_per_location():
    generator = AnchorGenerator(**TUTORIAL)
    assert generator.num_anchors_per_location() == [15]
    anchors = generator(_image_list(1, 224, 320), _features([(7, 10)]))
    assert anchors[0].shape == (7 * 10 * 15, 4)


@pytest.mark.parametrize("config", [TUTORIAL, FPN, MIXED, FLAT], ids=["tutorial", "fpn", "mixed", "flat"])
@pytest.mark.parametrize("image_size", [(800, 1088), (64, 96), (37, 53)])
@pytest.mark.parametrize("device", DEVICES)
def test_matches_torchvision(config, image_size, device):
    torch.manual_seed(0)
    ours, theirs = AnchorGenerator(**config), TVAnchorGenerator(**config)
    height, width = image_size
    levels = len(ours.cell_anchors)
    # Strides 4, 8, ... by ceil division, plus random sizes whose strides do not divide the image.
    shapes = [(-(-height // 2 ** (l + 2)), -(-width // 2 ** (l + 2))) for l in range(levels)]
    if levels > 1:
        shapes[-1] = tuple(int(s) for s in torch.randint(1, 6, (2,)))
    image_list, features = _image_list(2, height, width, device), _features(shapes, device)
    expected, got = theirs(image_list, features), ours(image_list, features)
    assert ours.num_anchors_per_location() == theirs.num_anchors_per_location()
    assert len(got) == len(expected) == 2
    for g, e in zip(got, expected):
        assert g.device == e.device and g.dtype == e.dtype
        assert_close(g, e, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_dtype_follows_feature_maps_like_torchvision(dtype):
    # 4160 px wide: above 2048 float16 holds only even integers, so corners round; both must round alike.
    image_list, features = _image_list(1, 96, 4160), _features([(3, 130)], dtype=dtype)
    got = AnchorGenerator(**TUTORIAL)(image_list, features)[0]
    expected = TVAnchorGenerator(**TUTORIAL)(image_list, features)[0]
    assert got.dtype == dtype
    assert_close(got, expected, rtol=0, atol=0)


def test_has_no_parameters_or_buffers_and_forward_keeps_state():
    generator = AnchorGenerator(**FPN)
    assert generator.state_dict() == {} and list(generator.parameters()) == []
    before = [c.clone() for c in generator.cell_anchors]
    generator(_image_list(1, 64, 64), _features([(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)], dtype=torch.float64))
    for b, c in zip(before, generator.cell_anchors):
        assert c.dtype == torch.float32
        assert_close(c, b, rtol=0, atol=0)


def test_every_image_gets_its_own_tensor():
    anchors = AnchorGenerator(**TUTORIAL)(_image_list(2, 64, 64), _features([(2, 2)]))
    assert anchors[0].data_ptr() != anchors[1].data_ptr()
    assert_close(anchors[0], anchors[1], rtol=0, atol=0)


def test_sizes_and_ratios_must_pair_up():
    with pytest.raises(ValueError, match="one entry per feature-map level, got 2 sizes and 3 aspect_ratios"):
        AnchorGenerator(sizes=((32,), (64,)), aspect_ratios=((1.0,), (1.0,), (1.0,)))
    with pytest.raises(ValueError, match="must not be empty"):
        AnchorGenerator(sizes=(), aspect_ratios=((1.0,),))


def test_feature_map_count_must_match_levels():
    generator = AnchorGenerator(**FPN)
    with pytest.raises(ValueError, match="got 2 feature maps but 5 levels of sizes and aspect_ratios"):
        generator(_image_list(1, 64, 64), _features([(16, 16), (8, 8)]))


def test_bad_forward_inputs():
    generator = AnchorGenerator(**TUTORIAL)
    with pytest.raises(TypeError, match=r"image_list must be an ImageList with .tensors"):
        generator(torch.zeros(1, 3, 64, 64), _features([(2, 2)]))
    with pytest.raises(TypeError, match=r"feature_maps must be a list of Tensor\[B, C, H, W\], got Tensor"):
        generator(_image_list(1, 64, 64), torch.zeros(1, 4, 2, 2))
    with pytest.raises(ValueError, match=r"feature map 0 must be .* <= the padded image size \[64, 64\], "
                                         r"got shape \[2, 4, 128, 2\]"):
        generator(_image_list(1, 64, 64), _features([(128, 2)]))
