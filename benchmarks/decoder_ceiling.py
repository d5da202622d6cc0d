"""The decoder's ceiling: how real do a type's own cells look once re-drawn through the autoencoder?

Every SCLD cell is decoded by the autoencoder, so no sampler can be more realistic than the
type's real latents re-drawn through it. This experiment measures that ceiling per cell type and
asks what raises it (issue 18: for some types, erythrocytes in cbmc, even re-drawn real latents
are easy to tell from real cells).

Set-up: cbmc halved per seed (stratified). Each autoencoder variant is trained without labels on
the whole training half, so every type has all its training cells (the question is the decoder,
not the 10-cell cap). Per type: its training cells are encoded and re-drawn (their latents
decoded through the NB likelihood at their own library sizes), drawn with replacement to as many
cells as the type has held-out cells (at most 300), and judged against those held-out cells:
``c2st_auc`` (scaug.metrics: log-normalised, random forest; 0.5 = indistinguishable). The
reference row judges the real training cells themselves the same way. Types with fewer than 20
held-out cells are skipped (too few to tell).

Why a type is easy to tell is read off its genes: the ratio of the re-drawn to the held-out
cells' mean normalised expression per gene, by expression band of the held-out cells (counts per
10,000 total), and the genes that differ most.

Variants (``VARIANTS``): the default autoencoder, a per-cell dispersion (``gene-cell``), more
latent noise, both, more latent dimensions, training with the cell types so that minibatches
draw type ``c`` with probability ~ ``n_c ** class_balance`` (SCLD trains its autoencoder without
them), and each gene's dispersion shifted after training so that the model detects it in as many
training cells as the data do (``match_detection``). ``--variants`` runs some of them (the
default autoencoder always). Seeds: development 0-2 (where a variant would be chosen) and
reporting 10-14, both in one report.

    SCAUG_DATA_DIR=../shared/data python benchmarks/decoder_ceiling.py          # 0-2 and 10-14
    SCAUG_DATA_DIR=../shared/data python benchmarks/decoder_ceiling.py --quick  # smoke test

writes decoder_ceiling.md and decoder_ceiling.json into --out-dir (default docs/).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.model_selection import train_test_split

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _suite import cbmc_seed_rows, fmt_diff, intro, one_report_main, paired, run_sections  # noqa: E402

from scaug import CellAutoencoder, metrics  # noqa: E402
from scaug.preprocessing import NormalizeLog1p  # noqa: E402

REFERENCE, DEFAULT = "reference: real training cells", "default autoencoder"
VARIANTS = {DEFAULT: {},
            "gene-cell dispersion": dict(dispersion="gene-cell"),
            "latent noise 0.3": dict(latent_noise=0.3),
            "gene-cell, latent noise 0.3": dict(dispersion="gene-cell", latent_noise=0.3),
            "32 latent dimensions": dict(n_latent=32),
            # trained with the cell types, so that rare types are drawn more often (fit(X, y))
            "class-balanced 0.5": dict(class_balance=0.5, labels=True),
            "class-balanced 0": dict(class_balance=0.0, labels=True),
            "detection matched": dict(match_detection=True)}
#: expression bands of the held-out cells, in mean counts per 10,000
BANDS = ((0, 0.3), (0.3, 1), (1, 3), (3, 10), (10, 100), (100, np.inf))
FULL = dict(ae={}, n_heldout=300, min_heldout=20)
QUICK = dict(ae=dict(n_latent=4, hidden=(32,), max_epochs=2), n_heldout=40, min_heldout=20)


def redraw(ae, X, rows, n, seed):
    """``n`` cells re-drawn from the latents of ``rows`` (with replacement), at their libraries."""
    pick = np.random.default_rng(seed).choice(rows, size=n, replace=len(rows) < n)
    Z = ae.transform(X[pick])
    library = np.asarray(X[pick].sum(1)).ravel()
    return ae.generate(Z, library, generator=torch.Generator().manual_seed(seed), sparse=True)


def per_10k(X):
    X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    return X / np.maximum(X.sum(1, keepdims=True), 1) * 1e4


def gene_bands(real, synthetic):
    """Per expression band of ``real``: (number of genes, median ratio synthetic/real mean)."""
    r, s = per_10k(real).mean(0), per_10k(synthetic).mean(0)
    out = []
    for lo, hi in BANDS:
        genes = (r > lo) & (r <= hi)
        out.append((int(genes.sum()), float(np.median(s[genes] / r[genes])) if genes.any()
                    else float("nan")))
    return out


def run_seed(X, y, seed, settings, verbose, variants=VARIANTS):
    idx = np.arange(len(y))
    train, test = train_test_split(idx, test_size=0.5, stratify=y, random_state=seed)
    norm = NormalizeLog1p()
    X_log = norm.fit_transform(X)
    types = [t for t in np.unique(y) if (y[test] == t).sum() >= settings["min_heldout"]]
    rows = []
    for variant, params in variants.items():
        t0 = time.perf_counter()
        params = dict(params)
        labels = y[train] if params.pop("labels", False) else None
        ae = CellAutoencoder(random_state=seed, verbose=verbose,
                             **{**params, **settings["ae"]}).fit(X[train], labels)
        fit_s = time.perf_counter() - t0
        for t in types:
            held = test[y[test] == t][: settings["n_heldout"]]
            own = train[y[train] == t]
            if variant == DEFAULT:
                rows.append(dict(seed=seed, type=t, variant=REFERENCE, c2st_auc=metrics.c2st_auc(
                    X_log[held], X_log[own[: settings["n_heldout"]]], random_state=seed)))
            syn = redraw(ae, X, own, len(held), seed)
            rows.append(dict(seed=seed, type=t, variant=variant, fit_s=fit_s,
                             n_heldout=len(held), n_train=len(own),
                             c2st_auc=metrics.c2st_auc(X_log[held], norm.transform(syn),
                                                       random_state=seed),
                             bands=gene_bands(X[held], syn)))
            print(f"seed {seed} {variant:28} {t:12} c2st {rows[-1]['c2st_auc']:.3f}", flush=True)
    return rows


def per_seed(rows, variant, seeds, types=None):
    out = {}
    for s in seeds:
        v = [r["c2st_auc"] for r in rows if r["variant"] == variant and r["seed"] == s
             and (types is None or r["type"] in types)]
        if v:
            out[s] = float(np.mean(v))
    return out


def tables(rows, seeds, variants):
    types = sorted({r["type"] for r in rows if r["seed"] in seeds})
    default = {t: per_seed(rows, DEFAULT, seeds, [t]) for t in types}
    order = sorted(types, key=lambda t: -np.mean(list(default[t].values())))
    names = [REFERENCE, *variants]
    lines = ["Two-sample AUC of each type's re-drawn training cells against its held-out cells "
             "(mean over seeds; lower is more realistic):", "",
             "| type | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for t in order:
        cells = [f"{np.mean(list(per_seed(rows, v, seeds, [t]).values())):.3f}" for v in names]
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    lines += ["", "Mean over types, per seed, against the default autoencoder (paired by seed, "
              "95 % interval):", "", "| variant | mean ± sd | minus the default's |", "|---|---|---|"]
    base = per_seed(rows, DEFAULT, seeds)
    for v in names:
        mine = per_seed(rows, v, seeds)
        vals = np.array(list(mine.values()))
        sd = f" ± {vals.std(ddof=1):.3f}" if len(vals) > 1 else ""
        diff = "" if v in (DEFAULT, REFERENCE) else fmt_diff(paired(mine, base, higher_is_better=False))
        lines.append(f"| {v} | {vals.mean():.3f}{sd} | {diff} |")
    worst = order[0]
    lines += ["", f"Where the re-drawn cells of the least realistic type ({worst}) differ: the "
              "median ratio of their mean expression to the held-out cells', per gene, by the "
              "held-out cells' expression band (counts per 10,000; genes in the band):", "",
              "| variant | " + " | ".join(f"{lo:g}-{hi:g}" for lo, hi in BANDS) + " |",
              "|---|" + "---|" * len(BANDS)]
    for v in variants:
        bands = [r["bands"] for r in rows if r["variant"] == v and r["type"] == worst
                 and r["seed"] in seeds]
        n = np.array([[b[0] for b in bs] for bs in bands])
        ratio = np.array([[b[1] for b in bs] for bs in bands])
        finite = np.isfinite(ratio)  # a band without genes on a seed has no ratio there
        counts = finite.sum(0)
        ratio = np.where(counts > 0, np.where(finite, ratio, 0).sum(0) / np.maximum(counts, 1),
                         np.nan)
        lines.append(f"| {v} | " + " | ".join(f"{q:.2f} ({m:.0f})" for q, m in
                                               zip(ratio, n.mean(0), strict=True)) + " |")
    sizes = [np.mean([r["n_train"] for r in rows if r["variant"] == DEFAULT and r["type"] == t
                      and r["seed"] in seeds]) for t in types]
    aucs = [np.mean(list(default[t].values())) for t in types]
    rho = spearmanr(sizes, aucs)
    lines += ["", "The ceiling follows how many cells of a type the autoencoder trains on: across "
              f"the {len(types)} types, Spearman's rho between a type's training cells and its "
              f"re-drawn AUC (default autoencoder) is {rho.statistic:+.2f} (p = {rho.pvalue:.3f}); "
              "from the fewest to the most cells: " + ", ".join(
                  f"{t} {n:.0f} cells {a:.2f}"
                  for n, t, a in sorted(zip(sizes, types, aucs, strict=True))) + "."]
    fits = {v: np.mean([r["fit_s"] for r in rows if r["variant"] == v and r["seed"] in seeds])
            for v in variants}
    lines += ["", "Autoencoder fit, mean seconds: " +
              ", ".join(f"{v} {s:.0f}" for v, s in fits.items()) + "."]
    return lines


def add_arguments(p):
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                   help="the variants to run (the default autoencoder always runs)")


def run(quick, verbose, args):
    settings = QUICK if quick else FULL
    variants = {v: VARIANTS[v] for v in VARIANTS if v == DEFAULT or v in args.variants}
    return {"settings": settings, "variants": variants,
            **cbmc_seed_rows(quick, "a variant", run_seed, settings, verbose, variants)}


def render(payload):
    lines = [*intro("The decoder's ceiling: re-drawn real cells against held-out ones",
                    "decoder_ceiling.py", payload),
             "Differences are paired by seed; a win or loss only when the 95 % interval excludes "
             "zero.", ""]
    sections = run_sections(payload, lambda rows, seeds: tables(rows, seeds, payload["variants"]))
    return "\n".join([*lines, *sections])


if __name__ == "__main__":
    one_report_main(__doc__, "decoder_ceiling", run, render, add_arguments=add_arguments)
