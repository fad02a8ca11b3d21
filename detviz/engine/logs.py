"""What a run writes as it goes: ``log.csv`` (one row per step) and ``metrics.json`` (one entry
per evaluation). A resumed run keeps the rows and entries up to its step and drops the rest."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from detviz._io import write_atomic

__all__ = ["LOG_NAME", "METRICS_NAME", "StepLog", "metrics_history", "write_metrics"]

LOG_NAME, METRICS_NAME = "log.csv", "metrics.json"


class StepLog:
    """``log.csv``: one row per step; a resume keeps the rows up to its step and drops the rest."""

    def __init__(self, path: Path, resumed_step: int):
        self.path, self.rows, self.file, self.writer = path, [], None, None
        if resumed_step and path.is_file():
            with path.open(newline="") as f:
                self.rows = [row for row in csv.DictReader(f) if int(row["step"]) <= resumed_step]

    def write(self, row: dict) -> None:
        if self.writer is None:
            self.file = self.path.open("w", newline="")
            self.writer = csv.DictWriter(self.file, fieldnames=list(row))
            self.writer.writeheader()
            self.writer.writerows(self.rows)
        self.writer.writerow(row)
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def metrics_history(path: Path, resumed_step: int) -> list[dict]:
    """The entries of ``metrics.json`` up to ``resumed_step`` (none for a new run)."""
    if resumed_step and path.is_file():
        try:
            entries = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not readable JSON ({err}); it holds the run's evaluations: restore it, "
                             "or move it away to resume without them") from None
        return [m for m in entries if m["step"] <= resumed_step]
    return []


def write_metrics(path: Path, metrics: list[dict]) -> None:
    """``metrics.json``, atomically: a crash or a full disk leaves the previous file whole."""
    write_atomic(path, json.dumps(metrics, indent=1, allow_nan=False) + "\n")
