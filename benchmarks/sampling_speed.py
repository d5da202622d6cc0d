"""Sampling throughput of SCLD (cells per second) per solver and number of steps, per number of
genes, the share of it spent decoding (decoder and count draws), and the peak memory of a large
request.

    SCAUG_DATA_DIR=../shared/data python benchmarks/sampling_speed.py [--dataset cbmc] [--n 20000]

1. One default model fitted on the CPU on all of ``--dataset`` (or loaded from ``--model``):
   ``sample`` timed for each solver and number of steps and for the guidance settings, on one
   CPU thread, on all of them, and on a GPU where torch sees one. The time spent in
   ``scaug.sampling.decode`` (the decoder and the count draws) is timed within the same calls.
2. Models on simulated counts of 2,000, 10,000 and 30,000 genes: the same timings per solver,
   on one thread (speed does not depend on what the model learned).
3. The peak memory of a large request (``--large`` cells, and a fifth and a fiftieth of it),
   each in a fresh process: resident memory above the loaded model, against the size of the
   output (which the final stacking of the blocks holds twice).

Fidelity of the few-step solvers is ``benchmarks/solver_fidelity.py``'s (docs/solver_fidelity.md);
its summary is copied in when docs/solver_fidelity.json exists.

Writes docs/sampling_speed.md and docs/sampling_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DOCS, THREADS, code_version, load_counts, machine, write_json  # noqa: E402
from solver_fidelity import summary_table  # noqa: E402

from scaug import SCLD, sampling  # noqa: E402

PLAIN = dict(guidance_scale=1.0, classifier_scale=0.0, screening=False)
# solver rows, in full, so that a change of scaug's defaults never changes what a row means
SOLVERS = {
    "DDIM 50 steps": dict(PLAIN, sampler="ddim", n_sample_steps=50),
    "DDIM 20 steps": dict(PLAIN, sampler="ddim", n_sample_steps=20),
    "DDIM 10 steps": dict(PLAIN, sampler="ddim", n_sample_steps=10),
    "DPM-Solver++ 20 steps": dict(PLAIN, sampler="dpm-solver++", n_sample_steps=20),
    "DPM-Solver++ 10 steps": dict(PLAIN, sampler="dpm-solver++", n_sample_steps=10),
}
GUIDED = {  # with the default sampler, DPM-Solver++ 10 steps
    "CFG w=2": dict(guidance_scale=2.0, classifier_scale=0.0, screening=False),
    "CFG + classifier guidance": dict(guidance_scale=2.0, classifier_scale=1.0, screening=False),
    "all three guidances": dict(guidance_scale=2.0, classifier_scale=1.0, screening=True),
}
#: the solvers of the gene scan
SCAN_SOLVERS = ("DDIM 50 steps", "DPM-Solver++ 20 steps", "DPM-Solver++ 10 steps")


def marked(label):
    """``label``, with ``(default)`` when its solver is scaug's default sampler."""
    params, opts = SCLD().get_params(), SOLVERS.get(label, {})
    default = bool(opts) and all(params[k] == opts[k] for k in ("sampler", "n_sample_steps"))
    return f"{label} (default)" if default else label


