"""Tests for detviz.yolo.model: shapes, parameter and layer counts (note 004), darknet conv order, heads."""
import pytest
import torch
from torch import nn
from torch.testing import assert_close

from detviz.fixtures import load_trace
from detviz.yolo.model import (Darknet53, SeparatedKeypointHead, SharedKeypointHead, YOLOv3Config, YOLOv3FPN,
                               YOLOv3KeypointConfig, build_yolov3, build_yolov3_keypoint, darknet_conv_numbers,
                               keras_layer_count, keras_param_count)

TRACE = load_trace("seed004_yolov3")

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def native_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def on_meta(build):
    """Build without allocating weights: counts need shapes only."""
    with torch.device("meta"):
        return build()


# ---- backbone ----

def test_darknet53_stage_shapes_and_outputs():
    torch.manual_seed(0)
    net = Darknet53(8).eval()
    x = torch.rand(1, 3, 64, 96)
    stages = net.stage_outputs(x)
    assert [tuple(s.shape[1:]) for s in stages] == [(8, 64, 96), (16, 32, 48), (32, 16, 24), (64, 8, 12),
                                                   (128, 4, 6), (256, 2, 3)]
    c3, c4, c5 = net(x)
    assert_close(c5, stages[-1])
    assert net.out_channels == (64, 128, 256) == (c3.shape[1], c4.shape[1], c5.shape[1])


def test_darknet53_structure_52_convs_23_residuals():
    net = on_meta(lambda: Darknet53(32))
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 52 == TRACE["darknet.num_conv_layers"] - 1  # the note's 53 includes the classifier
    assert [c.stride for c in convs].count((2, 2)) == 5
    assert sum(len(stage) - 1 for stage in net.stages) == 23
    assert [m.negative_slope for m in net.modules() if isinstance(m, nn.LeakyReLU)] == [0.1] * 52


def test_backbone_counts_reproduce_the_note():
    for key in ("params.backbone_f8", "params.backbone_f32"):
        note = TRACE[key]
        net = on_meta(lambda: Darknet53(note["initial_filters"], conv_bias=True))
        assert keras_param_count(net) == note["total_params"]
    net = on_meta(lambda: Darknet53(32))
    assert keras_param_count(net) == 40_620_640  # keras-yolo3's body: no conv biases
    assert native_count(net) == 40_584_928  # PyTorch: BN running stats are buffers
    assert keras_layer_count(net) == TRACE["darknet.layers_exclude_top"]
    assert keras_layer_count(net, zero_padding=True) == TRACE["darknet.layers_keras_yolo3"]


def test_full_model_counts():
    coco = on_meta(lambda: build_yolov3(YOLOv3Config(num_classes=80)))
    assert keras_param_count(coco) == 62_001_757
    assert native_count(coco) == 61_949_149
    assert keras_layer_count(coco) == TRACE["fpn.total_layers"]
    assert keras_layer_count(coco, zero_padding=True) == 252
    note = on_meta(lambda: build_yolov3(YOLOv3Config(num_classes=10, in_channels=1, conv_bias=True)))
    assert keras_param_count(note) == TRACE["params.backbone_fpn"]


def test_darknet_conv_numbers_follow_yolov3_cfg():
    model = on_meta(lambda: build_yolov3(YOLOv3Config(num_classes=80)))
    numbers = darknet_conv_numbers(model)
    assert len(numbers) == 75
    heads = [numbers[f"fpn.levels.{l}.out.1"] for l in range(3)]
    ups = [numbers[f"fpn.levels.{l}.up.0.0"] for l in range(2)]
    assert heads == [59, 67, 75] and ups == [60, 68]
    assert numbers["fpn.levels.0.stack.4.0"] == 57 and numbers["fpn.levels.1.out.0.0"] == 66


# ---- FPN and full model ----

