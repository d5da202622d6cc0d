"""Batch conditioning: rare cells generated within each batch, or averaged over batches.

Leave-one-batch-out on simulated data with batch effects (``scaug.datasets.simulate`` with
``n_batches=4`` and its default batch effects: a per-batch, per-gene log-scale shift of sd 0.3,
a type-specific part of sd 0.15, a library shift of sd 0.3). For each seed a new data set; for
each held-out batch, the other three train, with the two rare types capped at ``cap`` cells in
training (the rest unused), and the held-out batch, a donor never seen, is the test set.

Arms (every SCLD arm on one autoencoder per fold, trained on the training cells without labels,
so that the arms differ only in their diffusion model and in how they sample):

- ``none``: the training cells only;
- ``SMOTE``: imbalanced-learn's SMOTE on the counts (``k_neighbors = min(5, cap - 1)``);
- ``SCLD type only``: SCLD fitted on the type alone (scaug before conditions);
- ``SCLD within batch``: SCLD fitted with ``conditions={"batch": ...}``, each synthetic cell
  generated within a training batch, spread in the proportions of its type's training cells
  (``scaug.sampling.spread_request``, as ``SCLDOverSampler(conditions=...)`` does);
- ``SCLD conditioned, marginalised``: the same conditioned model, sampled without a batch (its
  null token): what conditioning costs or gains when the batch is not used.

Each augmenter brings the rare types to ``n_target`` cells. Downstream: a logistic regression on
log-normalised counts, F1 of each rare type on the held-out batch; per seed the mean over the
four held-out batches and the two rare types; mean and sd over seeds, and paired differences
between arms with a 95 % paired-t interval over seeds (the seed is the unit: its four folds
share a data set).

Mixing, how well synthetic cells sit among the real cells of their batch (the training batches
of the fold holding out ``batch_0``; common type ``type_0``, whose ~150 real cells per batch
allow a two-sample test):
``c2st_auc`` (``scaug.metrics``, 0.5 = indistinguishable) of ``n_mix`` synthetic cells against
the batch's real cells: cells generated within that batch, type-only cells, and the conditioned
model's marginalised cells; the reference row splits the batch's real cells in two. For the rare
types (a few real cells per batch): the fraction of synthetic cells whose nearest real training
cell of their type (30-d PCA of the log-normalised training cells) is in the batch they were
assigned, against the real cells' own rate (leave-one-out) and type-only cells given the same
batch assignment (what chance gives).

No real multi-donor data set is usable offline: scanpy ships pbmc68k_reduced (one donor, no
batch column) and two toy simulations (krumsiek11, toggleswitch); anndata ships none; the other
loaders of scanpy and scvi-tools download at run time; the shared data sets (cbmc, pbmc3k,
paul15, bladder) carry no donor or batch annotation.

    python benchmarks/batch_conditioning.py            # the full run (5 seeds)
    python benchmarks/batch_conditioning.py --quick    # smoke test: tiny networks, 1 seed

Writes batch_conditioning.md and batch_conditioning.json into --out-dir (default docs/).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
import time
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DOCS, code_version, machine, write_json  # noqa: E402

from scaug import SCLD, CellAutoencoder, metrics  # noqa: E402
from scaug.datasets import simulate  # noqa: E402
from scaug.metrics import DegenerateInputWarning  # noqa: E402
from scaug.preprocessing import NormalizeLog1p  # noqa: E402
from scaug.sampling import spread_request  # noqa: E402

NONE, SMOTE_ARM, TYPE_ONLY, WITHIN, MARGINAL = (
    "none", "SMOTE", "SCLD type only", "SCLD within batch", "SCLD conditioned, marginalised")
ARMS = (NONE, SMOTE_ARM, TYPE_ONLY, WITHIN, MARGINAL)
REFERENCE = "reference: real vs real (two halves)"
#: the paired comparisons reported, (arm, against)
PAIRS = ((WITHIN, TYPE_ONLY), (WITHIN, MARGINAL), (WITHIN, SMOTE_ARM), (TYPE_ONLY, NONE),
         (WITHIN, NONE), (SMOTE_ARM, NONE))
#: every setting in full, so that a change of scaug's defaults never changes a row. The data
#: settings (fold change 3, gene mean 3) were chosen on development seeds 100-101 so that the
#: capped types are neither hopeless nor solved without augmentation (no-augmentation F1 about
#: 0.37, SMOTE about 0.6 there); the seeds reported are 0-4.
FULL = dict(
    data=dict(n_cells=2000, n_genes=200, n_types=5, rare_sizes=(80, 60), n_markers=10,
              fold_change=3.0, gene_mean=3.0, n_batches=4, batch_effect_sd=0.3,
              batch_type_effect_sd=0.15, batch_library_sd=0.3),
    rare=("type_3", "type_4"), common="type_0", cap=10, n_target=100, n_mix=150,
    ae=dict(n_latent=8, hidden=(128,), max_epochs=60, batch_size=128),
    scld=dict(width=64, depth=2, diffusion_steps=1000, n_sample_steps=30, batch_size=128),
    seeds=[0, 1, 2, 3, 4])
QUICK = dict(FULL, ae=dict(n_latent=4, hidden=(16,), max_epochs=1),
             scld=dict(width=16, depth=1, diffusion_steps=10, n_sample_steps=3),
             n_mix=40, seeds=[0])


def log_counts(X):
    return NormalizeLog1p().fit_transform(X)


def capped_split(y, batch, held, rare, cap, rng):
    """Training cells (the other batches, each rare type capped at ``cap``) and test cells."""
    train = np.flatnonzero(batch != held)
    keep = [train[~np.isin(y[train], rare)]]
    for t in rare:
        members = train[y[train] == t]
        keep.append(rng.choice(members, size=min(cap, len(members)), replace=False))
    return np.sort(np.concatenate(keep)), np.flatnonzero(batch == held)


def synthetic_sets(X, y, batch, rare, settings, seed, verbose):
    """``{arm: (X_syn, y_syn, assigned batch or None)}``, the fitted models and fit seconds."""
    request = {t: settings["n_target"] - int((y == t).sum()) for t in rare}
    t0 = time.perf_counter()
    ae = CellAutoencoder(random_state=seed, verbose=verbose, **settings["ae"]).fit(X)
    ae_s = time.perf_counter() - t0
    common = dict(autoencoder=ae, random_state=seed, verbose=verbose, **settings["scld"])
    t0 = time.perf_counter()
    plain = SCLD(**common).fit(X, y)
    plain_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cond = SCLD(**common).fit(X, y, conditions={"batch": batch})
    cond_s = time.perf_counter() - t0
    spread = spread_request(request, y, pd.DataFrame({"batch": batch}))["batch"].to_numpy()
    from imblearn.over_sampling import SMOTE

    smote = SMOTE(sampling_strategy={t: settings["n_target"] for t in rare},
                  k_neighbors=max(1, min(5, settings["cap"] - 1)), random_state=seed)
    X_sm, y_sm = smote.fit_resample(X, y)
    out = {SMOTE_ARM: (X_sm[len(y):], y_sm[len(y):], None)}
    out[TYPE_ONLY] = (*plain.sample(request, random_state=seed), spread)
    out[WITHIN] = (*cond.sample(request, conditions={"batch": spread}, random_state=seed), spread)
    out[MARGINAL] = (*cond.sample(request, random_state=seed), spread)
    return out, plain, cond, {"autoencoder_s": ae_s, "type_only_s": plain_s, "conditioned_s": cond_s}


def downstream_f1(X_train, y_train, X_test, y_test, rare, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(max_iter=1000, random_state=seed).fit(log_counts(X_train),
                                                                       y_train)
    pred = clf.predict(log_counts(X_test))
    return f1_score(y_test, pred, labels=list(rare), average=None, zero_division=0)


def own_batch_rate(Z_query, batch_query, Z_real, batch_real, leave_one_out=False):
    """Fraction of query cells whose nearest real cell is in the query cell's batch."""
    d = ((Z_query[:, None, :] - Z_real[None, :, :]) ** 2).sum(-1)
    if leave_one_out:
        np.fill_diagonal(d, np.inf)
    return float(np.mean(batch_real[d.argmin(1)] == batch_query))


