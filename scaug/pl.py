"""Plots in scanpy's style: ``scaug.pl.real_vs_synthetic``."""

from __future__ import annotations

import numpy as np

__all__ = ["real_vs_synthetic"]


def _embedding(adata, counts, basis, random_state):
    """``obsm["X_{basis}"]`` if the AnnData has it, else PCA (and UMAP) of log-normalised counts."""
    key = f"X_{basis}"
    if key in adata.obsm:
        return np.asarray(adata.obsm[key])[:, :2]
    import anndata as ad
    import scanpy as sc

    tmp = ad.AnnData(X=counts.astype(np.float32, copy=True))
    sc.pp.normalize_total(tmp, target_sum=1e4)
    sc.pp.log1p(tmp)
    n_comps = max(2, min(30, tmp.n_obs - 1, tmp.n_vars - 1))
    sc.pp.pca(tmp, n_comps=n_comps, random_state=random_state)
    if basis == "pca":
        return tmp.obsm["X_pca"][:, :2]
    sc.pp.neighbors(tmp, n_neighbors=min(15, tmp.n_obs - 1), use_rep="X_pca",
                    random_state=random_state)
    sc.tl.umap(tmp, random_state=random_state)
    return tmp.obsm["X_umap"]


def real_vs_synthetic(adata, labels_key, groups=None, *, key_added="synthetic", basis="umap",
                      layer=None, ax=None, show=None, random_state=0, palette=None):
    """Real and synthetic cells of chosen types on one embedding of all cells.

    The embedding is ``adata.obsm["X_{basis}"]`` when the AnnData has one; otherwise it is
    computed on all cells, real and synthetic alike: counts normalised to 10,000 per cell,
    ``log1p``, PCA, and for ``basis="umap"`` scanpy's neighbours graph and UMAP. Cells of the
    other types are drawn in grey behind; each chosen type has one colour, its real cells as
    filled dots and its synthetic cells as crosses, so realistic synthetic cells are crosses
    mixed among the dots of their type.

    Parameters
    ----------
    adata : AnnData
        An AnnData from :func:`scaug.tl.augment` (or any with a boolean ``obs[key_added]``).
    labels_key : str
        ``obs`` column with the cell types.
    groups : list or None, default=None
        The types to show in colour; ``None``: those with synthetic cells.
    key_added : str, default="synthetic"
        ``obs`` column that is True for synthetic cells.
    basis : {"umap", "pca"}, default="umap"
        The embedding (computed unless ``obsm["X_umap"]`` / ``obsm["X_pca"]`` exists).
    layer : str or None, default=None
        Layer with the counts; ``None`` uses the layer :func:`scaug.tl.augment` wrote (from
        ``uns["scaug"]``), else ``X``.
    ax : matplotlib Axes or None, default=None
        Where to draw; ``None`` makes a new figure.
    show : bool or None, default=None
        Show the figure (``plt.show()``) and return None; ``None`` shows it only when the
        matplotlib backend is interactive, as scanpy does.
    random_state : int, default=0
        Seed of the PCA and UMAP.
    palette : list of colours or None, default=None
        Colours of the chosen types; ``None``: matplotlib's ``tab10``.

    Returns
    -------
    matplotlib.axes.Axes or None
        The axes, unless the figure was shown.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import scaug
    >>> adata = scaug.datasets.simulate(n_cells=120, n_genes=20, n_types=2, n_markers=5,
    ...                                 rare_sizes=(10,), random_state=0)
    >>> aug = scaug.tl.augment(adata, "cell_type", random_state=0, verbose=False, n_latent=4,
    ...                        ae_hidden=(16,), width=16, depth=1, diffusion_steps=10,
    ...                        max_epochs=1, n_sample_steps=3)
    >>> ax = scaug.pl.real_vs_synthetic(aug, "cell_type", basis="pca", show=False)
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['type_1: real (10)', 'type_1: synthetic (100)', 'other types']
    """
    import matplotlib.pyplot as plt

    from .tl import counts_of

    if basis not in ("umap", "pca"):
        raise ValueError(f"basis must be 'umap' or 'pca'; got {basis!r}.")
    if key_added not in adata.obs.columns:
        raise KeyError(f"obs has no column {key_added!r} marking synthetic cells; pass key_added= "
                       "as given to scaug.tl.augment.")
    if labels_key not in adata.obs.columns:
        raise KeyError(f"labels_key {labels_key!r} is not a column of adata.obs.")
    synthetic = adata.obs[key_added].to_numpy(dtype=bool)
    labels = adata.obs[labels_key].astype(object).to_numpy()
    if groups is None:
        groups = list(dict.fromkeys(labels[synthetic].tolist()))
    unknown = [g for g in groups if not (labels == g).any()]
    if unknown:
        raise ValueError(f"groups {unknown} are not types in obs[{labels_key!r}].")
    if layer is None and adata.X is None:
        layer = adata.uns.get("scaug", {}).get("params", {}).get("layer")
    coords = _embedding(adata, counts_of(adata, layer), basis, random_state)

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 5))
    colours = palette or plt.get_cmap("tab10").colors
    chosen = np.isin(labels, groups)
    size = max(4.0, min(30.0, 3000.0 / max(len(labels), 1)))
    handles = []
    for i, group in enumerate(groups):
        colour = colours[i % len(colours)]
        real = (labels == group) & ~synthetic
        fake = (labels == group) & synthetic
        handles.append(ax.scatter(*coords[real].T, s=size * 1.5, color=colour, alpha=0.9,
                                  edgecolors="black", linewidths=0.3,
                                  label=f"{group}: real ({int(real.sum())})"))
        handles.append(ax.scatter(*coords[fake].T, s=size * 1.5, color=colour, marker="x",
                                  linewidths=0.9, label=f"{group}: synthetic ({int(fake.sum())})"))
    if (~chosen).any():
        background = ax.scatter(*coords[~chosen].T, s=size, color="lightgrey", alpha=0.6,
                                linewidths=0, label="other types", zorder=0)
        handles.append(background)
    ax.legend(handles=handles, loc="best", fontsize="small", frameon=False)
    name = "UMAP" if basis == "umap" else "PC"
    ax.set_xlabel(f"{name}1")
    ax.set_ylabel(f"{name}2")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("real (dots) and synthetic (crosses) cells")
    if show is None:
        import matplotlib

        show = matplotlib.is_interactive()
    if show:
        plt.show()
        return None
    return ax
