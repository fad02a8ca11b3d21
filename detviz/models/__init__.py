"""Whole detectors composed from detviz parts."""
