"""Whole detectors composed from detviz parts."""
from detviz.models.nanodet import NanoDet, NanoDetConfig, build_nanodet

__all__ = ["NanoDet", "NanoDetConfig", "build_nanodet"]
