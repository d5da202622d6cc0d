"""Post-guidance by the unconditional model (``refinement``): does it make 10-shot cells more
realistic, and when? (issue 18)

Every latent sampler of a type with 10 labelled cells is far from its held-out cells
(``docs/sampler_variants.md``), mostly because 10 cells place the type's mean poorly. Nothing
trained on those 10 cells can see that; a model that has also learned the type's unlabelled
cells can. ``SCLD(refinement=s)`` noises each drawn latent to time ``s T`` and denoises it
without its type (SDEdit, Meng et al. 2022): the null label's model has learned where every
training cell lies, and moves the drawn cells toward it.

Set-up (the low-noise test of ``sampler_variants.py``): cbmc halved per seed (stratified), its
three largest types capped at 10 labelled training cells and judged on up to 300 held-out cells
each; the autoencoder pretrained without labels on the training half. Two SCLD fits through it,
with their defaults:

- **semi-supervised**: every cell of the training half, the capped types' other cells labelled
  ``-1`` (a partly annotated data set: the denoiser learns them under the null label);
- **capped split**: only the labelled cells (what ``SCLDOverSampler`` sees).

Each is sampled as it is and with ``refinement`` 0.2, 0.4 and 0.6 (the same first draws, then
refined). Cheap baselines through the same autoencoder: the **latent Gaussian** (the type's
Gaussian summary) and the **latent bootstrap** (the smoothed bootstrap of its 10 latents,
``latent_smoothing=4``), and, for the semi-supervised case, the **latent Gaussian of
label-spread cells**: scikit-learn's ``LabelSpreading`` (k-NN graph, 10 neighbours) on the
training half's latents carries the 10 labels to the unlabelled cells, and the type's Gaussian
(Ledoit-Wolf) is fitted to its labelled and newly labelled cells: the cheap way to use the
unlabelled cells that refinement uses. And **SCLD fitted on the label-spread cells** (the
training half with the spread labels, its defaults): the diffusion model given what the
Gaussian of label-spread cells is given. Diagnostic: the held-out cells' own latents decoded (the decoder's
ceiling). All decoded with library sizes of the type's training cells. Scores: ``c2st_auc`` on
the log-normalised counts (random forest; 0.5 = indistinguishable from the held-out cells),
``latent AUC`` (the same test on standardised latents, before the decoder) and ``dcr_ratio``
(copying; about 1 = as new as real cells). Differences paired by seed (mean over the three
types), 95 % t interval.

Seeds: the development seeds 0-2 choose each fit's strength (the lowest mean ``c2st_auc``); the
reporting seeds 10-14 compare it with that fit's default and the cheap baselines.

``--match-detection`` pretrains the autoencoder with ``match_detection=True`` (the decoder
that draws as many zeros as the data; ``docs/decoder_ceiling_detection``), which lowers the
decoder's ceiling, so that what refinement does to latents can show on counts.

    SCAUG_DATA_DIR=../shared/data python benchmarks/refinement.py          # 0-2 and 10-14
    SCAUG_DATA_DIR=../shared/data python benchmarks/refinement.py --quick  # smoke test
    SCAUG_DATA_DIR=../shared/data python benchmarks/refinement.py --match-detection \
        --out-dir docs/refinement_detection

writes refinement.md and refinement.json into --out-dir (default docs/).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _suite as S  # noqa: E402
from _common import realism, semi_supervised_split  # noqa: E402
from sampler_variants import decode, standardised, type_gaussian  # noqa: E402
from sklearn.covariance import LedoitWolf  # noqa: E402
from sklearn.semi_supervised import LabelSpreading  # noqa: E402

from scaug import SCLD, CellAutoencoder, metrics  # noqa: E402
from scaug.preprocessing import NormalizeLog1p  # noqa: E402
from scaug.sampling import smoothed_bootstrap  # noqa: E402

FITS = ("semi-supervised", "capped split")
STRENGTHS = (0.2, 0.4, 0.6)
GAUSSIAN, BOOTSTRAP = "latent Gaussian", "latent bootstrap"
SPREAD = "latent Gaussian of label-spread cells"
SPREAD_SCLD = "SCLD fitted on the label-spread cells"
DECODED, REFERENCE = "diagnostic: held-out latents, decoded", "held-out vs held-out"
FULL = dict(ae={}, scld={}, n_heldout=300)
QUICK = dict(ae=dict(n_latent=4, hidden=(32,), max_epochs=2),
             scld=dict(n_latent=4, width=16, depth=1, max_epochs=2, diffusion_steps=200),
             n_heldout=40)


def arm(fit: str, s: float = 0.0) -> str:
    return f"{fit}, default" if s == 0 else f"{fit}, refinement {s}"


def run_seed(X, y, seed, settings, verbose):
    train, test, capped, full_train, y_semi = semi_supervised_split(y, seed=seed, largest=True)
    ae = CellAutoencoder(random_state=seed, verbose=verbose, **settings["ae"]).fit(X[full_train])
    models = {fit: SCLD(autoencoder=ae, random_state=seed, verbose=verbose, **settings["scld"])
              for fit in FITS}
    models["semi-supervised"].fit(X[full_train], y_semi)
    models["capped split"].fit(X[train], y[train])
    base = models["capped split"]
    norm = NormalizeLog1p()
    X_log = norm.fit_transform(X)
    # the labels carried to the unlabelled cells of the training half (-1: unlabelled)
    Z_half = standardised(base, X[full_train])
    semi_codes = np.array([-1 if v == -1 else list(base.classes_).index(v) for v in y_semi])
    spread = LabelSpreading(kernel="knn", n_neighbors=10).fit(Z_half, semi_codes).transduction_
    spread_model = SCLD(autoencoder=ae, random_state=seed, verbose=verbose,
                        **settings["scld"]).fit(X[full_train], base.classes_[spread])
    rows = []
    for t in capped:
        held, own = test[y[test] == t][: settings["n_heldout"]], train[y[train] == t]
        n = len(held)
        code = list(base.classes_).index(t)
        Z_held = standardised(base, X[held])
        arms, latents = {}, {}
        for fit, model in models.items():
            for s in (0.0, *STRENGTHS):
                arms[arm(fit, s)] = model.sample({t: n}, random_state=seed, refinement=s)[0]
                # in the capped model's standardised space, where the baselines and held-out are
                latents[arm(fit, s)] = ((model.sample_latents_ - base.latent_mean_)
                                        / base.latent_scale_).astype(np.float32)
        rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
        latents[GAUSSIAN] = type_gaussian(base, code, n, rng)
        Z_own = standardised(base, X[own])
        centre, sd = smoothed_bootstrap(Z_own, np.zeros(len(own), int), 4.0)
        pick = rng.integers(len(own), size=n)
        latents[BOOTSTRAP] = centre[pick] + sd[pick] * rng.standard_normal((n, Z_own.shape[1]))
        spread_rng = np.random.default_rng([seed, 2])  # its own stream: the arms above stay
        mine = Z_half[spread == code]
        latents[SPREAD] = spread_rng.multivariate_normal(
            mine.mean(0), LedoitWolf().fit(mine).covariance_, size=n).astype(np.float32)
        arms[SPREAD_SCLD] = spread_model.sample({t: n}, random_state=seed)[0]
        latents[SPREAD_SCLD] = ((spread_model.sample_latents_ - base.latent_mean_)
                                / base.latent_scale_).astype(np.float32)
        latents[DECODED] = Z_held
        for name in (GAUSSIAN, BOOTSTRAP, DECODED, SPREAD):
            arms[name] = decode(base, latents[name].astype(np.float32), code, rng, gen)
        rows.append(dict(seed=seed, type=t, arm=REFERENCE, c2st_auc=metrics.c2st_auc(
            X_log[held[: n // 2]], X_log[held[n // 2:]], random_state=seed),
            latent_auc=metrics.c2st_auc(Z_held[: n // 2], Z_held[n // 2:], random_state=seed)))
        for name, Xs in arms.items():
            latent_auc = (metrics.c2st_auc(Z_held, latents[name], random_state=seed)
                          if name != DECODED else None)
            rows.append(dict(seed=seed, type=t, arm=name, n_heldout=n, latent_auc=latent_auc,
                             **realism(X_log[held], X_log[own], norm.transform(Xs), seed)))
            print(f"seed {seed} {t:12} {name:40} c2st {rows[-1]['c2st_auc']:.3f} "
                  f"latent {latent_auc if latent_auc is not None else float('nan'):.3f}", flush=True)
    return rows


def against(mine, other):
    p = S.paired(mine, other, higher_is_better=False)
    return f"{S.fmt_diff(p)} ({p['verdict']})"


def table(rows, seeds):
    lines = ["| arm | two-sample AUC, mean ± sd | minus the fit's default [95 % CI] | minus the "
             "Gaussian's [95 % CI] | latent AUC | dcr_ratio |", "|---|---|---|---|---|---|"]
    gauss = S.arm_means(rows, GAUSSIAN, seeds)
    names = [arm(fit, s) for fit in FITS for s in (0.0, *STRENGTHS)]
    for name in [*names, GAUSSIAN, BOOTSTRAP, SPREAD, SPREAD_SCLD, DECODED, REFERENCE]:
        if not any(r["arm"] == name for r in rows):  # a report from before the arm existed
            continue
        mine = S.arm_means(rows, name, seeds)
        v = np.array(list(mine.values()))
        sd = f" ± {v.std(ddof=1):.3f}" if len(v) > 1 else ""
        fit = next((f for f in FITS if name.startswith(f)), None)
        own_default = (against(mine, S.arm_means(rows, arm(fit), seeds))
                       if fit and name != arm(fit) else "")
        mine_rows = [r for r in rows if r["arm"] == name and r["seed"] in seeds]
        lat = [r["latent_auc"] for r in mine_rows if r.get("latent_auc") is not None]
        dcr = [r["dcr_ratio"] for r in mine_rows if "dcr_ratio" in r]
        lines.append(f"| {name} | {v.mean():.3f}{sd} | {own_default} | "
                     f"{against(mine, gauss) if name not in (GAUSSIAN, REFERENCE) else ''} | "
                     f"{f'{np.mean(lat):.3f}' if lat else ''} | "
                     f"{f'{np.mean(dcr):.2f}' if dcr else ''} |")
    return lines


def choice(payload) -> list[str]:
    """Each fit's strength chosen on the development seeds, against its default and the cheap
    baselines on the reporting seeds, on counts and on latents."""
    (_, dev), *rest = payload["runs"]
    if not rest:
        return []
    rows, seeds = payload["rows"], rest[0][1]
    lines = ["## The strengths chosen on the development seeds, on the reporting seeds", "",
             f"Per fit, the strength with the lowest mean two-sample AUC on seeds {dev}; its "
             f"paired difference on seeds {seeds} (negative: more realistic):", "",
             "| fit | chosen | against | two-sample AUC on counts [95 % CI] | latent AUC [95 % CI] |",
             "|---|---|---|---|---|"]
    for fit in FITS:
        chosen = min((arm(fit, s) for s in STRENGTHS),
                     key=lambda a: np.mean(list(S.arm_means(rows, a, dev).values())))
        for other in (arm(fit), GAUSSIAN, BOOTSTRAP, *([SPREAD] if fit == FITS[0] else [])):
            if not any(r["arm"] == other for r in rows):
                continue
            cells = [against(S.arm_means(rows, chosen, seeds, m), S.arm_means(rows, other, seeds, m))
                     for m in ("c2st_auc", "latent_auc")]
            lines.append(f"| {fit} | {chosen} | {other} | {cells[0]} | {cells[1]} |")
    if any(r["arm"] == SPREAD_SCLD for r in rows):
        cells = [against(S.arm_means(rows, SPREAD_SCLD, seeds, m), S.arm_means(rows, SPREAD, seeds, m))
                 for m in ("c2st_auc", "latent_auc")]
        lines.append(f"| label spreading | {SPREAD_SCLD} | {SPREAD} | {cells[0]} | {cells[1]} |")
    return [*lines, ""]


def run(quick, verbose, args):
    settings = QUICK if quick else FULL
    if args.match_detection:
        settings = {**settings, "ae": {**settings["ae"], "match_detection": True}}
    return {"settings": settings,
            **S.cbmc_seed_rows(quick, "a strength", run_seed, settings, verbose)}


def render(payload):
    title = "Post-guidance by the unconditional model (refinement) for a 10-shot type"
    if payload["settings"]["ae"].get("match_detection"):
        title += ", through the detection-matched autoencoder"
    lines = [*S.intro(title, "refinement.py", payload),
             S.REALISM_READING, ""]
    return "\n".join([*lines, *S.run_sections(payload, table), *choice(payload)])


if __name__ == "__main__":
    S.one_report_main(__doc__, "refinement", run, render, add_arguments=lambda p: p.add_argument(
        "--match-detection", action="store_true",
        help="pretrain the autoencoder with match_detection=True"))
