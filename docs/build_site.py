"""Build the static site of the walkthroughs and the API reference (`make site`).

Usage: python docs/build_site.py [OUT]        (OUT defaults to build/site)

Lays out a Sphinx source folder in a temporary folder beside OUT: the pages of docs/, a copy of
every notebooks/NN_name.ipynb (with its stored outputs; nothing is executed) and of the notes in
data/notes/, then runs Sphinx with docs/conf.py. The finished site replaces OUT by renames, so an
interrupted build leaves the previous site (or none), never half of one. Nothing else is written.

    OUT/index.html                    the reading order, linking every notebook
    OUT/notebooks/NN_name.html        one page per notebooks/NN_name.ipynb
    OUT/data/notes/<note>.txt         the notes, where the notebooks' ../data/notes/ links point
    OUT/api.html, OUT/generated/...   the API reference from the docstrings
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from sphinx.cmd.build import build_main

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NOTEBOOKS = "[0-9][0-9]_*.ipynb"  # every walkthrough, NN_name.ipynb (not a scratch copy such as zz_tmp.ipynb)
UTF8_BOM = "\ufeff"  # browsers then read a plain-text note as UTF-8 whatever the server says


def _lay_out_sources(src: Path) -> None:
    src.mkdir()
    for page in DOCS.glob("*.md"):
        shutil.copy2(page, src / page.name)
    for folder in ("data", "docs"):  # what the notebooks' ../data/... and ../docs/... links point at
        (src / folder).symlink_to(ROOT / folder, target_is_directory=True)
    (src / "notebooks").mkdir()
    for notebook in sorted((ROOT / "notebooks").glob(NOTEBOOKS)):
        shutil.copy2(notebook, src / "notebooks" / notebook.name)
    notes = src / "_extra" / "data" / "notes"
    notes.mkdir(parents=True)
    for note in sorted((ROOT / "data" / "notes").glob("*.txt")):
        text = note.read_text(encoding="utf-8")
        (notes / note.name).write_text(text if text.startswith(UTF8_BOM) else UTF8_BOM + text, encoding="utf-8")


def build(out: Path, quiet: bool = True) -> Path:
    """Build the site into ``out`` (replacing what is there) and return ``out``."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-build-", dir=out.parent))
    try:
        _lay_out_sources(work / "src")
        args = ["-b", "html", "-c", str(DOCS), "-d", str(work / "doctrees"), "--keep-going"]
        status = build_main([*args, *(["-q"] if quiet else []), str(work / "src"), str(work / "html")])
        if status != 0:
            raise SystemExit(f"sphinx-build failed (exit status {status}); {out} is unchanged")
        old = work / "previous"
        if out.exists():
            out.rename(old)
        (work / "html").rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def main(argv: list[str]) -> None:
    out = Path(argv[0]) if argv else ROOT / "build" / "site"
    start = time.perf_counter()
    build(out)
    pages = sum(1 for _ in out.rglob("*.html"))
    print(f"{out}: {pages} pages in {time.perf_counter() - start:.0f} s; open {out / 'index.html'}")


if __name__ == "__main__":
    main(sys.argv[1:])
