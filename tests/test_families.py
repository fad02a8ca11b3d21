"""Every model family through the training loop, the checkpoint and the evaluation, on 5 tiny images."""
import math

import pytest
import torch
from torch.testing import assert_close

from detviz.datasets.synthetic import write_dataset
from detviz.families import FAMILIES, Family, get_family, register_family
from detviz.train import (TrainConfig, build_model_from_checkpoint, evaluate_checkpoint, load_checkpoint,
                          open_dataset, train)

NUM_CLASSES = 6
SIZE = 64


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    write_dataset(folder, num_images=5, seed=3, size=96, empty_fraction=0.2, max_objects=3)
    return folder

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
    metrics, results_path = evaluate_checkpoint(result["model"], tiny_data)
    assert metrics["mAP"] == pytest.approx(result["metrics"][0]["mAP"])  # model.pt holds the same EMA weights
    assert results_path.name == "model.results.json"


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


def test_register_family_and_unknown_names():
    class Renamed(type(get_family("gfl"))):
        name = "gfl_copy"

    register_family(Renamed())
    try:
        assert get_family("gfl_copy").name == "gfl_copy"
    finally:
        FAMILIES.pop("gfl_copy")
    with pytest.raises(TypeError, match="named Family instance"):
        register_family(Family())
    with pytest.raises(ValueError, match="model must be one of"):
        get_family("retinanet")


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
