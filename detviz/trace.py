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
and to save. Statistics are read in the tensor's own dtype: min and max exactly, a float32 mean within
1e-6 * mean(|x|) of the float64 one (torch's float32 sum), half precision summed in float32. Data seen
again (same memory, shape, strides, dtype and ``_version``, the first tensor alive) is not summarised
or copied again: a container returning its child's output gets an alias entry (same statistics, the
very same ``values`` tensor), so names never depend on whether a module hands a tensor through. An
in-place module (``ReLU(inplace=True)``) makes new data: its own entry and copy; the entry before
keeps the values from before the change. Usage::

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
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["record", "Tracer", "Trace", "TraceEntry", "Divergence", "diff", "active_tracer"]

HEAD = 5  # values shown in tables and kept in every summary
MAX_NUMEL = 64  # tensors up to this size keep their full values by default
DIFF_CHUNK = 1 << 20  # elements compared at a time by diff
_FORMAT = "detviz.trace/1"

_active: Tracer | None = None  # the one active tracer, or None


def record(name: str, value: Any) -> None:
    """Record ``value`` under ``name`` in the active :class:`Tracer`; a no-op without one.

    Args:
        name: dotted name, e.g. ``"rpn.top_n_idx"``.
        value: a tensor, a number, or a (nested) tuple/list/dict/named tuple of them.
    """
    if _active is not None:
        _active._add(name, value, source="record")


def active_tracer() -> Tracer | None:
    """The active :class:`Tracer`, or None."""
    return _active


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
        low, high, mean = _summary(t)
        return cls(name=name, source=source, shape=list(t.shape), dtype=str(t.dtype), min=low, max=high,
                   mean=mean, head=_head(t), values=t.cpu().clone() if keep_values else None)

    def to_dict(self) -> dict:
        return dict(vars(self))  # the fields above, values as they are (no copies)

    def row(self) -> list[str]:
        """Table cells: name, shape, dtype, min, max, mean, first values."""
        values = ", ".join(_fmt(v) for v in self.head) + (", ..." if math.prod(self.shape) > len(self.head) else "")
        return [self.name, str(self.shape), self.dtype.replace("torch.", ""),
                _fmt(self.min), _fmt(self.max), _fmt(self.mean), f"[{values}]"]


def _summary(t: Tensor) -> tuple[float | None, float | None, float | None]:
    """(min, max, mean) read in the tensor's own dtype, in two passes, without a float64 copy."""
    if t.numel() == 0:
        return None, None, None
    t = t.abs() if t.is_complex() else t
    low, high = torch.aminmax(t)  # one pass for both
    if not t.is_floating_point():
        return float(low), float(high), int(t.sum()) / t.numel()  # ints and bools: exact int64 sum
    mean = t.mean(dtype=torch.float32) if t.element_size() < 4 else t.mean()  # half: sum in float32
    return float(low), float(high), float(mean)


def _head(t: Tensor) -> list:
    """The first ``HEAD`` values in row-major order; a non-contiguous tensor is not copied whole."""
    flat = t.reshape(-1) if t.is_contiguous() else t[torch.unravel_index(torch.arange(min(HEAD, t.numel())), t.shape)]
    return flat[:HEAD].cpu().tolist()


def _fmt(value) -> str:
    if value is None or isinstance(value, int) or not math.isfinite(value):  # bools are ints
        return "-" if value is None else str(value)
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
        self.model, self.records, self.full, self.max_numel = model, records, full, max_numel
        self.patterns = [modules] if isinstance(modules, str) else None if modules is None else list(modules)
        self.trace, self._handles, self._counts = Trace(), [], {}
        self._seen: dict[tuple, tuple] = {}  # memory key -> (weakref to the tensor, _version, entry)

    def hooked_names(self) -> list[str]:
        """Names of the submodules that get a hook, in ``named_modules`` order."""
        if self.model is None:
            return []
        return [name for name, _ in self.model.named_modules()
                if (name if self.patterns is None else any(fnmatch.fnmatchcase(name, p) for p in self.patterns))]

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
        self.trace, self._counts, self._seen = Trace(), {}, {}
        modules = dict(self.model.named_modules()) if self.model is not None else {}
        for name in names:
            self._handles.append(modules[name].register_forward_hook(self._hook(name or "model")))
        _active = self
        return self

    def __exit__(self, *exc) -> None:
        global _active
        for handle in self._handles:
            handle.remove()
        self._handles, self._seen = [], {}
        _active = None

    def _hook(self, name: str):
        return lambda module, inputs, output: self._add(name, output, source="hook")

    def _add(self, name: str, value: Any, source: str) -> None:
        if source == "record" and not self.records:
            return
        for leaf_name, tensor in _leaves(name, value):
            seen = self._counts.get(leaf_name, 0)
            self._counts[leaf_name] = seen + 1
            unique = leaf_name if seen == 0 else f"{leaf_name}#{seen}"
            self.trace._append(self._entry(unique, tensor, source))

    def _entry(self, name: str, tensor: Tensor, source: str) -> TraceEntry:
        """A new entry, or an alias of the entry that holds the same data (see the module docstring)."""
        key = None if tensor.numel() == 0 or tensor.layout != torch.strided or tensor.is_inference() else \
            (tensor.device, tensor.dtype, tensor.data_ptr(), tuple(tensor.shape), tensor.stride())
        ref, version, entry = self._seen.get(key, (lambda: None, None, None))
        if (first := ref()) is not None and first._version == version == tensor._version:  # alive: memory not reused
            return replace(entry, name=name, source=source)
        entry = TraceEntry.from_tensor(name, tensor, source, self.full or tensor.numel() <= self.max_numel)
        if key is not None:
            self._seen[key] = (weakref.ref(tensor), tensor._version, entry)
        return entry

    # conveniences delegating to the trace
    def table(self, max_rows: int | None = None) -> str:
        return self.trace.table(max_rows)

    def to_text(self, rename: dict[str, str] | None = None) -> str:
        return self.trace.to_text(rename)


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
    if isinstance(t, Trace | Tracer):
        return t.trace if isinstance(t, Tracer) else t
    raise TypeError(f"diff needs Trace or Tracer objects, got {type(t).__name__}")


