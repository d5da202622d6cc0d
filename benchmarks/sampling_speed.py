"""Sampling throughput of SCLD (cells per second) on the CPU and, where present, on a GPU.

    SCAUG_DATA_DIR=../shared/data python benchmarks/sampling_speed.py [--dataset cbmc] [--n 20000]

Fits one model on the CPU (or loads --model), then times `sample` for each device and each
post-guidance setting. Writes docs/sampling_speed.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DOCS, THREADS, load_counts, machine  # noqa: E402

from scaug import SCLD  # noqa: E402

SETTINGS = {  # in full, so that a change of scaug's defaults never changes what a row means
    "conditional w=1 (default)": dict(guidance_scale=1.0, classifier_scale=0.0, screening=False),
    "w=1, DPM-Solver++ 20 steps": dict(guidance_scale=1.0, classifier_scale=0.0, screening=False,
                                       sampler="dpm-solver++", n_sample_steps=20),
    "w=1, DPM-Solver++ 10 steps": dict(guidance_scale=1.0, classifier_scale=0.0, screening=False,
                                       sampler="dpm-solver++", n_sample_steps=10),
    "CFG w=2": dict(guidance_scale=2.0, classifier_scale=0.0, screening=False),
    "CFG + classifier guidance": dict(guidance_scale=2.0, classifier_scale=1.0, screening=False),
    "all three guidances": dict(guidance_scale=2.0, classifier_scale=1.0, screening=True),
}


def gene_scan(n_cells, genes_list=(2000, 10000, 30000)):
    """Sampling (and the decoding part of it) of ``n_cells`` for models with many genes."""
    import numpy as np
    import scipy.sparse as sp

    from scaug import sampling

    rows = []
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    for n_genes in genes_list:
        X = sp.random(2000, n_genes, density=0.05, format="csr", random_state=0,
                      data_rvs=lambda k: rng.poisson(2.0, k) + 1).astype(np.float32)
        y = rng.integers(0, 3, X.shape[0]).astype(str)
        model = SCLD(max_epochs=1, diffusion_steps=20, device="cpu", verbose=False,
                     random_state=0).fit(X, y)
        t = time.perf_counter()
        model.sample({"0": n_cells}, random_state=0, sampler="dpm-solver++", n_sample_steps=10)
        s = time.perf_counter() - t
        # the decoding part alone, on the same latents
        library = model.type_summaries_.draw_library(np.zeros(n_cells, dtype=int), rng)
        t = time.perf_counter()
        sampling.decode(model.autoencoder_, model.sample_latents_, library,
                        torch.Generator().manual_seed(0), sparse=True,
                        cells_per_batch=max(1, min(4096, 2**24 // n_genes)))
        d = time.perf_counter() - t
        rows.append((n_genes, n_cells, s, d))
        print(f"{n_genes} genes: {n_cells} cells in {s:.2f} s = {n_cells / s:,.0f} cells/s "
              f"(decoding {d / s:.0%})", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="cbmc")
    p.add_argument("--n", type=int, default=20000, help="cells to sample per measurement")
    p.add_argument("--model", help="a saved SCLD to load instead of fitting one")
    p.add_argument("--out", default=os.path.join(DOCS, "sampling_speed.md"))
    p.add_argument("--genes", type=int, nargs="*", default=[2000, 10000, 30000],
                   help="gene counts of the decoding scan (none: skip it)")
    args = p.parse_args(argv)
    fit_line = f"Model: loaded from `{args.model}`."
    if args.model:
        path = args.model
    else:
        X, y = load_counts(args.dataset)
        t = time.perf_counter()
        model = SCLD(random_state=0, device="cpu", verbose=False).fit(X, y)
        fit_line = (f"Fitting it (`SCLD(random_state=0, device=\"cpu\").fit`, {X.shape[0]} cells x "
                    f"{X.shape[1]} genes, all stages) took {time.perf_counter() - t:.0f} s.")
        print(fit_line, flush=True)
        path = os.path.join(tempfile.mkdtemp(), "model.scld")
        model.save(path)
    # the CPU on one thread (a laptop core) and on all of them; a GPU where torch sees one
    has_cuda = torch.cuda.is_available()
    runs = [("cpu", 1)] + ([("cpu", os.cpu_count())] if (os.cpu_count() or 1) > 1 else [])
    runs += [("cuda", THREADS)] if has_cuda else []
    rows = []
    for dev, threads in runs:
        torch.set_num_threads(threads)
        model = SCLD.load(path, device=dev)
        counts = model.class_counts_
        rare = model.classes_[counts.argmin()]
        model.sample({rare: 256}, random_state=0, **SETTINGS["CFG w=2"])  # warm-up
        for label, opts in SETTINGS.items():
            if dev == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            model.sample({rare: args.n}, random_state=0, **opts)
            if dev == "cuda":
                torch.cuda.synchronize()
            s = time.perf_counter() - t
            acc = model.sampling_report_[rare]["acceptance_rate"]
            rows.append((dev, threads, label, args.n, s, args.n / s, acc))
            print(f"{dev:5} {threads} thread(s) {label:28} {args.n} cells in {s:.2f} s = "
                  f"{args.n / s:,.0f} cells/s (acceptance {acc:.2f})", flush=True)
    gene_rows = gene_scan(args.n, args.genes) if args.genes else []
    torch.set_num_threads(THREADS)  # the machine line names the threads the fit ran on
    lines = ["# SCLD sampling throughput", "",
             f"Command: `SCAUG_DATA_DIR=../shared/data python benchmarks/sampling_speed.py "
             f"--dataset {args.dataset} --n {args.n}`", "", f"Machine: {machine()}", "",
             f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             f"Model: default SCLD fitted on all of {args.dataset}; cells of its rarest type "
             "sampled with the default 50-step DDIM sampler, integer counts decoded. Screening "
             "draws extra candidates, so its rate counts accepted cells.", "", fit_line, "",
             "| device | CPU threads | setting | cells | seconds | cells/s | acceptance |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {d} | {th} | {lab} | {n} | {s:.2f} | {r:,.0f} | {a:.2f} |"
              for d, th, lab, n, s, r, a in rows]
    if gene_rows:
        lines += ["", "Decoding cost against the number of genes (one CPU thread; a model on "
                  "simulated Poisson counts, trained for a few steps only: speed does not depend on "
                  "what it learned; w=1, DPM-Solver++ 10 steps):", "",
                  "| genes | cells | seconds | cells/s | of which decoding |", "|---|---|---|---|---|"]
        lines += [f"| {g:,} | {n} | {s:.2f} | {n / s:,.0f} | {d / s:.0%} |"
                  for g, n, s, d in gene_rows]
    if not has_cuda:
        lines += ["", "No GPU on this machine, so no `cuda` row; the script adds one wherever torch "
                  "sees a GPU."]
    with open(args.out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
