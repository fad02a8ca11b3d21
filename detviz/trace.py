"""Tensor traces: the named intermediate tensors of one forward (and loss) pass.

Two sources feed a trace:

* forward hooks on the named submodules of any ``nn.Module`` (torchvision's detectors
  included), filtered by ``fnmatch`` patterns on the module names (``"rpn.head"``,
  ``"roi_heads.box_*"``). A module's output is flattened into named leaves: tensors keep
  the module name, tuples/lists add ``[i]``, dicts and named tuples add ``.key``, and
  ImageList-like objects (anything with a ``.tensors`` tensor) add ``.tensors`` and
  ``.image_sizes``. Python numbers become 0-d tensors; anything else is skipped.
* explicit record points inside detviz's own components: ``record("rpn.top_n_idx", idx)``.
  ``record`` is a no-op (one global read) unless a :class:`Tracer` is active.

A name seen a second time (a module called twice, a record point in a per-image loop)
gets a suffix: ``name``, ``name#1``, ``name#2`` ...

Each leaf becomes a :class:`TraceEntry`: shape, dtype, min / max / mean and the first few
values. Full values are kept for tensors of at most ``max_numel`` elements, or for all with
``full=True``; large tensors stay summaries, so a trace of a whole detector is cheap to keep
and to save. Usage::

    with Tracer(model, modules=["backbone", "rpn.head"]) as tr:
        model(images)
    print(tr.table())                  # or display(tr.trace) in Jupyter
    tr.trace.save("a.pt"); other = Trace.load("b.pt")
    print(diff(tr.trace, other, rtol=1e-5, atol=1e-6))   # None when they agree
"""
from __future__ import annotations

import fnmatch
import html
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["record", "Tracer", "Trace", "TraceEntry", "Divergence", "diff", "active_tracer"]

HEAD = 5  # values shown in tables and kept in every summary
MAX_NUMEL = 64  # tensors up to this size keep their full values by default
_FORMAT = "detviz.trace/1"

_active: Tracer | None = None  # the one active tracer, or None


def record(name: str, value: Any) -> None:
    """Record ``value`` under ``name`` in the active :class:`Tracer`; a no-op without one.

    Args:
        name: dotted name, e.g. ``"rpn.top_n_idx"``.
        value: a tensor, a number, or a (nested) tuple/list/dict/named tuple of them.
    """
    if _active is None:
        return
    _active._add(name, value, source="record")


def active_tracer() -> Tracer | None:
    """The active :class:`Tracer`, or None."""
    return _active


# ----------------------------------------------------------------------------- entries
@dataclass
class TraceEntry:
    """One recorded tensor.

    Attributes:
        name: unique name within the trace.
        source: ``"hook"`` (module output) or ``"record"`` (explicit record point).
        shape: list of ints; dtype: e.g. ``"torch.float32"``.
        min, max, mean: float statistics over all elements (None when empty; bools count as
            0/1); head: the first ``HEAD`` values, flattened, as Python numbers.
        values: the full tensor (detached CPU copy) when kept, else None.
    """

    name: str
    source: str
    shape: list[int]
    dtype: str
    min: float | None
    max: float | None
    mean: float | None
    head: list
    values: Tensor | None = None

    @classmethod
    def from_tensor(cls, name: str, tensor: Tensor, source: str, keep_values: bool) -> TraceEntry:
        t = tensor.detach()
        stats = t.to(torch.float64) if t.numel() else None
        if stats is not None and t.is_complex():
            stats = stats.abs()
        return cls(
            name=name, source=source, shape=list(t.shape), dtype=str(t.dtype),
            min=None if stats is None else float(stats.min()),
            max=None if stats is None else float(stats.max()),
            mean=None if stats is None else float(stats.mean()),
            head=t.reshape(-1)[:HEAD].cpu().tolist(),
            values=t.cpu().clone() if keep_values else None,
        )

    def to_dict(self) -> dict:
        return {"name": self.name, "source": self.source, "shape": self.shape, "dtype": self.dtype,
                "min": self.min, "max": self.max, "mean": self.mean, "head": self.head, "values": self.values}

    def row(self) -> list[str]:
        """Table cells: name, shape, dtype, min, max, mean, first values."""
        values = ", ".join(_fmt(v) for v in self.head)
        numel = math.prod(self.shape)
        if numel > len(self.head):
            values += ", ..."
        return [self.name, str(self.shape), self.dtype.replace("torch.", ""),
                _fmt(self.min), _fmt(self.max), _fmt(self.mean), f"[{values}]"]


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value == int(value) and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.4g}"


