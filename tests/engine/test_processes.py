"""Two processes under torchrun with the gloo backend on the CPU: DistributedDataParallel training."""
import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from torch.testing import assert_close

from detviz.datasets.synthetic import write_dataset
from detviz.engine.families import get_family

REPO = Path(__file__).resolve().parents[2]

WORKER = textwrap.dedent("""
    import os, sys, torch
    from detviz.engine.train import TrainConfig, train

    data, out = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    # rank 0 evaluates every step and saves every 2 steps while rank 1 waits at the barrier
    result = train(TrainConfig(model="gfl", data=data, val_data=data, out=out, steps=3, batch_size=2,
                               input_size=64, ema_decay=0.5, eval_every=1, checkpoint_every=2, progress=False))
    # train() has closed its process group; a file per rank shows what each process ended with
    rank = int(os.environ["RANK"])
    torch.save({"model": result["module"].state_dict(), "losses": result["losses"]}, f"{out}/rank{rank}.result.pt")
""")


def test_two_gloo_processes_train_in_step(tmp_path):
    data = tmp_path / "data"
    write_dataset(data, num_images=6, seed=3, size=96, empty_fraction=0.2, max_objects=3)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(data), str(out)], capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]

    ranks = [torch.load(out / f"rank{r}.result.pt", weights_only=False) for r in range(2)]
    # the logged losses are the mean over both processes, so both report the same numbers
    assert ranks[0]["losses"] == ranks[1]["losses"] and len(ranks[0]["losses"]) == 3
    with open(out / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert float(rows[0]["loss"]) == ranks[0]["losses"][0]["loss"]
    checkpoint = torch.load(out / "checkpoint.pt")
    assert checkpoint["step"] == 3 and checkpoint["world_size"] == 2
    assert [m["step"] for m in json.loads((out / "metrics.json").read_text())] == [1, 2, 3]
    # DDP keeps the replicas' parameters equal (BatchNorm statistics are each process's own)
    parameters = {name for name, _ in get_family("gfl").build(6, 64).named_parameters()}
    for name in parameters:
        assert_close(ranks[1]["model"][name], ranks[0]["model"][name], rtol=0, atol=0)
        assert_close(checkpoint["model"][name], ranks[0]["model"][name], rtol=0, atol=0)
    torch.manual_seed(0)  # the run's seed: its initial weights
    initial = get_family("gfl").build(6, 64).state_dict()
    assert not torch.equal(checkpoint["model"]["head.outputs.0.weight"], initial["head.outputs.0.weight"])
