"""detviz.viz.assignment's report figures on a hand-made COCO json and on the photos."""
import matplotlib
import pytest

from detviz import viz
from detviz.analysis import assignment
from detviz.datasets import CocoDetection
from detviz.fixtures import DATA_DIR
from detviz.gfl.model import NanoDetConfig

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MPL = dict(baseline_dir="baseline", style="default", tolerance=2, savefig_kwargs={"dpi": 60})
PHOTOS = CocoDetection(DATA_DIR / "photos", DATA_DIR / "photos" / "annotations.json")


def test_plots_and_browse_draw(two_image_coco):
    report = assignment.assignment_report(two_image_coco, assignment.ATSSPriorAssigner.from_config(NanoDetConfig()))
    fig, axes = plt.subplots(1, 4)
    assert viz.plot_report(axes[0], report) is axes[0]
    assert len(axes[0].collections[0].get_offsets()) == 4
    viz.plot_buckets(axes[1], [report, report])
    assert len(axes[1].patches) == 6
    viz.browse_dataset(axes[2:], two_image_coco, [0, 1])
    assert len(axes[2].patches) == 3 and "3 boxes" in axes[2].get_title()
    plt.close(fig)


def test_plot_buckets_names_its_keys():
    with pytest.raises(ValueError, match="'size' or 'aspect'"):
        viz.plot_buckets(None, [], key="colour")


@pytest.mark.mpl_image_compare(**MPL)
def test_figure_report_and_buckets():
    report = assignment.assignment_report(PHOTOS, assignment.ATSSPriorAssigner.from_config(NanoDetConfig()))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    viz.plot_report(axes[0], report)
    viz.plot_buckets(axes[1], [report], key="size")
    fig.tight_layout()
    return fig
