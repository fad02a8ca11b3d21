"""Explanations that look inside a detector.

* ``assignment.py``: which gts of a dataset the model's training assigner gives positive priors,
  per size and aspect (``assignment_report``, ``compare_reports``).
"""
from detviz.analysis.assignment import (AssignmentReport, ATSSPriorAssigner, MaxIoUPriorAssigner, assignment_report,
                                        compare_reports)

__all__ = ["ATSSPriorAssigner", "AssignmentReport", "MaxIoUPriorAssigner", "assignment_report", "compare_reports"]
