"""Few-step solvers against 50-step DDIM, on fidelity to held-out real cells.

    SCAUG_DATA_DIR=../shared/data python benchmarks/solver_fidelity.py --model-seed 10 \
        --seeds 10 11 12 13 14 --out-dir docs           # reporting seeds: the docs
    ... --model-seed 0 --seeds 0 1 2 --out-dir docs/solver_fidelity_dev   # development seeds

One default SCLD is fitted on a stratified 70 % of cbmc, split and fitted with ``--model-seed``
(``--model PATH`` caches it: fitted and saved when the file is absent, loaded when present).
For every cell type with at least ``--min-heldout`` held-out cells and every sampling seed, each
solver setting samples ``--n`` cells of the type (conditional sampling, w=1, no screening: the
default sampling), and is scored by ``scaug.metrics.c2st_auc`` (log-normalised) against:

- the type's held-out real cells (``vs real``; lower is better, 0.5 is ideal);
- DDIM-50 cells of another seed (``vs DDIM-50``): how well a classifier tells the setting's
  cells from DDIM-50's. DDIM-50 against DDIM-50 of another seed is its noise floor.

With the same seed every setting starts from the same noise (and draws the same count noise), so
the latents of a setting pair up with those of any other: ``latent error`` is the RMS distance
between paired latents and DDIM-50's over the RMS spread of DDIM-50's, and ``ODE error`` the same
against DDIM at ``--ode-steps`` steps (close to the exact solution of the sampling ODE, which
every deterministic solver approximates; DDIM-50 has an error of its own).

Each setting's ``vs real`` is compared with DDIM-50's by the paired difference over sampling
seeds, with the suite's 95 % paired-t interval. The default sampler (DPM-Solver++, 10 steps) was
chosen on the development run (model seed 0, sampling seeds 0-2); the reporting run uses another
model seed and sampling seeds 10-14, never used for a choice.

Writes solver_fidelity.md and solver_fidelity.json into ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from sklearn.model_selection import train_test_split

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DOCS, load_counts, machine, write_json  # noqa: E402
from _suite import REPORT_SEEDS, fmt_diff, paired, seed_roles  # noqa: E402

from scaug import SCLD, metrics  # noqa: E402
from scaug.preprocessing import NormalizeLog1p  # noqa: E402

REFERENCE = "DDIM 50 steps"
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


def fitted_model(path, X, y, seed):
    if path and os.path.exists(path):
        return SCLD.load(path, device="cpu"), None
    t = time.perf_counter()
    model = SCLD(random_state=seed, device="cpu", verbose=False).fit(X, y)
    fit_s = time.perf_counter() - t
    if path:
        model.save(path)
    return model, fit_s


def spread(values):
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")


def default_label() -> str:
    """The setting that is scaug's default sampler, by its parameters."""
    params = SCLD().get_params()
    return next((label for label, opts in SETTINGS.items()
                 if all(params[k] == v for k, v in opts.items())), "")


def summary_table(summary) -> list[str]:
    """The summary as markdown table lines (mean ± sd over seeds; the paired difference from
    DDIM-50 where the summary has it)."""
    def cell(s, k):
        return f"{s[k][0]:.3f} ± {s[k][1]:.3f}" if k in s else ""

    keys = ("vs_real", "vs_ddim50", "latent_error", "ode_error")
    default = default_label()
    return ["| setting | vs real | minus DDIM-50's, paired [95 % CI] | vs DDIM-50 | latent error "
            "| ODE error |", "|---|---|---|---|---|---|",
            *(f"| {s['setting']}{' (default)' if s['setting'] == default else ''} | "
              f"{cell(s, 'vs_real')} | {s.get('vs_real_diff', '')} | "
              + " | ".join(cell(s, k) for k in keys[1:]) + " |" for s in summary)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="cbmc")
    p.add_argument("--seeds", type=int, nargs="+", default=list(REPORT_SEEDS),
                   help="sampling seeds (default: the reporting seeds)")
    p.add_argument("--model-seed", type=int, default=REPORT_SEEDS[0],
                   help="seed of the train/held-out split and of the model's fit")
    p.add_argument("--n", type=int, default=1000, help="synthetic cells per type and setting")
    p.add_argument("--min-heldout", type=int, default=60,
                   help="types with fewer held-out cells are left out (a noisy AUC)")
    p.add_argument("--ode-steps", type=int, default=500,
                   help="steps of the DDIM run taken as the exact solution of the sampling ODE")
    p.add_argument("--model", help="cache of the fitted SCLD (fitted and saved if absent)")
    p.add_argument("--out-dir", default=DOCS)
    p.add_argument("--render", action="store_true",
                   help="re-write solver_fidelity.md from --out-dir's JSON, running nothing")
    args = p.parse_args(argv)
    if args.render:
        with open(os.path.join(args.out_dir, "solver_fidelity.json")) as fh:
            render(json.load(fh), args.out_dir)
        return
    run_machine = machine()  # the code version as the run starts

    X, y = load_counts(args.dataset)
    train, test = train_test_split(np.arange(len(y)), test_size=0.3, stratify=y,
                                   random_state=args.model_seed)
    model, fit_s = fitted_model(args.model, X[train], y[train], args.model_seed)
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

    def seed_means(label, key):  # per seed, the mean over types; the spread is over seeds
        return {s: float(np.mean([r[key] for r in rows if r["setting"] == label and r["seed"] == s]))
                for s in args.seeds}

    reference = seed_means(REFERENCE, "vs_real")
    summary = []
    for label in [*SETTINGS, "held-out real vs real (halves)"]:
        first = next(r for r in rows if r["setting"] == label)
        means = {k: seed_means(label, k) for k in ("vs_real", "vs_ddim50", "latent_error",
                                                   "ode_error") if k in first}
        summary.append(dict(setting=label, **{k: spread(list(v.values())) for k, v in means.items()}))
        if label in SETTINGS and label != REFERENCE:
            diff = paired(means["vs_real"], reference, higher_is_better=False)
            summary[-1]["vs_real_diff"] = f"{fmt_diff(diff)} ({diff['verdict']})"
    result = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=run_machine,
                  dataset=args.dataset, seeds=args.seeds,
                  model_seed=args.model_seed, min_heldout=args.min_heldout, n=args.n, types=types,
                  ode_steps=args.ode_steps,
                  model=dict(path=args.model, fit_s=fit_s, n_train=len(train), n_test=len(test)),
                  settings=SETTINGS, sampling=SAMPLING, summary=summary, rows=rows)
    write_json(result, os.path.join(args.out_dir, "solver_fidelity.json"))
    render(result, args.out_dir)


