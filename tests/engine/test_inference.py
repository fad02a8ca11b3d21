"""detviz.engine.inference: predictions over a COCO folder mapped back to its images, and their metrics."""
import json
import shutil

import pytest
import torch
from torch.testing import assert_close

from detviz.datasets.coco import open_dataset
from detviz.engine.checkpoints import build_model_from_checkpoint, load_checkpoint
from detviz.engine.families import get_family
from detviz.engine.inference import (class_names_of, evaluate_checkpoint, evaluate_model, finite_metrics, load_model,
                                     predict_dataset)
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

