"""scvi-tools' models as augmenters of the suite: what a scverse user would try instead of scaug.

- **scVI**: ``scvi.model.SCVI`` with the negative binomial likelihood and every other setting at
  scvi-tools' default (``max_epochs`` included: ``min(round(20000 / n_cells * 400), 400)``),
  fitted without labels on the training cells; a type's synthetic cells are
  ``posterior_predictive_sample`` draws around the type's own training cells, each cell drawn in
  turn (cells in a random order) until the type has its quota.
- **scANVI**: ``scvi.model.SCANVI.from_scvi_model`` on that scVI fit, with every training label
  known and scvi-tools' default training (``max_epochs`` of a pretrained scANVI:
  ``min(10, max(2, round(scVI's / 3)))``). scvi-tools has no public call that generates cells of
  a label; as its maintainers suggest, the module's own generative path is used: ``z2 ~ N(0, I)``,
  ``z1 ~ p(z1 | z2, y)`` (``module.decoder_z1_z2``), and counts from ``module.generative`` (the
  NB of the decoder) with the library size of a random training cell of the type (scVI's
  default uses the observed library size, so it has no library prior to draw from).

Only the optional ``benchmarks`` dependency brings scvi-tools; :func:`missing` says why it cannot
be used, and the suite then skips these augmenters with that message.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

#: the registry's kind of these augmenters
KIND = "scvi"
LABELS = "cell_type"


def missing() -> str | None:
    """``None`` if scvi-tools can be imported, else why the scVI and scANVI rows are skipped."""
    try:
        import scvi  # noqa: F401
    except Exception as err:  # noqa: BLE001 - any failure to import means: skip, and say why
        return (f"scVI and scANVI skipped: scvi-tools cannot be imported ({type(err).__name__}: "
                f"{err}); install the optional dependency: pip install 'scaug[benchmarks]'")
    return None


def _threads():
    import torch
    from _common import THREADS

    torch.set_num_threads(THREADS)  # importing scvi / lightning may reset it


def _adata(X, y=None):
    import anndata as ad
    import pandas as pd

    X = sp.csr_matrix(X, dtype=np.float32)
    obs = pd.DataFrame(index=[str(i) for i in range(X.shape[0])])
    if y is not None:
        obs[LABELS] = pd.Categorical(np.asarray(y).astype(str))
    return ad.AnnData(X=X, obs=obs)


def _accelerator(device: str) -> str:
    return {"cuda": "gpu", "auto": "auto", "cpu": "cpu"}.get(device, device)


def fit_scvi(X, y, s, seed, device="auto", verbose=False):
    """``scvi.model.SCVI`` on the counts ``X`` (labels kept in ``obs`` for scANVI, unused here)."""
    import scvi

    scvi.settings.seed = seed
    _threads()
    adata = _adata(X, y)
    scvi.model.SCVI.setup_anndata(adata)  # no labels: scVI is unsupervised
    model = scvi.model.SCVI(adata, gene_likelihood=s["gene_likelihood"])
    model.train(accelerator=_accelerator(device), enable_progress_bar=verbose)
    return model


def fit_scanvi(scvi_model, s, seed, device="auto", verbose=False):
    """``scvi.model.SCANVI`` from the fitted scVI, every training cell labelled."""
    import scvi

    scvi.settings.seed = seed
    _threads()
    model = scvi.model.SCANVI.from_scvi_model(scvi_model, unlabeled_category="unlabelled (none)",
                                              labels_key=LABELS)
    model.train(accelerator=_accelerator(device), enable_progress_bar=verbose)
    return model


def _quota(y, strategy):
    """``(type, its training cells' indices, synthetic cells to make)`` per type to raise."""
    y = np.asarray(y)
    for t, goal in strategy.items():
        members = np.flatnonzero(y == t)
        if goal > len(members):
            yield t, members, int(goal - len(members))


def sample_scvi(model, y, strategy, seed):
    """Posterior predictive draws around each type's training cells; ``(X csr, y)``."""
    import scvi

    scvi.settings.seed = seed
    rng = np.random.default_rng(seed)
    parts, labels = [], []
    for t, members, m in _quota(y, strategy):
        cells = rng.permutation(members)
        k = -(-m // len(cells))  # draws per cell
        draws = np.asarray(model.posterior_predictive_sample(indices=cells, n_samples=k).todense())
        if draws.ndim == 2:
            draws = draws[..., None]
        # draw-major: every cell once, then every cell again, ... the first m
        rows = draws.transpose(2, 0, 1).reshape(-1, draws.shape[1])[:m]
        parts.append(sp.csr_matrix(rows.astype(np.float32)))
        labels.append(np.full(m, t, dtype=np.asarray(y).dtype))
    return _join(parts, labels, model.adata.n_vars, y)


def sample_scanvi(model, X, y, strategy, seed, batch_size=1024):
    """Cells of each type from scANVI's prior given the label; ``(X csr, y, agreement)``.

    ``agreement``: per type, the fraction of its drawn latents ``z1`` that scANVI's own
    classifier assigns to the label they were drawn for (how label-specific the prior is).
    """
    import scvi
    import torch

    scvi.settings.seed = seed  # the NB draws use torch's global generator
    rng = np.random.default_rng(seed)
    module = model.module
    module.eval()
    codes = [str(c) for c in model.adata_manager.get_state_registry("labels").categorical_mapping]
    log_library = np.log(np.maximum(np.asarray(X.sum(axis=1)).ravel(), 1.0))
    parts, labels, agreement = [], [], {}
    device = next(module.parameters()).device
    for t, members, m in _quota(y, strategy):
        code = codes.index(str(t))
        agree = 0
        for start in range(0, m, batch_size):
            n = min(batch_size, m - start)
            with torch.no_grad():
                ys = torch.full((n, 1), code, dtype=torch.long, device=device)
                z2 = torch.randn(n, module.n_latent, device=device)
                mean, var = module.decoder_z1_z2(z2, ys)
                z1 = mean + var.sqrt() * torch.randn_like(mean)
                agree += int((module.classifier(z1).argmax(-1) == code).sum())
                lib = torch.as_tensor(log_library[rng.choice(members, n)], dtype=torch.float32,
                                      device=device)[:, None]
                out = module.generative(z=z1, library=lib,
                                        batch_index=torch.zeros((n, 1), dtype=torch.long,
                                                                device=device), y=ys)
                counts = out["px"].sample().cpu().numpy()
            parts.append(sp.csr_matrix(counts.astype(np.float32)))
        labels.append(np.full(m, t, dtype=np.asarray(y).dtype))
        agreement[str(t)] = agree / m
    return (*_join(parts, labels, model.adata.n_vars, y), agreement)


def _join(parts, labels, n_vars, y):
    if not parts:
        return sp.csr_matrix((0, n_vars), dtype=np.float32), np.asarray(y)[:0]
    return sp.vstack(parts, format="csr"), np.concatenate(labels)
