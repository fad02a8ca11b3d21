"""Execute notebooks in place so their stored outputs are what `pytest --nbval` compares against.

Usage: python tools/execute_notebooks.py notebooks/*.ipynb

Runs each notebook top to bottom in a fresh kernel of the running interpreter (the
project's .venv), from the notebook's own folder, and writes it back without
timing metadata. Run it after changing a notebook or the code it prints from on
purpose, then review the output diff before committing.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    env_backend = os.environ.pop("MPLBACKEND", None)  # an exported Agg backend would drop figure outputs
    start = time.perf_counter()
    try:
        NotebookClient(nb, kernel_name="python3", timeout=1200, record_timing=False,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        if env_backend is not None:
            os.environ["MPLBACKEND"] = env_backend
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, path)
    return time.perf_counter() - start


def main(paths: list[str]) -> None:
    if not paths:
        raise SystemExit(__doc__)
    for name in paths:
        seconds = execute(Path(name))
        print(f"{name}: executed in {seconds:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
