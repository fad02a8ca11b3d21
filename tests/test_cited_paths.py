"""Every repository path that the README, the data READMEs and the notebooks cite exists.

Files move (tests went into sub-packages, modules into family folders); a walkthrough that
sends its reader to a file that is not there is a broken promise.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted([ROOT / "README.md", *ROOT.glob("data/*/README.md"), *ROOT.glob("notebooks/*.ipynb")])
_PATH = re.compile(r"(?<![\w/.])((?:tests|detviz|benchmarks|tools|data|notebooks|docs)/[\w./-]*\.(?:py|json|txt|ipynb|png|pt|md))")
# paths of other projects that the text cites as such
FOREIGN = {"tools/analysis_tools/analyze_results.py", "tools/analysis_tools/confusion_matrix.py",
           "tools/analysis_tools/coco_error_analysis.py"}


_LINK = re.compile(r"\]\(([^)#\s]+)\)")  # markdown links and images: [text](target)


def cited_paths(text: str) -> set[str]:
    return set(_PATH.findall(text)) - FOREIGN


def linked_files(text: str) -> set[str]:
    return {target for target in _LINK.findall(text) if "://" not in target}


def test_the_pattern_finds_paths():
    assert cited_paths("see `tests/rcnn/test_model.py` and data/notes/x.txt, not mmdet/x.py") == {
        "tests/rcnn/test_model.py", "data/notes/x.txt"}
    assert linked_files("[note](../data/notes/a.txt) ![f](x.png) [site](https://example.org)") == {
        "../data/notes/a.txt", "x.png"}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_cited_paths_exist(document):
    text = document.read_text(encoding="utf-8")
    missing = sorted(p for p in cited_paths(text) if not (ROOT / p).exists())
    assert not missing, f"{document.relative_to(ROOT)} cites files that do not exist: {missing}"
    broken = sorted(t for t in linked_files(text) if not (document.parent / t).exists())
    assert not broken, f"{document.relative_to(ROOT)} links to files that do not exist: {broken}"
