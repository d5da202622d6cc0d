"""Fit time at equal quality: the full-budget fit against early stopping, on cbmc.

Two fits of :class:`scaug.SCLD` per seed on the same split, timed in the same process one after
the other (so their ratio holds even on a machine whose speed drifts):

- ``full budget``: every stage runs its whole budget and the latent classifier of post-guidance
  is trained although the defaults never use it (``early_stopping=False,
  latent_classifier=True``: the fit before early stopping);
- ``early stopping``: the defaults: 10 % of the cells of types with at least 100 cells held out,
  each stage stopped once their loss stops improving, no unused classifier.

Split: cbmc halved per seed (stratified), its three largest types capped at 10 labelled training
cells, so that up to 300 held-out cells of each judge the synthetic ones (``_common.rare_split``
with ``largest=True``). Per capped type: ``c2st_auc`` (log-normalised, random forest; 0.5 =
indistinguishable) of as many synthetic cells as held-out cells against those, and the copy
check ``dcr_ratio`` (about 1 = as new as real cells, 0 = copies of the 10 training cells);
downstream, the F1 of the capped types for a logistic regression on log-normalised counts
trained on the capped split plus 100 synthetic cells of each capped type, on the held-out half.
Differences are paired by seed (early stopping minus full budget), with a 95 % t interval.

Seeds: the stopping rule (``n_iter_no_change``, ``tol``) was chosen from the validation curves of
development seed 0 (``--dev`` runs seeds 0-2); the report uses seeds 10-14, never used for a
choice.

    SCAUG_DATA_DIR=../shared/data python benchmarks/fit_speed.py          # reporting seeds
    SCAUG_DATA_DIR=../shared/data python benchmarks/fit_speed.py --quick  # smoke test

writes fit_speed.md and fit_speed.json into --out-dir (default docs/).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
import time

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DOCS, load_counts, machine, rare_split, write_json  # noqa: E402
from _suite import paired as paired_t  # noqa: E402

from scaug import SCLD, metrics  # noqa: E402
from scaug.preprocessing import NormalizeLog1p  # noqa: E402

ARMS = {
    "full budget": dict(early_stopping=False, latent_classifier=True),
    "early stopping": dict(early_stopping=True, latent_classifier="auto"),
}
DEV_SEEDS, REPORT_SEEDS = [0, 1, 2], [10, 11, 12, 13, 14]
FULL = dict(scld={}, n_heldout=300, n_synthetic=100)
QUICK = dict(scld=dict(n_latent=4, ae_hidden=(32,), width=16, depth=1, max_epochs=3,
                       diffusion_steps=300, n_sample_steps=5),
             n_heldout=40, n_synthetic=20)
METRICS = ("fit_s", "c2st_auc", "dcr_ratio", "f1")


def log_counts(X):
    return NormalizeLog1p().fit_transform(X)


def run_seed(X, y, seed, settings, verbose):
    """One row per arm: fit seconds, where each stage stopped, and the means over capped types."""
    train, test, capped = rare_split(y, seed=seed, cap=10, test_size=0.5, largest=True)
    X_log = log_counts(X)
    rows = []
    for arm, options in ARMS.items():
        wall, cpu = time.perf_counter(), time.process_time()
        model = SCLD(random_state=seed, verbose=verbose, **options, **settings["scld"])
        model.fit(X[train], y[train])
        row = dict(arm=arm, seed=seed, fit_s=time.perf_counter() - wall,
                   fit_cpu_s=time.process_time() - cpu, stopped_at=model.stopped_at_,
                   capped=list(capped))
        aucs, dcrs = [], []
        for t in capped:
            held = test[y[test] == t][: settings["n_heldout"]]
            own = train[y[train] == t]
            Xs, _ = model.sample({t: len(held)}, random_state=seed)
            syn = log_counts(Xs)
            aucs.append(metrics.c2st_auc(X_log[held], syn, random_state=seed))
            dcrs.append(metrics.dcr_ratio(X_log[own], syn, X_log[held], random_state=seed))
        Xs, ys = model.sample({t: settings["n_synthetic"] for t in capped}, random_state=seed)
        clf = LogisticRegression(max_iter=2000).fit(
            sp.vstack([X_log[train], sp.csr_matrix(log_counts(Xs))]).tocsr(),
            np.concatenate([y[train], ys]))
        f1 = f1_score(y[test], clf.predict(X_log[test]), labels=capped, average=None,
                      zero_division=0)
        row.update(c2st_auc=float(np.mean(aucs)), dcr_ratio=float(np.mean(dcrs)),
                   f1=float(np.mean(f1)))
        rows.append(row)
        print(f"seed {seed} {arm}: " + ", ".join(f"{k} {row[k]:.3f}" for k in METRICS)
              + f", stopped at {row['stopped_at']}", flush=True)
    return rows


def paired(rows, metric):
    """Mean and 95 % paired-t interval of (early stopping - full budget) over seeds."""
    by_arm = {arm: {r["seed"]: r[metric] for r in rows if r["arm"] == arm} for arm in ARMS}
    p = paired_t(by_arm["early stopping"], by_arm["full budget"])
    return p["diff"], p["lo"], p["hi"]


def render(rows, args, seeds, seconds):
    role = "development" if args.dev else "reporting"
    lines = ["# Fit time at equal quality: early stopping", ""]
    if args.quick:
        lines += ["> **Quick mode** (`--quick`): tiny networks and budgets; the figures only show "
                  "that the benchmark runs.", ""]
    lines += [f"Made by `{shlex.join(['python', *sys.argv])}` on "
              f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {machine()}; "
              f"{role} seeds {seeds}; {seconds / 60:.1f} min in all.", "",
              "How it was measured: see the docstring of `benchmarks/fit_speed.py`. cbmc halved "
              "per seed, its three largest types capped at 10 labelled training cells and judged "
              "on up to 300 held-out cells each. The two fits of a seed ran one after the other "
              "in one process. The stopping rule was chosen on development seed 0; reporting "
              "seeds 10-14 were never used for a choice.", "",
              "| arm | fit s | c2st_auc | dcr_ratio | rare-type F1 | stopped at (AE, diffusion) |",
              "|---|---|---|---|---|---|"]
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        cells = [f"{np.mean([r[m] for r in mine]):.3f} ± {np.std([r[m] for r in mine], ddof=1):.3f}"
                 if len(mine) > 1 else f"{mine[0][m]:.3f}" for m in METRICS]
        stops = "; ".join(f"{r['stopped_at']['autoencoder']}, {r['stopped_at']['diffusion']}"
                          for r in mine)
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {stops} |")
    ratio = [next(r["fit_s"] for r in rows if r["arm"] == "early stopping" and r["seed"] == s)
             / next(r["fit_s"] for r in rows if r["arm"] == "full budget" and r["seed"] == s)
             for s in seeds]
    lines += ["", "Paired by seed, early stopping minus full budget (mean, 95 % t interval):", ""]
    for m in METRICS[1:]:
        mean, lo, hi = paired(rows, m)
        lines.append(f"- {m}: {mean:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                     + (" (the interval includes 0)" if lo <= 0 <= hi else ""))
    lines.append(f"- fit time: x{np.mean(ratio):.2f} of the full budget "
                 f"(per seed: {', '.join(f'{v:.2f}' for v in ratio)})")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny settings, one seed: a smoke test")
    p.add_argument("--dev", action="store_true", help="the development seeds 0-2")
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    p.add_argument("--out-dir", default=DOCS)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    settings = QUICK if args.quick else FULL
    seeds = args.seeds or ([0] if args.quick else DEV_SEEDS if args.dev else REPORT_SEEDS)
    X, y = load_counts("cbmc")
    start = time.perf_counter()
    rows = [r for s in seeds for r in run_seed(X, y, s, settings, not args.quiet)]
    seconds = time.perf_counter() - start
    report = render(rows, args, seeds, seconds)
    os.makedirs(args.out_dir, exist_ok=True)
    name = "fit_speed_dev" if args.dev else "fit_speed"
    with open(os.path.join(args.out_dir, f"{name}.md"), "w") as fh:
        fh.write(report)
    write_json({"rows": rows, "settings": settings, "seeds": seeds, "arms": ARMS,
                "machine": machine(), "seconds": seconds},
               os.path.join(args.out_dir, f"{name}.json"))
    print(report)


if __name__ == "__main__":
    main()
