"""Traced values from the debugging notes, and a printed-precision comparison.

A trace file (``data/traces/<name>.json``) transcribes every number a note prints,
with where it is printed::

    {"note": "002_....txt", "description": "...",
     "entries": {"sample1.candidate_idxs": {"value": [[1012, 930, 848], ...],
                                            "lines": [279, 307], "decimals": null, ...}}}

``lines`` are 1-based, inclusive line numbers in ``data/notes/<note>``; ``decimals`` is
how many decimals the note prints (``None`` for exact integers and booleans). A
notebook recomputes a value and calls :func:`check_entry`, which accepts any
difference smaller than half a unit in the last printed digit::

    trace = load_trace("seed002_nanodet_gfl")
    check_entry(trace, "sample1.overlaps_mean", overlaps.mean(0))
    # prints: ✓ sample1.overlaps_mean  [0.3072, 0.2973, 0.0444]  (note: [0.3072, 0.2973, 0.0444])
"""
from __future__ import annotations

import copy
import difflib
import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
TRACES_DIR = DATA_DIR / "traces"
NOTES_DIR = DATA_DIR / "notes"

ENTRY_KEYS = ("value", "lines", "block", "units", "decimals", "layout", "quote")
QUOTE_KINDS = ("numbers", "derived")

# Values with more elements than this print as "[a, b, c, ..., x, y, z] (N values, shape [..])".
MAX_SHOWN = 16
# Slack on top of half a printed unit, for float32 round-off in recomputed values.
FLOAT_SLACK = 1e-6