_COLUMNS = ["name", "shape", "dtype", "min", "max", "mean", "values"]


class Trace:
    """An ordered list of :class:`TraceEntry`, looked up by name."""

    def __init__(self, entries: Sequence[TraceEntry] = ()):
        self.entries: list[TraceEntry] = list(entries)
        self._index = {e.name: i for i, e in enumerate(self.entries)}

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[TraceEntry]:
        return iter(self.entries)

    def __contains__(self, name: str) -> bool:
        return name in self._index

    def __getitem__(self, name: str) -> TraceEntry:
        if name not in self._index:
            raise KeyError(f"no entry named {name!r} in the trace; names start with {self.names()[:5]}")
        return self.entries[self._index[name]]

    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def _append(self, entry: TraceEntry) -> None:
        self._index[entry.name] = len(self.entries)
        self.entries.append(entry)

    def select(self, pattern: str) -> Trace:
        """The entries whose name matches the ``fnmatch`` pattern, e.g. ``"rpn.*"``."""
        return Trace([e for e in self.entries if fnmatch.fnmatchcase(e.name, pattern)])

    def table(self, max_rows: int | None = None) -> str:
        """Fixed-width text table: name, shape, dtype, min, max, mean, first values."""
        rows = [e.row() for e in self.entries[:max_rows]]
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(_COLUMNS)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(_COLUMNS, widths)).rstrip()]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        if max_rows is not None and len(self.entries) > max_rows:
            lines.append(f"... {len(self.entries) - max_rows} more entries")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return f"Trace({len(self.entries)} entries)"

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{c}</th>" for c in _COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in e.row()) + "</tr>"
                       for e in self.entries)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def to_text(self, rename: dict[str, str] | None = None) -> str:
        """Seed-note style lines: ``name.shape=[...]``, plus ``name=value`` for 0-d tensors.

        Args:
            rename: prefixes to replace, e.g. ``{"backbone": "x"}`` turns ``backbone[0]`` into ``x[0]``.
        """
        lines = []
        for e in self.entries:
            name = e.name
            for old, new in (rename or {}).items():
                if name == old or name.startswith((old + ".", old + "[", old + "#")):
                    name = new + name[len(old):]
                    break
            lines.append(f"{name}={_fmt(e.head[0])}" if e.shape == [] else f"{name}.shape={e.shape}")
        return "\n".join(lines)

    def save(self, path: str | Path) -> None:
        """``torch.save`` of plain Python values and tensors; read back with :meth:`load`."""
        torch.save({"format": _FORMAT, "entries": [e.to_dict() for e in self.entries]}, path)

    @classmethod
    def load(cls, path: str | Path) -> Trace:
        if not Path(path).is_file():
            raise FileNotFoundError(f"trace file {path} does not exist")
        try:
            data = torch.load(path, weights_only=True)
        except Exception as err:  # torch raises several types for a truncated or foreign file
            raise ValueError(f"cannot read trace {path} (truncated or not a torch file?): "
                             f"{type(err).__name__}: {str(err)[:200]}") from err
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a saved detviz trace (expected a dict with format {_FORMAT!r})")
        return cls([TraceEntry(**d) for d in data["entries"]])


