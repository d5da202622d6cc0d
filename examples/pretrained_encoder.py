"""
Reuse a pretrained encoder across folds
=======================================

Training SCLD's autoencoder is most of its cost, and it needs no labels. Pretrain one
:class:`~scaug.CellAutoencoder` on all cells, save it, and give its path to
:class:`~scaug.SCLDOverSampler`: in every fold only the diffusion part is trained, on that
fold's labelled training cells. (Pass the *path*: inside ``cross_validate`` scikit-learn clones
the sampler, and a clone of a fitted estimator is an unfitted copy.)

The encoder has seen the test cells' expression, but not their labels: use it like any other
unsupervised preprocessing (PCA on all cells), and pretrain on the training cells only when the
test cells must stay unseen.

Run as is: ``python examples/pretrained_encoder.py`` (about three minutes on a 2-core laptop
CPU); it writes ``pbmc_encoder.scae``.
"""

import os
import time

from imblearn.pipeline import Pipeline
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score

from scaug import CellAutoencoder, SCLDOverSampler
from scaug.datasets import pbmc68k_reduced
from scaug.preprocessing import NormalizeLog1p

# the test suite sets SCAUG_EXAMPLES_QUICK=1: tiny models, meaningless scores
QUICK = os.environ.get("SCAUG_EXAMPLES_QUICK") == "1"

adata = pbmc68k_reduced()
X, y = adata.X, adata.obs["cell_type"].to_numpy()

tic = time.perf_counter()
ae = CellAutoencoder(random_state=0, verbose=False,
                     **(dict(n_latent=4, hidden=(16,), max_epochs=1) if QUICK else {}))
ae.fit(X)  # no labels needed
ae.save("pbmc_encoder.scae", overwrite=True)
print(f"pretrained the encoder in {time.perf_counter() - tic:.0f} s")

quick = dict(max_epochs=1, n_sample_steps=3, scld_params=dict(width=16, depth=1,
                                                              diffusion_steps=10))
pipe = Pipeline([
    ("aug", SCLDOverSampler(model="pbmc_encoder.scae", random_state=0, **(quick if QUICK else {}))),
    ("norm", NormalizeLog1p()),
    ("clf", LogisticRegression(max_iter=200 if QUICK else 2000)),
])
tic = time.perf_counter()
cv = StratifiedKFold(2 if QUICK else 3, shuffle=True, random_state=0)
scores = cross_val_score(pipe, X, y, cv=cv, scoring="f1_macro")
print(f"macro-F1 per fold {scores.round(3)}; the folds took {time.perf_counter() - tic:.0f} s "
      "(diffusion only)")
