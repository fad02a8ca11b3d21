import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from detviz.__main__ import main
from detviz.datasets.coco import CocoDetection
from detviz.datasets.synthetic import (BACKGROUNDS, CATEGORIES, MIN_OBJECT_SIZE, make_dataset, make_image, summarize,
                                       write_dataset)
from detviz.fixtures import DATA_DIR

SMALL = dict(num_images=8, size=96, max_objects=5)


def _json_bytes(coco):
    return json.dumps(coco, indent=1) + "\n"


def test_same_seed_gives_the_same_pixels_and_json_and_another_seed_differs():
    images_a, coco_a = make_dataset(seed=7, **SMALL)
    images_b, coco_b = make_dataset(seed=7, **SMALL)
    images_c, coco_c = make_dataset(seed=8, **SMALL)
    assert _json_bytes(coco_a) == _json_bytes(coco_b)
    for a, b in zip(images_a, images_b, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
    assert _json_bytes(coco_a) != _json_bytes(coco_c)
    assert not any(np.array_equal(a.image, c.image) for a, c in zip(images_a, images_c))


def test_written_dataset_is_byte_identical_for_the_same_seed(tmp_path):
    coco = write_dataset(tmp_path / "a", seed=3, image_format="png", **SMALL)
    write_dataset(tmp_path / "b", seed=3, image_format="png", **SMALL)
    assert (tmp_path / "a/annotations.json").read_bytes() == (tmp_path / "b/annotations.json").read_bytes()
    for info in coco["images"]:
        a, b = (np.asarray(Image.open(tmp_path / d / "images" / info["file_name"])) for d in "ab")
        assert a.shape == (96, 96, 3) and a.dtype == np.uint8
        np.testing.assert_array_equal(a, b)
    images, _ = make_dataset(seed=3, image_format="png", **SMALL)  # png is lossless: the arrays survive
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a/images/000000.png")), images[0].image)


def test_loads_with_coco_detection(tmp_path):
    size, num_images = 128, 20
    coco = write_dataset(tmp_path, seed=1, num_images=num_images, size=size, max_objects=6)
    assert [c["id"] for c in coco["categories"]] == list(range(1, len(CATEGORIES) + 1))
    assert all(ann["iscrowd"] == 0 and 0 < ann["area"] <= ann["bbox"][2] * ann["bbox"][3]
               for ann in coco["annotations"])
    ds = CocoDetection(tmp_path / "images", tmp_path / "annotations.json", label_offset=0)
    assert len(ds) == num_images
    assert ds.class_names == dict(enumerate(CATEGORIES))
    empty = 0
    for image, target in ds:
        assert image.shape == (3, size, size)
        boxes, labels = target["boxes"], target["labels"]
        assert labels.shape[0] == boxes.shape[0] <= 6
        if boxes.shape[0] == 0:
            empty += 1
            continue
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= size).all()
        assert (boxes[:, 2:] - boxes[:, :2] >= 1).all()
        assert labels.min() >= 0 and labels.max() < len(CATEGORIES)
    assert empty == round(0.2 * num_images) == 4


@pytest.mark.parametrize("fraction, expected_empty", [(0.0, 0), (0.5, 5), (1.0, 10)])
def test_the_empty_fraction_is_exact(fraction, expected_empty):
    _, coco = make_dataset(seed=0, num_images=10, size=64, max_objects=3, empty_fraction=fraction)
    annotated = {ann["image_id"] for ann in coco["annotations"]}
    assert len(coco["images"]) - len(annotated) == expected_empty


def test_object_sizes_span_small_to_large_and_every_class_appears():
    images, coco = make_dataset(seed=0, num_images=30, size=160, max_objects=8, empty_fraction=0.0)
    boxes = np.concatenate([s.boxes_xyxy for s in images])  # [M, 4]
    longer_side = (boxes[:, 2:] - boxes[:, :2]).max(axis=1)
    assert longer_side.min() <= 2 * MIN_OBJECT_SIZE
    assert longer_side.max() >= 0.5 * 160
    assert longer_side.min() >= MIN_OBJECT_SIZE - 1
    assert {ann["category_id"] for ann in coco["annotations"]} == set(range(1, len(CATEGORIES) + 1))
    assert {s.background for s in images} <= set(BACKGROUNDS) and len({s.background for s in images}) >= 4


def test_occlusion_keeps_the_full_box_and_drops_mostly_hidden_shapes():
    """Shape 0 uses the same random draws whatever is drawn after it, so drawing it alone
    gives its unoccluded box; on top of it, later shapes hide part of it but not its box."""
    partly_hidden = dropped = 0
    for seed in range(40):
        alone = make_image(np.random.default_rng(seed), size=96, num_objects=1)
        crowded_all = make_image(np.random.default_rng(seed), size=96, num_objects=6, min_visible=0.0)
        crowded = make_image(np.random.default_rng(seed), size=96, num_objects=6, min_visible=0.3)
        np.testing.assert_array_equal(crowded_all.image, crowded.image)  # the rule changes labels only
        assert alone.visible.tolist() == [1.0] and len(crowded_all.labels) == 6
        np.testing.assert_array_equal(crowded_all.boxes_xyxy[0], alone.boxes_xyxy[0])
        assert crowded_all.labels[0] == alone.labels[0]
        assert crowded_all.visible[-1] == 1.0  # the last shape is on top
        kept = crowded_all.visible >= 0.3
        np.testing.assert_array_equal(crowded.boxes_xyxy, crowded_all.boxes_xyxy[kept])
        np.testing.assert_array_equal(crowded.areas, crowded_all.areas[kept])
        partly_hidden += int(0.3 <= crowded_all.visible[0] < 1.0)
        dropped += int((~kept).sum())
    assert partly_hidden >= 3 and dropped >= 3  # both cases were exercised


