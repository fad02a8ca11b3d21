"""Fixtures of the engine tests: 5 synthetic 96 px images, and a 1-step run on them."""
from pathlib import Path

import pytest

from detviz.__main__ import main
from detviz.datasets.synthetic import write_dataset


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    coco = write_dataset(folder, num_images=5, seed=3, size=96, empty_fraction=0.2, max_objects=3)
    assert len({a["image_id"] for a in coco["annotations"]}) == 4  # one of five images has no object
    return folder


@pytest.fixture(scope="session")
def one_step_checkpoint(tiny_data, tmp_path_factory) -> Path:
    """A 1-step GFL run at input size 64 through the command line (``python -m detviz train``)."""
    out = tmp_path_factory.mktemp("cli_run")
    assert main(["train", "--model", "gfl", "--data", str(tiny_data), "--steps", "1", "--batch-size", "2",
                 "--input-size", "64", "--out", str(out)]) == 0
    return out / "checkpoint.pt"
