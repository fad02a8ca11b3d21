"""Tiny runs of detviz.engine.train: 5 synthetic 96 px images warped to 64 px."""
import csv
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from detviz.__main__ import main
from detviz.datasets.synthetic import write_dataset
from detviz.engine.families import get_family
from detviz.engine.train import TrainConfig, build_model_from_checkpoint, evaluate_checkpoint, load_checkpoint, train
from detviz.gfl.model import CPUFloat32Conv2d
from detviz.evaluation import STAT_NAMES

REPO = Path(__file__).resolve().parents[2]
VAL = REPO / "data" / "synthetic" / "val"
NUM_CLASSES = 6  # detviz.datasets.synthetic.CATEGORIES


def _config(data, out, **changes) -> TrainConfig:
    options = dict(data=None if data is None else str(data), out=str(out), steps=2, batch_size=2, input_size=64, progress=False)
    return TrainConfig(**{**options, **changes})


# ---------------------------------------------------------------- training

def test_losses_finite_with_empty_images_and_log_and_checkpoint(tiny_data, tmp_path):
    # batch 5 = the whole set, so every step holds the image without objects
    result = train(_config(tiny_data, tmp_path, batch_size=5))
    assert result["step"] == 2 and len(result["losses"]) == 2
    assert all(math.isfinite(v) for step in result["losses"] for v in step.values())
    with open(result["log"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert float(rows[1]["loss"]) == pytest.approx(result["losses"][1]["loss"])

    checkpoint = load_checkpoint(result["checkpoint"], num_classes=NUM_CLASSES)
    assert (checkpoint["step"], checkpoint["model_family"], checkpoint["num_classes"]) == (2, "gfl", NUM_CLASSES)
    model = build_model_from_checkpoint(checkpoint)
    assert model.cfg.input_size == 64
    assert_close(model.state_dict(), checkpoint["model"])  # no EMA in this run: the weights themselves
    weights = load_checkpoint(result["model"], model_family="gfl")
    assert "optimizer" not in weights and weights["step"] == 2
    assert_close(weights["model"], checkpoint["model"])
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write left no temp file


class Recorder:
    """A training observer that writes down what it is told; it has no on_end, which train must not mind."""

    def __init__(self):
        self.events = []

    def on_start(self, dataset):
        self.events.append(("start", len(dataset)))

    def on_batch(self, step, images, boxes, labels, image_ids):
        self.events.append(("batch", step, tuple(images.shape), len(boxes), len(labels), len(image_ids)))

    def on_evaluation(self):
        self.events.append(("evaluation", len(json.loads(self.metrics.read_text())) if self.metrics.is_file() else 0))


def test_observers_see_the_start_every_batch_and_every_evaluation(tiny_data, tmp_path):
    recorder = Recorder()
    recorder.metrics = tmp_path / "run" / "metrics.json"
    train(_config(tiny_data, tmp_path / "run", steps=4, eval_every=2, val_data=str(tiny_data)), observers=[recorder])
    batch = ((2, 3, 64, 64), 2, 2, 2)  # images, boxes, labels, image ids
    assert recorder.events == [("start", 5), ("batch", 0, *batch), ("batch", 1, *batch), ("evaluation", 1),
                               ("batch", 2, *batch), ("batch", 3, *batch), ("evaluation", 2)]


def test_all_empty_batch_gives_zero_finite_loss(tmp_path):
    data = tmp_path / "empty"
    write_dataset(data, num_images=2, seed=0, size=96, empty_fraction=1.0)
    result = train(_config(data, tmp_path / "run", steps=1, optimizer="adamw"))
    assert result["losses"][0]["loss"] == 0.0


def test_interrupted_run_resumes_exactly(tiny_data, tmp_path, monkeypatch):
    # EMA, warm-up and cosine on: every piece of state must come back; 2 DataLoader workers must not matter
    options = dict(steps=4, ema_decay=0.9, warmup_steps=2, batch_size=2, checkpoint_every=2)
    straight = train(_config(tiny_data, tmp_path / "straight", **options))

    family, calls = get_family("gfl"), []
    real_loss = family.loss

    def interrupted_loss(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # Ctrl-C during step 3, after the checkpoint of step 2
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(family, "loss", interrupted_loss)
    with pytest.raises(KeyboardInterrupt):
        train(_config(tiny_data, tmp_path / "split", **options))
    monkeypatch.undo()
    first = torch.load(tmp_path / "split" / "checkpoint.pt")
    assert first["step"] == 2
    resumed = train(_config(tiny_data, tmp_path / "split", **options, resume=str(tmp_path / "split" / "checkpoint.pt"),
                            workers=2))
    assert resumed["step"] == 4 and len(resumed["losses"]) == 2

    a, b = torch.load(straight["checkpoint"]), torch.load(resumed["checkpoint"])
    assert_close(b["model"], a["model"], rtol=0, atol=0)
    assert_close(b["ema"], a["ema"], rtol=0, atol=0)
    assert_close(b["optimizer"], a["optimizer"], rtol=0, atol=0)
    assert_close(b["rng"], a["rng"], rtol=0, atol=0)
    assert [s["loss"] for s in resumed["losses"]] == [s["loss"] for s in straight["losses"][2:]]
    with open(resumed["log"], newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4]


def test_resume_refuses_another_optimizer(one_step_checkpoint, tiny_data, tmp_path):
    with pytest.raises(ValueError, match=r"was trained with optimizer='adamw'; resume with the same value, not 'sgd'"):
        train(_config(tiny_data, tmp_path, steps=2, optimizer="sgd", resume=str(one_step_checkpoint)))


@pytest.mark.parametrize("key, value, message", [
    ("model_family", "yolov3", "family 'yolov3', expected 'gfl'"),
    ("num_classes", 3, "num_classes=3, but the data has 6 classes"),
])
def test_resume_refuses_other_model(one_step_checkpoint, tiny_data, tmp_path, key, value, message):
    checkpoint = torch.load(one_step_checkpoint)
    checkpoint[key] = value
    path = tmp_path / "other.pt"
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match=message):
        train(_config(tiny_data, tmp_path / "run", resume=str(path)))
    if key == "num_classes":
        with pytest.raises(ValueError, match=message):
            evaluate_checkpoint(path, tiny_data)


def test_resume_refuses_inference_weights_and_foreign_files(one_step_checkpoint, tiny_data, tmp_path):
    with pytest.raises(ValueError, match="inference weights only; resume needs the checkpoint.pt"):
        train(_config(tiny_data, tmp_path / "run", resume=str(one_step_checkpoint.parent / "model.pt")))
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="foreign.pt is not a detviz checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "cut.pt").write_bytes(one_step_checkpoint.read_bytes()[:1000])  # a truncated file
    with pytest.raises(ValueError, match="cannot read checkpoint .*cut.pt"):
        load_checkpoint(tmp_path / "cut.pt")


def test_bad_config_is_refused(tiny_data, tmp_path):
    with pytest.raises(ValueError, match=r"model must be one of \('gfl', 'faster_rcnn', 'yolov3', 'sparse'"):
        train(_config(tiny_data, tmp_path, model="ssd"))
    with pytest.raises(ValueError, match="input_size must be a multiple of 32"):
        train(_config(tiny_data, tmp_path, input_size=100))
    with pytest.raises(ValueError, match=r"batch_size x processes \(6 x 1 = 6\) must not exceed the number of "
                                         r"images \(5\)"):
        train(_config(tiny_data, tmp_path, batch_size=6))
    with pytest.raises(FileNotFoundError, match="missing.pt does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_default_data_is_a_cached_synthetic_split(tmp_path):
    config = _config(None, tmp_path / "run", steps=1, cache_dir=str(tmp_path / "cache"), synthetic_images=5,
                     synthetic_size=96)
    train(config)
    (folder,) = (tmp_path / "cache").iterdir()
    assert folder.name == "synthetic-train-n5-s96-seed1"
    stamp = (folder / "annotations.json").stat().st_mtime_ns
    train(dataclasses.replace(config, overwrite=True))  # the second run reuses the cached split
    assert (folder / "annotations.json").stat().st_mtime_ns == stamp


def test_cli_train_evaluates_during_training(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "gfl", "--data", str(tiny_data), "--val-data", str(tiny_data), "--steps", "2",
                 "--eval-every", "1", "--ema-decay", "0.5", "--batch-size", "2", "--input-size", "64",
                 "--out", str(out), "--quiet"]) == 0
    history = json.loads((out / "metrics.json").read_text())
    assert [m["step"] for m in history] == [1, 2]
    assert set(STAT_NAMES) <= set(history[-1]) and "per_class" in history[-1]
    printed = capsys.readouterr().out
    assert f"step 2: mAP {history[-1]['mAP']:.4f}" in printed
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert checkpoint["train_config"]["ema_decay"] == 0.5 and checkpoint["ema"]["updates"] == 2


@pytest.mark.parametrize("family_name", ["gfl", "faster_rcnn", "yolov3", "sparse"])
def test_amp_on_the_cpu_runs_the_forward_in_bfloat16_and_keeps_float32_weights(tiny_data, tmp_path, family_name):
    family = type(get_family(family_name))()  # a fresh instance: the shared one stays untouched
    seen = []  # (kept in float32?, output dtype) of every convolution during the training forward passes
    original = family.build

    def record(conv, args, out):
        if conv.training:
            seen.append((isinstance(conv, CPUFloat32Conv2d), out.dtype))

    def build(num_classes, input_size):
        module = original(num_classes, input_size)
        for conv in (m for m in module.modules() if isinstance(m, torch.nn.Conv2d)):
            conv.register_forward_hook(record)
        return module

    family.build = build
    size = 64 if family_name == "gfl" else 128
    result = train(_config(tiny_data, tmp_path, model=family_name, amp=True, input_size=size), family=family)
    # ShuffleNetV2's strided depthwise convs (gfl, sparse) stay in float32; every other conv runs in bfloat16
    assert {dtype for kept, dtype in seen if not kept} == {torch.bfloat16}
    assert {dtype for kept, dtype in seen if kept} == ({torch.float32} if family_name in ("gfl", "sparse") else set())
    assert all(math.isfinite(v) for step in result["losses"] for v in step.values())
    checkpoint = load_checkpoint(result["checkpoint"])
    assert checkpoint["train_config"]["amp"] is True and checkpoint["scaler"] == {}  # no scaler for bfloat16
    assert {v.dtype for v in checkpoint["model"].values() if v.is_floating_point()} == {torch.float32}


def test_cli_amp_flags(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "gfl", "--data", str(tiny_data), "--steps", "1", "--batch-size", "2",
                 "--input-size", "64", "--out", str(out), "--quiet", "--no-pictures", "--amp"]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["train_config"]["amp"] is True
    with pytest.raises(SystemExit):
        main(["train", "--model", "gfl", "--amp", "--no-amp"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_cli_train_rejects_bad_numbers(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--model", "gfl", "--time-budget", "-5"])
    assert exit_info.value.code == 2
    assert "--time-budget: expected a positive number, got -5.0" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    (dict(optimizer="lamb"), r"optimizer must be one of \('sgd', 'adamw'\)"),
    (dict(schedule="step"), r"schedule must be one of \('cosine', 'constant'\)"),
    (dict(steps=0), "steps must be >= 1, got 0"),
    (dict(workers=-1), "workers must be >= 0, got -1"),
    (dict(ema_decay=1.0), r"ema_decay must be in \[0, 1\), got 1.0"),
    (dict(time_budget=float("nan")), "time_budget must be a positive number of seconds, got nan"),
    (dict(lr=-0.1), "lr must be a positive number, got -0.1"),
    (dict(min_lr_ratio=2.0), r"min_lr_ratio must be in \[0, 1\], got 2.0"),
    (dict(device="gpu0"), "device must be 'cpu', 'cuda' or 'cuda:N', got 'gpu0'"),
    (dict(ema_ramp=0.0), "ema_ramp must be a positive number of updates, got 0.0"),
    (dict(warp_scale=(1.4, 0.6)), r"warp_scale must be \(low, high\) with 0 < low <= high, got \(1.4, 0.6\)"),
    (dict(warp_translate=0.6), r"warp_translate must be a fraction of the image side in \[0, 0.5\], got 0.6"),
])
def test_bad_settings_name_what_was_expected(tiny_data, tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        train(_config(tiny_data, tmp_path, **change))


def test_resume_refuses_changed_batches_and_finished_runs(one_step_checkpoint, tiny_data, tmp_path):
    resume = str(one_step_checkpoint)
    with pytest.raises(ValueError, match="was trained with batch_size=2; resume with the same value, not 3"):
        train(_config(tiny_data, tmp_path, batch_size=3, resume=resume))
    with pytest.raises(ValueError, match=r"is already at step 1; give steps > 1"):
        train(_config(tiny_data, tmp_path, steps=1, resume=resume))
    # the checkpoint was trained with the default warp: another one would change the batches
    with pytest.raises(ValueError, match=r"was trained with warp_scale=\(0.6, 1.4\); resume with the same value"):
        train(_config(tiny_data, tmp_path, warp_scale=(0.8, 1.2), resume=resume))


def test_a_checkpoint_from_before_the_warp_settings_resumes_with_the_defaults(one_step_checkpoint, tiny_data,
                                                                               tmp_path):
    checkpoint = torch.load(one_step_checkpoint, weights_only=False)
    for name in ("warp_scale", "warp_translate", "ema_ramp"):
        del checkpoint["train_config"][name]
    old = tmp_path / "old.pt"
    torch.save(checkpoint, old)
    with pytest.raises(ValueError, match=r"was trained with warp_translate=0.2; resume with the same value, not 0.1"):
        train(_config(tiny_data, tmp_path / "changed", warp_translate=0.1, resume=str(old)))
    assert train(_config(tiny_data, tmp_path / "resumed", resume=str(old)))["step"] == 2


def test_warp_settings_shape_the_batches_and_the_ema_ramp_reaches_the_average(tiny_data, tmp_path):
    class Boxes:
        def __init__(self):
            self.seen = []

        def on_batch(self, step, images, boxes, labels, image_ids):
            self.seen.append((image_ids, [b.clone() for b in boxes]))

    # no zoom and no shift: every box is its source box resized 96 -> 64 px, flipped or not
    recorder = Boxes()
    result = train(_config(tiny_data, tmp_path, batch_size=5, warp_scale=(1.0, 1.0), warp_translate=0.0,
                           ema_decay=0.9, ema_ramp=3.0), observers=[recorder])
    coco = json.loads((tiny_data / "annotations.json").read_text())
    assert len(recorder.seen) == 2
    for image_ids, boxes in recorder.seen:
        for image_id, warped in zip(image_ids, boxes):
            source = sorted(a["bbox"][2] * 64 / 96 for a in coco["annotations"] if a["image_id"] == image_id)
            widths = sorted((warped[:, 2] - warped[:, 0]).tolist())
            assert widths == pytest.approx(source, abs=1e-4)
    ema = load_checkpoint(result["checkpoint"])["ema"]
    assert (ema["decay"], ema["ramp"], ema["updates"]) == (0.9, 3.0, 2)


def test_val_data_with_other_categories_is_refused(tiny_data, tmp_path):
    other = tmp_path / "other"
    write_dataset(other, num_images=2, seed=0, size=96)
    coco = json.loads((other / "annotations.json").read_text())
    coco["categories"] = coco["categories"][:3]
    coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] <= 3]
    (other / "annotations.json").write_text(json.dumps(coco))
    with pytest.raises(ValueError, match="val_data .*other has the categories"):
        train(_config(tiny_data, tmp_path / "run", val_data=str(other)))


def test_nan_loss_stops_the_run_naming_the_step(tiny_data, tmp_path, monkeypatch):
    family = get_family("gfl")
    real_loss = family.loss

    def poisoned(*args, **kwargs):
        losses = real_loss(*args, **kwargs)
        return {**losses, "loss_qfl": losses["loss_qfl"] * float("nan")}

    monkeypatch.setattr(family, "loss", poisoned)
    with pytest.raises(FloatingPointError, match=r"step 1: non-finite loss term loss_qfl = nan; the batch is "
                                                 r"finite\. Details in .*nonfinite\.txt"):
        train(_config(tiny_data, tmp_path))


# ---------------------------------------------------------------- nothing the user had is lost

def test_a_finished_run_is_not_replaced_unless_asked(tiny_data, tmp_path):
    first = train(_config(tiny_data, tmp_path, steps=1))
    weights = first["model"].read_bytes()
    with pytest.raises(ValueError, match=r"already holds a run \(checkpoint.pt, model.pt, log.csv\); continue it "
                                         r"with resume=.*checkpoint.pt.*\(--resume\), replace it with overwrite=True"):
        train(_config(tiny_data, tmp_path, steps=1))
    assert first["model"].read_bytes() == weights
    train(_config(tiny_data, tmp_path, steps=2, resume=str(first["checkpoint"])))  # continuing is fine
    assert train(_config(tiny_data, tmp_path, steps=1, overwrite=True))["step"] == 1  # and so is asking


def test_a_bad_val_set_fails_before_training(tiny_data, tmp_path):
    import shutil
    val = tmp_path / "val"
    shutil.copytree(tiny_data, val)
    broken = sorted((val / "images").iterdir())[2]
    broken.write_bytes(b"not an image")
    with pytest.raises(OSError, match=f"val_data {val}: cannot read image {broken}"):
        train(_config(tiny_data, tmp_path / "run", val_data=str(val)))
    assert not (tmp_path / "run" / "log.csv").exists()  # not one step was spent
    broken.unlink()
    shutil.copy(sorted((tiny_data / "images").iterdir())[2], broken)
    document = json.loads((val / "annotations.json").read_text())
    for ann in document["annotations"][:2]:
        del ann["area"]
    (val / "annotations.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"val_data .*: 2 annotations have no 'area' \(ids \[1, 2\]\)"):
        train(_config(tiny_data, tmp_path / "run", val_data=str(val)))


def test_a_batch_of_one_on_a_one_cell_map_names_batch_size_and_input_size(tiny_data, tmp_path):
    with pytest.raises(ValueError, match=r"step 1: a BatchNorm layer saw one value per channel \(batch_size 1 per "
                                         r"process at input_size 32.*train with batch_size >= 2"):
        train(_config(tiny_data, tmp_path, steps=1, batch_size=1, input_size=32))