def _close(a: float | None, b: float | None, rtol: float, atol: float) -> bool:
    if a is None or b is None:
        return a is b
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= atol + rtol * abs(b)  # one NaN: False


def _diff_values(name: str, a: Tensor, b: Tensor, rtol: float, atol: float) -> Divergence | None:
    """Elementwise, ``DIFF_CHUNK`` elements at a time: a screen in the tensors' own dtype keeps the positions
    that differ or that rounding could misjudge (1e-5 >> float32's roundings); only those go to float64."""
    if torch.equal(a, b):  # the common case, in one pass
        return None
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    floating, wide = a.is_floating_point(), torch.complex128 if a.is_complex() else torch.float64
    count, worst = 0, (-1.0, 0, 0.0, 0.0)  # (max abs diff, flat index, value in a, value in b)
    for start in range(0, flat_a.numel(), DIFF_CHUNK):
        x, y = flat_a[start:start + DIFF_CHUNK], flat_b[start:start + DIFF_CHUNK]
        if floating:
            x, y = (x.float(), y.float()) if x.element_size() < 4 else (x, y)
            err, tol = (x - y).abs_(), y.abs().mul_(rtol).add_(atol)
            maybe = ~(err <= tol * (1 - 1e-5)) | tol.isinf() | ((tol < torch.finfo(x.dtype).tiny) & (err > 0))
        where = start + torch.nonzero(maybe if floating else x != y).squeeze(1)  # [K]; not floating: any change
        x, y = flat_a[where].to(wide), flat_b[where].to(wide)  # [K] each
        err = (x - y).abs()
        err = torch.where((err <= atol + rtol * y.abs()) | (x == y) | (x.isnan() & y.isnan()), -1.0,
                          err.nan_to_num(nan=math.inf))  # [K], -1 where they agree
        count += int((err >= 0).sum())
        if err.numel() and float(err.max()) > worst[0]:  # argmax: the first of equal maxima
            j = int(err.argmax())
            worst = (float(err[j]), int(where[j]), x[j].item(), y[j].item())
    if count == 0:
        return None
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst[1]), a.shape)) if a.dim() else ()
    return Divergence(name, "values", f"{count} of {a.numel()} values differ; max abs diff {worst[0]:.4g} at "
                      f"index {list(index)} ({worst[2]:.6g} vs {worst[3]:.6g})", worst[0], index)


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
    elementwise when both sides kept them (``|a - b| <= atol + rtol * |b|`` decided in float64, NaN
    equals NaN, equal infinities agree, no float64 copy of a whole tensor), otherwise the first values
    and min / max / mean with the same tolerance. A pair of ``values`` tensors (aliases) is compared once.

    Args:
        trace_a, trace_b: :class:`Trace` or :class:`Tracer`.
    """
    a, b = _as_trace(trace_a), _as_trace(trace_b)
    agreed = set()  # (id, id) of pairs of values tensors found equal
    for entry in a:
        if entry.name not in b:
            return Divergence(entry.name, "missing", "present in the first trace only")
        other = b[entry.name]
        pair = (id(entry.values), id(other.values))
        if entry.values is None or other.values is None or pair not in agreed:
            found = _diff_entry(entry, other, rtol, atol)
            if found is not None:
                return found
            agreed.add(pair)
    for entry in b:
        if entry.name not in a:
            return Divergence(entry.name, "missing", "present in the second trace only")
    return None
