"""What training through PyTorch Lightning costs on a laptop: the default SCLD fit, before and after.

Fits the default ``SCLD`` on cbmc (7.8k cells x 2,000 genes) in memory, once with the code of a
reference commit (the hand-written training loops; checked out with ``git worktree``) and once
with this checkout (Lightning training plans), alternating, each in a fresh process on one torch
thread. Wall and CPU time per fit are recorded; the CPU time of a one-thread process is the
figure that holds up when the machine is shared. The final training losses show the two paths
train alike.

    git worktree add /tmp/scaug-reference 78df1d0
    SCAUG_DATA_DIR=../shared/data python benchmarks/lightning_overhead.py \
        --reference /tmp/scaug-reference --repeats 2

Writes docs/lightning_overhead.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FIT = r"""
import json, os, resource, sys, time
import torch
torch.set_num_threads(1)
import scaug
from scaug import SCLD
from scaug.datasets import load
adata = load("cbmc")
y = adata.obs["cell_type"].astype(str).to_numpy()
wall, cpu = time.perf_counter(), time.process_time()
model = SCLD(random_state=0, verbose=False, device="cpu").fit(adata.X, y)
out = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
       "ae_loss": model.autoencoder_.history_[-1], "diffusion_loss": model.diffusion_history_[-1],
       "scaug_file": scaug.__file__}
print(json.dumps(out))
"""


def run_fit(source: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", FIT], env=env, capture_output=True, text=True,
                          cwd=source, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def git(*args, cwd=ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True,
                        help="a checkout of the reference commit (git worktree)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    parser.add_argument("--note", default="", help="a line on the machine's state (e.g. shared)")
    args = parser.parse_args()

    versions = {"hand-written loops": args.reference.resolve(), "Lightning plans": ROOT}
    rows = {name: [] for name in versions}
    start = time.perf_counter()
    for i in range(args.repeats):
        for name, source in versions.items():
            r = run_fit(source)
            assert Path(r["scaug_file"]).resolve().is_relative_to(source), r["scaug_file"]
            rows[name].append(r)
            print(f"repeat {i}: {name}: wall {r['wall_s']:.1f} s, cpu {r['cpu_s']:.1f} s, "
                  f"losses {r['ae_loss']:.4f} / {r['diffusion_loss']:.4f}", flush=True)

    def mean(name, key):
        return sum(r[key] for r in rows[name]) / len(rows[name])

    ref, new = versions
    result = {
        "provenance": {
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "commit": git("rev-parse", "HEAD"), "reference_commit": git("rev-parse", "HEAD",
                                                                        cwd=args.reference),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
            "python": platform.python_version(), "date": datetime.now(timezone.utc).isoformat(
                timespec="seconds"), "wall_s": time.perf_counter() - start, "note": args.note},
        "runs": rows,
        "ratio_cpu": mean(new, "cpu_s") / mean(ref, "cpu_s"),
        "ratio_wall": mean(new, "wall_s") / mean(ref, "wall_s"),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "lightning_overhead.json").write_text(json.dumps(result, indent=1) + "\n")
    p = result["provenance"]
    lines = [
        "# Training through Lightning: the cost on a laptop",
        "",
        f"Default `SCLD` fit on cbmc (7,791 cells x 2,000 genes, in memory), one torch thread, "
        f"{args.repeats} fits per version, alternating, each in a fresh process. "
        f"Command: `{p['command']}`; commit {p['commit'][:10]} against reference "
        f"{p['reference_commit'][:10]}; {p['machine']}, Python {p['python']}; {p['date']}. "
        f"{p['note']}",
        "",
        "| training code | wall s (mean) | CPU s (mean) | final AE loss | final diffusion loss |",
        "|---|---|---|---|---|",
    ]
    for name in versions:
        lines.append(f"| {name} | {mean(name, 'wall_s'):.1f} | {mean(name, 'cpu_s'):.1f} | "
                     f"{mean(name, 'ae_loss'):.4f} | {mean(name, 'diffusion_loss'):.4f} |")
    lines += ["", f"Lightning / hand-written: CPU time x{result['ratio_cpu']:.3f}, wall time "
              f"x{result['ratio_wall']:.3f} (the limit set in issue 15: x1.10).", ""]
    (args.out_dir / "lightning_overhead.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
