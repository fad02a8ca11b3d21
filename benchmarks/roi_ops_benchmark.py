"""Time and memory of detviz.roi_ops against torchvision.ops on notebook 07's RoI input.

    python benchmarks/roi_ops_benchmark.py                        # RoI Align and RoI Pool, median of 3
    python benchmarks/roi_ops_benchmark.py --ops align --repeats 5 --threads 1
    python benchmarks/roi_ops_benchmark.py --chunk-bytes 1048576 16777216 0   # 0: one chunk for all RoIs

The input has the size notebook 07 gives its RoI Align twin: a ``[2, 1280, 25, 39]`` map (two
photos padded to 800 x 1248, a stride-32 backbone), 1024 boxes (512 per image; widths 16..900 px
and heights 12..800 px, log-uniform, inside the image, like the sampled proposals), a 7 x 7
output, ``spatial_scale`` 1/32 and ``sampling_ratio`` 2 (RoI Pool has none), all from ``--seed``.

Every variant (op, implementation, pass, chunk size) runs in a fresh subprocess, so that one
variant's memory, allocator state and thread pool never touch another's. The subprocess builds
the inputs, makes one warm-up call on a tiny input, then ``--repeats`` calls. "forward" runs on
an input without grad; "forward + backward" on an input that requires grad, then ``backward``
with a fixed output gradient (built with the inputs). Printed per variant: the median wall time
(``timing.timed``) and the extra memory: the peak resident memory (``VmHWM``, reset before the
first call through ``/proc/self/clear_refs``) during the first call, minus the resident memory
with the inputs built. Each detviz row is set against torchvision's, with the goal: at most 3x
its time and 2x its extra memory. Nothing is asserted; Linux only (``/proc``).

The load average is printed because it decides the two-thread figures: detviz runs thousands of
short parallel torch ops, and at the end of each one libgomp's threads spin-wait for each other;
when other processes hold the cores, a waiting thread burns the time slice its partner needs.
torchvision's CPU kernels are single-threaded and do not notice. ``--threads 1`` compares like
with like; ``OMP_WAIT_POLICY=passive`` in the environment shows the two-thread figures without
the spinning.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import torch
import torchvision

from timing import timed  # benchmarks/timing.py, beside this script

IMAGE_HW = (800, 1248)
MAP_SHAPE = (2, 1280, 25, 39)  # [B, C, H, W]
ROIS_PER_IMAGE = 512
OUTPUT_SIZE, SPATIAL_SCALE, SAMPLING_RATIO = 7, 1 / 32, 2
TIME_GOAL, MEMORY_GOAL = 3.0, 2.0  # detviz / torchvision
PASSES = ("forward", "forward + backward")


def make_input(seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The feature map and one Tensor[512, 4] of xyxy boxes (image pixels) per image."""
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(MAP_SHAPE, generator=gen)
    height, width = IMAGE_HW
    boxes = []
    for _ in range(MAP_SHAPE[0]):
        lo, hi = torch.tensor([16.0, 12.0]).log(), torch.tensor([900.0, 800.0]).log()
        wh = (lo + (hi - lo) * torch.rand(ROIS_PER_IMAGE, 2, generator=gen)).exp().minimum(torch.tensor([width, height]))
        x1 = torch.rand(ROIS_PER_IMAGE, generator=gen) * (width - wh[:, 0])
        y1 = torch.rand(ROIS_PER_IMAGE, generator=gen) * (height - wh[:, 1])
        boxes.append(torch.stack([x1, y1, x1 + wh[:, 0], y1 + wh[:, 1]], dim=1))  # [512, 4]
    return features, boxes


