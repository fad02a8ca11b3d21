"""detviz.trace: record points, hooks, nested outputs, save/load, diff."""
import math
from collections import namedtuple

import numpy as np
import pytest
import torch
from torch import nn
from torch.testing import assert_close
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torchvision.models.detection.image_list import ImageList

from detviz import trace
from detviz.trace import Trace, Tracer, diff, record


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.conv(x)  # [B, 4, H, W]
        record("tiny.pooled", y.mean(dim=(2, 3)))
        return self.fc(y.mean(dim=(2, 3)))


Pair = namedtuple("Pair", ["left", "right"])


class Nested(nn.Module):
    def forward(self, x):
        return {"list": [x, (x + 1, 3)], "pair": Pair(x * 2, None), "images": ImageList(x, [(2, 3)]), "text": "skip"}


class Holder(nn.Module):
    def __init__(self):
        super().__init__()
        self.nested = Nested()

    def forward(self, x):
        return self.nested(x)


def _tiny_trace(seed=0, **kwargs):
    torch.manual_seed(seed)
    model = Tiny()
    with Tracer(model, **kwargs) as tr:
        model(torch.ones(1, 3, 4, 4))
    return model, tr


def test_record_without_tracer_is_a_no_op_that_never_touches_the_value():
    class Untouchable:
        def __getattribute__(self, name):
            raise AssertionError(f"record looked at the value ({name})")
    record("x", Untouchable())
    assert trace.active_tracer() is None


def test_hooks_and_record_points_in_call_order():
    model, tr = _tiny_trace()
    assert tr.trace.names() == ["conv", "tiny.pooled", "fc"]
    assert tr.trace["conv"].shape == [1, 4, 4, 4]
    assert tr.trace["tiny.pooled"].source == "record" and tr.trace["fc"].source == "hook"
    assert_close(tr.trace["fc"].values, model(torch.ones(1, 3, 4, 4)).detach())


def test_module_patterns_and_records_off():
    _, tr = _tiny_trace(modules=["c*"], records=False)
    assert tr.trace.names() == ["conv"]
    with pytest.raises(ValueError, match="match no submodule"):
        with Tracer(Tiny(), modules=["backbone"]):
            pass


def test_nested_outputs_are_flattened_with_names():
    x = torch.arange(6.0).reshape(2, 3)
    with Tracer(Holder(), modules=["nested"]) as tr:
        Holder()(x)  # a different instance: not hooked
    assert len(tr.trace) == 0
    holder = Holder()
    with Tracer(holder, modules=["nested"]) as tr:
        holder(x)
    assert tr.trace.names() == ["nested.list[0]", "nested.list[1][0]", "nested.list[1][1]", "nested.pair.left",
                                "nested.images.tensors", "nested.images.image_sizes"]
    assert tr.trace["nested.list[1][1]"].shape == [] and tr.trace["nested.list[1][1]"].head == [3]
    assert_close(tr.trace["nested.images.image_sizes"].values, torch.tensor([[2, 3]]))


def test_repeated_names_get_a_suffix():
    with Tracer() as tr:
        for i in range(3):
            record("loop", torch.tensor(i))
    assert tr.trace.names() == ["loop", "loop#1", "loop#2"]
    assert tr.to_text() == "loop=0\nloop#1=1\nloop#2=2"


def test_summaries_by_default_full_values_on_request():
    big = torch.arange(100.0)
    with Tracer(max_numel=10) as tr:
        record("big", big)
        record("small", big[:3])
    entry = tr.trace["big"]
    assert entry.values is None and entry.head == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert (entry.min, entry.max, entry.mean) == (0.0, 99.0, 49.5)
    assert tr.trace["small"].values is not None
    with Tracer(full=True) as tr:
        record("big", big)
    assert_close(tr.trace["big"].values, big)


def test_table_text_and_html_hold_names_and_no_object_ids():
    _, tr = _tiny_trace()
    text, page = tr.table(), tr.trace._repr_html_()
    assert text.splitlines()[0].split() == ["name", "shape", "dtype", "min", "max", "mean", "values"]
    assert "tiny.pooled" in text and "[1, 4, 4, 4]" in text and "0x" not in text
    assert "<td>tiny.pooled</td>" in page
    assert tr.to_text(rename={"conv": "x"}).splitlines()[0] == "x.shape=[1, 4, 4, 4]"


