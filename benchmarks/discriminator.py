"""Post-guidance by a real-vs-generated discriminator: does screening SCLD's cells raise realism?

The paper's post-guidance is meant to raise sample quality; classifier guidance and type
screening raise typicality instead (``docs/archive/fidelity_10shot.md``). Discriminator guidance (Kim et
al. 2023) and discriminator rejection sampling (Azadi et al. 2019) correct a generator toward the
data with a classifier of real against generated samples: its odds ``D / (1 - D)`` estimate the
density ratio of data to generator. This experiment asks whether such a discriminator, trained on
what a user has (the training cells and the model's own samples, never held-out cells), finds
anything to correct, and whether screening by it makes a rare type's cells more realistic.

Set-up (the low-noise test of ``sampler_variants.py``): cbmc halved per seed, its three largest
types capped at 10 labelled training cells and judged on up to 300 held-out cells each; the
autoencoder pretrained without labels on the training half, SCLD fitted on the capped split with
its defaults. Two discriminators, each given the cell type (one-hot) beside the cell, trained on
the capped split's cells (real) against SCLD's cells of the same types (generated; as many as the
type's real cells, at least 200, weighted to the real count), 20 % held out to report how well
each tells them apart (AUC, each type's real and generated cells weighted equally):

- ``latent``: an MLP (128-128) on SCLD's standardised latents (the space the diffusion works in);
- ``counts``: gradient boosting on 50 principal components of the log-normalised cells (the
  space of the decoded cells, where the two-sample test works).

Screening: per capped type, a pool of 6 n generated cells (n: its held-out cells) is scored and
each cell accepted with probability ``min(1, exp(logit - median logit))`` (rejection sampling by
the estimated density ratio, capped at the pool's median; the top-ranked cells would be the most
typical, not the most realistic); the first n accepted are kept. ``SCLD default`` is the first
n of the same pool. Judged as in the fidelity suite: ``c2st_auc`` against the held-out cells
(random forest, log-normalised; 0.5 = indistinguishable) and ``dcr_ratio``. Differences paired
by seed (mean over the three types), 95 % t interval; development seeds 0-2 would choose,
reporting seeds 10-14 report.

    SCAUG_DATA_DIR=../shared/data python benchmarks/discriminator.py          # 0-2 and 10-14
    SCAUG_DATA_DIR=../shared/data python benchmarks/discriminator.py --quick  # smoke test

writes discriminator.md and discriminator.json into --out-dir (default docs/).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _suite as S  # noqa: E402
from _common import realism, ten_shot_model  # noqa: E402

from scaug.preprocessing import NormalizeLog1p  # noqa: E402

DEFAULT = "SCLD default"
ARMS = (DEFAULT, "latent discriminator screening", "count discriminator screening")
FULL = dict(ae={}, scld={}, n_heldout=300, pool=6, min_generated=200, steps=1500, n_pcs=50)
QUICK = dict(ae=dict(n_latent=4, hidden=(32,), max_epochs=2),
             scld=dict(n_latent=4, width=16, depth=1, max_epochs=2, diffusion_steps=200),
             n_heldout=40, pool=3, min_generated=20, steps=50, n_pcs=5)


def dense(A):
    return A.toarray() if sp.issparse(A) else np.asarray(A)


def weighted_auc(labels, scores, codes):
    """AUC with each type's real and generated cells weighted equally (a type-blind score)."""
    from sklearn.metrics import roc_auc_score

    w = np.ones(len(labels))
    for c in np.unique(codes):
        for v in (0, 1):
            m = (codes == c) & (labels == v)
            w[m] = 1.0 / max(m.sum(), 1)
    return float(roc_auc_score(labels, scores, sample_weight=w))


class LatentDiscriminator:
    """An MLP on (standardised latent, one-hot type) -> logit of "real"."""

    def __init__(self, n_types, steps, seed):
        self.n_types, self.steps, self.seed = n_types, steps, seed

    def _x(self, Z, codes):
        return torch.cat([torch.as_tensor(Z, dtype=torch.float32), torch.nn.functional.one_hot(
            torch.as_tensor(codes), self.n_types).float()], 1)

    def fit(self, Z, codes, labels, weights):
        torch.manual_seed(self.seed)
        x, t, w = self._x(Z, codes), torch.as_tensor(labels, dtype=torch.float32), \
            torch.as_tensor(weights, dtype=torch.float32)
        self.net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 128), torch.nn.SiLU(),
                                       torch.nn.Linear(128, 128), torch.nn.SiLU(),
                                       torch.nn.Linear(128, 1))
        opt = torch.optim.AdamW(self.net.parameters(), 1e-3, weight_decay=1e-2)
        rng = np.random.default_rng(self.seed)
        for _ in range(self.steps):
            b = torch.as_tensor(rng.choice(len(t), min(512, len(t))))
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(
                self.net(x[b]).squeeze(1), t[b], reduction="none") * w[b]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return self

    @torch.no_grad()
    def logit(self, Z, codes):
        return self.net(self._x(Z, codes)).squeeze(1).numpy()


class CountDiscriminator:
    """Gradient boosting on (principal components of log-normalised cells, one-hot type)."""

    def __init__(self, n_types, n_pcs, seed):
        self.n_types, self.n_pcs, self.seed = n_types, n_pcs, seed

    def _x(self, L, codes):
        return np.hstack([self.pca.transform(dense(L)), np.eye(self.n_types)[codes]])

    def fit(self, L, codes, labels, weights, real_rows):
        from sklearn.decomposition import PCA
        from sklearn.ensemble import HistGradientBoostingClassifier

        self.pca = PCA(self.n_pcs, random_state=self.seed).fit(dense(L[real_rows]))
        self.clf = HistGradientBoostingClassifier(max_iter=200, random_state=self.seed).fit(
            self._x(L, codes), labels, sample_weight=weights)
        return self

    def logit(self, L, codes):
        p = np.clip(self.clf.predict_proba(self._x(L, codes))[:, 1], 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p))


