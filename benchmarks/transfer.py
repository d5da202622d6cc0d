"""Transfer: an encoder pretrained on pbmc3k's 32,738 genes, reused on data with other genes.

What reusing a pretrained :class:`scaug.CellAutoencoder` buys, against an encoder trained on the
target data alone. The encoder is pretrained once, as a user would: without labels, on a fixed
stratified half of pbmc3k's cells with all 32,738 genes (the half drawn with seed
``PRETRAIN_SEED``, whatever the seeds of the run). It is then reused on two targets, each split
half/half per seed (stratified), its three largest types capped at 10 labelled training cells
(rare to every generator, while up to 300 held-out cells of each judge the synthetic ones):

- ``pbmc68k_reduced``: 700 cells x 765 genes (another data set, other genes in another order:
  all 765 among pbmc3k's);
- ``pbmc3k held-out half``: the half of pbmc3k's cells the encoder never saw, restricted to its
  2,000 most variable genes (chosen on that half, no labels).

Arms (SCLD with its defaults, fitted on the capped training split):

- ``no augmentation`` (downstream only);
- ``target alone``: SCLD trains its own autoencoder on the capped training split;
- ``pretrained, gene layers``: ``SCLD(autoencoder=pretrained)``: the encoder adapted to the
  target's genes (:meth:`CellAutoencoder.adapt`, the default ``finetune="genes"``: the input
  layer taught, on the training split, the latents the pretrained encoder gives its cells with
  their missing genes imputed; trunk and shared genes' decoder kept);
- ``pretrained, whole net``: ``pretrained.adapt(..., finetune="all")`` passed to SCLD (every
  layer trained toward the same latents);
- ``pretrained on the target's genes``: an encoder pretrained on the same pbmc3k cells restricted
  to the target's genes beforehand (no surgery, no fine-tuning): what the pretraining cells give
  without the cost of adapting to a gene set, the reference the adapted arms are read against.

Per capped type: ``c2st_auc`` (scaug.metrics, log-normalised, 0.5 = indistinguishable) of as
many synthetic cells as held-out cells against those held-out cells, and the copy check
``dcr_ratio`` (scaug.metrics: median distance to the closest of the type's 10 training cells,
synthetic over held-out; near 0 = copies, about 1 = as new as real cells); downstream, the F1 of
each capped type for a logistic regression on log-normalised counts, trained on the capped split
plus 100 synthetic cells of each capped type, tested on the held-out half. Means over the capped
types per seed, then mean and sd over seeds.

    SCAUG_DATA_DIR=../shared/data python benchmarks/transfer.py           # the full run, seeds 10-14
    SCAUG_DATA_DIR=../shared/data python benchmarks/transfer.py --quick         # smoke test

``--quick``: one seed, tiny networks and few steps: it checks that the script runs, its figures
say nothing about transfer. Writes transfer_results.md and transfer_results.json into
--out-dir (default docs/).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time
import warnings

import numpy as np
import scanpy as sc
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DOCS, THREADS, code_version, machine, rare_split, write_json  # noqa: E402
from _suite import REPORT_SEEDS, fmt_diff, paired, seed_roles  # noqa: E402

from scaug import SCLD, CellAutoencoder, datasets, metrics  # noqa: E402
from scaug.metrics import DegenerateInputWarning  # noqa: E402
from scaug.preprocessing import NormalizeLog1p  # noqa: E402

TARGETS = ("pbmc68k_reduced", "pbmc3k held-out half")
NO_AUG, ALONE, GENES, WHOLE, SAME = ("no augmentation", "target alone", "pretrained, gene layers",
                                     "pretrained, whole net", "pretrained on the target's genes")
REFERENCE = "reference: held-out real vs real"
#: the seed of the pbmc3k half the encoder is pretrained on, and of its pretraining: fixed, so the
#: encoder is pretrained once for all seeds of a run (the seeds vary the targets' splits and fits)
PRETRAIN_SEED = 0
#: the settings of each mode, in full, so that a change of scaug's defaults never changes a row
FULL = dict(ae={}, scld={}, n_heldout=300, n_synthetic=100, n_hvg=2000, seeds=list(REPORT_SEEDS))
QUICK = dict(ae=dict(n_latent=4, hidden=(32,), max_epochs=1),
             scld=dict(n_latent=4, ae_hidden=(32,), width=16, depth=1, max_epochs=1,
                       diffusion_steps=20, n_sample_steps=5),
             n_heldout=40, n_synthetic=20, n_hvg=300, seeds=[0])


def log_counts(X):
    return NormalizeLog1p().fit_transform(X)


def hvg(adata, n_top):
    """The ``n_top`` most variable genes of ``adata`` (scanpy's seurat flavour), in its order."""
    lognorm = adata.copy()
    sc.pp.normalize_total(lognorm, target_sum=1e4)
    sc.pp.log1p(lognorm)
    sc.pp.highly_variable_genes(lognorm, n_top_genes=n_top, flavor="seurat")
    import torch  # scanpy resets the OpenMP thread count, and torch's with it

    torch.set_num_threads(THREADS)
    return adata[:, lognorm.var["highly_variable"].to_numpy()].copy()


def pretrain(settings, verbose):
    """``(pbmc3k, its held-out half, the half the encoder saw, the encoder, seconds)``."""
    source = datasets.load("pbmc3k")
    y_src = source.obs["cell_type"].astype(str).to_numpy()
    rng = np.random.default_rng(PRETRAIN_SEED)
    # the pbmc3k half the encoder never sees, stratified by type
    held = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y_src == t))[: (y_src == t).sum() // 2]
                                   for t in np.unique(y_src)]))
    seen = np.setdiff1d(np.arange(source.n_obs), held)
    t0 = time.perf_counter()
    ae = CellAutoencoder(random_state=PRETRAIN_SEED, verbose=verbose, **settings["ae"])
    ae.fit(source.X[seen], feature_names=list(source.var_names))
    return source, held, seen, ae, time.perf_counter() - t0


