"""The four trainable detectors in one place, each from its family's folder."""
from detviz.gfl.model import NanoDet, NanoDetConfig, build_nanodet
from detviz.rcnn.model import FasterRCNN
from detviz.rcnn.transform import GeneralizedRCNNTransform
from detviz.sparse.model import SparseDetector, SparseDetectorConfig, build_sparse_detector
from detviz.sparse.predict import sparse_predict
from detviz.yolo.model import YOLOv3, YOLOv3Config, build_yolov3

__all__ = ["FasterRCNN", "GeneralizedRCNNTransform", "NanoDet", "NanoDetConfig", "build_nanodet", "SparseDetector",
           "SparseDetectorConfig", "build_sparse_detector", "sparse_predict", "YOLOv3", "YOLOv3Config", "build_yolov3"]
