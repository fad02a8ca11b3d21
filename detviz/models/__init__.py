"""Whole detectors composed from detviz parts."""
from detviz.models.faster_rcnn import FasterRCNN
from detviz.models.nanodet import NanoDet, NanoDetConfig, build_nanodet
from detviz.models.sparse_detector import SparseDetector, SparseDetectorConfig, build_sparse_detector, sparse_predict
from detviz.models.transform import GeneralizedRCNNTransform

__all__ = ["FasterRCNN", "GeneralizedRCNNTransform", "NanoDet", "NanoDetConfig", "build_nanodet", "SparseDetector",
           "SparseDetectorConfig", "build_sparse_detector", "sparse_predict"]
