"""Synthesize rare PBMC cells with SCLD and add them to a classifier's training data.

Run as is: ``python examples/rare_cells_pbmc.py`` (one to two minutes on a 2-core laptop CPU).
"""

import numpy as np
from imblearn.pipeline import Pipeline
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import classification_report
from sklearn.model_selection import train_test_split

from scaug import SCLD, SCLDOverSampler
from scaug.datasets import pbmc68k_reduced
from scaug.preprocessing import NormalizeLog1p

adata = pbmc68k_reduced()
X, y = adata.X, adata.obs["cell_type"].to_numpy()
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)

# 1. The generator on its own: fit once, then ask for cells of a chosen type (pre-guidance).
model = SCLD(random_state=0, verbose=False).fit(X_train, y_train)
rare = model.classes_[np.argmin(model.class_counts_)]
X_syn, y_syn = model.sample({rare: 50}, random_state=0)
print(f"{X_syn.shape[0]} synthetic {rare!r} cells, integer counts:",
      bool(np.all(X_syn.data == np.round(X_syn.data))), "|", model.sampling_report_[rare])

# 2. In a pipeline: reuse the fitted model so the oversampler does not retrain it.
pipe = Pipeline([
    ("aug", SCLDOverSampler(model=model, random_state=0)),
    ("norm", NormalizeLog1p()),
    ("clf", LogisticRegression(max_iter=2000)),
])
pipe.fit(X_train, y_train)
print(classification_report(y_test, pipe.predict(X_test), zero_division=0))