def render(result, out_dir):
    """Write solver_fidelity.md into ``out_dir`` from a run's result (its JSON)."""
    model, types, seeds = result["model"], result["types"], result["seeds"]
    settings = [*result["settings"], "held-out real vs real (halves)"]
    command = (f"SCAUG_DATA_DIR=../shared/data python benchmarks/solver_fidelity.py --dataset "
               f"{result['dataset']} --model-seed {result['model_seed']} --seeds "
               f"{' '.join(map(str, seeds))} --n {result['n']} --ode-steps {result['ode_steps']}"
               f"{' --model ' + model['path'] if model['path'] else ''}")
    fit_line = (f", in {model['fit_s']:.0f} s" if model["fit_s"] is not None else
                f"; loaded from `{model['path']}`, saved by an earlier run of this script")
    lines = ["# Few-step solvers against 50-step DDIM, on fidelity", "",
             f"Command: `{command}`", "", f"Machine: {result['machine']}", "",
             f"Date: {result['date']}", "",
             f"Model: default `SCLD(random_state={result['model_seed']})` fitted on a stratified "
             f"70 % of {result['dataset']} (split seed {result['model_seed']}) "
             f"({model['n_train']} cells{fit_line}); {result['n']} synthetic cells per type and "
             f"setting (conditional, w=1, no screening), scored against the held-out cells of the "
             f"{len(types)} types with at least {result.get('min_heldout', 60)} of them "
             f"({', '.join(types)}). Mean over types, then mean ± sd over sampling seeds "
             f"{seed_roles(seeds)}. The paired difference from DDIM-50 is over the sampling "
             "seeds, with the suite's 95 % paired-t interval; a difference counts only when the "
             "interval excludes zero. `(default)` marks scaug's default sampler as this page was "
             "written; it was chosen on the development run (`docs/solver_fidelity_dev/`).", "",
             "- `vs real`: c2st AUC against the type's held-out real cells (0.5 is ideal);",
             "- `vs DDIM-50`: c2st AUC against DDIM-50 cells of another seed; DDIM-50's own row "
             "is the noise floor (two seeds of the same sampler);",
             "- `latent error`: RMS distance of paired latents (same seed, same start noise) from "
             "DDIM-50's, over the RMS spread of DDIM-50's latents;",
             f"- `ODE error`: the same from DDIM at {result['ode_steps']} steps (nearly the exact "
             "solution of the sampling ODE, which DDIM-50 only approximates too).", "",
             *summary_table(result["summary"])]
    lines += ["", "Per type (mean over seeds, `vs real`):", "",
              "| type | held-out cells | " + " | ".join(settings) + " |",
              "|---|---|" + "---|" * len(settings)]
    rows = result["rows"]
    for t in types:
        vals = [np.mean([r["vs_real"] for r in rows if r["type"] == t and r["setting"] == s])
                for s in settings]
        held = next(r["n_heldout"] for r in rows if r["type"] == t)
        lines.append(f"| {t} | {held} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    with open(os.path.join(out_dir, "solver_fidelity.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"wrote {os.path.join(out_dir, 'solver_fidelity.md')}")


if __name__ == "__main__":
    main()
