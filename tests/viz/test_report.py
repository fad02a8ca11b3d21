"""detviz.viz.report and ``python -m detviz analyze``: the report's files, its figures, bad input."""
import json
import shutil
from pathlib import Path

import pytest

from detviz.__main__ import main
from detviz.fixtures import DATA_DIR

VAL = DATA_DIR / "synthetic" / "val"
CHECKPOINT = DATA_DIR / "checkpoints" / "nanodet_m_synthetic.pt"
FILES = {"report.html", "summary.json", "results.json", "objects.csv", "tide_errors.png", "confusion_matrix.png",
         "pr_curves.png", "missed_reasons.png", "missed_examples.png", "worst_images.png"}


@pytest.fixture(scope="module")
def checkpoint_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("analyze") / "report"
    return out, main(["analyze", "--checkpoint", str(CHECKPOINT), "--data", str(VAL), "--out", str(out)])


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_checkpoint_report_files_and_summary(checkpoint_report):
    out, status = checkpoint_report
    assert status == 0
    assert {p.name for p in out.iterdir()} == FILES
    numbers = json.loads((out / "summary.json").read_text())
    recorded = json.loads((CHECKPOINT.with_suffix(".metrics.json")).read_text())  # made when it was trained
    assert numbers["mAP"] == pytest.approx(recorded["mAP"], abs=1e-6)
    assert set(numbers["errors"]) == {"Cls", "Loc", "Both", "Dupe", "Bkg", "Miss", "FalsePos", "FalseNeg"}
    missed = numbers["missed"]
    assert missed["total"] == sum(v for k, v in missed.items() if k != "total") > 0
    assert numbers["missed_uses_model"] is True
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 6 and "http" not in page.replace("http-equiv", "")
    header = (out / "objects.csv").read_text().splitlines()[0].split(",")
    assert {"kind", "tide_type", "missed_reason", "matched@0.50", "class_name"} <= set(header)


def test_results_report_without_images(tmp_path, capsys, checkpoint_report):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(VAL / "annotations.json", data / "annotations.json")  # no images/ folder
    out = tmp_path / "out"
    assert main(["analyze", "--results", str(checkpoint_report[0] / "results.json"), "--data", str(data),
                 "--out", str(out)]) == 0
    last = _last_json(capsys)
    shipped = json.loads((checkpoint_report[0] / "summary.json").read_text())
    assert last["mAP"] == pytest.approx(shipped["mAP"]) and last["errors"] == shipped["errors"]
    assert last["missed"]["total"] == shipped["missed"]["total"] and last["missed_uses_model"] is False
    assert "missed_examples.png" not in {p.name for p in out.iterdir()}


def _bad(tmp_path, results, name="bad.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(results))
    return path


@pytest.mark.parametrize("results, message", [
    ([], "is empty: there are no detections"),
    ({"image_id": 1}, "must hold a list"),
    ([{"image_id": 999, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}], r"results\[0\].*999"),
    ([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": float("inf")}], r"results\[0\].*score"),
    ([{"image_id": 1, "category_id": 1, "bbox": [250, 250, 300, 310], "score": 0.5}] * 12,
     r"12 of 12 boxes end past their image's border; they look like \[x1, y1, x2, y2\]"),
    ([{"image_id": 1, "category_id": 1, "score": 0.5}], "entry 0 must have image_id, category_id, bbox and score"),
])
def test_bad_results_name_the_file_and_entry_and_write_nothing(tmp_path, capsys, results, message):
    path = _bad(tmp_path, results)
    out = tmp_path / "out"
    assert_fails(["analyze", "--results", str(path), "--data", str(VAL), "--out", str(out)], capsys, message)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["bad.json"]


def assert_fails(argv, capsys, message):
    import re

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "bad.json" in err or "annotations.json" in err or "--out" in err


def test_gt_without_categories_and_a_used_out_folder(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    document = json.loads((VAL / "annotations.json").read_text())
    (data / "annotations.json").write_text(json.dumps({**document, "categories": []}))
    results = _bad(tmp_path, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}])
    assert_fails(["analyze", "--results", str(results), "--data", str(data), "--out", str(tmp_path / "o")], capsys,
                 "annotations.json has no 'categories'")
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    assert_fails(["analyze", "--results", str(results), "--data", str(VAL), "--out", str(used)], capsys,
                 "--out .*used already exists and is not an empty folder")
    assert [p.name for p in used.iterdir()] == ["keep.txt"]
