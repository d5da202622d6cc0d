"""Atlas-scale training: CellAutoencoder streamed from on-disk stores, 1 and 2 processes (DDP).

For every store written by ``benchmarks/atlas_store.py`` in the folder, and 1 and 2 processes,
a fresh Python process fits ``CellAutoencoder`` from ``OnDiskCells(store)`` for a fixed number of
optimiser steps (the fit's first epoch is cut after ``--steps`` steps by a hook of this script,
the only thing it changes) and reports its peak resident memory (``getrusage`` max RSS of each
process, DDP ranks each their own) and its throughput (cells per second over the steps after
``--warmup``, all processes together). Writes docs/atlas.md, docs/atlas.json and docs/atlas.png.

    python benchmarks/atlas_store.py /tmp/atlas
    python benchmarks/atlas_training.py /tmp/atlas --steps 300
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import re
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def child(store: str, processes: int, steps: int, warmup: int, batch_size: int, out: str,
          device: str = "cpu"):
    """One fit, in this process (and, for DDP, the rank Lightning starts beside it)."""
    import warnings

    warnings.filterwarnings("ignore")
    from scaug import CellAutoencoder, OnDiskCells
    from scaug.train import AutoencoderPlan, process_rank

    marks = {}

    def on_train_batch_start(plan, batch, batch_idx):  # cut the epoch after `steps` steps
        if batch_idx == warmup:
            marks["start"] = time.perf_counter()
        if batch_idx == steps:
            marks["stop"] = time.perf_counter()
            return -1
        return None

    AutoencoderPlan.on_train_batch_start = on_train_batch_start
    accelerator = "gpu" if device.startswith("cuda") else "cpu"
    kwargs = ({"accelerator": accelerator, "devices": processes, "strategy": "ddp"}
              if processes > 1 else None)
    t0 = time.perf_counter()
    cells = OnDiskCells(store)
    CellAutoencoder(max_epochs=1, batch_size=batch_size, verbose=False, device=device,
                    random_state=0, trainer_kwargs=kwargs).fit(cells)
    rank, world = process_rank()
    with open(f"{out}.rank{rank}", "w") as fh:
        json.dump({"rank": rank, "world": world, "n_cells": cells.shape[0],
                   "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "cells_per_s": (steps - warmup) * batch_size * world
                   / (marks["stop"] - marks["start"]),
                   "fit_seconds": time.perf_counter() - t0}, fh)


def run(store, processes, args, tmp):
    out = os.path.join(tmp, f"{os.path.basename(store)}.{processes}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, os.path.abspath(__file__), "--child", store, str(processes),
           str(args.steps), str(args.warmup), str(args.batch_size), out, args.device]
    subprocess.run(cmd, check=True, env=env)
    ranks = [json.load(open(f"{out}.rank{r}")) for r in range(processes)]
    return {"store": os.path.basename(store), "n_cells": ranks[0]["n_cells"],
            "processes": processes, "cells_per_s": ranks[0]["cells_per_s"],
            "peak_rss_mb_per_process": max(r["peak_rss_mb"] for r in ranks),
            "peak_rss_mb_all_processes": sum(r["peak_rss_mb"] for r in ranks),
            "fit_seconds": ranks[0]["fit_seconds"]}


def report(rows, args, command):
    sys.path.insert(0, HERE)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from _common import DOCS, code_version, machine, write_json

    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True,
                            text=True).stdout.strip()
    meta = {"command": command, "commit": commit, "code": code_version(), "machine": machine(),
            "date": datetime.date.today().isoformat(), "steps": args.steps,
            "warmup": args.warmup, "batch_size": args.batch_size, "shared_machine": args.shared}
    write_json({"meta": meta, "rows": rows}, os.path.join(DOCS, "atlas.json"))

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for p in sorted({r["processes"] for r in rows}):
        sel = sorted((r for r in rows if r["processes"] == p), key=lambda r: r["n_cells"])
        n = [r["n_cells"] for r in sel]
        ax1.plot(n, [r["peak_rss_mb_per_process"] for r in sel], "o-", label=f"{p} process(es)")
        ax2.plot(n, [r["cells_per_s"] for r in sel], "o-", label=f"{p} process(es)")
    for ax, label in ((ax1, "peak RSS per process (MB)"), (ax2, "training cells / s")):
        ax.set_xscale("log")
        ax.set_xlabel("cells in the store")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.legend()
    fig.suptitle(f"CellAutoencoder from disk, {args.steps} steps of {args.batch_size} cells")
    fig.tight_layout()
    fig.savefig(os.path.join(DOCS, "atlas.png"), dpi=120)

    lines = [
        "# Atlas-scale training: memory and throughput from on-disk stores", "",
        f"`{command}` at {meta['code']} (`{commit}`), {meta['date']}.", "",
        f"Machine: {meta['machine']}." + (
            " **The machine was shared with other jobs while this ran: throughput figures are "
            "lower bounds.**" if args.shared else ""), "",
        "Stores written by `python benchmarks/atlas_store.py FOLDER` (simulated NB counts, "
        "2,000 genes, about 89 % zeros, CSR in `.h5ad`). Each row is a fresh process fitting "
        "`CellAutoencoder(batch_size="
        f"{args.batch_size})` from `OnDiskCells(store)` for {args.steps} optimiser steps; "
        f"throughput counts the cells of the steps after the first {args.warmup}, all "
        "processes together; peak RSS is `getrusage` max RSS of each process (the largest rank).",
        "", "| cells | processes | cells/s | peak RSS per process (MB) | all processes (MB) | fit (s) |",
        "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["n_cells"], r["processes"])):
        lines.append(f"| {r['n_cells']:,} | {r['processes']} | {r['cells_per_s']:,.0f} | "
                     f"{r['peak_rss_mb_per_process']:.0f} | {r['peak_rss_mb_all_processes']:.0f} | "
                     f"{r['fit_seconds']:.0f} |")
    lines += ["", "![memory and throughput against cells](atlas.png)", "", LAUNCH]
    with open(os.path.join(DOCS, "atlas.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


LAUNCH = """## Launching a multi-GPU or multi-node run

