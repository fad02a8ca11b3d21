"""detviz.engine.checkpoints: atomic saves, checked loads, models rebuilt from a checkpoint alone."""
import os

import pytest
import torch
from torch.testing import assert_close

from detviz.engine.checkpoints import (CHECKPOINT_FORMAT, MODEL_NAME, build_model_from_checkpoint, load_checkpoint,
                                       save_atomic)
from detviz.engine.families import get_family


def test_save_atomic_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "state.pt"
    save_atomic({"step": 1}, path)
    save_atomic({"step": 2}, path)
    assert torch.load(path) == {"step": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as a plain open() would make it


def test_a_failed_save_keeps_the_old_file(tmp_path):
    path = tmp_path / "state.pt"
    save_atomic({"step": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")  # fails midway through writing, like a full disk

    with pytest.raises(RuntimeError, match="disk full"):
        save_atomic({"step": 2, "bad": Unpicklable()}, path)
    assert torch.load(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_load_names_the_file_and_what_is_wrong(one_step_checkpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"format": CHECKPOINT_FORMAT - 1}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match=f"old.pt is not a detviz checkpoint \\(format {CHECKPOINT_FORMAT}\\)"):
        load_checkpoint(tmp_path / "old.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint .*text.pt"):
        load_checkpoint(tmp_path / "text.pt")
    with pytest.raises(ValueError, match="family 'gfl', expected 'sparse'"):
        load_checkpoint(one_step_checkpoint, model_family="sparse")
    with pytest.raises(ValueError, match="num_classes=6, but the data has 2 classes"):
        load_checkpoint(one_step_checkpoint, num_classes=2)
    with pytest.raises(ValueError, match="inference weights only"):
        load_checkpoint(one_step_checkpoint.parent / MODEL_NAME, for_resume=True)
    assert load_checkpoint(one_step_checkpoint, model_family="gfl", num_classes=6, for_resume=True)["step"] == 1


def test_rebuilt_model_has_the_stored_weights(one_step_checkpoint):
    checkpoint = load_checkpoint(one_step_checkpoint)
    model = build_model_from_checkpoint(checkpoint, ema=False)
    assert_close(model.state_dict(), checkpoint["model"])
    assert checkpoint["ema"] is None  # this run kept no average: ema=True falls back to the weights
    assert_close(build_model_from_checkpoint(checkpoint).state_dict(), checkpoint["model"])
    assert model.cfg == get_family("gfl").rebuild(checkpoint["model_config"]).cfg


def test_rebuilt_model_prefers_the_ema_weights(one_step_checkpoint):
    checkpoint = load_checkpoint(one_step_checkpoint)
    shifted = {k: v + 1 if v.is_floating_point() else v for k, v in checkpoint["model"].items()}
    with_ema = {**checkpoint, "ema": {"module": shifted}}
    assert_close(build_model_from_checkpoint(with_ema).state_dict(), shifted)
    assert_close(build_model_from_checkpoint(with_ema, ema=False).state_dict(), checkpoint["model"])