class TraceKeyError(KeyError):
    """A trace has no entry of the requested name; the message lists close names."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


class NoteTrace(Mapping):
    """The entries of one trace file, read-only.

    ``trace[name]`` is the value as transcribed (number, nested list, string or
    dict); :meth:`entry` gives the whole record with its provenance.
    """

    def __init__(self, name: str, data: dict, *, notes_dir: Path = NOTES_DIR):
        self.name = name
        self.note = data["note"]
        self.description = data.get("description", "")
        self._entries = dict(data["entries"])
        self._notes_dir = Path(notes_dir)
        self._note_lines: dict[str, list[str]] = {}  # note file name -> its lines

    # Mapping interface -------------------------------------------------------
    def __getitem__(self, name: str) -> Any:
        return self.entry(name)["value"]  # entry() hands out a copy

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"NoteTrace({self.name!r}, note={self.note!r}, {len(self)} entries)"

    # Lookups ----------------------------------------------------------------
    def names(self) -> list[str]:
        """Entry names in file order."""
        return list(self._entries)

    def entry(self, name: str) -> dict:
        """A copy of the full record of ``name``: value, lines, block, units, decimals, layout, quote, ..."""
        if name not in self._entries:
            raise TraceKeyError(self._missing_message(name))
        return copy.deepcopy(self._entries[name])

    def tensor(self, name: str, dtype: torch.dtype | None = None) -> Tensor:
        """The value of ``name`` as a tensor (booleans give ``torch.bool``, integers ``int64``).

        Floats use the default dtype unless ``dtype`` is given. Objects and strings
        raise ``TypeError``: take their fields with ``trace[name][field]``.
        """
        value = self[name]
        if isinstance(value, (dict, str)):
            raise TypeError(f"entry {name!r} holds a {type(value).__name__}, not numbers; "
                            f"index its fields instead (layout: {self.entry(name)['layout']})")
        return torch.tensor(value, dtype=dtype)

    def note_lines(self, note: str | None = None) -> list[str]:
        """All lines of ``note`` (default: the trace's note), without line endings (index 0 is line 1)."""
        note = self.note if note is None else note
        if note not in self._note_lines:
            self._note_lines[note] = (self._notes_dir / note).read_text(encoding="utf-8").splitlines()
        return self._note_lines[note]

    def quote(self, name: str, *, numbered: bool = False) -> str:
        """The note's lines ``entry["lines"]`` for ``name``, joined by newlines; an entry quoting
        another note than the trace's names it in its own ``"note"`` key.

        ``numbered=True`` prefixes each line with its 1-based line number.
        """
        entry = self.entry(name)
        first, last = entry["lines"]
        lines = self.note_lines(entry.get("note"))[first - 1:last]
        if numbered:
            lines = [f"{first + i:4d}| {text}" for i, text in enumerate(lines)]
        return "\n".join(lines)

    def _missing_message(self, name: str) -> str:
        names = self.names()
        close = difflib.get_close_matches(name, names, n=6, cutoff=0.5)
        prefix = name.split(".")[0] + "."
        close += [n for n in names if n.startswith(prefix) and n not in close][: max(0, 8 - len(close))]
        hint = ", ".join(close) if close else "none; trace.names() lists all"
        return f"trace {self.name!r} has no entry {name!r}; close names: {hint}"


def load_trace(name: str | Path) -> NoteTrace:
    """Load ``data/traces/<name>.json`` (``name`` may carry ``.json`` or be a path)."""
    path = Path(name)
    if path.suffix != ".json":
        path = path.with_name(path.name + ".json")
    if len(path.parts) == 1:  # a bare name lives in TRACES_DIR
        path = TRACES_DIR / path
    if not path.exists():
        available = sorted(p.stem for p in TRACES_DIR.glob("*.json"))
        raise FileNotFoundError(f"no trace file {path}; available traces: {available}")
    data = json.loads(path.read_text(encoding="utf-8"))
    return NoteTrace(path.stem, data)


# ---------------------------------------------------------------------------- comparison
def check(name: str, computed: Any, expected: Any, decimals: int | None = None) -> None:
    """Assert ``computed`` equals the note's ``expected`` at the printed precision.

    Args:
        name: entry name, used in the messages.
        computed: tensor, array, nested list, number, bool, string or dict of those.
        expected: the transcribed value (same structure).
        decimals: printed decimals of ``expected``; floats may then differ by at most
            ``0.5 * 10**-decimals`` (+1e-6 slack). ``None``: integers and booleans must
            be equal, floats within the 1e-6 slack.

    Prints one deterministic line ``"✓ name  <computed>  (note: <expected>)"`` and returns
    None, so a notebook cell ending in a check shows the line once.

    Raises:
        AssertionError naming the entry: shapes differ (``shape mismatch``), or a value
        differs (first differing index, computed vs note), or dict keys differ.
    """
    shown, noted = _compare(name, computed, expected, decimals)
    print(f"✓ {name}  {shown}  (note: {noted})")


def check_entry(trace: NoteTrace, name: str, computed: Any) -> None:
    """:func:`check` against ``trace[name]`` with the entry's printed ``decimals``."""
    entry = trace.entry(name)
    check(name, computed, entry["value"], entry["decimals"])


def _compare(name: str, computed: Any, expected: Any, decimals: int | None) -> tuple[str, str]:
    if isinstance(expected, Mapping):
        if not isinstance(computed, Mapping):
            raise AssertionError(f"{name}: expected a dict with keys {list(expected)}, got {type(computed).__name__}")
        missing = [k for k in expected if k not in computed]
        extra = [k for k in computed if k not in expected]
        if missing or extra:
            raise AssertionError(f"{name}: keys differ from the note: missing {missing}, unexpected {extra}")
        pairs = [_compare(f"{name}.{k}", computed[k], v, decimals) for k, v in expected.items()]
        keys = list(expected)
        return (_join_fields(keys, [p[0] for p in pairs]), _join_fields(keys, [p[1] for p in pairs]))
    if isinstance(expected, str):
        if computed != expected:
            raise AssertionError(f"{name}: computed {computed!r} vs note {expected!r}")
        return repr(computed), repr(expected)

    got = _as_tensor(name, computed)
    want = _as_tensor(name, expected)
    if list(got.shape) != list(want.shape):
        raise AssertionError(f"{name}: shape mismatch: computed {list(got.shape)} vs note {list(want.shape)}")

    exact = decimals is None and not got.is_floating_point() and not want.is_floating_point()
    if exact:
        bad = got.long() != want.long()
        tol_text = "exact"
    else:
        tol = FLOAT_SLACK if decimals is None else 0.5 * 10.0 ** -decimals + FLOAT_SLACK
        diff = (got.double() - want.double()).abs()
        bad = ~(diff <= tol)  # NaN counts as a difference
        tol_text = f"tolerance {tol:.3g}"
    if bool(bad.any()):
        index = [int(i) for i in torch.nonzero(bad)[0]] if bad.dim() else []
        at = f" at index {index}" if index else ""
        wide = None if decimals is None else decimals + 2
        g, w = got[tuple(index)].item(), want[tuple(index)].item()
        raise AssertionError(
            f"{name}: mismatch{at}: computed {_fmt_scalar(g, wide)} vs note {_fmt_scalar(w, decimals)} "
            f"({tol_text}; {int(bad.sum())} of {bad.numel()} values differ)")
    return _fmt_tensor(got, decimals), _fmt_tensor(want, decimals)


def _as_tensor(name: str, x: Any) -> Tensor:
    if isinstance(x, Tensor):
        return x.detach().cpu()
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name}: cannot compare a {type(x).__name__} as a rectangular array of numbers ({err})") from None


# ---------------------------------------------------------------------------- formatting
def _fmt_scalar(v: float | int | bool, decimals: int | None) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if math.isnan(v) or math.isinf(v):
        return str(v)
    if decimals is None:
        text = str(int(v)) if float(v).is_integer() else f"{v:.6g}"
    else:
        text = f"{v:.{decimals}f}"
    if text.startswith("-") and float(text) == 0:  # no "-0.0000"
        text = text[1:]
    return text


def _fmt_nested(values: Any, decimals: int | None) -> str:
    if isinstance(values, list):
        return "[" + ", ".join(_fmt_nested(v, decimals) for v in values) + "]"
    return _fmt_scalar(values, decimals)


def _fmt_tensor(t: Tensor, decimals: int | None) -> str:
    if t.numel() <= MAX_SHOWN:
        return _fmt_nested(t.tolist(), decimals)
    flat = t.flatten().tolist()
    head = ", ".join(_fmt_scalar(v, decimals) for v in flat[:3])
    tail = ", ".join(_fmt_scalar(v, decimals) for v in flat[-3:])
    shape = "" if t.dim() == 1 else f", shape {list(t.shape)}"
    return f"[{head}, ..., {tail}] ({t.numel()} values{shape})"


def _join_fields(keys: list[str], texts: list[str]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in zip(keys, texts)) + "}"
