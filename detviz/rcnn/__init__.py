"""Faster R-CNN (walkthroughs 06-07), torchvision's design written out from detviz parts.

* ``transform.py``: ``GeneralizedRCNNTransform`` (normalise, resize to 800 / 1333, pad to 32, map back);
* ``rpn.py``: ``RPNHead``, ``RegionProposalNetwork`` (anchors, Matcher, sampler, proposals step by step);
* ``roi_heads.py``: ``RoIHeads``, ``TwoMLPHead``, ``FastRCNNPredictor``, ``fastrcnn_loss``;
* ``model.py``: ``FasterRCNN`` with torchvision's arguments and ``state_dict`` keys.
"""
from detviz.rcnn.model import FasterRCNN
from detviz.rcnn.roi_heads import FastRCNNPredictor, RoIHeads, TwoMLPHead, fastrcnn_loss
from detviz.rcnn.rpn import RegionProposalNetwork, RPNHead
from detviz.rcnn.transform import GeneralizedRCNNTransform

__all__ = ["FasterRCNN", "FastRCNNPredictor", "RoIHeads", "TwoMLPHead", "fastrcnn_loss", "RegionProposalNetwork",
           "RPNHead", "GeneralizedRCNNTransform"]
