"""Detection heads with their targets and losses."""
from detviz.heads.gfl import GFLHead, gfl_loss, loss_single
from detviz.heads.gfl_targets import gfl_targets, gfl_targets_single
from detviz.heads.roi import FastRCNNPredictor, RoIHeads, TwoMLPHead
from detviz.heads.rpn import RegionProposalNetwork, RPNHead

__all__ = ["GFLHead", "gfl_loss", "loss_single", "gfl_targets", "gfl_targets_single", "FastRCNNPredictor",
           "RoIHeads", "TwoMLPHead", "RegionProposalNetwork", "RPNHead"]
