"""Every model family through the training loop, the checkpoint and the evaluation, on 5 tiny images."""
import dataclasses
import math

import pytest
import torch
from torch.testing import assert_close

from detviz.engine.families import FAMILIES, Family, get_family
from detviz.engine.train import (TrainConfig, build_model_from_checkpoint, evaluate_checkpoint, load_checkpoint,
                                 open_dataset, train)

NUM_CLASSES = 6
SIZE = 64


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize("name", ["gfl", "faster_rcnn", "yolov3", "sparse"])
def test_family_trains_saves_and_evaluates(name, tiny_data, tmp_path):
    # batch 5 = the whole set: every step holds the image without objects
    config = TrainConfig(model=name, data=str(tiny_data), val_data=str(tiny_data), out=str(tmp_path), steps=2,
                         batch_size=5, input_size=SIZE, ema_decay=0.5, progress=False)
    result = train(config)
    assert result["step"] == 2
    assert all(math.isfinite(v) for step in result["losses"] for v in step.values())
    assert len(result["losses"][0]) > 2  # the total and the family's own terms
    assert [m["step"] for m in result["metrics"]] == [2]
    assert -1.0 <= result["metrics"][0]["mAP"] <= 1.0

    checkpoint = load_checkpoint(result["checkpoint"], model_family=name, num_classes=NUM_CLASSES)
    model = build_model_from_checkpoint(checkpoint)  # rebuilt from the stored model_config alone
    assert_close(model.state_dict(), checkpoint["ema"]["module"])
    metrics, _ = evaluate_checkpoint(result["model"], tiny_data)
    assert metrics["mAP"] == pytest.approx(result["metrics"][0]["mAP"])  # model.pt holds the same EMA weights


@pytest.mark.parametrize("name", ["gfl", "faster_rcnn", "yolov3", "sparse"])
def test_family_predicts_in_input_pixels(name):
    family = get_family(name)
    torch.manual_seed(0)
    module = family.build(3, SIZE).eval()
    predictions = family.predict(module, torch.rand(2, 3, SIZE, SIZE))
    assert len(predictions) == 2
    for p in predictions:
        k = p["boxes"].shape[0]
        assert p["boxes"].shape == (k, 4) and p["labels"].shape == (k,) and p["scores"].shape == (k,)
        if k:
            assert p["labels"].min() >= 0 and p["labels"].max() < 3  # no background class
            assert p["boxes"].min() >= 0 and p["boxes"].max() <= SIZE


def test_faster_rcnn_family_is_torchvisions_mobilenet_v3_320_layout():
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    torch.manual_seed(0)
    reference = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=4).eval()
    ours = get_family("faster_rcnn").build(3, 320).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)  # same parameters and buffers, same names
    images = [torch.rand(3, 320, 320), torch.rand(3, 240, 320)]
    with torch.no_grad():
        expected, got = reference(images), ours(images)
    for e, g in zip(expected, got):
        assert_close(g, e)


def test_label_offset_of_faster_rcnn_family():
    family = get_family("faster_rcnn")
    torch.manual_seed(0)
    module = family.build(2, SIZE)
    seen = []
    module.roi_heads.register_forward_pre_hook(lambda m, args: seen.append(args[3]))  # targets
    family.loss(module, module, torch.rand(1, 3, SIZE, SIZE), [torch.tensor([[4.0, 4.0, 40.0, 40.0]])],
                [torch.tensor([0])])
    assert seen[0][0]["labels"].tolist() == [1]  # class 0 of the data is label 1: 0 is the background


def test_a_family_of_your_own_is_passed_in(tiny_data, tmp_path):
    class Renamed(type(get_family("gfl"))):
        name = "gfl_copy"

    family = Renamed()
    config = TrainConfig(model="gfl_copy", data=str(tiny_data), out=str(tmp_path), steps=1, batch_size=5,
                         input_size=SIZE, progress=False)
    result = train(config, family=family)
    checkpoint = load_checkpoint(result["model"], model_family="gfl_copy")
    assert_close(build_model_from_checkpoint(checkpoint, family=family).state_dict(), result["module"].state_dict())
    with pytest.raises(ValueError, match="model must be one of"):  # no built-in family has that name
        build_model_from_checkpoint(checkpoint)
    with pytest.raises(ValueError, match="family 'gfl_copy', not of 'gfl'"):
        build_model_from_checkpoint(checkpoint, family=get_family("gfl"))
    with pytest.raises(ValueError, match=r"family must be a Family named like config.model \('gfl'\)"):
        train(dataclasses.replace(config, model="gfl"), family=family)


def test_the_built_in_families_are_fixed_and_named():
    assert tuple(FAMILIES) == ("gfl", "faster_rcnn", "yolov3", "sparse")
    with pytest.raises(TypeError):
        FAMILIES["gfl_copy"] = Family()  # read-only: pass your own family to train() instead
    with pytest.raises(ValueError, match="model must be one of"):
        get_family("retinanet")


@pytest.mark.parametrize("name", ["gfl", "faster_rcnn", "yolov3", "sparse"])
def test_each_family_keeps_a_config_dataclass(name):
    family = get_family(name)
    module = family.build(NUM_CLASSES, SIZE)
    assert dataclasses.is_dataclass(module.cfg)
    stored = family.model_config(module)
    assert stored == dataclasses.asdict(module.cfg)
    assert family.rebuild(stored).cfg == module.cfg  # a checkpoint's dict gives the same config back
    json_like = {k: [list(v) if isinstance(v, tuple) else v for v in val] if isinstance(val, tuple) else val
                 for k, val in stored.items()}  # sequences come back from a file as lists
    assert family.rebuild(json_like).cfg == module.cfg


# ---------------------------------------------------------------- damaged data

def test_corrupt_image_is_named(tiny_data, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    victim = sorted((data / "images").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:200])  # a truncated jpeg
    config = TrainConfig(data=str(data), out=str(tmp_path / "run"), steps=3, batch_size=5, input_size=SIZE,
                         progress=False)
    with pytest.raises(OSError, match=f"cannot read image .*{victim.name}"):
        train(config)


def test_corrupt_annotation_file_is_named(tmp_path):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "annotations.json").write_text('{"images": [{"id": 1, "file_name": "a.jpg"')  # cut short
    with pytest.raises(ValueError, match="annotations.json is not a readable COCO annotation file"):
        open_dataset(data)
    with pytest.raises(FileNotFoundError, match="dataset folder .*missing does not exist"):
        open_dataset(tmp_path / "missing")
