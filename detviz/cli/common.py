"""What the commands share: argument types, reading a JSON input, and an output folder that
appears only when everything in it is written."""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import tempfile
from pathlib import Path

__all__ = ["positive_int", "non_negative_int", "positive_float", "non_negative_float", "fraction", "half_fraction",
           "decay", "score_threshold", "read_json", "new_output_folder", "staged_folder"]


def number(convert, accept, expected: str):
    """An argparse type: ``convert(text)`` (int or float) where ``accept`` holds, else an error saying ``expected``."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value
    return parse


positive_int = number(int, lambda v: v >= 1, "a positive integer")
non_negative_int = number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = number(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
non_negative_float = number(float, lambda v: v >= 0 and math.isfinite(v), "a number >= 0")
fraction = number(float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")
half_fraction = number(float, lambda v: 0.0 <= v <= 0.5, "a number in [0, 0.5]")
decay = number(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")
score_threshold = number(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")


def read_json(path: Path, what: str):
    """The JSON document at ``path``; FileNotFoundError / ValueError naming ``what``."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} does not exist")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} is not readable JSON: {err}") from None


def new_output_folder(out: str | None, command: str) -> Path:
    """``--out`` as given (a new path, or an empty folder), or the first free ``runs/<command>-N``.
    Raises ValueError for anything else: nothing the user has is overwritten."""
    if out is None:
        n = 1
        while Path(f"runs/{command}-{n}").exists():
            n += 1
        return Path(f"runs/{command}-{n}")
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ValueError(f"--out {path} already exists and is not an empty folder; give a new one "
                         "(nothing there is overwritten)")
    return path


@contextlib.contextmanager
def staged_folder(out: Path):
    """Yield a hidden folder beside ``out`` to write into; on success it becomes ``out`` (an empty
    ``out`` is replaced), on any failure or interrupt it is removed and ``out`` stays as it was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield work
        work.chmod(0o755)  # mkdtemp makes it owner-only
        if out.is_dir():
            out.rmdir()  # empty: new_output_folder checked it, and rmdir refuses anything else
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
