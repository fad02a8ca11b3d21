"""Fixtures shared by the test files."""
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from detviz.__main__ import main
from detviz.datasets import CocoDetection
from detviz.datasets.synthetic import write_dataset


@pytest.fixture
def one_thread():
    """Tiny convolutions run faster on one thread, and two threads on a busy 2-core machine can
    spin for seconds at every parallel region; restore the setting afterwards.
    A test file opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def two_image_coco(tmp_path):
    """Image 1 at 640 x 640 (halved to 320 x 320): a 100 x 100 box, a 6 x 6 box and a 120 x 16 strip.
    Image 2 at 320 x 320: one tall box."""
    for name, size in (("a.png", 640), ("b.png", 320)):
        Image.new("RGB", (size, size)).save(tmp_path / name)
    anns = [([100, 100, 200, 200], 1), ([410, 410, 12, 12], 2), ([20, 500, 240, 32], 1), ([50, 20, 40, 160], 2)]
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 640, "height": 640},
                       {"id": 2, "file_name": "b.png", "width": 320, "height": 320}],
            "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "speck"}],
            "annotations": [{"id": i + 1, "image_id": 1 if i < 3 else 2, "category_id": c, "bbox": b,
                             "area": b[2] * b[3], "iscrowd": 0} for i, (b, c) in enumerate(anns)]}
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    return CocoDetection(tmp_path, tmp_path / "ann.json")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """5 synthetic 96 px images, one of them without objects."""
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


@pytest.fixture(scope="session")
def eager_weights(one_step_checkpoint, tmp_path_factory) -> Path:
    """The 1-step run's ``model.pt`` with every class scoring ~0.99 (class biases 5): detections on
    every image, for the commands that draw and score them."""
    checkpoint = torch.load(one_step_checkpoint.parent / "model.pt", weights_only=True)
    for name, bias in checkpoint["model"].items():
        if name.startswith("head.outputs.") and name.endswith(".bias"):
            bias[:checkpoint["num_classes"]] = 5.0
    path = tmp_path_factory.mktemp("eager") / "model.pt"
    torch.save(checkpoint, path)
    return path
