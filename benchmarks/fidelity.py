"""Fidelity: how hard are synthetic rare cells to tell from held-out real cells of their type?

Per data set and seed, a stratified half/half split in which three types keep 10 labelled
training cells: the three rarest (split ``rarest``, report ``fidelity``: few held-out cells, the
real case) or the three largest (split ``largest``, report ``fidelity_10shot``: made rare in
training, each judged on up to 300 held-out cells, the low-noise test). Each generator makes as
many cells of a capped type as it has held-out cells (types with fewer than 6 are left out),
judged against them in log-normalised space: ``c2st_auc``, a random-forest two-sample AUC (0.5:
indistinguishable; the reference row compares two halves of the held-out cells); ``dcr_ratio``
and ``latent_dcr_ratio``, the distance to the closest training cell of the type, synthetic over
held-out, in log-normalised and in latent space (near 0: copies, which the decoder's count noise
hides from count space; about 1: as new as real cells); the marker-gene check
(``scaug.metrics.marker_agreement``, 50 markers, the rest being the held-out cells of the other
types): correlation and slope of the synthetic fold changes on the real ones, markers recovered.

Two autoencoders: ``capped split``, trained on the capped training split (what SCLDOverSampler
does), and ``training half``, pretrained without labels on the whole training half (the type's
other cells seen unlabelled). SCLD and the latent baselines of one set-up decode through the
same fitted autoencoder; ``autoencoder ceiling`` re-draws the held-out cells themselves through
it (their own latents and library sizes), about the best a generator on it can do. SMOTE
interpolates the capped split's log-normalised cells. ``SCLD, semi-supervised`` (training half
only) fits SCLD's diffusion on the whole training half, the capped types' other cells labelled -1.

    SCAUG_DATA_DIR=../shared/data python benchmarks/run.py --experiments fidelity [--quick]
"""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _suite as S  # noqa: E402
from _common import machine, semi_supervised_split  # noqa: E402
from downstream import COST, QUICK_DATASETS, load  # noqa: E402

NAME = "fidelity"
SPLITS = {"rarest": dict(largest=False, report="fidelity"),
          "largest": dict(largest=True, report="fidelity_10shot")}
AE_SOURCES = ("capped split", "training half")
SPLIT = dict(test_size=0.5, cap=10, n_rare=3, n_top_genes=2000, n_heldout=300, min_heldout=6,
             n_markers=50)
REFERENCE, CEILING = "reference: held-out halves", "autoencoder ceiling"
#: the data sets of --full unless --datasets says otherwise: cbmc, the one with hundreds of
#: held-out cells of its largest types, and pbmc68k_reduced, which no choice was made on (the
#: others' rarest types have too few held-out cells for a two-sample test to tell much)
FULL_DATASETS = ("cbmc", "pbmc68k_reduced")
METRICS = ("c2st_auc", "dcr_ratio", "latent_dcr_ratio", "logfc_correlation", "logfc_slope",
           "marker_recovery")


def configure(args) -> None:
    if args.datasets is None and not (args.quick or args.dev):
        args.datasets = list(FULL_DATASETS)
    S.resolve_mode(args, QUICK_DATASETS)
    args.splits = list(args.splits or SPLITS)
    # the number of cells is the held-out cells' here: settings that only change it are left out
    args.generators = S.drop_unavailable([a for a in args.augmenters if "amount" not in
                                          S.REGISTRY[a] and (S.REGISTRY[a]["kind"] in
                                                             ("latent", "scld", "scvi")
                                                             or a == "SMOTE")])


def units(args):
    return [(d, s, sp_) for d in args.datasets for s in args.seeds for sp_ in args.splits]


def entries(args):
    """``(AE source, generator)`` of one unit; SMOTE and the reference need no autoencoder."""
    out = [(None, REFERENCE)] + [(None, "SMOTE")] * ("SMOTE" in args.generators)
    for source in AE_SOURCES:
        out.append((source, CEILING))
        # scVI and scANVI bring their own model, fitted on the capped split
        out += [(source, g) for g in args.generators if g != "SMOTE" and (
            source == "training half" or not S.REGISTRY[g].get("unlabelled")) and (
            source == AE_SOURCES[0] or S.REGISTRY[g]["kind"] != "scvi")]
    return out


def key(unit, source, gen, args):
    d, s, split = unit
    setting = S.setting(gen, args.mode == "quick") if gen in S.REGISTRY else \
        dict(autoencoder=S.setting("SCLD", args.mode == "quick")["autoencoder"])
    return dict(experiment=NAME, dataset=d, seed=s, split=split, largest=SPLITS[split]["largest"],
                protocol=SPLIT, ae_source=source, generator=gen, setting=setting)