def run_fold(adata, seed, held, settings, verbose):
    X = adata.X.tocsr().astype(np.float32)
    y = adata.obs["cell_type"].astype(str).to_numpy()
    batch = adata.obs["batch"].astype(str).to_numpy()
    rare = list(settings["rare"])
    rng = np.random.default_rng([seed, int(held.split("_")[-1])])
    train, test = capped_split(y, batch, held, rare, settings["cap"], rng)
    sets, plain, cond, seconds = synthetic_sets(X[train], y[train], batch[train], rare, settings,
                                                seed, verbose)
    rows = []
    base = dict(seed=seed, held_out=held, n_test={t: int((y[test] == t).sum()) for t in rare})
    for arm in ARMS:
        X_fit, y_fit = X[train], y[train]
        if arm != NONE:
            Xs, ys, _ = sets[arm]
            X_fit = sp.vstack([X_fit, sp.csr_matrix(Xs, dtype=np.float32)]).tocsr()
            y_fit = np.concatenate([y_fit, np.asarray(ys, dtype=object).astype(str)])
        f1 = downstream_f1(X_fit, y_fit, X[test], y[test], rare, seed)
        rows.append(dict(base, arm=arm, f1=float(np.mean(f1)),
                         f1_per_type=dict(zip(rare, map(float, f1), strict=True))))

    # mixing of the common type with the real cells of each training batch (in the first fold
    # of each seed only: twelve two-sample tests per fold would double the run's time)
    mixing = []
    X_train_log = log_counts(X[train])
    common = settings["common"]
    for b in sorted(set(batch[train])) if held == "batch_0" else []:
        real = X_train_log[(y[train] == common) & (batch[train] == b)]
        half = real.shape[0] // 2
        entry = dict(seed=seed, held_out=held, batch=b, n_real=int(real.shape[0]))
        entry[REFERENCE] = metrics.c2st_auc(real[:half], real[half:], random_state=seed)
        for arm, model, cond_b in ((WITHIN, cond, b), (TYPE_ONLY, plain, None),
                                   (MARGINAL, cond, None)):
            Xs, _ = model.sample({common: settings["n_mix"]}, random_state=seed,
                                 conditions=None if cond_b is None else {"batch": cond_b})
            entry[arm] = metrics.c2st_auc(real, log_counts(Xs), random_state=seed)
        mixing.append(entry)

    # the rare types: is a synthetic cell's nearest real cell of its type in its batch?
    pca = PCA(n_components=min(30, X_train_log.shape[1] - 1), random_state=seed)
    pca.fit(X_train_log.toarray() if sp.issparse(X_train_log) else X_train_log)

    def embed(M):
        M = log_counts(M)
        return pca.transform(M.toarray() if sp.issparse(M) else M)

    nn_rows = []
    for t in rare:
        own = (y[train] == t)
        Z_real, b_real = embed(X[train][own]), batch[train][own]
        entry = dict(seed=seed, held_out=held, type=t, n_real=int(own.sum()),
                     real=own_batch_rate(Z_real, b_real, Z_real, b_real, leave_one_out=True))
        for arm in (WITHIN, TYPE_ONLY, MARGINAL):
            Xs, ys, assigned = sets[arm]
            mine = np.asarray(ys, dtype=object).astype(str) == t
            entry[arm] = own_batch_rate(embed(Xs[mine]), assigned[mine], Z_real, b_real)
        nn_rows.append(entry)
    return rows, mixing, nn_rows, seconds