def same_genes_encoders(source, seen, data, settings, verbose):
    """``{target: an encoder pretrained on the same pbmc3k cells with only the target's genes}``."""
    out = {}
    for name, _, _, genes in data:
        columns = source.var_names.get_indexer(genes)
        if (columns < 0).any():  # a target gene pbmc3k lacks: no such encoder
            continue
        ae = CellAutoencoder(random_state=PRETRAIN_SEED, verbose=verbose, **settings["ae"])
        out[name] = ae.fit(source.X[seen][:, columns], feature_names=list(genes))
    return out


def targets(source, held, settings):
    """``(name, X, y, genes)`` of each target."""
    out = []
    for name in TARGETS:
        target = datasets.pbmc68k_reduced() if name == "pbmc68k_reduced" else \
            hvg(source[held], settings["n_hvg"])
        out.append((name, target.X.tocsr().astype(np.float32),
                    target.obs["cell_type"].astype(str).to_numpy(), list(target.var_names)))
    return out


def fit_arms(X, y, genes, pretrained, same_genes, seed, settings, verbose):
    """The fitted SCLD of each arm, and the seconds each fit took."""
    models, fit_s = {}, {}
    common = dict(random_state=seed, verbose=verbose, **settings["scld"])
    for arm in (ALONE, GENES, WHOLE) + ((SAME,) if same_genes is not None else ()):
        t0 = time.perf_counter()
        if arm == ALONE:
            ae = None
        elif arm == GENES:
            ae = pretrained
        elif arm == SAME:
            ae = same_genes
        else:
            ae = pretrained.adapt(X, feature_names=genes, finetune="all",
                                  max_epochs=settings["scld"].get("max_epochs"), random_state=seed)
        models[arm] = SCLD(autoencoder=ae, **common).fit(X, y, feature_names=genes)
        fit_s[arm] = time.perf_counter() - t0
    return models, fit_s


def run(seed, data, pretrained, same_genes, settings, verbose):
    rows, info = [], {}
    for name, X, y, genes in data:
        train, test, capped = rare_split(y, seed=seed, cap=10, test_size=0.5, largest=True)
        models, fit_s = fit_arms(X[train], y[train], genes, pretrained, same_genes.get(name), seed,
                                 settings, verbose)
        info[name] = {"fit_s": fit_s, "capped": capped,
                      "gene_overlap": models[GENES].gene_overlap_,
                      "n_cells": int(X.shape[0]), "n_genes": int(X.shape[1])}
        X_log = log_counts(X)
        for t in capped:
            held = test[y[test] == t][: settings["n_heldout"]]
            own = train[y[train] == t]
            half = len(held) // 2
            base = dict(target=name, seed=seed, type=t, n_train=len(own), n_heldout=len(held))
            rows.append(dict(base, arm=REFERENCE, c2st_auc=metrics.c2st_auc(
                X_log[held[:half]], X_log[held[half:]], random_state=seed)))
            for arm, model in models.items():
                Xs, _ = model.sample({t: len(held)}, random_state=seed)
                syn_log = log_counts(Xs)
                rows.append(dict(base, arm=arm,
                                 c2st_auc=metrics.c2st_auc(X_log[held], syn_log, random_state=seed),
                                 dcr_ratio=metrics.dcr_ratio(X_log[own], syn_log, X_log[held],
                                                             random_state=seed)))
        # downstream: the capped types' F1 on the held-out half
        for arm in (NO_AUG, *models):
            X_fit, y_fit = X_log[train], y[train]
            if arm != NO_AUG:
                Xs, ys = models[arm].sample({t: settings["n_synthetic"] for t in capped},
                                            random_state=seed)
                X_fit = sp.vstack([X_fit, sp.csr_matrix(log_counts(Xs))]).tocsr()
                y_fit = np.concatenate([y_fit, ys])
            clf = LogisticRegression(max_iter=2000).fit(X_fit, y_fit)
            f1 = f1_score(y[test], clf.predict(X_log[test]), labels=capped, average=None,
                          zero_division=0)
            for t, v in zip(capped, f1, strict=True):
                match = [r for r in rows if r["target"] == name and r["type"] == t
                         and r["arm"] == arm]
                if match:
                    match[0]["f1"] = float(v)
                else:
                    rows.append(dict(target=name, seed=seed, type=t, arm=arm, f1=float(v)))
    return rows, info