def missing(unit, args, cache):
    return [e for e in entries(args) if cache.get(key(unit, *e, args)) is None]


def estimate(unit, todo, args) -> float:
    n_scld = sum(1 for _, g in todo if g in S.REGISTRY and S.REGISTRY[g]["kind"] == "scld")
    n_ae = len({s for s, _ in todo if s})
    return n_ae * COST["ae_fit"] + n_scld * COST["diffusion_fit"] + 30.0 * len(todo)


def _latent_dcr(ae, Z_syn, seen_counts, held_counts):
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=1).fit(ae.transform(seen_counts))
    return float(np.median(nn.kneighbors(Z_syn)[0]) /
                 np.median(nn.kneighbors(ae.transform(held_counts))[0]))


def _score(real_log, rest_log, syn_log, train_log, seed):
    from scaug import metrics

    with warnings.catch_warnings(record=True) as caught:  # small samples: kept in the row
        warnings.simplefilter("always")
        out = dict(c2st_auc=metrics.c2st_auc(real_log, syn_log, random_state=seed),
                   dcr_ratio=metrics.dcr_ratio(train_log, syn_log, real_log, random_state=seed)
                   if train_log.shape[0] >= 2 else float("nan"))
        out.update(metrics.marker_agreement(real_log, rest_log, syn_log, counts=False,
                                            n_markers=SPLIT["n_markers"]))
    return dict(out, metric_warnings=sorted({str(w.message)[:200] for w in caught}))


def run_unit(unit, args, cache):
    from scaug import _utils

    todo = missing(unit, args, cache)
    done = [r for e in entries(args) if e not in todo for r in cache.get(key(unit, *e, args))]
    if not todo or args.from_cache:
        return done
    d, seed, split = unit
    X, y = load(d)
    train, test, capped, full_train, y_semi = semi_supervised_split(
        y, seed=seed, largest=SPLITS[split]["largest"])  # half/half, 10 labelled cells
    X_log = S.log_norm(X)  # per cell: nothing is learned from other cells
    held = {str(t): test[y[test] == t][:SPLIT["n_heldout"]] for t in capped}
    held = {t: h for t, h in held.items() if len(h) >= SPLIT["min_heldout"]}
    print(f"[{d} seed={seed} {split}] capped: " + ", ".join(
        f"{t} ({(y[train] == t).sum()} train, {len(h)} held out)" for t, h in held.items()), flush=True)
    fits = {src: S.Fits(X[train], y[train], seed, args.device, verbose=args.verbose,
                        ae_cells=X[full_train] if src == "training half" else None,
                        semi=(X[full_train], y_semi)) for src in AE_SOURCES}
    rows = list(done)
    for source, gen in todo:
        base = dict(dataset=d, seed=seed, split=split, ae_source=source, generator=gen,
                    machine=machine())
        out = []
        if gen == REFERENCE:  # two halves of the held-out cells: what real cells score
            for t, h in held.items():
                half = len(h) // 2
                rest = X_log[test[y[test] != t]]
                out.append(dict(base, type=t, n_heldout=len(h), **_score(
                    X_log[h[:half]], rest, X_log[h[half:]], X_log[train[y[train] == t]], seed)))
        elif gen == CEILING:
            ae, ae_s = fits[source].autoencoder(S.setting("SCLD", args.mode == "quick")["autoencoder"])
            gen_ = _utils.cpu_generator(seed)
            for t, h in held.items():
                Xs = ae.generate(ae.transform(X[h]), _utils.row_sums(X[h]), generator=gen_)
                out.append(dict(base, type=t, n_heldout=len(h), ae_fit_s=ae_s, **_score(
                    X_log[h], X_log[test[y[test] != t]], S.log_norm(Xs),
                    X_log[train[y[train] == t]], seed)))
        else:
            f = fits[source] if source else fits[AE_SOURCES[0]]
            s = S.setting(gen, args.mode == "quick")
            strategy = {t: int((y[train] == t).sum()) + len(h) for t, h in held.items()}
            syn = S.synthesize(gen, s, f, X[train], y[train], strategy, seed)
            syn_log = S.synthetic_log(syn)
            for t, h in held.items():
                m = syn["y"] == t
                seen = full_train if s.get("unlabelled") else train
                r = dict(base, type=t, n_heldout=len(h), ae_fit_s=syn["ae_fit_s"],
                         fit_s=syn["fit_s"], fit_total_s=syn["ae_fit_s"] + syn["fit_s"],
                         sample_s=syn["sample_s"], warnings=syn["warnings"],
                         **_score(X_log[h], X_log[test[y[test] != t]], syn_log[m],
                                  X_log[train[y[train] == t]], seed))
                if syn["latents"] is not None:
                    r["latent_dcr_ratio"] = _latent_dcr(syn["ae"], syn["latents"][m],
                                                        X[seen[y[seen] == t]], X[h])
                out.append(r)
        compute = sum(f_.fresh() for f_ in fits.values())
        for r in out:
            r["compute_s"] = compute / max(len(out), 1)
        cache.put(key(unit, source, gen, args), out)
        print(f"  {gen} [{source or '-'}]: c2st " + ", ".join(
            f"{r['type']} {r['c2st_auc']:.2f}" for r in out), flush=True)
        rows += out
    return rows