def paired(per_seed, a, b):
    """Mean paired difference ``a - b`` over seeds, its 95 % paired-t interval, and n."""
    seeds = sorted(set(per_seed[a]) & set(per_seed[b]))
    d = np.array([per_seed[a][s] - per_seed[b][s] for s in seeds])
    if len(d) < 2:
        return float(d.mean()) if len(d) else float("nan"), (float("nan"), float("nan")), len(d)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean()), (float(d.mean() - half), float(d.mean() + half)), len(d)


def by_seed(entries, arms, value):
    """``{arm: {seed: mean over the seed's entries}}``; ``value(entry, arm)`` is a number, or
    None where the entry does not hold the arm."""
    out = {arm: {} for arm in arms}
    for e in entries:
        for arm in arms:
            v = value(e, arm)
            if v is not None and np.isfinite(v):
                out[arm].setdefault(e["seed"], []).append(v)
    return {arm: {s: float(np.mean(v)) for s, v in seeds.items()} for arm, seeds in out.items()}


def fmt(values):
    v = np.array(list(values.values()))
    if len(v) == 0:
        return ""
    return f"{v.mean():.3f}" if len(v) < 2 else f"{v.mean():.3f} ± {v.std(ddof=1):.3f}"


def report(rows, mixing, nn_rows, info, args, settings, command, elapsed, made=None):
    """Write the markdown and JSON reports; ``made`` (date, commit, machine, CPU seconds) comes
    from a saved report when one is re-rendered, else from this run."""
    made = made or {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"), "commit": code_version(), "machine": machine(),
        "cpu_s": time.process_time()}
    date = made["date"]
    f1 = by_seed(rows, ARMS, lambda r, arm: r["f1"] if r["arm"] == arm else None)
    mix_arms = (REFERENCE, WITHIN, TYPE_ONLY, MARGINAL)
    mix = by_seed(mixing, mix_arms, lambda e, arm: e[arm])
    nn_arms = ("real", WITHIN, TYPE_ONLY, MARGINAL)
    nn = by_seed(nn_rows, nn_arms, lambda e, arm: e[arm])
    lines = ["# Batch conditioning: rare cells within each batch, leave-one-batch-out", ""]
    if args.quick:
        lines += ["> **Quick mode** (`--quick`): one seed, tiny networks and few steps. It checks "
                  "that the benchmark runs; its figures say nothing about conditioning. The "
                  "full run is `python benchmarks/batch_conditioning.py`.", ""]
    d = settings["data"]
    lines += [
        f"Made by `{command}` on {date}, {made['machine']}; seeds {settings['seeds']}; "
        f"{elapsed / 60:.1f} min wall"
        + ("" if made.get("cpu_s") is None else f", {made['cpu_s'] / 60:.1f} CPU-min")
        + " on a machine shared with other jobs (timings indicative)."
        + ("" if made.get("rendered") is None else
           f" This page was re-written from its JSON by `--render` at {made['rendered']}."),
        "",
        "How it was measured: see the docstring of `benchmarks/batch_conditioning.py`. "
        f"Simulated data per seed: {d['n_cells']} cells x {d['n_genes']} genes, "
        f"{d['n_types']} types, {d['n_batches']} batches (per-gene batch shift sd "
        f"{d['batch_effect_sd']}, type-specific sd {d['batch_type_effect_sd']}, library shift "
        f"sd {d['batch_library_sd']}); the rare types {list(settings['rare'])} are capped at "
        f"{settings['cap']} training cells (spread over three batches) and brought to "
        f"{settings['n_target']} by each augmenter; each batch in turn is held out as the "
        "test set (a donor never seen).",
        "",
        "## Downstream: rare-type F1 on the held-out batch",
        "",
        "Mean over the 4 held-out batches and the 2 rare types per seed, then mean ± sd over "
        "seeds.", "",
        "| arm | rare-type F1 |", "|---|---|"]
    lines += [f"| {arm} | {fmt(f1[arm])} |" for arm in ARMS]
    lines += ["", "Paired differences over seeds (95 % paired-t interval; a difference counts "
              "only when its interval excludes 0):", "",
              "| difference | mean | 95 % interval | seeds | verdict |", "|---|---|---|---|---|"]
    verdicts = {}
    for a, b in PAIRS:
        mean, (lo, hi), n = paired(f1, a, b)
        verdict = ("better" if lo > 0 else "worse" if hi < 0 else "no difference") \
            if n >= 2 else "one seed: no interval"
        verdicts[(a, b)] = verdict
        lines.append(f"| {a} − {b} | {mean:+.3f} | [{lo:+.3f}, {hi:+.3f}] | {n} | {verdict} |")
    folds = {}
    for r in rows:
        folds.setdefault((r["seed"], r["held_out"]), {})[r["arm"]] = r["f1"]
    wins = sum(v[WITHIN] > v[TYPE_ONLY] for v in folds.values())
    ties = sum(v[WITHIN] == v[TYPE_ONLY] for v in folds.values())
    lines += ["", f"Per fold (seed x held-out batch), within batch beat type only in {wins} of "
              f"{len(folds)} folds ({ties} ties).", "",
              "## Mixing with the real cells of their batch", "",
              f"Common type `{settings['common']}`, {settings['n_mix']} synthetic cells against "
              "each training batch's real cells of the type (about 150): `c2st_auc`, 0.5 = "
              "indistinguishable, lower is better; in the fold holding out batch_0. Mean over "
              "its three training batches per seed, then mean ± sd over seeds.", "",
              "| cells | c2st_auc vs the batch's real cells |", "|---|---|"]
    lines += [f"| {arm} | {fmt(mix[arm])} |" for arm in mix_arms]
    mean, (lo, hi), n = paired(mix, TYPE_ONLY, WITHIN)
    lines += ["", f"Type only − within batch: {mean:+.3f} [{lo:+.3f}, {hi:+.3f}] over {n} seeds "
              "(positive: the within-batch cells are harder to tell from their batch).", "",
              "Rare types: fraction of synthetic cells whose nearest real training cell of "
              "their type is in the batch they were assigned (type-only and marginalised cells "
              "get the same assignment, which they ignore: chance); the real cells' own rate is "
              "leave-one-out among the capped cells.", "",
              "| cells | own-batch nearest neighbour |", "|---|---|"]
    lines += [f"| {arm} | {fmt(nn[arm])} |" for arm in nn_arms]
    mean_nn, (lo_nn, hi_nn), n_nn = paired(nn, WITHIN, TYPE_ONLY)
    lines += ["", f"Within batch − type only: {mean_nn:+.3f} [{lo_nn:+.3f}, {hi_nn:+.3f}] over "
              f"{n_nn} seeds.", "", "## Where it helps and where it does not", ""]
    if args.quick:
        lines += ["Not to be read from a quick run: tiny networks, one seed.", ""]
    else:
        lines += [
            f"- **Downstream F1 on a new batch**: within batch against type only is "
            f"*{verdicts[(WITHIN, TYPE_ONLY)]}* "
            f"({paired(f1, WITHIN, TYPE_ONLY)[0]:+.3f}); against the same conditioned model "
            f"sampled without a batch, *{verdicts[(WITHIN, MARGINAL)]}*; against SMOTE, "
            f"*{verdicts[(WITHIN, SMOTE_ARM)]}*. Type-only SCLD against no augmentation: "
            f"*{verdicts[(TYPE_ONLY, NONE)]}*.",
            f"- **Mixing within a batch** (common type): the within-batch cells score "
            f"{np.mean(list(mix[WITHIN].values())):.3f} against their batch's real cells, the "
            f"type-only ones {np.mean(list(mix[TYPE_ONLY].values())):.3f} (real halves: "
            f"{np.mean(list(mix[REFERENCE].values())):.3f}).",
            f"- **Rare types**: a within-batch synthetic cell's nearest real cell of its type is "
            f"in its batch {np.mean(list(nn[WITHIN].values())):.2f} of the time, against "
            f"{np.mean(list(nn[TYPE_ONLY].values())):.2f} for type-only cells (chance) and "
            f"{np.mean(list(nn['real'].values())):.2f} for the real cells themselves (leave-one-"
            "out among the few capped cells, so a real cell's own batch has one candidate "
            "fewer: a floor, not a ceiling).",
            "",
            "So conditioning does what it is for: the cells of a type generated within a batch "
            "are that batch's (closer to its real cells, nearest to its own rare cells), where "
            "type-only cells are a blend of all batches. It does not, here, change the F1 on a "
            "batch never seen beyond the spread over seeds: a classifier tested on a new donor "
            "gains from batch-specific cells only as far as they widen what it learns of the "
            "type. And the SCLD cells at these modest settings (an autoencoder of "
            f"{settings['ae'].get('max_epochs')} epochs, {settings['scld'].get('diffusion_steps')}"
            " diffusion steps, to fit the run in minutes) are far from real ones (c2st about "
            f"{np.mean(list(mix[WITHIN].values())):.2f} and "
            f"{np.mean(list(mix[TYPE_ONLY].values())):.2f} against 0.5): every SCLD arm scores "
            f"{'below' if verdicts[(TYPE_ONLY, NONE)] == 'worse' else 'no better than'} no "
            "augmentation and far below SMOTE, whose interpolations of the ten real cells "
            "carry their real batches too. These figures judge the conditioning, not SCLD's "
            "quality at its defaults ([fidelity](fidelity_10shot.md); downstream, development "
            "seeds: [archive/downstream](archive/downstream/downstream.md)).", ""]
    text = "\n".join(lines)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "batch_conditioning.md"), "w") as fh:
        fh.write(text)
    write_json({"command": command, "commit": made["commit"], "machine": made["machine"],
                "date": date, "cpu_s": made.get("cpu_s"),
                "quick": args.quick, "seeds": settings["seeds"],
                "settings": {k: v for k, v in settings.items() if k != "seeds"},
                "elapsed_s": elapsed, "fit_seconds": info, "f1_rows": rows, "mixing": mixing,
                "rare_nearest_neighbour": nn_rows,
                "paired": {f"{a} - {b}": paired(f1, a, b) for a, b in PAIRS}},
               os.path.join(os.path.abspath(args.out_dir), "batch_conditioning.json"),
               default=lambda v: v.item() if hasattr(v, "item") else str(v))
    return text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="one seed, tiny networks: a smoke test in minutes, not a benchmark")
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    p.add_argument("--out-dir", default=DOCS)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--render", metavar="JSON", default=None,
                   help="re-write the reports from a saved batch_conditioning.json (no run)")
    args = p.parse_args(argv)
    if args.render is not None:
        import json

        with open(args.render) as fh:
            saved = json.load(fh)
        args.quick = saved["quick"]
        settings = dict(saved["settings"], seeds=saved["seeds"])
        made = {k: saved.get(k) for k in ("date", "commit", "machine", "cpu_s")}
        made["rendered"] = code_version()
        print(report(saved["f1_rows"], saved["mixing"], saved["rare_nearest_neighbour"],
                     saved["fit_seconds"], args, settings, saved["command"], saved["elapsed_s"],
                     made=made))
        return
    settings = dict(QUICK if args.quick else FULL)
    if args.seeds is not None:
        settings["seeds"] = args.seeds
    command = shlex.join(["python", "benchmarks/batch_conditioning.py",
                          *(argv if argv is not None else sys.argv[1:])])
    t0 = time.perf_counter()
    rows, mixing, nn_rows, info = [], [], [], []
    with warnings.catch_warnings():
        # small samples in quick mode; the rows keep the NaNs they give
        warnings.simplefilter("ignore", DegenerateInputWarning)
        for seed in settings["seeds"]:
            adata = simulate(**settings["data"], random_state=seed)
            for held in sorted(adata.obs["batch"].astype(str).unique()):
                if not args.quiet:
                    print(f"seed {seed}, held out {held} ({time.perf_counter() - t0:.0f} s)",
                          file=sys.stderr, flush=True)
                r, m, n, s = run_fold(adata, seed, held, settings, verbose=False)
                rows += r
                mixing += m
                nn_rows += n
                info.append(dict(seed=seed, held_out=held, **s))
    text = report(rows, mixing, nn_rows, info, args, settings, command, time.perf_counter() - t0)
    print(text)


if __name__ == "__main__":
    main()