def test_save_load_round_trip(tmp_path):
    _, tr = _tiny_trace(max_numel=8)
    tr.trace.save(tmp_path / "t.pt")
    loaded = Trace.load(tmp_path / "t.pt")
    assert loaded.names() == tr.trace.names()
    assert loaded["conv"].values is None and loaded["conv"].mean == tr.trace["conv"].mean
    assert diff(loaded, tr, rtol=0, atol=0) is None
    torch.save({"x": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a saved detviz trace"):
        Trace.load(tmp_path / "other.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((tmp_path / "t.pt").read_bytes()[:200])
    with pytest.raises(ValueError, match=f"cannot read trace {truncated} \\(truncated or not a torch file\\?\\)"):
        Trace.load(truncated)
    with pytest.raises(FileNotFoundError, match="trace file .*missing.pt does not exist"):
        Trace.load(tmp_path / "missing.pt")


def test_diff_finds_a_planted_divergence_and_its_index():
    a_model, a = _tiny_trace(full=True)
    b_model = Tiny()
    b_model.load_state_dict(a_model.state_dict())
    with torch.no_grad():
        b_model.fc.bias[1] += 0.5
    with Tracer(b_model, full=True) as b:
        b_model(torch.ones(1, 3, 4, 4))
    found = diff(a, b)
    assert found.name == "fc" and found.kind == "values" and found.index == (0, 1)
    assert found.max_abs_diff == pytest.approx(0.5, abs=1e-5)
    assert diff(a, b, atol=0.6) is None


def test_diff_reports_missing_shape_dtype_and_summary():
    with Tracer() as a:
        record("x", torch.zeros(2, 3))
    with Tracer() as b:
        record("x", torch.zeros(3, 2))
    assert diff(a, b).kind == "shape"
    with Tracer() as c:
        record("x", torch.zeros(2, 3, dtype=torch.float64))
    assert diff(a, c).kind == "dtype"
    with Tracer() as d:
        record("x", torch.zeros(2, 3))
        record("y", torch.zeros(1))
    assert diff(a, d) == ("y", "missing", "present in the second trace only", None, None)
    big = torch.zeros(200)
    with Tracer() as e:
        record("x", big)
    with Tracer() as f:
        record("x", big.index_fill(0, torch.tensor([150]), 1.0))
    found = diff(e, f)
    assert found.kind == "summary" and "max" in found.detail


def test_no_state_left_after_exit_even_on_error():
    model = Tiny()
    with pytest.raises(RuntimeError, match="boom"):
        with Tracer(model):
            raise RuntimeError("boom")
    assert trace.active_tracer() is None
    assert all(not m._forward_hooks for m in model.modules())


def test_nested_and_reentrant_tracers_raise_clear_errors():
    outer = Tracer()
    with outer:
        with pytest.raises(RuntimeError, match="nested tracers are not supported"):
            with Tracer():
                pass
        with pytest.raises(RuntimeError, match="already active"):
            with outer:
                pass
        assert trace.active_tracer() is outer
    with pytest.raises(TypeError, match="nn.Module"):
        Tracer("model")
    with pytest.raises(TypeError, match="Trace or Tracer"):
        diff([], Trace())


class Block(nn.Module):
    """conv -> act, returning the act's output: a container that hands on its last child's tensor."""

    def __init__(self, act: nn.Module):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.act = act
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).reshape(2, 1, 1, 1))
            self.conv.bias.zero_()

    def forward(self, x):
        return self.act(self.conv(x))


def _count_summaries(monkeypatch) -> list:
    calls = []
    summary = trace._summary
    monkeypatch.setattr(trace, "_summary", lambda t: calls.append(t.shape) or summary(t))
    return calls


@pytest.mark.parametrize("full", [False, True])
def test_a_container_gets_an_alias_of_its_childs_output_not_a_copy(monkeypatch, full):
    model = nn.Sequential(Block(nn.Tanh()))
    calls = _count_summaries(monkeypatch)
    x = torch.arange(-2.0, 2.0).reshape(1, 1, 2, 2)
    with Tracer(model, full=full) as tr:
        model(x)
    assert tr.trace.names() == ["0.conv", "0.act", "0"]  # every module keeps its entry, innermost first
    assert len(calls) == 2  # the container's entry is not summarised again
    inner, outer = tr.trace["0.act"], tr.trace["0"]
    assert outer.values is inner.values and (outer.min, outer.max, outer.mean, outer.head) == \
        (inner.min, inner.max, inner.mean, inner.head)
    assert outer.source == "hook" and outer.shape == [1, 2, 2, 2]


def test_a_record_point_returned_by_its_module_is_recorded_once(monkeypatch):
    class Recorder(nn.Module):
        def forward(self, x):
            y = x * 2
            record("recorder.y", y)
            return y

    model = nn.Sequential(Recorder())
    calls = _count_summaries(monkeypatch)
    with Tracer(model, full=True) as tr:
        model(torch.ones(3))
    assert tr.trace.names() == ["recorder.y", "0"] and len(calls) == 1
    assert tr.trace["0"].values is tr.trace["recorder.y"].values and tr.trace["0"].source == "hook"


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_an_inplace_activation_gets_its_own_entry_and_the_one_before_keeps_its_values(mode):
    model = nn.Sequential(Block(nn.ReLU(inplace=True)))
    x = torch.arange(-2.0, 2.0).reshape(1, 1, 2, 2)
    with Tracer(model, full=True) as tr, mode():
        out = model(x)
    conv, act, block = tr.trace["0.conv"], tr.trace["0.act"], tr.trace["0"]
    assert conv.min == -2.0 and conv.values.min() == -2.0  # before the ReLU changed it in place
    assert act.min == 0.0 and act.values is not conv.values
    assert_close(act.values, out)
    assert_close(conv.values, nn.functional.conv2d(x, model[0].conv.weight))
    assert_close(block.values, out)
    assert block.mean == act.mean
    if mode is torch.no_grad:  # inference tensors carry no version: the container's entry is a copy there
        assert block.values is act.values


def test_memory_handed_to_a_new_tensor_is_not_taken_for_the_old_one():
    buffer = np.zeros(1000, dtype=np.float32)
    with Tracer(full=True) as tr:
        for value in (1.0, 2.0, 3.0):
            buffer[:] = value
            record("temp", torch.from_numpy(buffer))  # a new tensor at the same address each time, version 0
    assert [e.mean for e in tr.trace] == [1.0, 2.0, 3.0]
    assert [float(e.values[0]) for e in tr.trace] == [1.0, 2.0, 3.0]


def test_summaries_equal_the_float64_computation():
    torch.manual_seed(0)
    x = torch.randn(3_000_000) * 10 + 1e-3  # a mean far below mean(|x|): float32 sums cancel
    grid = torch.arange(20.0).reshape(4, 5).t()  # non-contiguous
    with Tracer() as tr:
        record("x", x)
        record("half", x.half())
        record("ints", torch.arange(-7, 1000, dtype=torch.int64))
        record("mask", torch.arange(10) < 3)
        record("grid", grid)
        record("nan", torch.tensor([1.0, float("nan")]))
    for name, t in (("x", x), ("half", x.half())):
        entry, t64 = tr.trace[name], t.double()
        assert (entry.min, entry.max) == (float(t64.min()), float(t64.max()))  # exact
        assert abs(entry.mean - float(t64.mean())) <= 1e-6 * float(t64.abs().mean())  # the documented tolerance
    assert tr.trace["ints"].mean == torch.arange(-7, 1000).double().mean().item()
    assert (tr.trace["mask"].min, tr.trace["mask"].max, tr.trace["mask"].mean) == (0.0, 1.0, 0.3)
    assert tr.trace["grid"].head == [0.0, 5.0, 10.0, 15.0, 1.0]  # row-major order of the transposed view
    assert all(math.isnan(v) for v in (tr.trace["nan"].min, tr.trace["nan"].max, tr.trace["nan"].mean))


class Float64Outputs(TorchDispatchMode):
    """Sizes of the float64 tensors every torch operation inside the block produces."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.sizes += [t.numel() for t in tree_leaves(out) if isinstance(t, torch.Tensor) and t.dtype == torch.float64]
        return out


def _float64_divergence(a, b, rtol=1e-5, atol=1e-6):
    """(values that differ, max abs diff, its multi-index) by the float64 formula, whole tensors."""
    a64, b64 = a.double(), b.double()
    err = (a64 - b64).abs()
    bad = ~((err <= atol + rtol * b64.abs()) | (a64.isnan() & b64.isnan()) | (a64 == b64))
    err = torch.where(bad, err.nan_to_num(nan=math.inf), -1.0)
    return int(bad.sum()), float(err.max()), tuple(int(i) for i in torch.unravel_index(err.argmax(), a.shape))


def test_diff_finds_the_largest_difference_in_a_large_tensor_without_float64_copies():
    torch.manual_seed(0)
    a = torch.randn(3, 1000, 1000)  # three DIFF_CHUNKs
    a[2, 500, 0], a[2, 999, 999] = 0.5, 1.0
    b = a.clone()
    b[0, 0, 10] += 0.25
    b[2, 500, 0], b[2, 999, 999] = -0.25, 1.75  # the largest, in the last chunk, twice: the first is reported
    b[1, 3, 4] = float("nan")
    with Tracer(full=True) as ta:
        record("big", a)
    with Tracer(full=True) as tb:
        record("big", b)
    with Float64Outputs() as spy:
        found = diff(ta, tb)
    count, largest, index = _float64_divergence(a, b)
    assert found.kind == "values" and found.index == index == (1, 3, 4)  # NaN vs a number: an infinite difference
    assert found.max_abs_diff == largest == math.inf and f"{count} of 3000000 values differ" in found.detail
    assert max(spy.sizes) <= 4  # float64 only for the four positions that differ
    b[1, 3, 4] = a[1, 3, 4]
    with Tracer(full=True) as tb:
        record("big", b)
    found = diff(ta, tb)
    count, largest, index = _float64_divergence(a, b)
    assert (found.index, found.max_abs_diff, count) == ((2, 500, 0), largest, 3) and found.index == index


def test_diff_decides_values_at_the_tolerance_as_float64_does():
    # |1e-6 - (-1e-14)| = 1.00000001e-6 > atol in float64, but float32 rounds it to float32(1e-6) = its atol
    a = torch.tensor([1e-6, 1e-6, 0.5, -3e-7])
    b = torch.tensor([-1e-14, -4e-14, 0.5, -3e-7])
    assert bool(((a - b).abs() <= 1e-6).all())  # the float32 formula alone would call them equal
    count, largest, index = _float64_divergence(a, b, rtol=0.0, atol=1e-6)
    with Tracer() as ta:
        record("x", a)
    with Tracer() as tb:
        record("x", b)
    found = diff(ta, tb, rtol=0.0, atol=1e-6)
    assert count == 2 and "2 of 4 values differ" in found.detail
    assert (found.index, found.max_abs_diff) == (index, largest) == ((1,), float(a[1].double() - b[1].double()))
    torch.manual_seed(1)
    a = torch.rand(200_000) + 0.5
    b = (a.double() * (1 + 1e-5 * (1 + 1e-4 * torch.randn(200_000, dtype=torch.float64)))).float()  # |a-b| ~ rtol|b|
    with Tracer(full=True) as tb:
        record("x", b)
    with Tracer(full=True) as ta:
        record("x", a)
    count, largest, index = _float64_divergence(b, a, rtol=1e-5, atol=0.0)
    found = diff(tb, ta, rtol=1e-5, atol=0.0)
    assert f"{count} of 200000 values differ" in found.detail and (found.index, found.max_abs_diff) == (index, largest)


def test_diff_of_integers_and_infinities():
    with Tracer(full=True) as a:
        record("labels", torch.arange(100))
        record("mask", torch.tensor([0.0, -math.inf, math.inf]))
    with Tracer(full=True) as b:
        record("labels", torch.arange(100).index_fill(0, torch.tensor([70]), 3))
        record("mask", torch.tensor([0.0, -math.inf, math.inf]))
    found = diff(a, b)
    assert (found.name, found.index, found.max_abs_diff) == ("labels", (70,), 67.0)
    assert diff(a.trace.select("mask"), b.trace.select("mask")) is None  # equal infinities agree


def test_diff_compares_aliased_values_once_and_save_keeps_them_shared(monkeypatch, tmp_path):
    model = nn.Sequential(Block(nn.Tanh()))
    with Tracer(model, full=True) as tr:
        model(torch.ones(1, 1, 2, 2))
    compared = []
    diff_values = trace._diff_values
    monkeypatch.setattr(trace, "_diff_values", lambda name, *args: compared.append(name) or diff_values(name, *args))
    tr.trace.save(tmp_path / "t.pt")
    loaded = Trace.load(tmp_path / "t.pt")
    assert loaded["0"].values is loaded["0.act"].values
    assert diff(tr, loaded, rtol=0, atol=0) is None and compared == ["0.conv", "0.act"]
