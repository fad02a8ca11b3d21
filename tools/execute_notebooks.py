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
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient


class _ThisInterpreter(KernelSpecManager):
    """Every kernel name resolves to this interpreter, as nbval's --nbval-current-env does, so a
    user-level `python3` kernelspec from another environment can never produce the outputs."""

    def get_kernel_spec(self, kernel_name):
        return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                          display_name="detviz (this interpreter)", language="python")


def execute(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    env_backend = os.environ.pop("MPLBACKEND", None)  # an exported Agg backend would drop figure outputs
    start = time.perf_counter()
    manager = KernelManager(kernel_name="python3", kernel_spec_manager=_ThisInterpreter())
    try:
        NotebookClient(nb, km=manager, timeout=1200, record_timing=False,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        if manager.has_kernel:  # a kernel manager passed in is not shut down by the client
            manager.shutdown_kernel(now=True)
        if env_backend is not None:
            os.environ["MPLBACKEND"] = env_backend
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    nb.metadata["language_info"] = {"name": "python"}  # no interpreter version in the stored file
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
