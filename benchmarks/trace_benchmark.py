"""What detviz's tensor traces cost on a torchvision detector: a default Tracer, a full trace, diff.

    python benchmarks/trace_benchmark.py                      # mobilenet_v3_large_fpn, batch 8, 5 runs
    python benchmarks/trace_benchmark.py --model resnet50 --repeats 3 --full-images 0    # 1. only

Memory: two full traces of 4 images hold about 8 GiB (mobilenet_v3_large_fpn) and the float64
comparison 2.3 GiB more; a full ResNet-50 trace holds about 2.4 GiB per image.

The model is torchvision's ``fasterrcnn_mobilenet_v3_large_fpn`` (or ``fasterrcnn_resnet50_fpn``) with
``weights=None, weights_backbone=None`` (seeded; nothing is downloaded), in eval mode, on seeded random
images of 480 x 640 that the model resizes to 800 x 1066. Printed (stdout); no time is asserted:

1. One forward of ``--images`` images without gradients, plain and under ``Tracer(model)`` (every
   submodule hooked, summaries only), alternated, the median of ``--repeats`` runs after a warm-up of
   each; their ratio next to the goal of 1.2x, and the trace's entries.
2. ``Tracer(model, full=True)`` on ``--full-images`` images: entries, how many hold data of their own
   (the others are aliases of data recorded before: a container handing on its child's output), the
   bytes of kept values counted once per storage (what the trace holds) and once per entry (what a
   trace held when every entry copied its tensor), and the bytes of in-place activations' entries.
3. ``diff`` of two such full traces, the second from a copy of the model whose box-regression bias
   is moved by 0.5 (so the comparison walks nearly the whole trace before it finds the change),
   next to the earlier comparison that turned each pair of kept tensors into float64 whole: seconds,
   the largest resident memory above the start seen meanwhile (sampled every 5 ms), and what each found.
"""
from __future__ import annotations

import argparse
import copy
import gc
import math
import os
import statistics
import threading

import torch
import torchvision
from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn, fasterrcnn_resnet50_fpn

from detviz.trace import Tracer, diff
from timing import timed  # benchmarks/timing.py, beside this script

MODELS = {"mobilenet_v3": fasterrcnn_mobilenet_v3_large_fpn, "resnet50": fasterrcnn_resnet50_fpn}
GOAL = 1.2  # a default Tracer's forward at most this many times a plain one
MIB = 2 ** 20


def rss_mib() -> float:
    """This process' resident memory now, from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


class RssWatch:
    """The largest resident memory seen while the block runs, sampled every 5 ms by a thread."""

    def __enter__(self):
        gc.collect()
        self.start = self.peak = rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_mib())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib())


def float64_diff(trace_a, trace_b, rtol: float = 1e-5, atol: float = 1e-6):
    """The earlier comparison of full traces: each pair of kept tensors turned into float64 whole.
    (name, values that differ, max abs diff, flat index of it) of the first entry that differs, or None."""
    for entry in trace_a:
        a64, b64 = entry.values.to(torch.float64), trace_b[entry.name].values.to(torch.float64)
        bad = ~(((a64 - b64).abs() <= atol + rtol * b64.abs()) | (a64.isnan() & b64.isnan()))
        if bad.any():
            err = torch.where(bad, (a64 - b64).abs().nan_to_num(nan=math.inf), torch.zeros_like(a64))
            return entry.name, int(bad.sum()), float(err.max()), int(err.reshape(-1).argmax())
    return None


def kept_bytes(trace) -> tuple[int, int, int]:
    """(entries with data of their own, bytes once per storage, bytes once per entry) of kept values."""
    storages = {}
    per_entry = 0
    for entry in trace:
        if entry.values is not None:
            storage = entry.values.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
            per_entry += entry.values.numel() * entry.values.element_size()
    return len(storages), sum(storages.values()), per_entry


def timed_call(fn):
    """``(seconds, fn())``, timed by ``timed``."""
    box = []
    seconds = timed(lambda: box.append(fn()))
    return seconds, box[0]


def traced(model, images, **kwargs):
    with Tracer(model, **kwargs) as tracer, torch.no_grad():
        model(images)
    return tracer.trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="mobilenet_v3")
    parser.add_argument("--images", type=int, default=8, help="batch of the timed forwards")
    parser.add_argument("--full-images", type=int, default=4, help="batch of the full traces; 0: skip 2 and 3")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = MODELS[args.model](weights=None, weights_backbone=None).eval()
    gen = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 480, 640, generator=gen) for _ in range(args.images)]
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {torch.get_num_threads()} threads, "
          f"{MODELS[args.model].__name__}, images of 480 x 640 (resized to 800 x 1066)")

    def plain():
        with torch.no_grad():
            model(images)

    plain()
    entries = len(traced(model, images))  # warm-up of both
    times = {"plain": [], "tracer": []}
    for _ in range(args.repeats):
        times["plain"].append(timed(plain))
        times["tracer"].append(timed(lambda: traced(model, images)))
    base, hooked = statistics.median(times["plain"]), statistics.median(times["tracer"])
    print(f"\n1. forward of {args.images} images, median of {args.repeats} (alternated)")
    print(f"   plain {base:7.2f} s   Tracer(model) {hooked:7.2f} s   ratio {hooked / base:.2f} (goal <= {GOAL})   "
          f"{entries} entries", flush=True)

    if args.full_images == 0:
        return
    few = images[:args.full_images]
    full = traced(model, few, full=True)
    own, stored, per_entry = kept_bytes(full)
    print(f"\n2. Tracer(model, full=True) on {len(few)} images: {len(full)} entries, {own} with data of their own, "
          f"{len(full) - own} aliases")
    print(f"   kept values: {stored / MIB:.0f} MiB once per storage (held), {per_entry / MIB:.0f} MiB once per entry "
          f"(one copy each)", flush=True)
    modules = dict(model.named_modules())
    inplace = [e for e in full if getattr(modules.get(e.name.split("#")[0]), "inplace", False)]  # relu#1: 2nd call
    print(f"   of the held: {sum(e.values.nbytes for e in inplace) / MIB:.0f} MiB in the {len(inplace)} entries of "
          f"in-place activations (new data: their input's entry keeps the values from before)", flush=True)

    planted = copy.deepcopy(model)
    with torch.no_grad():
        planted.roi_heads.box_predictor.bbox_pred.bias[5] += 0.5
    other = traced(planted, few, full=True)
    print(f"\n3. diff of two full traces ({len(full)} entries; the second with a planted change)")
    for name, compare in (("detviz.trace.diff", diff), ("float64 whole tensors", float64_diff)):
        with RssWatch() as watch:
            seconds, found = timed_call(lambda: compare(full, other))  # noqa: B023 (called at once)
        print(f"   {name:22s} {seconds:6.2f} s   peak +{watch.peak - watch.start:5.0f} MiB   found: {found}", flush=True)


if __name__ == "__main__":
    main()