# ----------------------------------------------------------------------------- flattening
def _leaves(name: str, value: Any) -> Iterator[tuple[str, Tensor]]:
    """(name, tensor) for every tensor-like leaf of a nested value; other leaves are skipped."""
    if isinstance(value, Tensor):
        yield name, value
    elif isinstance(value, bool | int | float):
        yield name, torch.tensor(value)
    elif isinstance(getattr(value, "tensors", None), Tensor):  # torchvision's ImageList
        yield f"{name}.tensors", value.tensors
        sizes = getattr(value, "image_sizes", None)
        if sizes is not None:
            yield f"{name}.image_sizes", torch.tensor([list(s) for s in sizes], dtype=torch.int64)
    elif isinstance(value, tuple) and hasattr(value, "_fields"):  # named tuple
        for key in value._fields:
            yield from _leaves(f"{name}.{key}", getattr(value, key))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(f"{name}.{key}", item)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _leaves(f"{name}[{i}]", item)


# ----------------------------------------------------------------------------- tracer
class Tracer:
    """Context manager that records a :class:`Trace` while it is active.

    Args:
        model: module whose submodules get forward hooks, or None (record points only).
        modules: ``fnmatch`` patterns on submodule names (``model.named_modules()``); None
            hooks every named submodule, ``[]`` none. ``""`` names the model itself.
        records: also collect the explicit :func:`record` points.
        full: keep every tensor's values; otherwise only those of at most ``max_numel`` elements.
        max_numel: size limit for keeping values when ``full`` is False.

    Only one tracer may be active at a time; entering a second one raises ``RuntimeError``.
    Each ``with`` block starts a fresh trace, available as ``tracer.trace`` afterwards.
    """

    def __init__(self, model: nn.Module | None = None, modules: Sequence[str] | str | None = None, *,
                 records: bool = True, full: bool = False, max_numel: int = MAX_NUMEL):
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module or None, got {type(model).__name__}")
        if isinstance(modules, str):
            modules = [modules]
        self.model = model
        self.patterns = None if modules is None else list(modules)
        self.records = records
        self.full = full
        self.max_numel = max_numel
        self.trace = Trace()
        self._handles: list = []
        self._counts: dict[str, int] = {}

    def hooked_names(self) -> list[str]:
        """Names of the submodules that get a hook, in ``named_modules`` order."""
        if self.model is None:
            return []
        return [name for name, _ in self.model.named_modules()
                if (self.patterns is None and name) or
                (self.patterns is not None and any(fnmatch.fnmatchcase(name, p) for p in self.patterns))]

    def __enter__(self) -> Tracer:
        global _active
        if _active is self:
            raise RuntimeError("this Tracer is already active; a Tracer cannot be entered twice")
        if _active is not None:
            raise RuntimeError("another Tracer is already active; nested tracers are not supported: "
                               "exit the first one before entering a second")
        names = self.hooked_names()
        if self.patterns and not names:
            raise ValueError(f"modules {self.patterns} match no submodule of {type(self.model).__name__}; "
                             f"names start with {[n for n, _ in self.model.named_modules()][1:6]}")
        self.trace, self._counts = Trace(), {}
        modules = dict(self.model.named_modules()) if self.model is not None else {}
        for name in names:
            self._handles.append(modules[name].register_forward_hook(self._hook(name or "model")))
        _active = self
        return self

    def __exit__(self, *exc) -> None:
        global _active
        for handle in self._handles:
            handle.remove()
        self._handles = []
        _active = None

    def _hook(self, name: str):
        def hook(module, inputs, output):
            self._add(name, output, source="hook")
        return hook

    def _add(self, name: str, value: Any, source: str) -> None:
        if source == "record" and not self.records:
            return
        for leaf_name, tensor in _leaves(name, value):
            seen = self._counts.get(leaf_name, 0)
            self._counts[leaf_name] = seen + 1
            unique = leaf_name if seen == 0 else f"{leaf_name}#{seen}"
            keep = self.full or tensor.numel() <= self.max_numel
            self.trace._append(TraceEntry.from_tensor(unique, tensor, source, keep))

    # conveniences delegating to the trace
    def table(self, max_rows: int | None = None) -> str:
        return self.trace.table(max_rows)

    def to_text(self, rename: dict[str, str] | None = None) -> str:
        return self.trace.to_text(rename)


