"""``TrainConfig.overfit_batch``: one fixed batch, no augmentation, evaluated on itself; ``stop_at_ap50``."""
import json

import pytest

from detviz.datasets.coco import open_dataset
from detviz.engine.checkpoints import load_checkpoint
from detviz.engine.train import TrainConfig, train


def _config(data, out, **changes):
    options = dict(model="gfl", data=str(data), out=str(out), steps=150, input_size=128, overfit_batch=2,
                   lr=3e-3, progress=False)
    return TrainConfig(**{**options, **changes})


class Batches:
    def __init__(self):
        self.seen = []

    def on_batch(self, step, images, boxes, labels, image_ids):
        self.seen.append((step, sorted(image_ids), images.clone(), [b.clone() for b in boxes]))


def test_a_tiny_batch_is_learnt_and_the_run_stops_at_the_target(tiny_data, tmp_path):
    batches = Batches()
    result = train(_config(tiny_data, tmp_path, stop_at_ap50=0.9), observers=[batches])
    assert result["reached_ap50"] and result["step"] < 150  # it can learn: AP50 >= 0.9 on its own batch
    assert result["metrics"][-1]["AP50"] >= 0.9 and [m["step"] for m in result["metrics"]] == list(
        range(10, result["step"] + 1, 10))  # every 10 steps, on the batch
    batch = json.loads((tmp_path / "overfit_batch.json").read_text())
    dataset = open_dataset(tiny_data)
    with_gts = [i for i in dataset.image_ids if dataset.coco.imgToAnns[i]][:2]
    assert [image["id"] for image in batch["images"]] == with_gts
    assert load_checkpoint(result["checkpoint"])["train_config"]["batch_size"] == 2
    # no augmentation: every step sees the same two images, resized 96 -> 128 and nothing else
    assert all(ids == with_gts for _, ids, _, _ in batches.seen)
    first = {round(float(image.sum()), 3) for image in batches.seen[0][2]}
    assert all({round(float(image.sum()), 3) for image in images} == first for _, _, images, _ in batches.seen)
    expected = sorted(tuple(round(v * 128 / 96, 3) for v in (x, y, x + w, y + h))
                      for x, y, w, h in (ann["bbox"] for ann in batch["annotations"]))
    drawn = sorted(tuple(round(v, 3) for v in row) for boxes in batches.seen[0][3] for row in boxes.tolist())
    assert drawn == expected

@pytest.mark.parametrize("changes, message", [
    (dict(val_data="elsewhere"), "overfit_batch evaluates on its own batch; give no val_data"),
    (dict(overfit_batch=0, stop_at_ap50=0.9), "stop_at_ap50 needs evaluations"),
    (dict(stop_at_ap50=1.5), r"stop_at_ap50 must be in \(0, 1\], got 1.5"),
    (dict(overfit_batch=5), "overfit_batch=5, but the data has only 4 images with a gt"),
])
def test_settings_that_cannot_run_are_refused(tiny_data, tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        train(_config(tiny_data, tmp_path, **changes))