class DecodeClock:
    """Times ``scaug.sampling.decode`` inside ``SCLD.sample`` (which calls it through the module)."""

    def __init__(self):
        self.seconds, self._decode = 0.0, sampling.decode

    def __enter__(self):
        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return self._decode(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t

        sampling.decode = timed
        return self

    def __exit__(self, *exc):
        sampling.decode = self._decode


def timed_sample(model, request, opts, cuda=False):
    """(seconds, of which decoding, the output) of one ``sample`` call."""
    if cuda:
        torch.cuda.synchronize()
    with DecodeClock() as clock:
        t = time.perf_counter()
        X, _ = model.sample(request, random_state=0, max_cells=max(sum(request.values()), 1),
                            **opts)
        if cuda:
            torch.cuda.synchronize()
        s = time.perf_counter() - t
    return s, clock.seconds, X


def needs_classifier(opts):
    return opts["classifier_scale"] != 0 or opts["screening"]


def model_rows(path, n):
    rows = []
    has_cuda = torch.cuda.is_available()
    runs = [("cpu", 1)] + ([("cpu", os.cpu_count())] if (os.cpu_count() or 1) > 1 else [])
    runs += [("cuda", THREADS)] if has_cuda else []
    for dev, threads in runs:
        torch.set_num_threads(threads)
        model = SCLD.load(path, device=dev)
        rare = model.classes_[model.class_counts_.argmin()]
        model.sample({rare: 256}, random_state=0, **GUIDED["CFG w=2"])  # warm-up
        settings = {**SOLVERS, **{k: dict(v, sampler="dpm-solver++", n_sample_steps=10)
                                  for k, v in GUIDED.items()}}
        for label, opts in settings.items():
            if needs_classifier(opts) and model.classifier_ is None:
                print(f"{label}: skipped (the model has no latent classifier)", flush=True)
                continue
            s, d, _ = timed_sample(model, {rare: n}, opts, cuda=dev == "cuda")
            acc = model.sampling_report_[rare]["acceptance_rate"]
            rows.append(dict(device=dev, threads=threads, setting=label, cells=n, seconds=s,
                             decode_seconds=d, cells_per_s=n / s, acceptance=acc))
            print(f"{dev:5} {threads} thread(s) {label:26} {n} cells in {s:.2f} s = "
                  f"{n / s:,.0f} cells/s, decoding {d / s:.0%} (acceptance {acc:.2f})", flush=True)
    return rows


def simulated_model(n_genes, path=None):
    """A model of ``n_genes`` genes on simulated counts, trained for a few steps only."""
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    X = sp.random(2000, n_genes, density=0.05, format="csr", random_state=0,
                  data_rvs=lambda k: rng.poisson(2.0, k) + 1).astype(np.float32)
    y = rng.integers(0, 3, X.shape[0]).astype(str)
    model = SCLD(max_epochs=1, diffusion_steps=20, device="cpu", verbose=False,
                 random_state=0).fit(X, y)
    if path:
        model.save(path)
    return model


def gene_scan(n_cells, genes_list):
    rows = []
    torch.set_num_threads(1)
    for n_genes in genes_list:
        model = simulated_model(n_genes)
        model.sample({"0": 256}, random_state=0)  # warm-up
        for label in SCAN_SOLVERS:
            s, d, X = timed_sample(model, {"0": n_cells}, SOLVERS[label])
            rows.append(dict(genes=n_genes, setting=label, cells=n_cells, seconds=s,
                             decode_seconds=d, cells_per_s=n_cells / s,
                             nonzero_fraction=X.nnz / (X.shape[0] * X.shape[1])))
            print(f"{n_genes} genes, {label}: {n_cells} cells in {s:.2f} s = "
                  f"{n_cells / s:,.0f} cells/s (decoding {d / s:.0%})", flush=True)
    return rows


def _rss_bytes():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _restart_peak() -> bool:
    """Reset the process's peak resident memory (Linux), so that a peak read later belongs to
    what runs after; imports (scanpy's among them) peak well above what they keep."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_bytes() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))


def peak_child(path, n):
    """In a fresh process: resident memory above the loaded model while sampling ``n`` cells."""
    torch.set_num_threads(1)
    model = SCLD.load(path, device="cpu")
    # a small request first, so that the base counts the code it pages in and not as working memory
    model.sample(64, random_state=1, **SOLVERS["DPM-Solver++ 10 steps"])
    base = _rss_bytes()
    if not _restart_peak():
        raise SystemExit("the peak-memory measurement needs Linux's /proc/self/clear_refs")
    t = time.perf_counter()
    X, _ = model.sample(n, random_state=0, max_cells=n, **SOLVERS["DPM-Solver++ 10 steps"])
    s = time.perf_counter() - t
    peak = _peak_bytes()
    out = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    print(json.dumps(dict(cells=n, seconds=s, peak_above_model=peak - base, output_bytes=out,
                          nnz=int(X.nnz))))


def peak_rows(path, large):
    rows = []
    for n in (large // 50, large // 5, large):
        res = subprocess.run([sys.executable, os.path.abspath(__file__), "--peak-child", path,
                              str(n)], capture_output=True, text=True, check=True)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"{n} cells: {r['peak_above_model'] / 2**20:,.0f} MiB above the model, output "
              f"{r['output_bytes'] / 2**20:,.0f} MiB", flush=True)
    return rows


def fidelity_lines(out_dir):
    path = os.path.join(out_dir, "solver_fidelity.json")
    if not os.path.exists(path):
        return ["", "Fidelity of the few-step solvers: run `benchmarks/solver_fidelity.py` "
                "(docs/solver_fidelity.md)."]
    with open(path) as fh:
        fid = json.load(fh)
    return ["", f"## Fidelity of the few-step solvers (docs/solver_fidelity.md, {fid['date']})",
            "", f"c2st AUC of {fid['n']} synthetic cells per type against held-out real cells of "
            f"{len(fid['types'])} {fid['dataset']} types (`vs real`), and against 50-step DDIM "
            f"cells of another seed (`vs DDIM-50`; DDIM-50's own row is the noise floor); the "
            f"distance of paired latents from DDIM-50's and from DDIM at {fid['ode_steps']} steps "
            f"(`ODE error`); mean over types, mean ± sd over seeds {fid['seeds']}.", "",
            *summary_table(fid["summary"])]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="cbmc")
    p.add_argument("--n", type=int, default=20000, help="cells to sample per measurement")
    p.add_argument("--model", help="a saved SCLD to load instead of fitting one")
    p.add_argument("--out-dir", default=DOCS)
    p.add_argument("--genes", type=int, nargs="*", default=[2000, 10000, 30000],
                   help="gene counts of the scan (none: skip it)")
    p.add_argument("--large", type=int, default=200_000,
                   help="cells of the large request whose peak memory is measured (0: skip)")
    p.add_argument("--peak-child", nargs=2, metavar=("MODEL", "N"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.peak_child:
        return peak_child(args.peak_child[0], int(args.peak_child[1]))
    command = (f"SCAUG_DATA_DIR=../shared/data python benchmarks/sampling_speed.py --dataset "
               f"{args.dataset} --n {args.n} --genes {' '.join(map(str, args.genes))} "
               f"--large {args.large}")
    fit_s, path = None, args.model
    if not path:
        X, y = load_counts(args.dataset)
        t = time.perf_counter()
        model = SCLD(random_state=0, device="cpu", verbose=False).fit(X, y)
        fit_s = time.perf_counter() - t
        print(f"fit: {fit_s:.0f} s", flush=True)
        path = os.path.join(tempfile.mkdtemp(), "model.scld")
        model.save(path)
    rows = model_rows(path, args.n)
    gene_rows = gene_scan(args.n, args.genes) if args.genes else []
    peaks = peak_rows(path, args.large) if args.large else []
    torch.set_num_threads(THREADS)  # the machine line names the threads the fit ran on
    result = dict(command=command, machine=machine(), code=code_version(),
                  date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), dataset=args.dataset,
                  model=args.model or "fitted", fit_s=fit_s, solvers=SOLVERS, guided=GUIDED,
                  rows=rows, gene_scan=gene_rows, peak_memory=peaks)
    os.makedirs(args.out_dir, exist_ok=True)
    write_json(result, os.path.join(args.out_dir, "sampling_speed.json"))

    fit_line = (f"Model: loaded from `{args.model}`." if args.model else
                f"Model: `SCLD(random_state=0, device=\"cpu\").fit` on all of {args.dataset} "
                f"(all stages), {fit_s:.0f} s.")
    lines = ["# SCLD sampling throughput", "", f"Command: `{command}`", "",
             f"Machine: {result['machine']}", "", f"Date: {result['date']}", "", fit_line, "",
             "Cells of the model's rarest type, integer counts decoded (CSR). `decoding` is the "
             "share of the time spent in `scaug.sampling.decode` (decoder and count draws); "
             "guided rows use DPM-Solver++ at 10 steps. Screening draws extra candidates, so its rate "
             "counts accepted cells.", "",
             "| device | CPU threads | setting | cells | seconds | cells/s | decoding | acceptance |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['device']} | {r['threads']} | {marked(r['setting'])} | {r['cells']} | "
              f"{r['seconds']:.2f} | {r['cells_per_s']:,.0f} | "
              f"{r['decode_seconds'] / r['seconds']:.0%} | {r['acceptance']:.2f} |" for r in rows]
    skipped = [label for label in GUIDED if label not in {r["setting"] for r in rows}]
    if skipped:
        lines += ["", f"Not measured: {', '.join(skipped)}: post-guidance needs a model fitted "
                  "with its latent classifier (`latent_classifier=True`), and this one has none."]
    if not torch.cuda.is_available():
        lines += ["", "No GPU on this machine, so no `cuda` row; the script adds one wherever "
                  "torch sees a GPU."]
    if gene_rows:
        lines += ["", "## Against the number of genes", "",
                  "One CPU thread; models fitted on simulated counts (5 % of entries nonzero; trained "
                  "for a few steps only, so their cells are denser: `nonzero`); `decoding "
                  "cells/s` is the rate of decoding alone.", "",
                  "| genes | setting | cells | seconds | cells/s | decoding | decoding cells/s | "
                  "nonzero |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['genes']:,} | {marked(r['setting'])} | {r['cells']} | {r['seconds']:.2f} | "
                  f"{r['cells_per_s']:,.0f} | {r['decode_seconds'] / r['seconds']:.0%} | "
                  f"{r['cells'] / r['decode_seconds']:,.0f} | {r['nonzero_fraction']:.1%} |"
                  for r in gene_rows]
    if peaks:
        lines += ["", "## Peak memory of a large request", "",
                  "Each in a fresh process, one thread, DPM-Solver++ 10 steps, the population "
                  "(`sample(n)`): resident memory above the loaded model at its peak, against the "
                  "CSR output. The output is held twice while its blocks are stacked; the rest is "
                  "the working memory of one batch (and what the allocator keeps of it).", "",
                  "| cells | seconds | peak above the model | output | peak minus output |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['cells']:,} | {r['seconds']:.1f} | {r['peak_above_model'] / 2**20:,.0f} "
                  f"MiB | {r['output_bytes'] / 2**20:,.0f} MiB | "
                  f"{(r['peak_above_model'] - r['output_bytes']) / 2**20:,.0f} MiB |" for r in peaks]
    lines += fidelity_lines(args.out_dir)
    with open(os.path.join(args.out_dir, "sampling_speed.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"wrote {os.path.join(args.out_dir, 'sampling_speed.md')}")


if __name__ == "__main__":
    main()