def summary(rows, metric):
    """``{(target, arm): (mean, sd, n seeds)}`` of the per-seed means over the capped types."""
    return {k: (float(np.mean(list(s.values()))),
                float(np.std(list(s.values()), ddof=1)) if len(s) > 1 else float("nan"), len(s))
            for k, s in per_seed(rows, metric).items()}


def fmt(cell):
    if cell is None:
        return ""
    mean, sd, _ = cell
    return f"{mean:.3f}" if not np.isfinite(sd) else f"{mean:.3f} ± {sd:.3f}"


def per_seed(rows, metric):
    """``{(target, arm): {seed: mean over the capped types}}``."""
    out = {}
    for r in rows:
        if metric in r and np.isfinite(r[metric]):
            out.setdefault((r["target"], r["arm"]), {}).setdefault(r["seed"], []).append(r[metric])
    return {k: {seed: float(np.mean(v)) for seed, v in s.items()} for k, s in out.items()}


def verdicts(rows, arms=(GENES, WHOLE, SAME), against=ALONE):
    """One sentence per target and arm: the paired difference from the ``against`` arm.

    A difference counts only when its 95 % paired-t interval over seeds excludes zero (the suite's
    rule); the copy ratio is reported without a direction (about 1 is the aim, not higher).
    """
    lines = []
    for target in TARGETS:
        for arm in arms:
            parts = []
            for metric, higher, what in (("c2st_auc", False, "two-sample AUC"),
                                         ("dcr_ratio", None, "copy ratio"),
                                         ("f1", True, "rare-type F1")):
                seeds = per_seed(rows, metric)
                a, b = seeds.get((target, arm)), seeds.get((target, against))
                if not a or not b:
                    continue
                p = paired(a, b, higher_is_better=bool(higher))
                said = {"win": "better", "loss": "WORSE"}.get(p["verdict"], p["verdict"])
                if higher is None:
                    said = "about 1 is the aim"
                parts.append(f"{what} {np.mean(list(a.values())):.3f} vs "
                             f"{np.mean(list(b.values())):.3f}, paired difference {fmt_diff(p)} "
                             f"({said})")
            if parts:
                lines.append(f"- **{target}, {arm}** against {against}: " + "; ".join(parts) + ".")
    return lines


