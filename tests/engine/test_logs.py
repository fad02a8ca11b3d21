"""detviz.engine.logs: log.csv and metrics.json, and what a resumed run keeps of them."""
import csv
import json

from detviz.engine.logs import StepLog, metrics_history, write_metrics


def _steps(path):
    with path.open(newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def test_step_log_writes_a_header_and_a_row_per_step(tmp_path):
    log = StepLog(tmp_path / "log.csv", resumed_step=0)
    for step in (1, 2, 3):
        log.write({"step": step, "lr": 0.1, "loss": 1.0 / step})
    log.close()
    assert _steps(tmp_path / "log.csv") == [1, 2, 3]


def test_a_resume_keeps_the_rows_up_to_its_step(tmp_path):
    log = StepLog(tmp_path / "log.csv", resumed_step=0)
    for step in (1, 2, 3, 4):
        log.write({"step": step, "loss": 1.0})
    log.close()
    resumed = StepLog(tmp_path / "log.csv", resumed_step=2)  # the checkpoint was at step 2
    assert _steps(tmp_path / "log.csv") == [1, 2, 3, 4]  # nothing rewritten before the first new row
    resumed.write({"step": 3, "loss": 0.5})
    resumed.close()
    assert _steps(tmp_path / "log.csv") == [1, 2, 3]


def test_metrics_history_of_a_resumed_run(tmp_path):
    path = tmp_path / "metrics.json"
    assert metrics_history(path, resumed_step=5) == []  # no file yet
    write_metrics(path, [{"step": 2, "mAP": 0.1}, {"step": 4, "mAP": 0.2}, {"step": 6, "mAP": None}])
    assert json.loads(path.read_text())[-1] == {"step": 6, "mAP": None}
    assert metrics_history(path, resumed_step=0) == []  # a new run starts empty
    assert metrics_history(path, resumed_step=5) == [{"step": 2, "mAP": 0.1}, {"step": 4, "mAP": 0.2}]
