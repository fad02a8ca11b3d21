import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.testing import assert_close

from detviz.datasets import CocoDetection, collate_fn
from detviz.datasets.coco import coco80_class_names
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


def test_the_batch_photos_pad_to_the_traced_800_by_1248():
    """coffee + motorcycle through torchvision's transform give the 25 x 39 stride-32 grid of note 001."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    ds = CocoDetection(PHOTOS, PHOTOS / "annotations.json", label_offset=1)
    transform = GeneralizedRCNNTransform(800, 1333, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).eval()
    image_list, _ = transform([ds[0][0], ds[1][0]])
    assert list(image_list.tensors.shape) == [2, 3, 800, 1248]
    # 390 x 600 scales by 800/390, and floor(390 * (800/390)) is 799 in floating point
    assert image_list.image_sizes == [(799, 1230), (800, 1185)]


@pytest.mark.parametrize("label_offset", [0, 1])
def test_label_offset_and_its_inverse(label_offset):
    ds = CocoDetection(PHOTOS, PHOTOS / "annotations.json", label_offset=label_offset)
    labels = sorted(ds.label_to_category_id)
    assert labels == list(range(label_offset, label_offset + 5))
    assert all(ds.category_id_to_label[ds.label_to_category_id[label]] == label for label in labels)
    assert ds.class_names[label_offset] == "bicycle"  # the smallest category id, 2
    coco_ids = [ds.label_to_category_id[int(label)] for label in ds[1][1]["labels"]]
    assert coco_ids == [4, 2]  # motorcycle, bicycle: back to COCO ids for a results file


def test_gray_image_becomes_three_channels(tmp_path):
    ann_file = _write(tmp_path, [{"id": 1, "file_name": "a.png", "width": 6, "height": 4}], [])
    Image.new("L", (6, 4), 51).save(tmp_path / "a.png")
    image, _ = CocoDetection(tmp_path, ann_file)[0]
    assert_close(image, torch.full((3, 4, 6), 0.2))


def test_annotation_files_that_are_not_coco_are_named(tmp_path):
    not_an_object = tmp_path / "list.json"
    not_an_object.write_text("[]")
    with pytest.raises(ValueError, match="list.json must hold a JSON object with images, annotations and categories"):
        CocoDetection(tmp_path, not_an_object)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match="broken.json is not a readable COCO annotation file"):
        CocoDetection(tmp_path, broken)
    annotations = [{"id": 1, "image_id": 1, "category_id": 99, "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 0}]
    ann_file = _write(tmp_path, [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}], annotations)
    with pytest.raises(ValueError, match=r"ann.json: annotations use category ids \[99\] that are not in"):
        CocoDetection(tmp_path, ann_file)


def test_coco80_names_follow_the_contiguous_labels():
    names = coco80_class_names()
    assert len(set(names.values())) == 80 and sorted(names) == list(range(80))
    assert (names[0], names[17], names[24], names[79]) == ("person", "horse", "backpack", "toothbrush")


GOOD_IMAGE = {"id": 1, "file_name": "a.png", "width": 64, "height": 48}
GOOD_BOX = {"id": 1, "image_id": 1, "category_id": 3, "bbox": [4, 5, 20, 10], "area": 200, "iscrowd": 0}


def _document(**changes):
    document = {"images": [dict(GOOD_IMAGE)], "annotations": [dict(GOOD_BOX)],
                "categories": [{"id": 3, "name": "car"}]}
    document.update(changes)
    return document


@pytest.mark.parametrize("document, message", [
    (_document(categories=None), r"has no 'categories' list \(a COCO detection file needs"),
    (_document(categories=[]), r"'categories' is empty; list every class as"),
    (_document(categories=[{"id": 3}]), r"categories\[0\] has no 'name'"),
    (_document(images=[{"id": 1}]), r"images\[0\] has no 'file_name'"),
    (_document(annotations=[{k: v for k, v in GOOD_BOX.items() if k != "bbox"}]),
     r"annotations\[0\] \(id 1\) has no 'bbox'"),
    (_document(annotations=[{**GOOD_BOX, "bbox": [4, 5, 20]}]), r"bbox must be \[x, y, width, height\], four finite"),
    (_document(annotations=[{**GOOD_BOX, "bbox": [4, float("nan"), 20, 10]}]), r"four finite numbers, got \[4, nan"),
    (_document(annotations=[{**GOOD_BOX, "bbox": [40, 30, 10, -5]}]), r"width, height >= 0.*\[x1, y1, x2, y2\]"),
    (_document(annotations=[{**GOOD_BOX, "image_id": 8}]), r"image_id 8 is not in 'images'"),
    (_document(annotations=[{**GOOD_BOX, "bbox": [0.1, 0.2, 0.3, 0.25]}]), r"look like normalised coordinates"),
])
def test_bad_annotation_files_name_the_entry(tmp_path, document, message):
    Image.new("RGB", (64, 48)).save(tmp_path / "a.png")
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=message) as raised:
        CocoDetection(tmp_path, path)
    assert str(path) in str(raised.value)


def test_sixteen_bit_grey_images_keep_their_contrast(tmp_path):
    ramp = (np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 21).astype(np.uint16)  # 0 .. 64491
    Image.fromarray(ramp).save(tmp_path / "a.png")
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(_document()))
    image, _ = CocoDetection(tmp_path, path)[0]
    assert image.shape == (3, 48, 64)
    assert_close(image[0], torch.from_numpy(ramp.astype(np.float32) / 65535), rtol=0, atol=1e-6)
    assert image.min() == 0 and image.max() > 0.98  # not the constant white convert("RGB") gave

