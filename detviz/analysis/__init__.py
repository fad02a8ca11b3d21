"""Explanations that look inside a detector.

* ``assignment.py``: which gts of a dataset the model's training assigner gives positive priors,
  per size and aspect (``assignment_report``, ``compare_reports``);
* ``missed.py``: one reason per missed gt, joined to its positive priors in training
  (``why_missed``, ``prior_evidence``);
* ``errors.py``: every error analysis of one results list at once (``analyze_results``, ``summary``);
* ``augmentation.py``: each gt's fate over random training warps (clipped away, too small, unassigned).
"""
from detviz.analysis.assignment import (AssignmentReport, ATSSPriorAssigner, MaxIoUPriorAssigner, assignment_report,
                                        compare_reports)
from detviz.analysis.augmentation import AugmentationAudit, augmentation_audit
from detviz.analysis.errors import ErrorAnalysis, analyze_results, object_rows, summary
from detviz.analysis.missed import MissedGT, PriorEvidence, count_reasons, prior_evidence, why_missed

__all__ = ["ATSSPriorAssigner", "AssignmentReport", "MaxIoUPriorAssigner", "assignment_report", "compare_reports",
           "ErrorAnalysis", "analyze_results", "object_rows", "summary", "MissedGT", "PriorEvidence", "count_reasons",
           "prior_evidence", "why_missed", "AugmentationAudit", "augmentation_audit"]
