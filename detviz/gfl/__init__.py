"""NanoDet-m's GFL detector (walkthroughs 02-05): the head, its ATSS targets, the model, inference.

* ``targets.py``: ``gfl_targets`` (ATSS per image, then labels / weights / ltrb targets per level);
* ``head.py``: ``GFLHead``, ``loss_single`` (every intermediate of one level), ``gfl_loss``;
* ``model.py``: ``NanoDetConfig``, ``build_nanodet`` (ShuffleNetV2 + PAN + head), ``normalize_images``;
* ``predict.py``: ``gfl_predict`` (NanoDet's ``get_bboxes``: expectation x stride, top-k, per-class NMS).
"""
from detviz.gfl.head import GFLHead, LossSingleSteps, gfl_loss, loss_single
from detviz.gfl.model import NanoDet, NanoDetConfig, build_nanodet, normalize_images
from detviz.gfl.predict import gfl_predict
from detviz.gfl.targets import GFLTargets, gfl_targets, gfl_targets_single

__all__ = ["GFLHead", "LossSingleSteps", "gfl_loss", "loss_single", "NanoDet", "NanoDetConfig", "build_nanodet",
           "normalize_images", "gfl_predict", "GFLTargets", "gfl_targets", "gfl_targets_single"]
