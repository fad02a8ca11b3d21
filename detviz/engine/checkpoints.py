"""Training checkpoints: written atomically, read back with checks that name what is wrong.

Two kinds, both dicts with ``format``, ``model_family``, ``num_classes``, ``model_config``
(enough to rebuild the model), ``train_config``, ``label_to_category_id``, ``step`` and
``seconds``: ``checkpoint.pt`` adds the weights, the EMA, the optimizer, the gradient scaler
and the random state (everything ``--resume`` needs); ``model.pt`` holds only the weights
for inference (the EMA's when the run kept one).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from detviz.engine.families import Family, get_family

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_NAME", "MODEL_NAME", "save_atomic", "load_checkpoint",
           "build_model_from_checkpoint"]

CHECKPOINT_FORMAT = 2
CHECKPOINT_NAME, MODEL_NAME = "checkpoint.pt", "model.pt"


def save_atomic(obj: dict, path: Path) -> None:
    """torch.save to a temp file in the same folder, then os.replace: a crash never leaves half a file."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's private 0600 would follow the file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, *, model_family: str | None = None, num_classes: int | None = None,
                    for_resume: bool = False) -> dict:
    """Read ``checkpoint.pt`` or ``model.pt`` written by :func:`detviz.engine.train.train` and check what it holds.

    Args:
        model_family: when given, the family the checkpoint must hold.
        num_classes: when given, the class count it must hold.
        for_resume: the file must be a full training checkpoint, not inference weights.
    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a detviz checkpoint, another model family or class count, or
            inference weights given to resume.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged or foreign file
        raise ValueError(f"cannot read checkpoint {path}: {type(err).__name__}: {str(err)[:200]}") from err
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a detviz checkpoint (format {CHECKPOINT_FORMAT})")
    if model_family is not None and checkpoint["model_family"] != model_family:
        raise ValueError(f"{path} holds a model of family {checkpoint['model_family']!r}, expected {model_family!r}")
    if num_classes is not None and checkpoint["num_classes"] != num_classes:
        raise ValueError(f"{path} holds a model for num_classes={checkpoint['num_classes']}, but the data has "
                         f"{num_classes} classes")
    if for_resume and "optimizer" not in checkpoint:
        raise ValueError(f"{path} holds inference weights only; resume needs the {CHECKPOINT_NAME} of a run")
    return checkpoint


def build_model_from_checkpoint(checkpoint: dict, *, ema: bool = True, family: Family | None = None) -> nn.Module:
    """The checkpoint's model with its weights: the EMA weights when it has them and ``ema``.

    ``family`` rebuilds it; None takes the built-in family named in the checkpoint.
    """
    name = checkpoint["model_family"]
    if family is None:
        family = get_family(name)
    elif family.name != name:
        raise ValueError(f"the checkpoint holds a model of family {name!r}, not of {family.name!r}")
    model = family.rebuild(checkpoint["model_config"])
    weights = checkpoint["ema"]["module"] if ema and checkpoint.get("ema") else checkpoint["model"]
    model.load_state_dict(weights)
    return model
