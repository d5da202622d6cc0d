"""Few-step solvers against the default 50-step DDIM, on fidelity to held-out real cells.

    SCAUG_DATA_DIR=../shared/data python benchmarks/solver_fidelity.py [--seeds 0 1 2]

One default SCLD is fitted on a stratified 70 % of cbmc (``--model PATH`` caches it: fitted and
saved when the file is absent, loaded when present). For every cell type with at least
``--min-heldout`` held-out cells and every sampling seed, each solver setting samples ``--n``
cells of the type (conditional sampling, w=1, no screening: the default sampling), and is scored
by ``scaug.metrics.c2st_auc`` (log-normalised) against:

- the type's held-out real cells (``vs real``; lower is better, 0.5 is ideal);
- DDIM-50 cells of another seed (``vs DDIM-50``): how well a classifier tells the setting's
  cells from the default sampler's. DDIM-50 against DDIM-50 of another seed is its noise floor.

With the same seed every setting starts from the same noise (and draws the same count noise), so
the latents of a setting pair up with those of any other: ``latent error`` is the RMS distance
between paired latents and DDIM-50's over the RMS spread of DDIM-50's, and ``ODE error`` the same
against DDIM at ``--ode-steps`` steps (close to the exact solution of the sampling ODE, which
every deterministic solver approximates; DDIM-50 has an error of its own).

Writes docs/solver_fidelity.md and docs/solver_fidelity.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from sklearn.model_selection import train_test_split

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DOCS, load_counts, machine, write_json  # noqa: E402

from scaug import SCLD, metrics  # noqa: E402
from scaug.preprocessing import NormalizeLog1p  # noqa: E402

REFERENCE = "DDIM 50 steps (default)"
# in full, so that a change of scaug's defaults never changes what a row means
SETTINGS = {
    REFERENCE: dict(sampler="ddim", n_sample_steps=50),
    "DPM-Solver++ 20 steps": dict(sampler="dpm-solver++", n_sample_steps=20),
    "DPM-Solver++ 10 steps": dict(sampler="dpm-solver++", n_sample_steps=10),
    "DDIM 20 steps": dict(sampler="ddim", n_sample_steps=20),
    "DDIM 10 steps": dict(sampler="ddim", n_sample_steps=10),
}
SAMPLING = dict(guidance_scale=1.0, classifier_scale=0.0, screening=False)
#: the seed offset of the DDIM-50 sample each setting is compared with
OTHER_SEED = 1000


def relative_rms(z, ref):
    """RMS distance of paired rows over the RMS spread of ``ref``."""
    return float(np.sqrt(((z - ref) ** 2).sum(1).mean() / ((ref - ref.mean(0)) ** 2).sum(1).mean()))


def fitted_model(path, X, y):
    if path and os.path.exists(path):
        return SCLD.load(path, device="cpu"), None
    t = time.perf_counter()
    model = SCLD(random_state=0, device="cpu", verbose=False).fit(X, y)
    fit_s = time.perf_counter() - t
    if path:
        model.save(path)
    return model, fit_s


def spread(values):
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")


def summary_table(summary) -> list[str]:
    """The summary as markdown table lines (mean ± sd over seeds)."""
    def cell(s, k):
        return f"{s[k][0]:.3f} ± {s[k][1]:.3f}" if k in s else ""

    keys = ("vs_real", "vs_ddim50", "latent_error", "ode_error")
    return ["| setting | vs real | vs DDIM-50 | latent error | ODE error |", "|---|---|---|---|---|",
            *(f"| {s['setting']} | " + " | ".join(cell(s, k) for k in keys) + " |"
              for s in summary)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="cbmc")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampling seeds")
    p.add_argument("--n", type=int, default=1000, help="synthetic cells per type and setting")
    p.add_argument("--min-heldout", type=int, default=60,
                   help="types with fewer held-out cells are left out (a noisy AUC)")
    p.add_argument("--ode-steps", type=int, default=500,
                   help="steps of the DDIM run taken as the exact solution of the sampling ODE")
    p.add_argument("--model", help="cache of the fitted SCLD (fitted and saved if absent)")
    p.add_argument("--out-dir", default=DOCS)
    args = p.parse_args(argv)

    X, y = load_counts(args.dataset)
    train, test = train_test_split(np.arange(len(y)), test_size=0.3, stratify=y, random_state=0)
    model, fit_s = fitted_model(args.model, X[train], y[train])
    norm = NormalizeLog1p().fit(X[train])
    types, held = np.unique(y[test], return_counts=True)
    types = [str(t) for t, k in sorted(zip(types, held, strict=True), key=lambda p: -p[1])
             if k >= args.min_heldout]
    real = {t: norm.transform(X[test[y[test] == t]]) for t in types}

    def draw(opts, seed):
        Xs, ys = model.sample({t: args.n for t in types}, random_state=seed, **SAMPLING, **opts)
        logs = norm.transform(Xs)
        return {t: logs[ys == t] for t in types}, model.sample_latents_, ys

    rows = []
    for seed in args.seeds:
        ref, ref_z, ref_y = draw(SETTINGS[REFERENCE], seed)
        other, _, _ = draw(SETTINGS[REFERENCE], seed + OTHER_SEED)
        _, ode_z, _ = draw(dict(sampler="ddim", n_sample_steps=args.ode_steps), seed)
        for label, opts in SETTINGS.items():
            syn, z, _ = (ref, ref_z, ref_y) if label == REFERENCE else draw(opts, seed)
            for t in types:
                mine = ref_y == t
                rows.append(dict(seed=seed, type=t, setting=label, n_heldout=real[t].shape[0],
                                 vs_real=metrics.c2st_auc(real[t], syn[t], random_state=seed),
                                 vs_ddim50=metrics.c2st_auc(other[t], syn[t], random_state=seed),
                                 latent_error=relative_rms(z[mine], ref_z[mine]),
                                 ode_error=relative_rms(z[mine], ode_z[mine])))
            print(f"seed {seed} {label:26} vs real "
                  f"{np.mean([r['vs_real'] for r in rows[-len(types):]]):.3f}  vs DDIM-50 "
                  f"{np.mean([r['vs_ddim50'] for r in rows[-len(types):]]):.3f}", flush=True)
        for t in types:  # the real cells' own floor: two halves of the held-out cells
            half = real[t].shape[0] // 2
            rows.append(dict(seed=seed, type=t, setting="held-out real vs real (halves)",
                             n_heldout=real[t].shape[0], vs_real=metrics.c2st_auc(
                                 real[t][:half], real[t][half:], random_state=seed)))

    settings = [*SETTINGS, "held-out real vs real (halves)"]
    summary = []
    for label in settings:
        mine = [r for r in rows if r["setting"] == label]
        # per seed, the mean over types; the spread is over seeds
        per_seed = {k: [np.mean([r[k] for r in mine if r["seed"] == s]) for s in args.seeds]
                    for k in ("vs_real", "vs_ddim50", "latent_error", "ode_error") if k in mine[0]}
        summary.append(dict(setting=label, **{k: spread(v) for k, v in per_seed.items()}))
    result = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=machine(),
                  dataset=args.dataset, seeds=args.seeds, n=args.n, types=types,
                  ode_steps=args.ode_steps,
                  model=dict(path=args.model, fit_s=fit_s, n_train=len(train), n_test=len(test)),
                  settings=SETTINGS, sampling=SAMPLING, summary=summary, rows=rows)
    write_json(result, os.path.join(args.out_dir, "solver_fidelity.json"))

    fit_line = (f", in {fit_s:.0f} s" if fit_s is not None else
                f"; loaded from `{args.model}`, saved by an earlier run of this script, "
                f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(os.path.getmtime(args.model)))}")
    lines = ["# Few-step solvers against 50-step DDIM, on fidelity", "",
             f"Command: `SCAUG_DATA_DIR=../shared/data python benchmarks/solver_fidelity.py "
             f"--dataset {args.dataset} --seeds {' '.join(map(str, args.seeds))} --n {args.n} "
             f"--ode-steps {args.ode_steps}{f' --model {args.model}' if args.model else ''}`", "",
             f"Machine: {machine()}", "", f"Date: {result['date']}", "",
             f"Model: default `SCLD(random_state=0)` fitted on a stratified 70 % of {args.dataset} "
             f"({len(train)} cells{fit_line}); {args.n} synthetic cells per type and setting (conditional, "
             f"w=1, no screening), scored against the held-out cells of the {len(types)} types "
             f"with at least {args.min_heldout} of them ({', '.join(types)}). Mean over types, "
             f"then mean ± sd over sampling seeds {args.seeds}.", "",
             "- `vs real`: c2st AUC against the type's held-out real cells (0.5 is ideal);",
             "- `vs DDIM-50`: c2st AUC against DDIM-50 cells of another seed; DDIM-50's own row "
             "is the noise floor (two seeds of the same sampler);",
             "- `latent error`: RMS distance of paired latents (same seed, same start noise) from "
             "DDIM-50's, over the RMS spread of DDIM-50's latents;",
             f"- `ODE error`: the same from DDIM at {args.ode_steps} steps (nearly the exact "
             "solution of the sampling ODE, which DDIM-50 only approximates too).", "",
             *summary_table(summary)]
    lines += ["", "Per type (mean over seeds, `vs real`):", "",
              "| type | held-out cells | " + " | ".join(settings) + " |",
              "|---|---|" + "---|" * len(settings)]
    for t in types:
        vals = [np.mean([r["vs_real"] for r in rows if r["type"] == t and r["setting"] == s])
                for s in settings]
        lines.append(f"| {t} | {real[t].shape[0]} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    with open(os.path.join(args.out_dir, "solver_fidelity.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"wrote {os.path.join(args.out_dir, 'solver_fidelity.md')}")


if __name__ == "__main__":
    main()
