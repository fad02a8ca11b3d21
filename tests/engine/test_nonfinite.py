"""detviz.engine.nonfinite: a planted NaN stops training with a report naming where it started."""
import pytest
import torch

from detviz.cli import main
from detviz.engine.batches import StepBatches
from detviz.engine.checkpoints import load_checkpoint
from detviz.engine.families import get_family
from detviz.engine.nonfinite import NonFiniteError, diagnose, is_nonfinite_error
from detviz.engine.train import TrainConfig, train

PLANTED = "head.towers.1.0.0"  # a conv of the second level's tower: backbone, FPN and level 0 stay finite


def _plant_nan(module, from_call: int):
    """Make PLANTED's output NaN from its ``from_call``-th forward on (1-based)."""
    calls = []

    def hook(_module, _inputs, output):
        calls.append(1)
        return output * float("nan") if len(calls) >= from_call else output
    dict(module.named_modules())[PLANTED].register_forward_hook(hook)
    return module


@pytest.fixture
def nan_at_step_two(monkeypatch):
    family_type = type(get_family("gfl"))
    build = family_type.build
    monkeypatch.setattr(family_type, "build", lambda self, *args: _plant_nan(build(self, *args), from_call=2))


def _config(data, out, **changes):
    return TrainConfig(**{**dict(model="gfl", data=str(data), out=str(out), steps=4, batch_size=2, input_size=64,
                                 checkpoint_every=1, progress=False), **changes})


def test_a_planted_nan_is_found_reported_and_the_last_checkpoint_kept(nan_at_step_two, tiny_data, tmp_path):
    with pytest.raises(NonFiniteError, match=rf"step 2: non-finite .*the batch is finite; the first non-finite "
                                             rf"tensor is {PLANTED}\. Details in {tmp_path}/nonfinite.txt"):
        train(_config(tiny_data, tmp_path))
    report = (tmp_path / "nonfinite.txt").read_text().splitlines()
    assert report[0].startswith("training stopped at step 2: non-finite ")
    assert report[1].startswith("learning rate: ")
    assert report[3].startswith(f"first non-finite tensor in forward order (detviz trace name, shape, dtype, min, "
                                f"max, mean): {PLANTED} [2, 96, 4, 4] float32 min nan")
    assert report[4] == "batch: finite images and gt boxes"
    assert report[5] == f"last checkpoint kept: {tmp_path}/checkpoint.pt (step 1)"
    from detviz.datasets.coco import open_dataset
    dataset = open_dataset(tiny_data)
    ids = [dataset.image_ids[i] for i in StepBatches(len(dataset), 2, 0, 0, 4).global_batch(1)]
    assert [line.split(":")[0].strip() for line in report[8:]] == [str(i) for i in ids]
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 1  # step 1's weights, untouched
    assert not (tmp_path / "model.pt").exists()


def test_the_command_says_non_finite_and_draws_the_batch(nan_at_step_two, tiny_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "--model", "gfl", "--data", str(tiny_data), "--steps", "3", "--batch-size", "2",
              "--input-size", "64", "--out", str(tmp_path), "--quiet"])
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert "error: step 2: non-finite" in err and "must be finite xyxy boxes" not in err.split("Details")[1]
    assert (tmp_path / "nonfinite.txt").is_file() and (tmp_path / "nonfinite_batch.jpg").is_file()


def test_only_a_non_finite_batch_is_blamed():
    family = get_family("gfl")
    torch.manual_seed(0)
    module = family.build(3, 64).train()
    images = torch.rand(2, 3, 64, 64)
    images[1, 0, 5, 5] = float("nan")
    boxes, labels = [torch.tensor([[4.0, 4.0, 30.0, 30.0]]), torch.tensor([[1.0, 2.0, 9.0, float("inf")]])], \
        [torch.tensor([0]), torch.tensor([1])]
    diagnosis = diagnose(family, module, module, images, boxes, labels, step=7, lr=0.01, losses={}, term="loss",
                         amp=False, image_ids=[11, 12])
    assert diagnosis.bad_input == ("images [1] of the batch hold NaN or Inf pixels; the gt boxes of image 1 of "
                                   "the batch hold NaN or Inf")
    assert diagnosis.first_tensor.startswith("backbone.stem.0.0 ")  # the first conv already meets the NaN pixel
    assert "the batch itself is non-finite (images [1]" in diagnosis.message("x.txt")


@pytest.mark.parametrize("error, expected", [
    (ValueError("boxes1 must be finite xyxy boxes"), True), (RuntimeError("found NaN in the logits"), True),
    (ValueError("num_classes must be positive"), False), (KeyError("must be finite"), False)])
def test_which_errors_mean_non_finite(error, expected):
    assert is_nonfinite_error(error) is expected
