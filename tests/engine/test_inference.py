"""detviz.engine.inference: predictions over a COCO folder mapped back to its images, and their metrics."""
import json
import re
import shutil

import pytest
import torch
from torch.testing import assert_close

from detviz.datasets.augment import NanoDetWarp, warp_boxes
from detviz.datasets.coco import open_dataset
from detviz.engine.checkpoints import build_model_from_checkpoint, load_checkpoint
from detviz.engine.families import get_family
from detviz.engine.inference import (WORKERS_FROM_IMAGES, _NetworkInputs, class_names_of, default_workers,
                                     evaluate_checkpoint, evaluate_model, finite_metrics, load_model, predict_dataset)
from detviz.evaluation import STAT_NAMES, evaluate_coco, to_coco_results

NUM_CLASSES = 6  # detviz.datasets.synthetic.CATEGORIES


@pytest.fixture
def eager_model(one_step_checkpoint):
    """The 1-step model with every class scoring ~0.99: plenty of detections to map back."""
    model = build_model_from_checkpoint(load_checkpoint(one_step_checkpoint)).eval()
    with torch.no_grad():
        for out in model.head.outputs:
            out.bias[:NUM_CLASSES] = 5.0
    return model


def test_evaluate_maps_boxes_to_original_size(eager_model, tiny_data):
    predictions = predict_dataset(get_family("gfl"), eager_model, open_dataset(tiny_data), 64, batch_size=5)
    assert len(predictions) == 5
    boxes = torch.cat([p["boxes"] for p in predictions])
    assert boxes.shape[0] > 0 and boxes.max() > 64  # 64 px input mapped back to 96 px images
    assert boxes.min() >= 0 and boxes.max() <= 96


def test_batching_does_not_change_the_predictions(eager_model, tiny_data):
    dataset = open_dataset(tiny_data)
    one = predict_dataset(get_family("gfl"), eager_model, dataset, 64, batch_size=1)
    all_five = predict_dataset(get_family("gfl"), eager_model, dataset, 64, batch_size=5)
    assert [p["boxes"].shape[0] for p in one] == [p["boxes"].shape[0] for p in all_five]
    for a, b in zip(one, all_five):
        assert_close(a["boxes"], b["boxes"], atol=1e-3, rtol=0)
        assert_close(a["scores"], b["scores"], atol=1e-5, rtol=0)
        assert torch.equal(a["labels"], b["labels"])


def test_evaluate_model_is_evaluate_coco_of_the_predictions(eager_model, tiny_data):
    dataset = open_dataset(tiny_data)
    predictions = predict_dataset(get_family("gfl"), eager_model, dataset, 64)
    expected = evaluate_coco(dataset.coco, to_coco_results(predictions, dataset.image_ids,
                                                           dataset.label_to_category_id))
    result = evaluate_model(get_family("gfl"), eager_model, dataset, 64)
    assert {k: result[k] for k in STAT_NAMES} == {k: expected[k] for k in STAT_NAMES}
    assert sum(len(p["boxes"]) for p in predictions) > 0  # real results, not the no-detections shortcut


def test_evaluate_checkpoint_writes_nothing_and_takes_a_family(eager_weights, one_step_checkpoint, tiny_data):
    before = sorted(p.name for p in eager_weights.parent.iterdir())
    metrics, results = evaluate_checkpoint(eager_weights, tiny_data, family=get_family("gfl"))
    assert sorted(p.name for p in eager_weights.parent.iterdir()) == before
    assert results and all(set(r) == {"image_id", "category_id", "bbox", "score"} for r in results)
    assert metrics["mAP"] == evaluate_coco(open_dataset(tiny_data).coco, results)["mAP"]
    with pytest.raises(ValueError, match="family 'gfl', not of 'yolov3'"):
        evaluate_checkpoint(one_step_checkpoint, tiny_data, family=get_family("yolov3"))