# -- the report ---------------------------------------------------------------------------------
def _seed_means(rows, metric):
    """Per seed: the mean of ``metric`` over the capped types (the seed is the replicate)."""
    by = {}
    for r in rows:
        v = r.get(metric)
        if v is not None and np.isfinite(v):
            by.setdefault(r["seed"], []).append(v)
    return {s: float(np.mean(v)) for s, v in by.items()}


def render(rows, args, prov):
    reports = []
    for split in args.splits:
        sr = S.pick(rows, split=split)
        lines = [f"# Fidelity of synthetic rare cells: the {split} types capped at 10 training "
                 f"cells{S.peers_in_title(args.generators)}", "", *S.provenance_lines(prov),
                 "## Protocol", "",
                 " ".join(p.replace("\n", " ") for p in __doc__.split("\n\n")[1:3]), "",
                 "Every figure is a mean over seeds of the mean over the capped types; "
                 "comparisons are paired over seeds with a 95 % paired-t interval, and a **win** "
                 "or **loss** is counted only when the interval excludes zero (for the AUC lower "
                 "is better, for the marker correlation higher). `fit s`: the autoencoder fit "
                 "(shared by SCLD and the latent baselines of a set-up) plus, for SCLD, its "
                 "diffusion fit; `sampling s`: all capped types at once.", ""]
        comps = []
        for d in args.datasets:
            for source in AE_SOURCES:
                cell = [r for r in S.pick(sr, dataset=d) if r["ae_source"] in (source, None)]
                gens = [g for g in (REFERENCE, CEILING, *args.generators)
                        if S.pick(cell, generator=g)]
                if not gens:
                    continue
                ref = _seed_means(S.pick(cell, generator=REFERENCE), "c2st_auc")
                body = []
                for g in gens:
                    got = S.pick(cell, generator=g)
                    auc = _seed_means(got, "c2st_auc")
                    gap = S.paired(auc, ref) if g != REFERENCE else None
                    body.append([g, S.mean_sd(auc.values()), S.fmt_diff(gap) if gap else "",
                                 *(S.mean_sd(_seed_means(got, m).values(), 2) for m in METRICS[1:]),
                                 *(S.mean_sd(_seed_means(got, m).values(), 1)
                                   for m in ("fit_total_s", "sample_s"))])
                lines += [f"## {d}, autoencoder: {source}", "", *S.table(
                    ["generator", "c2st AUC", "minus reference [95 % CI]", "DCR", "latent DCR",
                     "logFC corr", "logFC slope", "markers recovered", "fit s", "sampling s"],
                    body)]
                if "SCLD" in gens:
                    for g in gens:
                        if g in ("SCLD", REFERENCE):
                            continue
                        for metric, higher in (("c2st_auc", False), ("logfc_correlation", True)):
                            p = S.paired(_seed_means(S.pick(cell, generator="SCLD"), metric),
                                         _seed_means(S.pick(cell, generator=g), metric), higher)
                            comps.append(dict(dataset=d, ae_source=source, comparator=g,
                                              metric=metric, **p))
        if comps:
            body = [[c["dataset"], c["ae_source"], c["comparator"], c["metric"], S.fmt_diff(c),
                     c["verdict"]] for c in comps]
            lines[lines.index("## Protocol"):lines.index("## Protocol")] = [
                "## Summary: `SCLD` minus each generator, paired over seeds", "",
                *S.table(["data set", "autoencoder", "comparator", "metric",
                          "SCLD minus comparator [95 % CI]", "verdict for SCLD"], body)]
        lines += S.settings_lines(prov)
        reports.append((SPLITS[split]["report"], lines,
                        {"provenance": prov, "comparisons": comps, "rows": sr}))
    return reports


if __name__ == "__main__":  # the same as run.py --experiments fidelity
    import run

    sys.exit(run.main(["--experiments", NAME, *sys.argv[1:]]))
