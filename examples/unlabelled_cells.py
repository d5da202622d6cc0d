"""
Cells without labels: mark them -1 (semi-supervised)
====================================================

Often most cells of a data set are not annotated, or a rare type has only a handful of annotated
cells among many that nobody labelled. Cells labelled ``-1`` (scikit-learn's convention) train the
autoencoder and the diffusion model; the labelled ones teach it the types. The autoencoder then
has seen the rare type's unlabelled cells too, which is what lets it render new, realistic cells
of the type (``docs/fidelity_10shot.md``).

Run as is: ``python examples/unlabelled_cells.py`` (about a minute on a 2-core laptop CPU).
"""

import os

import numpy as np

from scaug import SCLD
from scaug.datasets import pbmc68k_reduced

# the test suite sets SCAUG_EXAMPLES_QUICK=1: tiny models, meaningless cells
QUICK = os.environ.get("SCAUG_EXAMPLES_QUICK") == "1"
TINY = dict(n_latent=4, ae_hidden=(16,), width=16, depth=1, diffusion_steps=10, max_epochs=1,
            n_sample_steps=3)

adata = pbmc68k_reduced()
X, y = adata.X, adata.obs["cell_type"].to_numpy().astype(object)

# keep the labels of 10 cells of each type and of nothing else
rng = np.random.default_rng(0)
keep = np.concatenate([rng.choice(np.flatnonzero(y == t), size=min(10, (y == t).sum()),
                                  replace=False) for t in np.unique(y)])
y_partial = np.full(len(y), -1, dtype=object)
y_partial[keep] = y[keep]

model = SCLD(random_state=0, verbose=False, **(TINY if QUICK else {})).fit(X, y_partial)
print(f"fitted on {X.shape[0]} cells: {model.n_unlabelled_} unlabelled, "
      f"{int(model.class_counts_.sum())} labelled in {len(model.classes_)} types")

X_syn, y_syn = model.sample({"Dendritic": 100}, random_state=0)
print(f"{X_syn.shape[0]} synthetic Dendritic cells; mean counts per cell "
      f"{X_syn.sum(1).mean():.0f} (labelled real ones: "
      f"{X[y_partial == 'Dendritic'].sum(1).mean():.0f})")