@pytest.mark.parametrize("num_classes", [1, 3])
def test_yolov3_output_layout(num_classes):
    torch.manual_seed(0)
    model = build_yolov3(YOLOv3Config(num_classes=num_classes, initial_filters=8)).eval()
    images = torch.rand(2, 3, 64, 96)
    outs = model(images)
    assert [tuple(o.shape) for o in outs] == [(2, 2, 3, 3, 5 + num_classes), (2, 4, 6, 3, 5 + num_classes),
                                             (2, 8, 12, 3, 5 + num_classes)]
    raw = model.fpn(model.backbone(images))[1]  # [B, A*(5+C), H, W]
    k = 5 + num_classes
    # channel a * (5 + C) + j of the head is output [..., a, j]
    assert_close(outs[1][1, 3, 4, 2, 4], raw[1, 2 * k + 4, 3, 4])
    assert_close(outs[1][0, 0, 5, 0, k - 1], raw[0, k - 1, 0, 5])


def test_fpn_kernel_layout_matches_note():
    fpn = on_meta(lambda: YOLOv3FPN((64, 128, 256), 24))
    level = fpn.levels[0]
    assert [b[0].kernel_size[0] for b in level.stack] == TRACE["fpn.stack_kernels"]
    assert [level.out[0][0].kernel_size[0], level.out[1].kernel_size[0]] == TRACE["fpn.out_kernels"]
    assert level.up[0][0].kernel_size[0] == TRACE["fpn.up_kernel"]
    assert fpn.levels[2].up is None
    # levels 1 and 2 take concat(upsampled coarser level, raw backbone map)
    assert [l.stack[0][0].in_channels for l in fpn.levels] == [256, 128 + 64, 64 + 32]


def test_fpn_without_out_branch_gives_features_only():
    torch.manual_seed(0)
    net, fpn = Darknet53(8).eval(), YOLOv3FPN((64, 128, 256), None).eval()
    feats = fpn.features(net(torch.rand(1, 3, 64, 64)))
    assert [tuple(f.shape) for f in feats] == [(1, 128, 2, 2), (1, 64, 4, 4), (1, 32, 8, 8)]
    with pytest.raises(RuntimeError, match="features"):
        fpn(net(torch.rand(1, 3, 64, 64)))


# ---- keypoint model ----

@pytest.mark.parametrize("head", ["shared", "separated"])
def test_keypoint_model_shapes(head):
    torch.manual_seed(0)
    model = build_yolov3_keypoint(YOLOv3KeypointConfig(num_classes=2, initial_filters=8, head=head)).eval()
    outs = model(torch.rand(2, 3, 64, 64))
    assert [(tuple(r.shape), tuple(c.shape)) for r, c in outs] == [
        ((2, 2, 2, 2), (2, 2, 2, 3)), ((2, 4, 4, 2), (2, 4, 4, 3)), ((2, 8, 8, 2), (2, 8, 8, 3))]


def test_shared_and_separated_heads():
    shared, separated = SharedKeypointHead(32, 5), SeparatedKeypointHead(32, 5, num_convs=4)
    assert shared.body[-1].out_channels == 2 + 5 + 1
    tower_convs = [sum(isinstance(m, nn.Conv2d) for m in tower.modules()) for tower in (separated.reg, separated.cls)]
    assert tower_convs == [TRACE["kp.retinanet_tower_convs"] + 1] * 2  # 4 convs + the 1x1 head
    assert native_count(separated) > native_count(shared)
    x = torch.rand(1, 32, 3, 4)
    for head in (shared.eval(), separated.eval()):
        reg, cls = head(x)
        assert reg.shape == (1, 3, 4, 2) and cls.shape == (1, 3, 4, 6)


# ---- bad input ----

def test_bad_images_and_config():
    model = build_yolov3(YOLOv3Config(num_classes=1, initial_filters=8))
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.rand(1, 3, 64, 70))
    with pytest.raises(ValueError, match=r"Tensor\[B, C, H, W\]"):
        model(torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="initial_filters must be an even int"):
        Darknet53(7)
    with pytest.raises(ValueError, match="'shared' or 'separated'"):
        build_yolov3_keypoint(YOLOv3KeypointConfig(initial_filters=8, head="tower"))
    with pytest.raises(ValueError, match=r"\[C3, C4, C5\]"):
        YOLOv3FPN((64, 128, 256), 18).features([torch.rand(1, 64, 8, 8)])