# ----------------------------------------------------------------------------- diff
class Divergence(NamedTuple):
    """The first entry where two traces disagree.

    Attributes:
        name: entry name; kind: ``"missing"``, ``"shape"``, ``"dtype"``, ``"values"`` or ``"summary"``.
        detail: one readable sentence.
        max_abs_diff: largest absolute difference (values/summary), else None.
        index: multi-index of the largest difference (values), or position in the first values
            (summary), else None.
    """

    name: str
    kind: str
    detail: str
    max_abs_diff: float | None = None
    index: tuple | None = None

    def __str__(self) -> str:
        return f"{self.name}: {self.detail}"


def _as_trace(t) -> Trace:
    if isinstance(t, Tracer):
        return t.trace
    if isinstance(t, Trace):
        return t
    raise TypeError(f"diff needs Trace or Tracer objects, got {type(t).__name__}")


def _close(a: float | None, b: float | None, rtol: float, atol: float) -> bool:
    if a is None or b is None:
        return a is b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= atol + rtol * abs(b)


def _diff_values(name: str, a: Tensor, b: Tensor, rtol: float, atol: float) -> Divergence | None:
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    both_nan = a64.isnan() & b64.isnan()
    bad = ~(((a64 - b64).abs() <= atol + rtol * b64.abs()) | both_nan)
    if not bad.any():
        return None
    err = torch.where(bad, (a64 - b64).abs().nan_to_num(nan=math.inf), torch.zeros_like(a64))
    flat = int(err.reshape(-1).argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), a.shape)) if a.dim() else ()
    return Divergence(name, "values",
                      f"{int(bad.sum())} of {a.numel()} values differ; max abs diff {float(err.max()):.4g} at "
                      f"index {list(index)} ({a64.reshape(-1)[flat].item():.6g} vs {b64.reshape(-1)[flat].item():.6g})",
                      float(err.max()), index)


def _diff_entry(a: TraceEntry, b: TraceEntry, rtol: float, atol: float) -> Divergence | None:
    if a.shape != b.shape:
        return Divergence(a.name, "shape", f"shape {a.shape} vs {b.shape}")
    if a.dtype != b.dtype:
        return Divergence(a.name, "dtype", f"dtype {a.dtype} vs {b.dtype}")
    if a.values is not None and b.values is not None:
        return _diff_values(a.name, a.values, b.values, rtol, atol)
    for i, (x, y) in enumerate(zip(a.head, b.head)):  # summaries only: first values, then statistics
        if not _close(float(x), float(y), rtol, atol):
            return Divergence(a.name, "summary", f"first values differ at flat index {i} ({_fmt(x)} vs {_fmt(y)}); "
                              "keep full values (full=True) for the exact index", abs(float(x) - float(y)), (i,))
    for stat in ("min", "max", "mean"):
        x, y = getattr(a, stat), getattr(b, stat)
        if not _close(x, y, rtol, atol):
            return Divergence(a.name, "summary", f"{stat} {_fmt(x)} vs {_fmt(y)}; keep full values (full=True) "
                              "for the index", abs(x - y), None)
    return None


def diff(trace_a, trace_b, rtol: float = 1e-5, atol: float = 1e-6) -> Divergence | None:
    """The first entry, in ``trace_a``'s order, where the traces disagree; None when they agree.

    Compares names (an entry missing from either side), then shape, dtype and values: full values
    elementwise when both sides kept them (``|a - b| <= atol + rtol * |b|``, NaN equals NaN),
    otherwise the first values and min / max / mean with the same tolerance.

    Args:
        trace_a, trace_b: :class:`Trace` or :class:`Tracer`.
    """
    a, b = _as_trace(trace_a), _as_trace(trace_b)
    for entry in a:
        if entry.name not in b:
            return Divergence(entry.name, "missing", "present in the first trace only")
        found = _diff_entry(entry, b[entry.name], rtol, atol)
        if found is not None:
            return found
    for entry in b:
        if entry.name not in a:
            return Divergence(entry.name, "missing", "present in the second trace only")
    return None