def test_cli_writes_a_dataset_end_to_end(tmp_path):
    out = tmp_path / "val"
    args = ["--seed", "5", "--num-images", "6", "--size", "64", "--empty-fraction", "0.5", "--max-objects", "3"]
    result = subprocess.run([sys.executable, "-m", "detviz", "data", *args, "--out", str(out)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    _, coco = make_dataset(seed=5, num_images=6, size=64, empty_fraction=0.5, max_objects=3)
    assert (out / "annotations.json").read_text() == _json_bytes(coco)
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i:06d}.jpg" for i in range(6)]
    assert result.stdout.splitlines() == [f"{out}: {summarize(coco)}"]
    assert "6 images (3 without objects)" in result.stdout and "circle" in result.stdout
    assert len(CocoDetection(out / "images", out / "annotations.json")) == 6


def test_cli_help_lists_the_data_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "data" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    ([], "the following arguments are required: command"),
    (["data", "--num-images", "2", "--out", "x"], "the following arguments are required: --seed"),
    (["data", "--seed", "0", "--num-images", "0", "--out", "x"], "--num-images: expected a positive integer, got 0"),
    (["data", "--seed", "-1", "--num-images", "2", "--out", "x"], "--seed: expected an integer >= 0, got -1"),
    (["data", "--seed", "0", "--num-images", "two", "--out", "x"], "--num-images: expected a positive integer, got 'two'"),
    (["data", "--seed", "0", "--num-images", "2", "--out", "x", "--empty-fraction", "1.5"],
     "--empty-fraction: expected a number in [0, 1], got 1.5"),
    (["data", "--seed", "0", "--num-images", "2", "--out", "x", "--format", "gif"], "--format: invalid choice: 'gif'"),
    (["fit"], "invalid choice: 'fit'"),
    (["train"], "the following arguments are required: --model"),
    (["evaluate", "--data", "x"], "the following arguments are required: --checkpoint"),
])
def test_cli_bad_arguments_exit_2_naming_the_problem(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_a_small_size_and_an_existing_dataset(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "--seed", "0", "--num-images", "2", "--size", "16", "--out", str(tmp_path / "a")])
    assert exit_info.value.code == 1 and "size must be an int >= 32, got 16" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()

    args = ["data", "--seed", "0", "--num-images", "3", "--size", "48", "--out", str(tmp_path)]
    assert main(args) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 1 and "already holds a dataset" in capsys.readouterr().err
    assert main(["data", "--seed", "1", "--num-images", "2", "--size", "48", "--out", str(tmp_path), "--overwrite"]) == 0
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["000000.jpg", "000001.jpg"]  # stale file gone


@pytest.mark.parametrize("options, error, message", [
    (dict(num_images=0), ValueError, "num_images must be an int >= 1, got 0"),
    (dict(num_images=2.0), TypeError, "num_images must be an int >= 1, got float"),
    (dict(num_images=2, seed=-3), ValueError, "seed must be an int >= 0, got -3"),
    (dict(num_images=2, size=31), ValueError, "size must be an int >= 32, got 31"),
    (dict(num_images=2, max_objects=0), ValueError, "max_objects must be an int >= 1, got 0"),
    (dict(num_images=2, empty_fraction=-0.1), ValueError, "empty_fraction must be a number in [0.0, 1.0], got -0.1"),
    (dict(num_images=2, empty_fraction="0.2"), TypeError, "empty_fraction must be a number in [0.0, 1.0], got str"),
    (dict(num_images=2, size=64, max_size_fraction=0.1), ValueError, "max_size_fraction must be a number in [0.25, 1.0]"),
    (dict(num_images=2, min_visible=2.0), ValueError, "min_visible must be a number in [0.0, 1.0], got 2.0"),
    (dict(num_images=2, image_format="bmp"), ValueError, "image_format must be one of ('jpg', 'png'), got 'bmp'"),
])
def test_bad_options_raise_naming_what_was_expected(options, error, message):
    with pytest.raises(error) as exc_info:
        make_dataset(**options)
    assert message in str(exc_info.value)


def test_the_committed_validation_split_matches_its_seed():
    split = DATA_DIR / "synthetic" / "val"
    coco = json.loads((split / "annotations.json").read_text())
    assert coco["info"]["seed"] == 0 and coco["info"]["size"] == 320
    options = {k: v for k, v in coco["info"].items() if k != "description"}
    _, regenerated = make_dataset(**options)
    assert (split / "annotations.json").read_text() == _json_bytes(regenerated)
    files = list((split / "images").iterdir())
    assert len(files) == options["num_images"] and sum(p.stat().st_size for p in files) < 1_000_000