def report(rows, info, settings, *, quick, out_dir, command, elapsed, commit, date=None):
    """Write transfer_results.md and .json into ``out_dir`` from ``rows``; return the text."""
    metric_names = ("c2st_auc", "dcr_ratio", "f1")
    tables = {m: summary(rows, m) for m in metric_names}
    date = date or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    run_machine = machine().rsplit("; scaug at ", 1)[0]
    lines = ["# Transfer of a pretrained encoder to other genes", ""]
    if quick:
        lines += ["> **Quick mode** (`--quick`): one seed, tiny networks and few steps. This run "
                  "checks that the benchmark works; its figures say nothing about transfer. The "
                  "full run, not yet made on this shared machine, is "
                  "`SCAUG_DATA_DIR=../shared/data python benchmarks/transfer.py`.",
                  ""]
    lines += [f"Made by `{command}` on {date}, {run_machine}; scaug at {commit}; seeds "
              f"{seed_roles(settings['seeds'])}; "
              f"{elapsed / 60:.1f} min on a machine shared with other jobs (timings are "
              "indicative). Every difference below is paired by seed, with its 95 % interval.", "",
              "How it was measured: see the docstring of `benchmarks/transfer.py` and "
              "[the transfer guide](transfer.md). Per target, half of the cells train (the three "
              "largest types capped at 10 labelled cells), half judge; `c2st_auc` 0.5 = "
              "indistinguishable from held-out real cells (the reference row compares two halves "
              "of them); `dcr_ratio` near 0 = copies of the 10 training cells, about 1 = as new "
              "as real cells; `rare-type F1` of the capped types on the held-out half. Mean over "
              "the capped types per seed, then mean ± sd over seeds.", "",
              f"The encoder was pretrained once, without labels, on {info.get('n_pretrain_cells')} "
              f"pbmc3k cells x {info.get('n_pretrain_genes')} genes in "
              f"{info.get('pretrain_s', float('nan')):.0f} s (seed {PRETRAIN_SEED}).", ""]
    for target in TARGETS:
        if target not in info:
            continue
        i = info[target]
        o = i["gene_overlap"] or {}
        lines += [f"## {target}", "",
                  f"{i['n_cells']} cells x {i['n_genes']} genes; capped types {i['capped']}; "
                  f"gene overlap with the encoder: {o.get('n_shared')} shared, {o.get('n_new')} "
                  f"new, {o.get('n_missing')} of its {o.get('n_encoder_genes')} genes missing.", "",
                  f"| arm | c2st_auc | dcr_ratio | rare-type F1 | fit s (seed {settings['seeds'][0]}) |",
                  "|---|---|---|---|---|"]
        for arm in (REFERENCE, NO_AUG, ALONE, GENES, WHOLE, SAME):
            cells = [fmt(tables[m].get((target, arm))) for m in metric_names]
            fit = i["fit_s"].get(arm)
            lines.append(f"| {arm} | " + " | ".join(cells) + f" | {'' if fit is None else f'{fit:.1f}'} |")
        lines.append("")
    lines += ["## Does reuse help?", "",
              *(["Not to be read from a quick run: tiny networks, one seed.", ""] if quick else []),
              *verdicts(rows), "",
              "Where a pretrained arm's interval does not exclude zero, reuse did not help on that "
              "target with these settings.", "",
              "## What adapting to a gene set costs", "",
              "The adapted encoders against one pretrained on the same cells with only the "
              "target's genes (no surgery): a loss here is what the surgery and its fine-tuning "
              "cost, not what the pretraining cells give.", "",
              *verdicts(rows, arms=(GENES, WHOLE), against=SAME), ""]
    text = "\n".join(lines)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "transfer_results.md"), "w") as fh:
        fh.write(text)
    write_json({"command": command, "commit": commit, "machine": run_machine, "date": date,
                "quick": quick, "seeds": settings["seeds"],
                "settings": {k: v for k, v in settings.items() if k != "seeds"},
                "elapsed_s": elapsed, "info": info, "rows": rows},
               os.path.join(os.path.abspath(out_dir), "transfer_results.json"),
               default=lambda v: v.item() if hasattr(v, "item") else str(v))
    return text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="one seed, tiny networks: a smoke test in minutes, not a benchmark")
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    p.add_argument("--out-dir", default=DOCS)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--render", action="store_true",
                   help="re-write the report from --out-dir's transfer_results.json, running nothing")
    args = p.parse_args(argv)
    if args.render:
        with open(os.path.join(args.out_dir, "transfer_results.json")) as fh:
            saved = json.load(fh)
        print(report(saved["rows"], saved["info"], dict(saved["settings"], seeds=saved["seeds"]),
                     quick=saved["quick"], out_dir=args.out_dir, command=saved["command"],
                     elapsed=saved["elapsed_s"], commit=saved["commit"], date=saved["date"]))
        return
    settings = dict(QUICK if args.quick else FULL)
    if args.seeds is not None:
        settings["seeds"] = args.seeds
    command = shlex.join(["python", "benchmarks/transfer.py", *(argv if argv is not None else sys.argv[1:])])
    t0, commit = time.perf_counter(), code_version()
    rows, info = [], {}
    with warnings.catch_warnings():
        # tiny held-out samples in quick mode; the rows keep the NaNs they give
        warnings.simplefilter("ignore", DegenerateInputWarning)
        source, held, seen, pretrained, pretrain_s = pretrain(settings, verbose=not args.quiet)
        data = targets(source, held, settings)
        same_genes = same_genes_encoders(source, seen, data, settings, verbose=not args.quiet)
        for done, seed in enumerate(settings["seeds"], 1):
            r, i = run(seed, data, pretrained, same_genes, settings, verbose=not args.quiet)
            rows += r
            info = info or dict(i, pretrain_s=pretrain_s, n_pretrain_cells=int(source.n_obs - len(held)),
                                n_pretrain_genes=int(source.n_vars))
            # a report after every seed, so that a long run stopped early still leaves its figures
            text = report(rows, info, dict(settings, seeds=settings["seeds"][:done]),
                          quick=args.quick, out_dir=args.out_dir, command=command,
                          elapsed=time.perf_counter() - t0, commit=commit)
    print(text)


if __name__ == "__main__":
    main()