def screen(logit, n, rng):
    """Rejection sampling by the odds, capped at the pool's median: the first ``n`` accepted."""
    accept = rng.random(len(logit)) < np.exp(np.minimum(logit - np.median(logit), 0))
    return np.flatnonzero(accept)[:n]


def run_seed(X, y, seed, settings, verbose):
    train, test, capped, model = ten_shot_model(X, y, seed=seed, settings=settings,
                                                verbose=verbose)
    ae = model.autoencoder_
    norm = NormalizeLog1p()
    X_log = norm.fit_transform(X)
    classes = list(model.classes_)

    def standardised(Z):
        return ((Z - model.latent_mean_) / model.latent_scale_).astype(np.float32)

    # the discriminators' data: the capped split (real) and SCLD's cells of the same types
    real_codes = np.array([classes.index(t) for t in y[train]])
    n_real = np.bincount(real_codes, minlength=len(classes))
    request = {t: int(max(n, settings["min_generated"])) for t, n in zip(classes, n_real, strict=True)}
    X_gen, y_gen = model.sample(request, random_state=seed + 1)
    gen_codes = np.array([classes.index(t) for t in y_gen])
    Z = np.vstack([standardised(ae.transform(X[train])), standardised(model.sample_latents_)])
    L = sp.vstack([sp.csr_matrix(X_log[train]), sp.csr_matrix(norm.transform(X_gen))]).tocsr()
    codes = np.r_[real_codes, gen_codes]
    labels = np.r_[np.ones(len(real_codes)), np.zeros(len(gen_codes))]
    weights = np.r_[np.ones(len(real_codes)),
                    (n_real / np.bincount(gen_codes, minlength=len(classes)))[gen_codes]]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    held, fit = order[: len(order) // 5], order[len(order) // 5:]
    real_fit = fit[labels[fit] == 1]
    discs = {"latent": (LatentDiscriminator(len(classes), settings["steps"], seed), Z),
             "counts": (CountDiscriminator(len(classes), settings["n_pcs"], seed), L)}
    rows = []
    for name, (disc, data) in discs.items():
        extra = dict(real_rows=real_fit) if name == "counts" else {}
        disc.fit(data[fit], codes[fit], labels[fit], weights[fit], **extra)
        auc = weighted_auc(labels[held], disc.logit(data[held], codes[held]), codes[held])
        rows.append(dict(seed=seed, discriminator=name, heldout_auc=auc))
        print(f"seed {seed} {name} discriminator held-out AUC {auc:.3f}", flush=True)
        extra = dict(real_rows=np.flatnonzero(labels == 1)) if name == "counts" else {}
        disc.fit(data, codes, labels, weights, **extra)  # screening uses all of it
    for t in capped:
        code = classes.index(t)
        heldout, own = test[y[test] == t][: settings["n_heldout"]], train[y[train] == t]
        n = len(heldout)
        X_pool, _ = model.sample({t: settings["pool"] * n}, random_state=seed)
        Z_pool, L_pool = standardised(model.sample_latents_), norm.transform(X_pool)
        pool_codes = np.full(len(Z_pool), code)
        pick = {DEFAULT: np.arange(n),
                ARMS[1]: screen(discs["latent"][0].logit(Z_pool, pool_codes), n, rng),
                ARMS[2]: screen(discs["counts"][0].logit(L_pool, pool_codes), n, rng)}
        for arm, idx in pick.items():
            syn = L_pool[idx]
            rows.append(dict(seed=seed, type=t, arm=arm, n_heldout=n, n_kept=len(idx),
                             **realism(X_log[heldout], X_log[own], syn, seed)))
            print(f"seed {seed} {t:12} {arm:32} c2st {rows[-1]['c2st_auc']:.3f}", flush=True)
    return rows


def tables(rows, seeds):
    disc = [[name, S.mean_sd([r["heldout_auc"] for r in rows if r.get("discriminator") == name
                            and r["seed"] in seeds])] for name in ("latent", "counts")]
    default = S.arm_means(rows, DEFAULT, seeds)
    body = []
    for arm in ARMS:
        mine = S.arm_means(rows, arm, seeds)
        p = S.paired(mine, default, higher_is_better=False)
        body.append([arm, S.mean_sd(mine.values()),
                     "" if arm == DEFAULT else f"{S.fmt_diff(p)} ({p['verdict']})",
                     S.mean_sd(S.arm_means(rows, arm, seeds, "dcr_ratio").values(), 2)])
    return ["How well each discriminator tells the capped split's cells from SCLD's, on its 20 % "
            "held out (AUC, mean ± sd over seeds; 0.5: it cannot):", "",
            *S.table(["discriminator", "held-out AUC"], disc), "",
            "Two-sample AUC of the capped types' cells against their held-out cells (lower is "
            "more realistic):", "",
            *S.table(["arm", "two-sample AUC", "minus SCLD default [95 % CI]", "dcr_ratio"], body)]


def run(quick, verbose):
    settings = QUICK if quick else FULL
    return {"settings": settings,
            **S.cbmc_seed_rows(quick, "screening", run_seed, settings, verbose)}


def render(payload):
    lines = [*S.intro("Post-guidance by a real-vs-generated discriminator", "discriminator.py",
                    payload),
             "Differences are paired by seed, a win or loss only when the 95 % interval excludes "
             "zero.", ""]
    return "\n".join([*lines, *S.run_sections(payload, tables)])


if __name__ == "__main__":
    S.one_report_main(__doc__, "discriminator", run, render)
