"""
Augment an AnnData and plot real against synthetic cells
========================================================

:func:`scaug.tl.augment` takes an AnnData and returns a new one: the real cells, then synthetic
cells of the rare types (``obs["synthetic"]`` tells them apart, ``uns["scaug"]`` records how
they were made). :func:`scaug.pl.real_vs_synthetic` draws the real cells of chosen types as dots
and their synthetic cells as crosses on one UMAP of all cells: realistic synthetic cells mix
with the real ones of their type.

Run as is: ``python examples/augment_anndata.py`` (about two minutes on a 2-core laptop CPU);
it writes ``real_vs_synthetic.png`` and ``pbmc_augmented.h5ad``.
"""

import os

import matplotlib.pyplot as plt

import scaug
from scaug.datasets import pbmc68k_reduced

# the test suite sets SCAUG_EXAMPLES_QUICK=1: tiny models, meaningless cells
QUICK = os.environ.get("SCAUG_EXAMPLES_QUICK") == "1"
TINY = dict(n_latent=4, ae_hidden=(16,), width=16, depth=1, diffusion_steps=10, max_epochs=1,
            n_sample_steps=3)

adata = pbmc68k_reduced()  # integer counts in X, log-normalised values in layers["lognorm"]
counts = adata.obs["cell_type"].value_counts()
print(counts.tail(3).to_string())

# bring the three rarest types up to 100 cells each (the count after augmentation)
strategy = {t: 100 for t in counts.index[-3:]}
aug = scaug.tl.augment(adata, "cell_type", sampling_strategy=strategy, random_state=0,
                       verbose=False, **(TINY if QUICK else {}))
print(aug)
print("generated:", dict(aug.uns["scaug"]["n_generated"]))
print("dropped (cannot be derived for synthetic cells):", list(aug.uns["scaug"]["dropped"]))

# other obs columns are missing (NA) for synthetic cells; the lognorm layer was dropped, so
# normalise again on the result if you need it: sc.pp.normalize_total(aug); sc.pp.log1p(aug)
aug.write_h5ad("pbmc_augmented.h5ad")

ax = scaug.pl.real_vs_synthetic(aug, "cell_type", list(strategy),
                                basis="pca" if QUICK else "umap", show=False)
ax.figure.savefig("real_vs_synthetic.png", dpi=150, bbox_inches="tight")
plt.close(ax.figure)