def test_data_of_other_category_ids_is_refused_not_misscored(one_step_checkpoint, tiny_data, tmp_path):
    """Same names, other ids: scoring would pair the model's classes with the wrong categories."""
    shutil.copytree(tiny_data, tmp_path / "data")
    document = json.loads((tmp_path / "data" / "annotations.json").read_text())
    for entry in document["categories"] + document["annotations"]:
        key = "id" if "name" in entry else "category_id"
        entry[key] += 100
    (tmp_path / "data" / "annotations.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"was trained on the categories \{0: 1, .*the data has \{0: 101"):
        evaluate_checkpoint(one_step_checkpoint, tmp_path / "data")


def test_load_model_names_the_classes(one_step_checkpoint, tiny_data):
    family, module, checkpoint = load_model(one_step_checkpoint)
    assert family.name == "gfl" and not module.training
    assert class_names_of(checkpoint) == open_dataset(tiny_data).class_names
    del checkpoint["class_names"]  # a checkpoint written before names were stored
    assert class_names_of(checkpoint) == {0: "category 1", 1: "category 2", 2: "category 3", 3: "category 4",
                                          4: "category 5", 5: "category 6"}
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'cuda:N', got 'gpu'"):
        load_model(one_step_checkpoint, device="gpu")


def test_finite_metrics_turns_nan_into_none():
    cleaned = finite_metrics({"mAP": float("nan"), "AP50": 0.5, "per_class": {"a": float("nan")}, "summary_text": "x"})
    assert cleaned == {"mAP": None, "AP50": 0.5, "per_class": {"a": None}}
    json.dumps(cleaned, allow_nan=False)


def test_predict_dataset_refuses_a_model_in_train_mode_and_leaves_it_alone(eager_model, tiny_data):
    eager_model.train()
    before = {k: v.clone() for k, v in eager_model.state_dict().items()}
    with pytest.raises(ValueError, match=r"needs the module in eval mode \(call module.eval\(\)\)"):
        predict_dataset(get_family("gfl"), eager_model, open_dataset(tiny_data), 64)
    assert all(torch.equal(before[k], v) for k, v in eager_model.state_dict().items())  # BatchNorm untouched


@pytest.mark.parametrize("name", ["gfl", "faster_rcnn", "yolov3", "sparse"])
def test_every_family_refuses_pixels_in_0_255(name):
    family = get_family(name)
    module = family.build(3, 64).eval()
    images = torch.rand(1, 3, 64, 64) * 255
    with pytest.raises(ValueError, match=r"images must lie in \[0, 1\], got values in \[.*\] \(pixels in 0..255: "
                                         r"divide by 255\)"):
        family.predict(module, images)
    with pytest.raises(ValueError, match=r"images must be a float Tensor\[B, 3, H, W\] in \[0, 1\], got torch.uint8"):
        family.predict(module, images.to(torch.uint8))



def _warped_reference(family, model, dataset, input_size):
    """predict_dataset as it was written first: every image through NanoDetWarp's resize, even one that already
    has the input size, one image at a time, boxes mapped back through the inverse matrix."""
    resize = NanoDetWarp((input_size, input_size), scale=(1.0, 1.0), translate=0.0, flip=0.0)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    predictions = []
    for index in range(len(dataset)):
        image, _, meta = resize(dataset[index][0], empty, torch.Generator().manual_seed(0))
        (prediction,) = family.predict(model, image[None])
        h, w = meta["ori_shape"]
        predictions.append({**prediction, "boxes": warp_boxes(prediction["boxes"], torch.linalg.inv(meta["warp_matrix"]),
                                                             width=w, height=h)})
    return predictions


def _assert_same_predictions(mine, theirs):
    assert len(mine) == len(theirs)
    for a, b in zip(mine, theirs):
        assert all(torch.equal(a[k], b[k]) for k in ("boxes", "labels", "scores"))


def test_an_image_of_the_input_size_is_not_warped_and_predicts_the_same(eager_model, tiny_data):
    dataset = open_dataset(tiny_data)  # 96 x 96 images
    inputs = _NetworkInputs(dataset, 96)
    image, matrix, size = inputs[0]
    assert matrix is None and size == (96, 96) and torch.equal(image, dataset[0][0])  # passed on as it is
    # the skipped warp is the identity, and bilinear resampling through it is exact, pixel for pixel
    warped, _, meta = inputs.resize(image, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)})
    assert torch.equal(meta["warp_matrix"], torch.eye(3, dtype=torch.float64)) and torch.equal(warped, image)
    family = get_family("gfl")
    predictions = predict_dataset(family, eager_model, dataset, 96, batch_size=1)
    assert sum(len(p["boxes"]) for p in predictions) > 0
    _assert_same_predictions(predictions, _warped_reference(family, eager_model, dataset, 96))


def test_a_resized_image_predicts_as_through_the_warp(eager_model, tiny_data):
    dataset = open_dataset(tiny_data)
    assert _NetworkInputs(dataset, 64)[0][1] is not None  # 96 px images, 64 px input: a real resize
    family = get_family("gfl")
    _assert_same_predictions(predict_dataset(family, eager_model, dataset, 64, batch_size=1),
                             _warped_reference(family, eager_model, dataset, 64))


@pytest.mark.parametrize("input_size", [64, 96])
def test_workers_give_the_same_predictions_in_the_same_order(eager_model, tiny_data, input_size):
    dataset = open_dataset(tiny_data)
    here = predict_dataset(get_family("gfl"), eager_model, dataset, input_size, batch_size=2, num_workers=0)
    workers = predict_dataset(get_family("gfl"), eager_model, dataset, input_size, batch_size=2, num_workers=2)
    _assert_same_predictions(workers, here)
    # every image's detections differ from the next one's, so an order change would show
    assert all(not torch.equal(a["boxes"], b["boxes"]) for a, b in zip(here, here[1:]))


def test_an_image_that_fails_in_a_worker_raises_its_own_error(eager_model, tiny_data, tmp_path):
    shutil.copytree(tiny_data, tmp_path / "data")
    broken = sorted((tmp_path / "data" / "images").iterdir())[3]
    broken.write_bytes(b"not an image")
    dataset = open_dataset(tmp_path / "data")
    for workers in (0, 1):
        with pytest.raises(OSError, match=rf"^cannot read image {broken}: "):  # not wrapped in the worker's traceback
            predict_dataset(get_family("gfl"), eager_model, dataset, 64, batch_size=2, num_workers=workers)


@pytest.mark.parametrize("value", [-1, 1.5, True, "2"])
def test_num_workers_must_be_a_count(eager_model, tiny_data, value):
    with pytest.raises(ValueError, match=rf"num_workers must be None \(default_workers\) or an int >= 0, got "
                                         rf"{re.escape(repr(value))}"):
        predict_dataset(get_family("gfl"), eager_model, open_dataset(tiny_data), 64, num_workers=value)


@pytest.mark.parametrize("cpus, threads, images, expected", [
    (8, 4, 5, 0), (8, 4, WORKERS_FROM_IMAGES - 1, 0),  # a small dataset: no worker start-up to pay
    (2, 2, 500, 0), (2, 1, 500, 1), (8, 4, WORKERS_FROM_IMAGES, 2), (4, 3, 500, 1), (None, 1, 500, 0)])
def test_default_workers_take_the_cpus_torch_leaves_free(monkeypatch, cpus, threads, images, expected):
    monkeypatch.setattr("os.cpu_count", lambda: cpus)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    assert default_workers(images) == expected


class _Bytes(torch.utils.data.Dataset):
    """One uint8 image of the input size: the resize it skips would have refused it."""

    def __len__(self):
        return 1

    def __getitem__(self, index):
        return torch.zeros(3, 64, 64, dtype=torch.uint8), {}


def test_an_image_that_is_not_float_is_refused_even_at_the_input_size(eager_model):
    with pytest.raises(TypeError, match=r"image must be Tensor\[3, H, W\] of a floating dtype with values in "
                                        r"\[0, 1\] \(e.g. uint8 image / 255\), got torch.uint8"):
        predict_dataset(get_family("gfl"), eager_model, _Bytes(), 64)
