"""Every traced value is checked by a walkthrough, or says why not.

A notebook checks an entry by calling :func:`detviz.fixtures.check_entry` (or ``check``
with the entry's name), which prints ``✓ <name> ...``. The stored outputs are what
nbval re-checks on every run, so reading them tells which entries a notebook really
checks. An entry that no notebook checks must carry ``"not_checked": "<why>"`` (it is
an input the walkthrough starts from, the note disagrees with itself, ...).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from detviz.fixtures import TRACES_DIR, load_trace

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
TRACE_NAMES = sorted(p.stem for p in TRACES_DIR.glob("*.json"))
_LOAD_TRACE = re.compile(r"""load_trace\(\s*["']([^"']+)["']""")


def _checked_names() -> dict[str, dict[str, list[str]]]:
    """trace name -> entry name -> notebooks whose stored outputs print ``✓ <entry>``."""
    checked: dict[str, dict[str, list[str]]] = {}
    for path in sorted(NOTEBOOKS_DIR.glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        printed = set()
        for cell in cells:
            for output in cell.get("outputs", []):
                for line in "".join(output.get("text", "")).splitlines():
                    if line.startswith("✓ "):
                        printed.add(line.split()[1])
        for trace in set(_LOAD_TRACE.findall(source)):
            for name in printed:
                checked.setdefault(trace, {}).setdefault(name, []).append(path.name)
    return checked


CHECKED = _checked_names()


def test_the_scan_sees_the_walkthroughs():
    # guards the scan itself: a renamed helper or output format would otherwise pass every entry as unchecked
    assert set(CHECKED) == set(TRACE_NAMES), sorted(CHECKED)
    assert "sample1.candidate_idxs" in CHECKED["seed002_nanodet_gfl"]


@pytest.mark.parametrize("trace_name", TRACE_NAMES)
def test_every_entry_is_checked_or_says_why_not(trace_name):
    trace = load_trace(trace_name)
    checked = CHECKED.get(trace_name, {})
    neither, both = [], []
    for name in trace.names():
        reason = trace.entry(name).get("not_checked")
        if reason is not None:
            assert isinstance(reason, str) and len(reason.split()) >= 4, (
                f"{trace_name}: {name}: not_checked must say why in words, got {reason!r}")
        if name in checked and reason is not None:
            both.append(f"{name} (checked in {', '.join(checked[name])})")
        if name not in checked and reason is None:
            neither.append(name)
    assert not neither, f"{trace_name}: no notebook checks {neither} and they carry no \"not_checked\" reason"
    assert not both, f"{trace_name}: entries marked not_checked are checked after all: {both}"