scaug has no process management: training runs through PyTorch Lightning, and scaling out is a
matter of Trainer arguments and of how the script is started.

```python
from scaug import SCLD, OnDiskCells

cells = OnDiskCells(["atlas_part1.h5ad", "atlas_part2.zarr"], labels_key="cell_type")
model = SCLD(trainer_kwargs={"accelerator": "gpu", "devices": 4, "strategy": "ddp",
                             "num_nodes": 2}).fit(cells)
model.save("atlas.scld")   # written by rank 0 only; the other ranks return at once
```

- **One machine, several GPUs**: `python train.py`; Lightning starts the other `devices - 1`
  processes by re-running the script. Each process reads its own stripe of the store's chunks.
- **Several machines, by hand**: run the same script on every node with
  `MASTER_ADDR=<node 0> MASTER_PORT=29500 NODE_RANK=<0..num_nodes-1> WORLD_SIZE=<num_nodes * devices>`.
- **torchrun**: `torchrun --nnodes=2 --nproc_per_node=4 --node_rank=<i> --master_addr=<node 0>
  --master_port=29500 train.py` (Lightning sees `LOCAL_RANK` and leaves process creation to it).
- **SLURM**: `srun` with `--nodes=2 --ntasks-per-node=4`, one task per GPU; Lightning reads
  SLURM's variables (https://lightning.ai/docs/pytorch/stable/clouds/cluster_advanced.html).

The store must be readable at the same path on every node (a shared file system). The latent
stages (denoiser, classifier) train in memory on the n x 16 latents, on every process.
"""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        store, processes, steps, warmup, batch, out, device = argv[1:8]
        return child(store, int(processes), int(steps), int(warmup), int(batch), out, device)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="folder of stores written by benchmarks/atlas_store.py")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--max-cells", type=int, default=None, help="skip larger stores")
    parser.add_argument("--device", default="cpu",
                        help="cpu, or cuda on a GPU machine (processes are then GPUs)")
    parser.add_argument("--shared", action="store_true",
                        help="say in the report that the machine was shared (throughput is a lower bound)")
    args = parser.parse_args(argv)
    stores = sorted(glob.glob(os.path.join(args.folder, "atlas_*.*")),
                    key=lambda p: int(re.search(r"atlas_(\d+)", p).group(1)))
    stores = [s for s in stores if not s.endswith(".partial") and (
        args.max_cells is None or int(re.search(r"atlas_(\d+)", s).group(1)) <= args.max_cells)]
    if not stores:
        raise SystemExit(f"No stores in {args.folder}; write them with benchmarks/atlas_store.py.")
    tmp = os.path.join(args.folder, "runs")
    os.makedirs(tmp, exist_ok=True)
    rows = []
    for store in stores:
        for p in args.processes:
            rows.append(run(store, p, args, tmp))
            print(rows[-1], flush=True)
    report(rows, args, "python benchmarks/atlas_training.py " + " ".join(argv))


if __name__ == "__main__":
    main()
