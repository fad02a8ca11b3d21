"""``python -m detviz predict``: detections drawn on every image of a folder, and COCO results."""
import json
import shutil

import pytest
from PIL import Image

from detviz.cli import main
from detviz.datasets.coco import open_dataset
from detviz.engine.inference import load_model, predict_dataset
from detviz.evaluation import to_coco_results
from detviz.viz.pictures import TITLE_PIXELS


@pytest.fixture
def photos(tiny_data, tmp_path):
    """The tiny images without annotations, one of them as PNG."""
    folder = tmp_path / "photos"
    shutil.copytree(tiny_data / "images", folder)
    first = sorted(folder.iterdir())[0]
    with Image.open(first) as image:
        image.save(first.with_suffix(".png"))
    first.unlink()
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_draws_every_image_and_writes_coco_results(eager_weights, tiny_data, photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(eager_weights), "--images", str(photos), "--out", str(out),
                 "--score-thresh", "0.01"]) == 0
    stems = sorted(p.stem for p in photos.iterdir() if p.suffix in (".jpg", ".png"))
    expected = [f"{s}.jpg" for s in stems] + ["images.json", "results.json"]
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    for stem in stems:
        with Image.open(out / f"{stem}.jpg") as drawn:
            assert drawn.format == "JPEG" and drawn.size == (240, 240 + TITLE_PIXELS)  # 96 px, enlarged for captions
    # the results are those of the same model on the same images, ids numbering the files in name order
    dataset = open_dataset(tiny_data)
    family, model, checkpoint = load_model(eager_weights)
    predictions = predict_dataset(family, model, dataset, 64)
    expected = to_coco_results(predictions, [stems.index(_stem(dataset, i)) + 1 for i in range(len(dataset))],
                               dataset.label_to_category_id)
    results = json.loads((out / "results.json").read_text())
    assert sorted(map(json.dumps, results)) == sorted(map(json.dumps, expected))
    images = json.loads((out / "images.json").read_text())
    assert [(i["id"], i["file_name"]) for i in images["images"]] == [
        (k + 1, name) for k, name in enumerate(sorted(p.name for p in photos.iterdir() if p.suffix != ".txt"))]
    assert [c["name"] for c in images["categories"]] == list(dataset.class_names.values())
    counts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert counts["images"] == len(stems) and counts["detections"] == len(results) and counts["drawn"] > 0


def _stem(dataset, index: int) -> str:
    return dataset.coco.imgs[dataset.image_ids[index]]["file_name"].rsplit(".", 1)[0]


@pytest.mark.parametrize("setup, message", [
    (lambda folder: None, "holds no images"),
    (lambda folder: [(folder / name).write_bytes(b"x") for name in ("a.jpg", "a.png")],
     "several images share the name 'a' (a.jpg, a.png)"),
    (lambda folder: (folder / "a.jpg").write_bytes(b"not a jpeg"), "cannot read image"),
])
def test_bad_image_folders_are_named_and_nothing_is_written(eager_weights, tmp_path, capsys, setup, message):
    folder = tmp_path / "photos"
    folder.mkdir()
    setup(folder)
    with pytest.raises(SystemExit):
        main(["predict", "--checkpoint", str(eager_weights), "--images", str(folder), "--out",
              str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert message in err and str(folder) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


def test_worker_processes_change_nothing_in_the_results(eager_weights, photos, tmp_path):
    written = {}
    for workers in ("0", "2"):
        out = tmp_path / f"out-{workers}"
        assert main(["predict", "--checkpoint", str(eager_weights), "--images", str(photos), "--out", str(out),
                     "--workers", workers]) == 0
        written[workers] = (out / "results.json").read_text()
    assert written["0"] == written["2"] and json.loads(written["0"])
