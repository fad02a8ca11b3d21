"""What to do when training meets a NaN or an Inf: find where it starts, write it down, stop.

When a step's loss (or a box inside it) is non-finite, :func:`diagnose` runs the same batch through
the family's loss once more under a :class:`~detviz.trace.Tracer` hooked on every submodule, and
names the first traced tensor holding a NaN or an Inf in forward order (a module's output is
recorded when the module returns, so the first one is where the trouble starts, not the container
around it). It also checks the batch itself: only a batch that really holds a NaN or an Inf is
blamed. :func:`write_report` writes it all to ``OUT/nonfinite.txt``; training then stops with a
:class:`NonFiniteError`, and the last checkpoint written before stays as it was.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from detviz._io import write_atomic
from detviz.trace import Tracer

__all__ = ["NONFINITE_NAME", "NonFiniteError", "Diagnosis", "is_nonfinite_error", "diagnose", "write_report"]

NONFINITE_NAME = "nonfinite.txt"
FINITE_MESSAGES = ("must be finite", "non-finite", "NaN", "Inf")  # how detviz's own checks word it


class NonFiniteError(FloatingPointError):
    """Training stopped on a NaN or an Inf; the message names the step, the term and the report file."""


def is_nonfinite_error(error: Exception) -> bool:
    """Whether ``error`` (raised inside a family's loss) is a box or tensor check refusing NaN or Inf."""
    return isinstance(error, (ValueError, RuntimeError)) and any(word in str(error) for word in FINITE_MESSAGES)


def _finite(value) -> bool:
    return value is None or math.isfinite(value)


@dataclass
class Diagnosis:
    """Where a non-finite step went wrong.

    Attributes:
        step: the 1-based step that failed. lr: its learning rate.
        losses: every loss term's value (NaN or Inf where it broke); empty when the loss itself raised.
        term: the first non-finite term, or what raised inside the loss.
        first_tensor: "name shape dtype min max mean" of the first non-finite traced tensor, or None.
        bad_input: what in the batch is non-finite ("" when the batch is finite).
        image_ids, boxes, labels: the batch's images and gts (xyxy in network-input pixels).
    """

    step: int
    lr: float
    losses: dict
    term: str
    first_tensor: str | None
    bad_input: str
    image_ids: list
    boxes: list = field(default_factory=list)
    labels: list = field(default_factory=list)

    def message(self, report_path) -> str:
        where = (f"the batch itself is non-finite ({self.bad_input})" if self.bad_input else
                 "the batch is finite" + (f"; the first non-finite tensor is {self.first_tensor.split()[0]}"
                                          if self.first_tensor else ""))
        return f"step {self.step}: non-finite {self.term}; {where}. Details in {report_path}"


def _bad_input(images, boxes) -> str:
    problems = []
    if not torch.isfinite(images).all():
        bad = sorted({int(i) for i in torch.nonzero(~torch.isfinite(images))[:, 0]})
        problems.append(f"images {bad} of the batch hold NaN or Inf pixels")
    for k, b in enumerate(boxes):
        if not torch.isfinite(b).all():
            problems.append(f"the gt boxes of image {k} of the batch hold NaN or Inf")
    return "; ".join(problems)


def _first_nonfinite(family, model, module, images, boxes, labels, amp: bool) -> str | None:
    """The step's loss once more under a Tracer on every submodule; the first non-finite entry."""
    tracer = Tracer(module, full=False)
    with tracer, torch.no_grad():
        try:
            family.loss(model, module, images, boxes, labels, amp)
        except (ValueError, RuntimeError):
            pass  # the same check that stopped the step; the trace up to it is what is wanted
    for entry in tracer.trace:
        if not (_finite(entry.min) and _finite(entry.max) and _finite(entry.mean)):
            return (f"{entry.name} {entry.shape} {entry.dtype.replace('torch.', '')} min {entry.min} "
                    f"max {entry.max} mean {entry.mean}")
    return None


def diagnose(family, model, module, images, boxes, labels, *, step: int, lr: float, losses: dict, term: str,
             amp: bool, image_ids: list) -> Diagnosis:
    """Look at a failed step: its batch, and the first non-finite tensor of its forward and loss.

    Args:
        images: [B, 3, S, S]; boxes, labels: one tensor per image, as the step got them.
        losses: the step's loss terms as floats ({} when the loss raised); term: what failed.
        image_ids: the dataset image ids of the batch, in order.
    """
    first = _first_nonfinite(family, model, module, images, boxes, labels, amp)
    return Diagnosis(step=step, lr=lr, losses=losses, term=term, first_tensor=first,
                     bad_input=_bad_input(images, boxes), image_ids=list(image_ids),
                     boxes=[b.detach().cpu().tolist() for b in boxes],
                     labels=[x.detach().cpu().tolist() for x in labels])


def write_report(diagnosis: Diagnosis, path, class_names: dict, checkpoint: str) -> None:
    """``nonfinite.txt``: the step, rate, loss terms, first non-finite tensor and the batch, atomically."""
    d = diagnosis
    lines = [f"training stopped at step {d.step}: non-finite {d.term}",
             f"learning rate: {d.lr:.6g}",
             "loss terms: " + (", ".join(f"{k} = {v:.6g}" for k, v in d.losses.items()) or "none (the loss raised)"),
             "first non-finite tensor in forward order (detviz trace name, shape, dtype, min, max, mean): "
             + (d.first_tensor or "none among the traced module outputs and record points"),
             "batch: " + (f"non-finite: {d.bad_input}" if d.bad_input else "finite images and gt boxes"),
             f"last checkpoint kept: {checkpoint}",
             "",
             "images of the batch (image id: gt boxes xyxy in network-input pixels, class):"]
    for image_id, boxes, labels in zip(d.image_ids, d.boxes, d.labels):
        gts = "; ".join(f"[{', '.join(f'{v:.1f}' for v in box)}] {class_names.get(label, label)}"
                        for box, label in zip(boxes, labels))
        lines.append(f"  {image_id}: {gts or 'no gts'}")
    write_atomic(path, "\n".join(lines) + "\n")