def operation(op: str, implementation: str, chunk_bytes: int):
    """``f(features, boxes)`` for one variant; chunk_bytes 0 means one chunk for all RoIs."""
    if implementation == "torchvision":
        if op == "align":
            return lambda x, b: torchvision.ops.roi_align(x, b, OUTPUT_SIZE, SPATIAL_SCALE, SAMPLING_RATIO)
        return lambda x, b: torchvision.ops.roi_pool(x, b, OUTPUT_SIZE, SPATIAL_SCALE)
    from detviz.roi_ops import roi_align, roi_pool

    chunk_bytes = chunk_bytes or 2**62
    if op == "align":
        return lambda x, b: roi_align(x, b, OUTPUT_SIZE, SPATIAL_SCALE, SAMPLING_RATIO, chunk_bytes=chunk_bytes)
    return lambda x, b: roi_pool(x, b, OUTPUT_SIZE, SPATIAL_SCALE, chunk_bytes=chunk_bytes)


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(op: str, implementation: str, backward: bool, chunk_bytes: int, repeats: int, seed: int) -> dict:
    """One variant in this process: median seconds, and extra MiB during the first call."""
    fn = operation(op, implementation, chunk_bytes)
    fn(torch.rand(1, 2, 4, 4), [torch.tensor([[0.0, 0, 50, 50]])])  # warm-up: imports, kernel registration
    features, boxes = make_input(seed)
    num_rois = ROIS_PER_IMAGE * MAP_SHAPE[0]
    grad = torch.randn(num_rois, MAP_SHAPE[1], OUTPUT_SIZE, OUTPUT_SIZE, generator=torch.Generator().manual_seed(seed + 1))

    def call():
        x = features.clone().requires_grad_(True) if backward else features
        out = fn(x, boxes)
        if backward:
            out.backward(grad)

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident memory
    base = _status_mib("VmRSS")
    seconds = [timed(call)]
    extra = _status_mib("VmHWM") - base
    seconds += [timed(call) for _ in range(repeats - 1)]
    return {"seconds": statistics.median(seconds), "extra_mib": extra}


def run_variant(args, op: str, implementation: str, backward: bool, chunk_bytes: int) -> dict:
    command = [sys.executable, __file__, "--child", op, implementation, str(int(backward)), str(chunk_bytes),
               "--repeats", str(args.repeats), "--seed", str(args.seed)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)} if args.threads else None
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", nargs="+", choices=("align", "pool"), default=["align", "pool"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads in each subprocess")
    parser.add_argument("--chunk-bytes", type=int, nargs="+", default=None,
                        help="detviz chunk sizes to run (0: one chunk for all RoIs); default: DEFAULT_CHUNK_BYTES")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", nargs=4, metavar=("OP", "IMPL", "BACKWARD", "CHUNK_BYTES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        op, implementation, backward, chunk_bytes = args.child
        print(json.dumps(measure(op, implementation, backward == "1", int(chunk_bytes), args.repeats, args.seed)))
        return
    from detviz.roi_ops import DEFAULT_CHUNK_BYTES

    chunk_sizes = args.chunk_bytes or [DEFAULT_CHUNK_BYTES]
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"{args.threads or torch.get_num_threads()} threads, OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
          f"load average {os.getloadavg()[0]:.1f}; "
          f"map {list(MAP_SHAPE)}, {ROIS_PER_IMAGE * MAP_SHAPE[0]} RoIs, output {OUTPUT_SIZE} x {OUTPUT_SIZE}, "
          f"scale 1/{round(1 / SPATIAL_SCALE)}, sampling_ratio {SAMPLING_RATIO} (align); median of {args.repeats}")
    print(f"goal: detviz within {TIME_GOAL:g}x torchvision's time and {MEMORY_GOAL:g}x its extra memory")
    print(f"{'op':6s} {'pass':19s} {'implementation':26s} {'time s':>8s} {'x tv':>6s} {'extra MiB':>10s} {'x tv':>6s}  goal")
    for op in args.ops:
        for backward in (False, True):
            tv = run_variant(args, op, "torchvision", backward, 0)
            print(f"{op:6s} {PASSES[backward]:19s} {'torchvision':26s} {tv['seconds']:8.2f} {'':6s} {tv['extra_mib']:10.0f}")
            for chunk_bytes in chunk_sizes:
                dv = run_variant(args, op, "detviz", backward, chunk_bytes)
                time_ratio, memory_ratio = dv["seconds"] / tv["seconds"], dv["extra_mib"] / tv["extra_mib"]
                met = "met" if time_ratio <= TIME_GOAL and memory_ratio <= MEMORY_GOAL else "MISSED"
                name = f"detviz, chunk {chunk_bytes / 2**20:g} MiB" if chunk_bytes else "detviz, one chunk"
                print(f"{op:6s} {PASSES[backward]:19s} {name:26s} {dv['seconds']:8.2f} {time_ratio:6.2f} "
                      f"{dv['extra_mib']:10.0f} {memory_ratio:6.2f}  {met}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
