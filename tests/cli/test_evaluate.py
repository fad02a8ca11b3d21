"""``python -m detviz evaluate``: its folder of results, metrics and pictures; nothing written elsewhere."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from detviz.cli import main
from detviz.datasets.coco import open_dataset
from detviz.evaluation import STAT_NAMES, evaluate_coco

REPO = Path(__file__).resolve().parents[2]
FILES = ["confusion_matrix.png", "metrics.json", "pr_curve.png", "results.json", "val_predictions.jpg"]


def test_writes_its_folder_and_prints_json_last(eager_weights, tiny_data, tmp_path):
    before = sorted(p.name for p in eager_weights.parent.iterdir())
    out = tmp_path / "eval"
    done = subprocess.run([sys.executable, "-m", "detviz", "evaluate", "--checkpoint", str(eager_weights),
                           "--data", str(tiny_data), "--out", str(out)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == FILES
    assert sorted(p.name for p in eager_weights.parent.iterdir()) == before  # nothing beside the checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]  # no temporary folder left
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    stored = json.loads((out / "metrics.json").read_text())
    results = json.loads((out / "results.json").read_text())
    rescored = evaluate_coco(open_dataset(tiny_data).coco, results)
    assert {k: printed[k] for k in STAT_NAMES} == {k: stored[k] for k in STAT_NAMES} == {k: rescored[k]
                                                                                         for k in STAT_NAMES}
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in done.stdout
    for name in FILES:
        if name.endswith((".png", ".jpg")):
            with Image.open(out / name) as image:
                assert image.format == ("PNG" if name.endswith(".png") else "JPEG")
                assert min(image.size) >= 300


def test_refuses_a_folder_with_files_and_leaves_it_alone(eager_weights, tiny_data, tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    assert_exit(1, ["evaluate", "--checkpoint", str(eager_weights), "--data", str(tiny_data),
                    "--out", str(tmp_path)])
    assert "already exists and is not an empty folder" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_default_folder_is_new_under_runs(eager_weights, tiny_data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "evaluate-1").mkdir(parents=True)
    assert main(["evaluate", "--checkpoint", str(eager_weights), "--data", str(tiny_data)]) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["evaluate-1", "evaluate-2"]
    assert sorted(p.name for p in (tmp_path / "runs" / "evaluate-2").iterdir()) == FILES
    assert "runs/evaluate-2/results.json" in capsys.readouterr().out


def test_a_failure_leaves_no_folder(eager_weights, tiny_data, tmp_path, capsys):
    shutil.copytree(tiny_data, tmp_path / "data")
    broken = sorted((tmp_path / "data" / "images").iterdir())[0]
    broken.write_bytes(b"not an image")
    assert_exit(1, ["evaluate", "--checkpoint", str(eager_weights), "--data", str(tmp_path / "data"),
                    "--out", str(tmp_path / "eval")])
    assert f"cannot read image {broken}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def assert_exit(code: int, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == code


def test_the_readme_command_on_the_shipped_checkpoint_leaves_the_checkout_alone(tmp_path):
    watched = [REPO / "data" / "checkpoints", REPO / "data" / "synthetic" / "val"]

    def snapshot():
        return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for folder in watched for p in folder.rglob("*"))
    before = snapshot()
    done = subprocess.run([sys.executable, "-m", "detviz", "evaluate", "--checkpoint",
                           "data/checkpoints/nanodet_m_synthetic.pt", "--data", "data/synthetic/val",
                           "--out", str(tmp_path / "eval")], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert snapshot() == before
    recorded = json.loads((REPO / "data" / "checkpoints" / "nanodet_m_synthetic.metrics.json").read_text())
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert printed["mAP"] == pytest.approx(recorded["mAP"], abs=5e-4)  # the figures data/checkpoints records


def test_workers_must_be_a_count(eager_weights, tiny_data, tmp_path, capsys):
    assert_exit(2, ["evaluate", "--checkpoint", str(eager_weights), "--data", str(tiny_data), "--out",
                    str(tmp_path / "eval"), "--workers", "-1"])
    assert "argument --workers: expected an integer >= 0, got -1" in capsys.readouterr().err
    assert not (tmp_path / "eval").exists()
