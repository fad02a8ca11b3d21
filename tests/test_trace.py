"""detviz.trace: record points, hooks, nested outputs, save/load, diff."""
from collections import namedtuple

import pytest
import torch
from torch import nn
from torch.testing import assert_close
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
