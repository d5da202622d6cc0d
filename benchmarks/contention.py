"""The default fit alone and beside one CPU-bound process, side by side in one run.

    SCAUG_DATA_DIR=../shared/data python benchmarks/contention.py [--dataset cbmc]

Fits the default ``SCLD`` on cbmc (fresh process each time) alone, then while another process
keeps one core busy (a numpy loop on one thread, standing in for XGBoost, a notebook kernel or a
second fold). Then the same for a short fit at ``cpu_threads=2`` (torch's default on a 2-core
machine), which shows why the default is one thread. Last, alone only, the fit before early
stopping (``early_stopping=False, latent_classifier=True``: every stage's full budget and the
latent classifier the defaults never use), the reference of the default fit's time. Run it on an
otherwise idle machine.
Writes docs/contention.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DOCS, machine, write_json  # noqa: E402

FIT = r"""
import json, sys, time
from scaug import SCLD
from scaug.datasets import load
params = json.loads(sys.argv[1])
adata = load(params.pop("dataset"))
y = adata.obs["cell_type"].astype(str).to_numpy()
t = time.perf_counter()
SCLD(random_state=0, verbose=False, device="cpu", **params).fit(adata.X, y)
print(json.dumps({"wall_s": time.perf_counter() - t}))
"""

BUSY = r"""
import os
os.environ["OMP_NUM_THREADS"] = "1"
import numpy as np
a = np.random.default_rng(0).random((300, 300))
while True:
    a = (a @ a) / 300.0
"""


def fit(params: dict) -> float:
    done = subprocess.run([sys.executable, "-c", FIT, json.dumps(params)], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["wall_s"]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="cbmc")
    p.add_argument("--out-dir", default=DOCS)
    args = p.parse_args(argv)
    setups = {
        "default fit (cpu_threads=1)": {"dataset": args.dataset},
        "short fit, cpu_threads=2": {"dataset": args.dataset, "cpu_threads": 2,
                                     "diffusion_steps": 300, "max_epochs": 3},
        "short fit, cpu_threads=1": {"dataset": args.dataset, "cpu_threads": 1,
                                     "diffusion_steps": 300, "max_epochs": 3},
        "full-budget fit (early_stopping=False, latent_classifier=True)": {
            "dataset": args.dataset, "early_stopping": False, "latent_classifier": True},
    }
    alone_only = {"full-budget fit (early_stopping=False, latent_classifier=True)"}
    start = time.perf_counter()
    rows = []
    for name, params in setups.items():
        alone = fit(dict(params))
        loaded = None
        if name not in alone_only:
            busy = subprocess.Popen([sys.executable, "-c", BUSY])
            try:
                time.sleep(1.0)
                loaded = fit(dict(params))
            finally:
                busy.kill()
                busy.wait()
        rows.append({"setup": name, "params": params, "alone_s": alone, "loaded_s": loaded,
                     "ratio": None if loaded is None else loaded / alone})
        print(f"{name}: alone {alone:.1f} s"
              + ("" if loaded is None else f", beside a busy process {loaded:.1f} s "
                 f"(x{loaded / alone:.2f})"), flush=True)
    result = {"command": " ".join(["benchmarks/contention.py", *(argv or sys.argv[1:])]),
              "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "wall_s": time.perf_counter() - start, "rows": rows}
    write_json(result, os.path.join(args.out_dir, "contention.json"))
    lines = ["# A fit on a busy machine", "",
             f"Command: `SCAUG_DATA_DIR=../shared/data python {result['command']}`", "",
             f"Machine: {result['machine']}; {result['date']}", "",
             f"Each fit is a fresh process fitting `SCLD` on {args.dataset}, first alone, then "
             "while a second process keeps one core busy (numpy matrix products on one thread).",
             "", "| fit | alone (s) | beside a busy process (s) | ratio |", "|---|---|---|---|"]
    lines += [f"| {r['setup']} | {r['alone_s']:.1f} | "
              + ("(not run) | |" if r["loaded_s"] is None
                 else f"{r['loaded_s']:.1f} | x{r['ratio']:.2f} |") for r in rows]
    default, full = rows[0]["alone_s"], rows[-1]["alone_s"]
    lines += ["", f"The default fit alone takes x{default / full:.2f} of the full-budget fit's "
              f"time alone ({default:.0f} s against {full:.0f} s, in this run)."]
    with open(os.path.join(args.out_dir, "contention.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
