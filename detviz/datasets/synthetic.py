"""A synthetic detection dataset: coloured shapes on real textures, written as COCO.

Each image is a random crop of one of scikit-image's bundled photos (grass, gravel, brick
and moon, tinted; crops of coffee, chelsea and rocket), rescaled to ``size x size``. On it
up to ``max_objects`` filled shapes are drawn in order, one class each (``CATEGORIES``:
circle, square, triangle, ellipse, star, cross; COCO ids 1..6), rotated at random, from
``MIN_OBJECT_SIZE`` px to ``max_size_fraction`` of the image (log-uniform, so small
objects are common), in a colour chosen for contrast with the pixels it covers.

Occlusion rule: later shapes cover earlier ones. A box is always the full extent of its
shape's pixels, hidden parts included (shapes never leave the image, so nothing is
truncated). A shape with less than ``min_visible`` (default 0.3) of its pixels left
visible, that is hidden more than 70%, is left out of the annotations but stays in the
picture. The last shape drawn is never hidden, so every non-empty image keeps at least
one object. ``area`` is the visible pixel count (COCO's area is the visible mask's), and
each annotation also stores ``visible`` = visible pixels / shape pixels.

Determinism: image ``i`` is drawn from ``numpy.random.default_rng([seed, i])`` and the
set of empty images (``round(empty_fraction * num_images)`` of them) from
``default_rng(seed)``; the same arguments give the same pixels and a byte-identical json.

    python -m detviz data --seed 0 --num-images 24 --out data/synthetic/val
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["CATEGORIES", "BACKGROUNDS", "MIN_OBJECT_SIZE", "SyntheticImage", "make_image",
           "make_dataset", "write_dataset", "summarize"]

CATEGORIES = ("circle", "square", "triangle", "ellipse", "star", "cross")  # COCO id = index + 1
GRAY_TEXTURES = ("grass", "gravel", "brick", "moon")  # tinted with a random colour
COLOUR_PHOTOS = ("coffee", "chelsea", "rocket")
BACKGROUNDS = GRAY_TEXTURES + COLOUR_PHOTOS
MIN_OBJECT_SIZE = 8  # px, the longer side of the smallest shape
MIN_IMAGE_SIZE = 32
MIN_CONTRAST = 80  # luminance difference (0..255) between a shape and what it covers
IMAGE_FORMATS = ("jpg", "png")
JPEG_QUALITY = 90


class SyntheticImage(NamedTuple):
    """One generated image and its objects, before writing.

    image: uint8 array [H, W, 3]. boxes_xyxy: int64 [M, 4] pixel extents of the whole
    shapes (``x2``/``y2`` exclusive). labels: int64 [M], 0-based index into ``CATEGORIES``.
    areas: int64 [M] visible pixels. visible: float64 [M] visible fraction in (0, 1].
    background: name of the scikit-image photo used.
    """
    image: np.ndarray
    boxes_xyxy: np.ndarray
    labels: np.ndarray
    areas: np.ndarray
    visible: np.ndarray
    background: str


# ---------------------------------------------------------------- backgrounds

@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    from skimage import data  # bundled files only; data.download_all is never needed

    photo = getattr(data, name)()
    return np.repeat(photo[..., None], 3, axis=2) if photo.ndim == 2 else photo  # [H, W] -> [H, W, 3]


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    name = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    photo = _photo(name)
    h, w = photo.shape[:2]
    side = int(rng.integers(min(h, w) // 3, min(h, w) + 1))  # crop 1/3 .. all of the short side
    top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
    crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((size, size), Image.BILINEAR)
    array = np.asarray(crop, dtype=np.float32)  # [size, size, 3]
    if name in GRAY_TEXTURES:
        array = array * rng.uniform(0.5, 1.0, size=3).astype(np.float32)
    array = np.rot90(array, k=int(rng.integers(4)))
    return np.clip(array, 0, 255).astype(np.uint8), name


# ---------------------------------------------------------------- shapes

def _unit_polygon(category: str, rng: np.random.Generator) -> np.ndarray:
    """Vertices [V, 2] of a shape around the origin, before rotation and scaling."""
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    if category == "circle":
        return np.stack([np.cos(t), np.sin(t)], axis=1)
    if category == "ellipse":
        return np.stack([np.cos(t), rng.uniform(0.35, 0.65) * np.sin(t)], axis=1)
    if category == "square":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    if category == "triangle":
        a = np.pi / 2 + np.array([0, 2, 4]) * np.pi / 3
        return np.stack([np.cos(a), np.sin(a)], axis=1)
    if category == "star":
        a = np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)
    if category == "cross":
        k = 0.33  # half the bar width
        return np.array([[-k, -1], [k, -1], [k, -k], [1, -k], [1, k], [k, k], [k, 1], [-k, 1],
                         [-k, k], [-1, k], [-1, -k], [-k, -k]], dtype=np.float64)
    raise ValueError(f"category must be one of {CATEGORIES}, got {category!r}")


def _shape_mask(category: str, rng: np.random.Generator, size: int, max_size: float) -> np.ndarray:
    """Boolean mask [size, size] of one rotated shape, longer side in [MIN_OBJECT_SIZE, max_size]."""
    angle = rng.uniform(0, 2 * np.pi)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = _unit_polygon(category, rng) @ rotation.T  # [V, 2]
    extent = float(math.exp(rng.uniform(math.log(MIN_OBJECT_SIZE), math.log(max_size))))
    points = points * (extent - 1) / (points.max(axis=0) - points.min(axis=0)).max()
    low = points.min(axis=0)
    span = points.max(axis=0) - low
    offset = rng.uniform(0, size - 1 - span) - low  # keeps every vertex inside [0, size - 1]
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in points + offset], fill=255)
    return np.asarray(canvas) > 0


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _contrasting_colour(rng: np.random.Generator, covered: np.ndarray) -> np.ndarray:
    """A random RGB colour whose luminance differs from the mean of ``covered`` [P, 3] by MIN_CONTRAST."""
    under = float(_luminance(covered.astype(np.float64)).mean())
    for _ in range(20):
        colour = rng.integers(0, 256, size=3)
        if abs(float(_luminance(colour)) - under) >= MIN_CONTRAST:
            return colour.astype(np.uint8)
    return np.array([0, 0, 0] if under >= 128 else [255, 255, 255], dtype=np.uint8)


# ---------------------------------------------------------------- one image

def make_image(rng: np.random.Generator, *, size: int = 320, num_objects: int = 4,
               max_size_fraction: float = 0.8, min_visible: float = 0.3) -> SyntheticImage:
    """Draw ``num_objects`` shapes, in order, on a random background and annotate the visible ones.

    Args:
        rng: the only source of randomness; the same state gives the same image.
        size: width and height in pixels.
        num_objects: shapes drawn (0 gives an image without objects).
        max_size_fraction: longest allowed shape side, as a fraction of ``size``.
        min_visible: a shape with a smaller visible fraction of its pixels is not annotated.

    Returns:
        ``SyntheticImage`` with boxes in absolute pixels of the image, ``x2``/``y2`` exclusive.
    """
    image, background = _background(rng, size)
    image = image.copy()
    owner = np.full((size, size), -1, dtype=np.int64)  # index of the shape on top of each pixel
    masks, labels = [], []
    for index in range(num_objects):
        label = int(rng.integers(len(CATEGORIES)))
        mask = _shape_mask(CATEGORIES[label], rng, size, max_size_fraction * size)  # [size, size]
        image[mask] = _contrasting_colour(rng, image[mask])
        owner[mask] = index
        masks.append(mask)
        labels.append(label)

    boxes, kept_labels, areas, visible = [], [], [], []
    for index, (mask, label) in enumerate(zip(masks, labels)):
        pixels = int(mask.sum())
        shown = int((owner == index).sum())
        if pixels == 0 or shown / pixels < min_visible:
            continue
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])  # full extent, hidden parts too
        kept_labels.append(label)
        areas.append(shown)
        visible.append(shown / pixels)
    return SyntheticImage(
        image=image,
        boxes_xyxy=np.array(boxes, dtype=np.int64).reshape(-1, 4),
        labels=np.array(kept_labels, dtype=np.int64),
        areas=np.array(areas, dtype=np.int64),
        visible=np.array(visible, dtype=np.float64),
        background=background,
    )


# ---------------------------------------------------------------- a dataset

def _check_int(value, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")


def _check_fraction(value, name: str, low: float = 0.0, high: float = 1.0) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise TypeError(f"{name} must be a number in [{low}, {high}], got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value}")


def _check_options(*, num_images, seed, size, max_objects, empty_fraction, max_size_fraction,
                   min_visible, image_format) -> None:
    _check_int(num_images, "num_images", 1)
    _check_int(seed, "seed", 0)
    _check_int(size, "size", MIN_IMAGE_SIZE)
    _check_int(max_objects, "max_objects", 1)
    _check_fraction(empty_fraction, "empty_fraction")
    _check_fraction(max_size_fraction, "max_size_fraction", round(2 * MIN_OBJECT_SIZE / size, 4), 1.0)
    _check_fraction(min_visible, "min_visible")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")


def make_dataset(*, num_images: int, seed: int = 0, size: int = 320, max_objects: int = 8,
                 empty_fraction: float = 0.2, max_size_fraction: float = 0.8, min_visible: float = 0.3,
                 image_format: str = "jpg") -> tuple[list[SyntheticImage], dict]:
    """Generate ``num_images`` images in memory, with their COCO annotation dict.

    Exactly ``round(empty_fraction * num_images)`` images, picked with ``default_rng(seed)``,
    have no objects; every other image gets 1..``max_objects`` shapes (fewer annotations
    when the occlusion rule drops some). Image ``i`` (file ``{i:06d}.{image_format}``, id
    ``i + 1``) is drawn from ``default_rng([seed, i])``.

    Returns:
        (images, coco): ``SyntheticImage`` per image, and a COCO dict with categories
        1..len(CATEGORIES), ``bbox`` as integer ``[x, y, w, h]`` pixels, ``area``, ``iscrowd`` 0.
    """
    options = dict(num_images=num_images, seed=seed, size=size, max_objects=max_objects,
                   empty_fraction=empty_fraction, max_size_fraction=max_size_fraction,
                   min_visible=min_visible, image_format=image_format)
    _check_options(**options)
    num_empty = round(empty_fraction * num_images)
    empty = set(np.random.default_rng(seed).choice(num_images, size=num_empty, replace=False).tolist())

    images, coco_images, annotations = [], [], []
    for i in range(num_images):
        rng = np.random.default_rng([seed, i])
        num_objects = 0 if i in empty else int(rng.integers(1, max_objects + 1))
        sample = make_image(rng, size=size, num_objects=num_objects,
                            max_size_fraction=max_size_fraction, min_visible=min_visible)
        images.append(sample)
        coco_images.append({"id": i + 1, "file_name": f"{i:06d}.{image_format}", "width": size,
                            "height": size, "background": sample.background})
        for box, label, area, visible in zip(sample.boxes_xyxy.tolist(), sample.labels.tolist(),
                                             sample.areas.tolist(), sample.visible.tolist()):
            x1, y1, x2, y2 = box
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": label + 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": area, "iscrowd": 0,
                                "visible": round(visible, 4)})
    coco = {
        "info": {"description": "detviz synthetic shapes", **options},
        "images": coco_images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(CATEGORIES)],
    }
    return images, coco


def write_dataset(out_dir: str | Path, *, overwrite: bool = False, **options) -> dict:
    """Generate a dataset (``make_dataset`` options) into ``out_dir/images/`` and ``out_dir/annotations.json``.

    Refuses to write over an existing ``annotations.json`` or non-empty ``images/`` unless
    ``overwrite``; then only the old json and the ``.jpg``/``.png`` files in ``images/`` are removed.

    Returns:
        The COCO dict that was written.
    """
    out_dir = Path(out_dir)
    images, coco = make_dataset(**options)  # validates before anything touches the disk
    image_dir, ann_file = out_dir / "images", out_dir / "annotations.json"
    old = sorted(p for p in image_dir.glob("*") if p.suffix[1:] in IMAGE_FORMATS) if image_dir.is_dir() else []
    if (ann_file.exists() or old) and not overwrite:
        raise FileExistsError(f"{out_dir} already holds a dataset (annotations.json or images/); "
                              f"choose an empty folder or pass overwrite=True (--overwrite)")
    for path in old:
        path.unlink()
    image_dir.mkdir(parents=True, exist_ok=True)
    for sample, info in zip(images, coco["images"]):
        extra = {"quality": JPEG_QUALITY} if info["file_name"].endswith(".jpg") else {}
        Image.fromarray(sample.image).save(image_dir / info["file_name"], **extra)
    ann_file.write_text(json.dumps(coco, indent=1) + "\n")
    return coco


def summarize(coco: dict) -> str:
    """One line: image count, how many have no objects, and objects per class."""
    per_class = {c["id"]: 0 for c in coco["categories"]}
    annotated = set()
    for ann in coco["annotations"]:
        per_class[ann["category_id"]] += 1
        annotated.add(ann["image_id"])
    names = {c["id"]: c["name"] for c in coco["categories"]}
    counts = ", ".join(f"{names[cid]} {n}" for cid, n in per_class.items())
    num_images = len(coco["images"])
    return (f"{num_images} images ({num_images - len(annotated)} without objects), "
            f"{len(coco['annotations'])} objects: {counts}")
