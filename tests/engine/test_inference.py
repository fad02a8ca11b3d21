"""detviz.engine.inference: predictions over a COCO folder mapped back to its images, and their metrics."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from detviz.datasets.coco import open_dataset
from detviz.engine.checkpoints import build_model_from_checkpoint, load_checkpoint
from detviz.engine.families import get_family
from detviz.engine.inference import evaluate_checkpoint, evaluate_model, finite_metrics, predict_dataset
from detviz.evaluation import STAT_NAMES, evaluate_coco, to_coco_results

REPO = Path(__file__).resolve().parents[2]
VAL = REPO / "data" / "synthetic" / "val"
NUM_CLASSES = 6  # detviz.datasets.synthetic.CATEGORIES


@pytest.fixture
def eager_model(one_step_checkpoint):
    """The 1-step model with every class scoring ~0.99: plenty of detections to map back."""
    model = build_model_from_checkpoint(load_checkpoint(one_step_checkpoint)).eval()
    with torch.no_grad():
        for out in model.head.outputs:
            out.bias[:NUM_CLASSES] = 5.0
    return model


def test_evaluate_cli_prints_json_last_line(one_step_checkpoint):
    done = subprocess.run([sys.executable, "-m", "detviz", "evaluate", "--checkpoint", str(one_step_checkpoint),
                           "--data", str(VAL)], capture_output=True, text=True, cwd=REPO, check=True)
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(STAT_NAMES) <= set(metrics) and "summary_text" not in metrics
    assert all(-1.0 <= metrics[name] <= 1.0 for name in STAT_NAMES)
    assert (one_step_checkpoint.parent / "checkpoint.results.json").is_file()


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


def test_evaluate_checkpoint_writes_results_beside_it_and_takes_a_family(one_step_checkpoint, tiny_data):
    metrics, path = evaluate_checkpoint(one_step_checkpoint, tiny_data, family=get_family("gfl"))
    assert path == one_step_checkpoint.with_suffix(".results.json")
    results = json.loads(path.read_text())
    assert all(set(r) == {"image_id", "category_id", "bbox", "score"} for r in results)
    with pytest.raises(ValueError, match="family 'gfl', not of 'yolov3'"):
        evaluate_checkpoint(one_step_checkpoint, tiny_data, family=get_family("yolov3"))


def test_finite_metrics_turns_nan_into_none():
    cleaned = finite_metrics({"mAP": float("nan"), "AP50": 0.5, "per_class": {"a": float("nan")}, "summary_text": "x"})
    assert cleaned == {"mAP": None, "AP50": 0.5, "per_class": {"a": None}}
    json.dumps(cleaned, allow_nan=False)
