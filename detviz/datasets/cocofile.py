"""Reading a COCO annotation file with errors that name the file, the entry and what was expected.

pycocotools indexes whatever it is given: a missing ``bbox`` ends in a bare ``KeyError``, an
empty ``categories`` in a reshape error deep in a model, a NaN coordinate trains in silence.
:func:`load_coco` reads the json, checks every entry a detection dataset uses, and only then
builds the ``pycocotools.coco.COCO`` index (the same object ``COCO(path)`` gives).
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from pycocotools.coco import COCO

from detviz._validate import is_finite_number

__all__ = ["load_coco", "check_document"]

NORMALISED_LIMIT = 1.5  # every box inside [0, 1.5] on images wider than this many pixels: normalised coordinates
MIN_PIXEL_IMAGE = 32


def _need(entry, keys: tuple, where: str) -> None:
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be an object with {list(keys)}, got {type(entry).__name__}")
    missing = [k for k in keys if k not in entry]
    if missing:
        raise ValueError(f"{where} has no {', '.join(repr(k) for k in missing)} (it needs {list(keys)})")


def _check_boxes(annotations: list, path: Path, image_ids: set) -> None:
    for k, ann in enumerate(annotations):
        where = f"{path}: annotations[{k}]" + (f" (id {ann.get('id')!r})" if isinstance(ann, dict) else "")
        _need(ann, ("id", "image_id", "category_id", "bbox"), where)
        bbox = ann["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(map(is_finite_number, bbox)):
            raise ValueError(f"{where}: bbox must be [x, y, width, height], four finite numbers, got {bbox!r}")
        if bbox[2] < 0 or bbox[3] < 0:
            raise ValueError(f"{where}: bbox must be [x, y, width, height] with width, height >= 0, got {bbox!r} "
                             "([x1, y1, x2, y2] boxes must be converted)")
        if ann["image_id"] not in image_ids:
            raise ValueError(f"{where}: image_id {ann['image_id']!r} is not in 'images'")
        if "area" in ann and not is_finite_number(ann["area"]):
            raise ValueError(f"{where}: area must be a finite number, got {ann['area']!r}")


def _check_not_normalised(document: dict, path: Path) -> None:
    """Boxes in 0..1 on real-sized images are normalised coordinates: every loss would come out 0."""
    boxes = [ann["bbox"] for ann in document["annotations"] if not ann.get("iscrowd", 0)]
    widths = [image.get("width", 0) for image in document["images"]]
    if boxes and min(widths, default=0) > MIN_PIXEL_IMAGE and max(
            max(x + w, y + h) for x, y, w, h in boxes) <= NORMALISED_LIMIT:
        raise ValueError(f"{path}: every bbox lies within [0, {NORMALISED_LIMIT}] on images of {min(widths)} px and "
                         "more: these look like normalised coordinates; COCO bboxes are [x, y, width, height] in "
                         "pixels (multiply by the image width and height)")


def check_document(document, path: Path) -> None:
    """Raise ValueError naming ``path``, the entry and what was expected, for anything a COCO detection
    dataset cannot use: missing lists or keys, no categories, unknown ids, a bbox that is not four
    finite numbers with width and height >= 0, boxes in normalised coordinates."""
    if not isinstance(document, dict):
        raise ValueError(f"{path} must hold a JSON object with images, annotations and categories, "
                         f"got a {type(document).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(document.get(key), list):
            raise ValueError(f"{path} has no {key!r} list (a COCO detection file needs 'images', 'annotations' "
                             "and 'categories')")
    if not document["categories"]:
        raise ValueError(f"{path}: 'categories' is empty; list every class as {{'id': ..., 'name': ...}}")
    for k, category in enumerate(document["categories"]):
        _need(category, ("id", "name"), f"{path}: categories[{k}]")
    for k, image in enumerate(document["images"]):
        _need(image, ("id", "file_name"), f"{path}: images[{k}]")
    _check_boxes(document["annotations"], path, {image["id"] for image in document["images"]})
    _check_not_normalised(document, path)


def load_coco(path: str | Path) -> COCO:
    """The ``COCO`` index of the annotation file at ``path``, after :func:`check_document`.

    Raises:
        FileNotFoundError: no file there. ValueError: not JSON, or an entry a detection dataset cannot use.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file {path} does not exist")
    try:
        document = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a readable COCO annotation file: {err}") from None
    check_document(document, path)
    coco = COCO()
    coco.dataset = document
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.createIndex()
    return coco
