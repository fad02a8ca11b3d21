"""The sparse RepPoints-style detector (walkthrough 10): dense objectness, top-n predictions, one-to-one matching.

* ``targets.py``: centerness objectness targets, Hungarian matching, focal and GIoU / L1 losses;
* ``head.py``: ``SparseRepPointsHead`` (top-n locations, sampled points, box and class per location);
* ``model.py``: ``SparseDetectorConfig``, ``build_sparse_detector`` (ShuffleNetV2 + PAN + head);
* ``predict.py``: ``sparse_predict`` (class scores of the top-n predictions, no NMS by default).
"""
from detviz.sparse.head import SparseHeadOutput, SparseRepPointsHead
from detviz.sparse.model import SparseDetector, SparseDetectorConfig, build_sparse_detector
from detviz.sparse.predict import sparse_predict
from detviz.sparse.targets import HungarianMatcher

__all__ = ["SparseHeadOutput", "SparseRepPointsHead", "SparseDetector", "SparseDetectorConfig",
           "build_sparse_detector", "sparse_predict", "HungarianMatcher"]
