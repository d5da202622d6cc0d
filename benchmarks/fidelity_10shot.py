"""Fidelity of 10-shot synthetic cells, judged on hundreds of held-out cells per type.

The rare types of ``fidelity.py`` have 7-75 held-out cells, so one two-sample test there is
noisy (about +-0.1). Here the three *largest* types of the training half are capped at 10
labelled training cells: rare to the generator, while up to 300 held-out cells of each judge the
synthetic ones. The diffusion part is always fitted on the capped labelled cells; the autoencoder
comes from one of two places:

- ``[pretrained AE]``: pretrained without labels on the whole training half, as in
  ``fidelity.py``. It has seen the capped types' other training cells, unlabelled: the case of
  many cells and few labels;
- ``[AE on the capped split]``: trained by SCLD on the capped split, as ``SCLDOverSampler`` does
  when given only the labelled cells: a truly rare type, 10 cells in all.

Rows, for each autoencoder:

- ``copies``: the 10 training cells of the type themselves, encoded, decoded and re-drawn as
  counts (a generator that copies its training cells does exactly this);
- SCLD without latent smoothing (the first defaults) and with ``latent_smoothing=4`` (the
  present defaults), each sampled with all three guidances (the first defaults), with
  classifier-free guidance alone (w=2), as plain conditional sampling (w=1, no post-guidance: the
  present defaults), and with each post-guidance mechanism alone on top of w=1;
- SMOTE on the capped training split (log-normalised);
- ``autoencoder only`` (``run_redraw``, cached apart): the type's held-out cells themselves
  re-drawn through each autoencoder: about the best a latent generator on it can do.

``[semi-supervised]`` rows (``run_semi``, cached apart) fit SCLD in one call on the whole training
half, the capped types' other training cells labelled -1 (unlabelled): the autoencoder and the
diffusion model learn from every cell, the labels of the capped types come from 10 cells. Their
``latent_dcr_ratio`` is measured against all the type's training cells, labelled or not, since
the diffusion model saw them all.

    SCAUG_DATA_DIR=../shared/data python benchmarks/fidelity_10shot.py --datasets cbmc pbmc3k --seeds 0 1 2

Results are cached per (data set, seed) under benchmarks/.cache/fidelity_10shot/; writes
docs/fidelity_10shot.md and docs/fidelity_10shot.json.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch
from imblearn.over_sampling import SMOTE

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    load_counts,
    machine,
    rare_split,
    semi_supervised_split,
    write_json,
)
from fidelity import (  # noqa: E402
    REFERENCE,
    base_parser,
    collect_rows,
    fmt,
    header_lines,
    latent_dcr_ratio,
    score,
    summary_lines,
)

from scaug import SCLD, CellAutoencoder, metrics  # noqa: E402
from scaug.preprocessing import NormalizeLog1p  # noqa: E402

CACHE = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".cache", "fidelity_10shot")
N_HELDOUT = 300  # held-out cells per type that judge the synthetic ones
# settings in full, so that a change of scaug's defaults never changes what a row means; the
# defaults are "SCLD latent smoothing 4" sampled "conditional (w=1)"
MODELS = {"SCLD no smoothing": dict(latent_smoothing=0.0),
          "SCLD latent smoothing 4": dict(latent_smoothing=4.0)}
# where the autoencoder comes from: pretrained without labels on the whole training half (it has
# seen the capped types' other cells, unlabelled), or trained by SCLD on the capped split only
# (a truly rare type: 10 cells in all)
PRETRAINED, CAPPED = "pretrained AE", "AE on the capped split"
SAMPLING = {
    "all three guidances": dict(guidance_scale=2.0, classifier_scale=1.0, screening=True),
    "CFG only (w=2)": dict(guidance_scale=2.0, classifier_scale=0.0, screening=False),
    "conditional (w=1)": dict(guidance_scale=1.0, classifier_scale=0.0, screening=False),
    # which post-guidance mechanism moves the score: each alone on top of w=1
    "w=1 + classifier guidance": dict(guidance_scale=1.0, classifier_scale=1.0, screening=False),
    "w=1 + screening": dict(guidance_scale=1.0, classifier_scale=0.0, screening=True),
}
# rows cached before the defaults changed carry the names of then: "SCLD" was the model without
# latent smoothing, "all three (default)" its default sampling
RENAMED_PREFIX = {"SCLD, ": "SCLD no smoothing, "}
RENAMED_PART = {"all three (default)": "all three guidances"}


def renamed(method: str) -> str:
    for old, new in RENAMED_PREFIX.items():
        if method.startswith(old):
            method = new + method[len(old):]
    for old, new in RENAMED_PART.items():
        method = method.replace(old, new)
    return method
FIRST = next(iter(MODELS))  # fitted first; on the capped split it trains the autoencoder
COPIES = "copies: the 10 training cells re-drawn"
SEMI = "semi-supervised"


def run(name, seed, verbose):
    X, y = load_counts(name)
    train, test, capped = rare_split(y, seed=seed, cap=10, test_size=0.5, largest=True)
    full_train, _, _ = rare_split(y, seed=seed, cap=None, test_size=0.5)
    norm = NormalizeLog1p().fit(X)
    X_log = norm.transform(X)
    t0 = time.perf_counter()
    pretrained = CellAutoencoder(random_state=seed, verbose=verbose).fit(X[full_train])
    fit_s = {"pretrained autoencoder": time.perf_counter() - t0}
    models = {}
    for ae_label in (PRETRAINED, CAPPED):
        for label, params in MODELS.items():
            # the capped split's autoencoder is trained by the first SCLD fit, then reused
            ae = pretrained if ae_label == PRETRAINED else models.get(f"{FIRST} [{ae_label}]")
            ae = ae.autoencoder_ if isinstance(ae, SCLD) else ae
            key = f"{label} [{ae_label}]"
            t0 = time.perf_counter()
            models[key] = SCLD(autoencoder=ae, random_state=seed, verbose=verbose,
                               **params).fit(X[train], y[train])
            fit_s[key] = time.perf_counter() - t0
    autoencoders = {PRETRAINED: pretrained, CAPPED: models[f"{FIRST} [{CAPPED}]"].autoencoder_}
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for t in capped:
        held = test[y[test] == t][:N_HELDOUT]
        n, half = len(held), len(held) // 2
        real_log, real_counts = X_log[held], X[held]
        base = dict(dataset=name, seed=seed, type=t, n_train=int((y[train] == t).sum()),
                    n_heldout=n)
        rows.append(dict(base, method=REFERENCE, c2st_auc=metrics.c2st_auc(
            real_log[:half], real_log[half:], random_state=seed)))
        own = train[y[train] == t]
        pick = own[rng.integers(len(own), size=n)]
        for ae_label, ae in autoencoders.items():
            Xs = ae.generate(ae.transform(X[pick]), np.asarray(X[pick].sum(1)).ravel(),
                             generator=gen)
            rows.append(dict(base, method=f"{COPIES} [{ae_label}]",
                             **score(real_log, norm.transform(Xs), real_counts, Xs, seed)))
        for label, mdl in models.items():
            for how, opts in SAMPLING.items():
                Xs, _ = mdl.sample({t: n}, random_state=seed, **opts)
                r = score(real_log, norm.transform(Xs), real_counts, Xs, seed)
                r["latent_dcr_ratio"] = latent_dcr_ratio(mdl, X[own], real_counts)
                rep = mdl.sampling_report_.get(t, {})
                name_ = label.replace(" [", f", {how} [")
                rows.append(dict(base, method=name_,
                                 acceptance=rep.get("acceptance_rate", 1.0), **r))
        sm = SMOTE(sampling_strategy={t: len(own) + n}, k_neighbors=5, random_state=seed)
        Xr, _ = sm.fit_resample(X_log[train], y[train])
        rows.append(dict(base, method="SMOTE", **score(real_log, Xr[len(train):], None, None,
                                                       seed)))
    return rows, fit_s


def run_semi(name, seed, verbose):
    """``[semi-supervised]`` rows: SCLD fitted on the training half, capped cells unlabelled."""
    X, y = load_counts(name)
    train, test, capped, full_train, y_semi = semi_supervised_split(y, seed=seed, largest=True)
    norm = NormalizeLog1p().fit(X)
    X_log = norm.transform(X)
    models, fit_s = {}, {}
    for label, params in MODELS.items():
        t0 = time.perf_counter()
        models[label] = SCLD(random_state=seed, verbose=verbose, **params).fit(X[full_train], y_semi)
        fit_s[f"{label} [{SEMI}]"] = time.perf_counter() - t0
    rows = []
    for t in capped:
        held = test[y[test] == t][:N_HELDOUT]
        real_log, real_counts = X_log[held], X[held]
        seen = full_train[y[full_train] == t]  # labelled or not
        base = dict(dataset=name, seed=seed, type=t, n_train=int((y[train] == t).sum()),
                    n_heldout=len(held))
        for label, mdl in models.items():
            for how, opts in SAMPLING.items():
                Xs, _ = mdl.sample({t: len(held)}, random_state=seed, **opts)
                r = score(real_log, norm.transform(Xs), real_counts, Xs, seed)
                r["latent_dcr_ratio"] = latent_dcr_ratio(mdl, X[seen], real_counts)
                rep = mdl.sampling_report_.get(t, {})
                rows.append(dict(base, method=f"{label}, {how} [{SEMI}]",
                                 acceptance=rep.get("acceptance_rate", 1.0), **r))
    return rows, fit_s


def run_redraw(name, seed, verbose):
    """``autoencoder only`` rows: each type's held-out cells re-drawn through each autoencoder.

    Encode, decode, draw counts with their own library sizes: how realistic the autoencoder can
    render the type's unseen cells at all: about the best a latent generator on it can do. The
    autoencoders are refitted with the settings ``run`` uses (the capped-split one from the plain
    seed: ``run``'s was trained inside SCLD, from a seed derived from it).
    """
    X, y = load_counts(name)
    train, test, capped = rare_split(y, seed=seed, cap=10, test_size=0.5, largest=True)
    full_train, _, _ = rare_split(y, seed=seed, cap=None, test_size=0.5)
    norm = NormalizeLog1p().fit(X)
    X_log = norm.transform(X)
    aes, fit_s = {}, {}
    for label, cells in ((PRETRAINED, full_train), (CAPPED, train)):
        t0 = time.perf_counter()
        aes[label] = CellAutoencoder(random_state=seed, verbose=verbose).fit(X[cells])
        fit_s[f"autoencoder [{label}]"] = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for t in capped:
        held = test[y[test] == t][:N_HELDOUT]
        base = dict(dataset=name, seed=seed, type=t, n_train=int((y[train] == t).sum()),
                    n_heldout=len(held))
        library = np.asarray(X[held].sum(1)).ravel()
        for label, ae in aes.items():
            Xs = ae.generate(ae.transform(X[held]), library, generator=gen)
            rows.append(dict(base, method=f"autoencoder only: held-out cells re-drawn [{label}]",
                             **score(X_log[held], norm.transform(Xs), X[held], Xs, seed)))
    return rows, fit_s


def main(argv=None):
    parser = base_parser(__doc__, "fidelity_10shot", seeds=[0, 1, 2])
    parser.add_argument("--skip-semi", action="store_true",
                        help="leave out the [semi-supervised] rows (and their fits)")
    parser.add_argument("--skip-redraw", action="store_true",
                        help="leave out the `autoencoder only` rows (and their fits)")
    args = parser.parse_args(argv)
    runners = [(run, CACHE, None)]
    runners += [] if args.skip_semi else [(run_semi, CACHE + "_semi", SEMI)]
    runners += [] if args.skip_redraw else [(run_redraw, CACHE + "_redraw", "autoencoder only")]
    all_rows, fit_times, made_at = collect_rows(args, runners, renamed)
    lines = [
        *header_lines("Fidelity of 10-shot synthetic cells, judged on hundreds of held-out cells",
                      "fidelity_10shot.py", args, made_at, fit_times, "Fit time"),
        "Half/half stratified split per seed; the three largest types of the training half "
        "capped at 10 labelled training cells. `[pretrained AE]`: the autoencoder pretrained "
        "without labels on the whole training half (it has seen the capped types' other cells, "
        "unlabelled); `[AE on the capped split]`: trained by SCLD on the capped split (a truly "
        "rare type, 10 cells in all); `[semi-supervised]`: SCLD fitted in one call on the whole "
        "training half, the capped types' other training cells labelled -1 (their "
        "`latent_dcr_ratio` is measured against all the type's training cells). `SCLD latent "
        "smoothing 4, conditional (w=1)` is the present defaults; `SCLD no smoothing, all three "
        "guidances` the first ones. Each type is judged on up to {N_HELDOUT} of its held-out cells "
        "(seen by no model), in log-normalised space. Columns as in `fidelity.md`: `c2st_auc` "
        "0.5 = indistinguishable (the reference compares two halves of the held-out cells); "
        "`latent_dcr_ratio` near 0 = copies of training latents, about 1 = as new as held-out "
        "cells. `copies` re-draws the 10 training cells through the autoencoder: what a copier "
        "scores; `autoencoder only` re-draws the held-out cells themselves (their own latents and "
        "library sizes): about the best a generator on that autoencoder can do.", "",
        "## Summary", "",
        "Means over the three capped types and the seeds; `gap` = c2st AUC minus the reference "
        "AUC of the same type and seed.", ""]
    lines += summary_lines(all_rows, args.datasets)
    cols = ["dataset", "seed", "type", "method", "n_train", "n_heldout", "c2st_auc", "mmd",
            "mean_corr", "var_corr", "zero_frac_err", "lib_dist", "latent_dcr_ratio",
            "acceptance"]
    lines += ["## Every row", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in all_rows]
    with open(args.out + ".md", "w") as fh:
        fh.write("\n".join(lines) + "\n")
    write_json({"rows": all_rows, "fit_seconds": fit_times, "machine": machine()},
               args.out + ".json", default=float)
    print(f"wrote {args.out}.md")


if __name__ == "__main__":
    main()
