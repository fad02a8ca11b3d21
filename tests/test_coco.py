import json
import warnings

import pytest
import torch
from PIL import Image
from torch.testing import assert_close

from detviz.datasets import CocoDetection, collate_fn
from detviz.fixtures import DATA_DIR

PHOTOS = DATA_DIR / "photos"


def test_the_photos_load_with_background_offset():
    ds = CocoDetection(PHOTOS, PHOTOS / "annotations.json", label_offset=1)
    assert len(ds) == 3
    assert ds.class_names == {1: "bicycle", 2: "motorcycle", 3: "cat", 4: "cup", 5: "spoon"}
    assert ds.label_to_category_id == {1: 2, 2: 4, 3: 17, 4: 47, 5: 50}
    image, target = ds[0]
    assert image.shape == (3, 390, 600) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    assert_close(target["boxes"], torch.tensor([[172.0, 7, 408, 302], [326, 57, 424, 313]]))  # xywh -> xyxy
    assert target["labels"].tolist() == [4, 5] and target["image_id"] == 1


def _write(tmp_path, images, annotations, categories=({"id": 3, "name": "car"}, {"id": 7, "name": "dog"})):
    for info in images:
        Image.new("RGB", (info["width"], info["height"]), (10, 20, 30)).save(tmp_path / info["file_name"])
    ann_file = tmp_path / "ann.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": list(categories)}))
    return ann_file


def test_empty_images_crowd_and_degenerate_boxes(tmp_path):
    images = [{"id": 5, "file_name": "a.png", "width": 40, "height": 30},
              {"id": 9, "file_name": "b.png", "width": 20, "height": 20}]
    annotations = [
        {"id": 1, "image_id": 5, "category_id": 7, "bbox": [1, 2, 10, 5], "area": 50, "iscrowd": 0},
        {"id": 2, "image_id": 5, "category_id": 3, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 1},
        {"id": 3, "image_id": 5, "category_id": 3, "bbox": [4, 4, 0, 3], "area": 0, "iscrowd": 0},
    ]
    ann_file = _write(tmp_path, images, annotations)
    with pytest.warns(UserWarning, match=r"dropped 1 boxes without positive width and height, in image ids \[5\]"):
        ds = CocoDetection(tmp_path, ann_file)
    _, target = ds[0]
    assert_close(target["boxes"], torch.tensor([[1.0, 2, 11, 7]]))
    assert target["labels"].tolist() == [1]  # category 7 -> label 1 (category 3 -> 0)
    assert_close(target["ignore_boxes"], torch.tensor([[0.0, 0, 20, 20]]))
    image, empty = ds[1]  # an image without annotations is kept as a negative example
    assert image.shape == (3, 20, 20)
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
    images_batch, targets_batch = collate_fn([ds[0], ds[1]])
    assert len(images_batch) == len(targets_batch) == 2


def test_no_warning_without_degenerate_boxes(tmp_path):
    ann_file = _write(tmp_path, [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}], [])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CocoDetection(tmp_path, ann_file)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        CocoDetection(tmp_path, tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(ValueError, match="broken.json is not a readable COCO annotation file"):
        CocoDetection(tmp_path, broken)
    ann_file = _write(tmp_path, [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}], [])
    (tmp_path / "a.png").write_bytes(b"not an image")
    with pytest.raises(OSError, match="cannot read image .*a.png"):
        CocoDetection(tmp_path, ann_file)[0]
