"""The GPU path, measured: fit the default SCLD on cbmc on one GPU, sample a million cells.

    SCAUG_DATA_DIR=../shared/data python benchmarks/gpu_check.py [--n 1000000]

Run it once wherever torch sees a GPU (it refuses to run without one, so a CPU figure is never
mistaken for a GPU one). It checks that ``device="auto"`` picks the GPU, then records the fit
time, sampling throughput (default sampler and DPM-Solver++ at 10 steps; integer counts decoded,
CSR output) and the peak GPU memory, with the date and the device, into docs/gpu.md and
docs/gpu.json. Meant to finish in under 5 minutes on one H100/H200-class GPU.

The fit throughput from the 1M-cell on-disk store is the atlas benchmark's, on the GPU:

    python benchmarks/atlas_store.py /tmp/atlas --sizes 1000000
    python benchmarks/atlas_training.py /tmp/atlas --device cuda --processes 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DOCS, load_counts, machine, write_json  # noqa: E402

from scaug import SCLD  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="cbmc")
    p.add_argument("--n", type=int, default=1_000_000, help="cells to sample")
    p.add_argument("--out-dir", default=DOCS)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA GPU here; run this where one is.", file=sys.stderr)
        return 2
    X, y = load_counts(args.dataset)
    model = SCLD(random_state=0, verbose=False)
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    t = time.perf_counter()
    model.fit(X, y)
    torch.cuda.synchronize()
    fit_s = time.perf_counter() - t
    picked = str(model.device_)
    rare = model.classes_[model.class_counts_.argmin()]
    rows = []
    for label, opts in [("default (50-step DDIM)", {}),
                        ("DPM-Solver++ 10 steps", dict(sampler="dpm-solver++", n_sample_steps=10))]:
        model.sample({rare: 4096}, random_state=0, **opts)  # warm-up
        torch.cuda.synchronize()
        t = time.perf_counter()
        X_syn, _ = model.sample({rare: args.n}, random_state=0, max_cells=args.n, batch_size=65536,
                                **opts)
        torch.cuda.synchronize()
        s = time.perf_counter() - t
        rows.append({"setting": label, "cells": args.n, "seconds": s, "cells_per_s": args.n / s,
                     "cells_per_min": 60 * args.n / s, "nnz": int(X_syn.nnz)})
        print(f"{label}: {args.n} cells in {s:.1f} s = {args.n / s:,.0f} cells/s", flush=True)
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "device": torch.cuda.get_device_name(0), "machine": machine(),
              "device_auto_picked": picked, "dataset": args.dataset, "shape": list(X.shape),
              "fit_s": fit_s, "peak_gpu_memory_gb": torch.cuda.max_memory_allocated() / 2**30,
              "sampling": rows}
    write_json(result, os.path.join(args.out_dir, "gpu.json"))
    lines = ["# The GPU path", "",
             f"Command: `SCAUG_DATA_DIR=../shared/data python benchmarks/gpu_check.py --n {args.n}`",
             "", f"{result['date']}; {result['device']}; {result['machine']}", "",
             f"`device=\"auto\"` picked `{picked}`. Default SCLD fitted on {args.dataset} "
             f"({X.shape[0]} cells x {X.shape[1]} genes) in {fit_s:.1f} s; peak GPU memory "
             f"{result['peak_gpu_memory_gb']:.2f} GB.", "",
             "| sampler | cells | seconds | cells/s | cells/min |", "|---|---|---|---|---|"]
    lines += [f"| {r['setting']} | {r['cells']:,} | {r['seconds']:.1f} | {r['cells_per_s']:,.0f} | "
              f"{r['cells_per_min']:,.0f} |" for r in rows]
    with open(os.path.join(args.out_dir, "gpu.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
