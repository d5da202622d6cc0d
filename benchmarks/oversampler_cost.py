"""Cost of SCLDOverSampler.fit_resample against SMOTE: wall time and peak memory vs cells.

    SCAUG_DATA_DIR=../shared/data python benchmarks/oversampler_cost.py [--sizes 1000 2000 4000 8000]

Each measurement runs in a fresh process (so peak resident memory is that of one call) on a
stratified subsample of cbmc (all 7839 cells for sizes >= 7839), with the default
sampling_strategy="auto" (every type raised to the size of the largest). Writes
docs/oversampler_cost.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DOCS, machine  # noqa: E402


def one(method: str, size: int) -> dict:
    import numpy as np
    from _common import load_counts
    from imblearn.over_sampling import SMOTE
    from sklearn.model_selection import train_test_split

    from scaug import SCLDOverSampler

    X, y = load_counts("cbmc")
    if size < X.shape[0]:
        idx, _ = train_test_split(np.arange(len(y)), train_size=size, stratify=y, random_state=0)
        X, y = X[np.sort(idx)], y[np.sort(idx)]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sampler = SMOTE(random_state=0) if method == "SMOTE" else SCLDOverSampler(random_state=0)
    t = time.perf_counter()
    Xr, _ = sampler.fit_resample(X, y)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return dict(method=method, cells=int(X.shape[0]), genes=int(X.shape[1]), seconds=seconds,
                peak_mb=peak / 1024, peak_increase_mb=(peak - base) / 1024,
                generated=int(Xr.shape[0] - X.shape[0]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000, 8000])
    p.add_argument("--one", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    p.add_argument("--out", default=os.path.join(DOCS, "oversampler_cost.md"))
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]))))
        return
    rows = []
    for size in args.sizes:
        for method in ("SMOTE", "SCLDOverSampler"):
            out = subprocess.run([sys.executable, __file__, "--one", method, str(size)],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{method:16} {r['cells']:>6} cells: {r['seconds']:8.1f} s, peak RSS "
                  f"{r['peak_mb']:.0f} MB (+{r['peak_increase_mb']:.0f} MB)", flush=True)
    lines = ["# Cost of fit_resample: SCLDOverSampler vs SMOTE", "",
             "Command: `SCAUG_DATA_DIR=../shared/data python benchmarks/oversampler_cost.py "
             f"--sizes {' '.join(map(str, args.sizes))}`", "", f"Machine: {machine()}", "",
             "cbmc (2000 genes) subsampled with stratification; default settings of both "
             "samplers (`sampling_strategy='auto'`); SCLDOverSampler trains a new SCLD each call. "
             "Peak RSS of the whole process, and its increase during the call.", "",
             "| method | cells | generated | seconds | peak RSS (MB) | increase (MB) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['cells']} | {r['generated']} | {r['seconds']:.1f} | "
              f"{r['peak_mb']:.0f} | {r['peak_increase_mb']:.0f} |" for r in rows]
    with open(args.out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
