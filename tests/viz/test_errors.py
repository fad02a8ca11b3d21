"""detviz.viz.errors: what each error figure draws, and the inputs it refuses."""
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from detviz import viz


def new_axes():
    fig = Figure()
    FigureCanvasAgg(fig)
    return fig.add_subplot()


def test_error_bars_one_per_type_in_order():
    ax = new_axes()
    assert viz.draw_error_bars(ax, {"Cls": 3.0, "Loc": 1.5, "Miss": 0.0}) is ax
    assert [round(p.get_width(), 2) for p in ax.patches] == [3.0, 1.5, 0.0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Cls", "Loc", "Miss"]  # the first on top
    assert {t.get_text().strip() for t in ax.texts} == {"3.00", "1.50", "0.00"}


def test_confusion_matrix_counts_and_rows_normalised():
    matrix = np.array([[3, 1, 0], [0, 2, 2], [1, 0, 0]])
    ax = new_axes()
    viz.draw_confusion_matrix(ax, matrix, ["cat", "dog", "background"])
    assert sorted(t.get_text() for t in ax.texts) == ["1", "1", "2", "2", "3"]  # zeros are left blank
    ax = new_axes()
    viz.draw_confusion_matrix(ax, matrix, ["cat", "dog", "background"], normalize=True)
    assert sorted(t.get_text() for t in ax.texts) == ["0.25", "0.50", "0.50", "0.75", "1.00"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog", "background"]


def test_a_large_confusion_matrix_shows_colours_only():
    ax = new_axes()
    labels = [f"class {k}" for k in range(40)] + ["background"]
    viz.draw_confusion_matrix(ax, np.eye(41, dtype=int), labels)
    assert len(ax.texts) == 0 and len(ax.get_xticklabels()) == 41


def test_pr_curves_skip_classes_without_gts_and_add_the_mean():
    recall = np.linspace(0, 1, 101)
    ax = new_axes()
    viz.draw_pr_curves(ax, {"cat": (recall, 1 - recall), "dog": (recall, np.full(101, -1.0)),
                            "bird": (recall, np.ones(101))})
    assert [line.get_label() for line in ax.lines] == ["cat", "bird", "mean"]
    np.testing.assert_allclose(ax.lines[-1].get_ydata(), (2 - recall) / 2)


def test_pr_curves_mean_survives_a_class_marked_nan_and_many_classes_keep_a_short_legend():
    recall = np.linspace(0, 1, 101)
    ax = new_axes()
    viz.draw_pr_curves(ax, {"cat": (recall, 1 - recall), "dog": (recall, np.full(101, np.nan))})
    assert [line.get_label() for line in ax.lines] == ["cat", "mean"]  # precision_recall_curves' NaN: no gt
    np.testing.assert_allclose(ax.lines[-1].get_ydata(), 1 - recall)
    ax = new_axes()
    viz.draw_pr_curves(ax, {f"class {k}": (recall, 1 - recall) for k in range(30)})
    assert len(ax.lines) == 31
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["mean"]


def test_missed_reasons_leave_out_the_total():
    ax = new_axes()
    viz.draw_missed_reasons(ax, {"total": 5, "confused": 2, "low_score": 3})
    assert [p.get_height() for p in ax.patches] == [2, 3]
    assert "(5 in all)" in ax.get_title()


@pytest.mark.parametrize("call, message", [
    (lambda ax: viz.draw_error_bars(ax, {}), "errors must be a non-empty dict"),
    (lambda ax: viz.draw_error_bars(ax, {"Cls": float("nan")}), r"errors\['Cls'\] must be a finite number"),
    (lambda ax: viz.draw_confusion_matrix(ax, np.zeros((3, 3)), ["a", "b"]), "one label per row"),
    (lambda ax: viz.draw_pr_curves(ax, {}), "curves must be a non-empty dict"),
])
def test_bad_inputs_name_what_was_expected(call, message):
    with pytest.raises(ValueError, match=message):
        call(new_axes())
