"""Fixtures shared by the test files."""
import json

import pytest
import torch
from PIL import Image

from detviz.datasets import CocoDetection


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
