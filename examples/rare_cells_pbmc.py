"""
Synthesize rare PBMC cells and add them to a classifier's training data
=======================================================================

First SCLD on its own: fit it once, then ask for cells of a chosen type (pre-guidance). Then the
same model inside an imbalanced-learn pipeline, reused by :class:`~scaug.SCLDOverSampler`
instead of retrained.

Run as is: ``python examples/rare_cells_pbmc.py`` (one to two minutes on a 2-core laptop CPU).
"""

import os

import numpy as np
from imblearn.pipeline import Pipeline
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import classification_report
from sklearn.model_selection import train_test_split

from scaug import SCLD, SCLDOverSampler
from scaug.datasets import pbmc68k_reduced
from scaug.preprocessing import NormalizeLog1p

# the test suite sets SCAUG_EXAMPLES_QUICK=1: tiny models, meaningless scores
QUICK = os.environ.get("SCAUG_EXAMPLES_QUICK") == "1"
TINY = dict(n_latent=4, ae_hidden=(16,), width=16, depth=1, diffusion_steps=10, max_epochs=1,
            n_sample_steps=3)

adata = pbmc68k_reduced()
X, y = adata.X, adata.obs["cell_type"].to_numpy()
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)

# 1. The generator on its own: fit once, then ask for cells of a chosen type (pre-guidance).
model = SCLD(random_state=0, verbose=False, **(TINY if QUICK else {})).fit(X_train, y_train)
rare = model.classes_[np.argmin(model.class_counts_)]
X_syn, y_syn = model.sample({rare: 50}, random_state=0)
print(f"{X_syn.shape[0]} synthetic {rare!r} cells, integer counts:",
      bool(np.all(X_syn.data == np.round(X_syn.data))), "|", model.sampling_report_[rare])

# 2. In a pipeline: reuse the fitted model so the oversampler does not retrain it.
pipe = Pipeline([
    ("aug", SCLDOverSampler(model=model, random_state=0)),
    ("norm", NormalizeLog1p()),
    ("clf", LogisticRegression(max_iter=200 if QUICK else 2000)),
])
pipe.fit(X_train, y_train)
print(classification_report(y_test, pipe.predict(X_test), zero_division=0))
