"""
Reuse a pretrained encoder on data with other genes
===================================================

An autoencoder pretrained once on a large data set can serve another data set that measured
other genes. Pretrain a :class:`~scaug.CellAutoencoder` with gene names, save it, and hand its
path to :class:`~scaug.SCLDOverSampler` for cells in a DataFrame with their own gene columns:
the encoder is aligned to them by name (:meth:`~scaug.CellAutoencoder.adapt`: shared genes'
weights copied, the pretrained trunk kept, genes it lacks added, genes the data lacks left out,
the gene-specific layers taught the pretrained latents of the data's cells), and the synthetic
cells come out with exactly the data's genes, in its order. ``docs/transfer.md`` explains the
steps and what they cost.

Here the encoder is pretrained on pbmc3k's 32,738 genes when ``SCAUG_DATA_DIR`` points at the
real data (``scaug.datasets.load("pbmc3k")``), otherwise on simulated counts named after 600 of
pbmc68k_reduced's genes and 400 others; it is then reused for ``pbmc68k_reduced`` (765 genes),
whose rare types are oversampled.

Run as is: ``python examples/pretrained_encoder_other_genes.py`` (about ten minutes on a 2-core
laptop CPU with the real data, most of it pretraining on all genes); it writes
``encoder_all_genes.scae`` and ``encoder_pbmc68k.scae``.
"""

import os

import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

from scaug import CellAutoencoder, SCLDOverSampler
from scaug.datasets import load, pbmc68k_reduced, simulate
from scaug.preprocessing import NormalizeLog1p

# the test suite sets SCAUG_EXAMPLES_QUICK=1: tiny models, meaningless scores
QUICK = os.environ.get("SCAUG_EXAMPLES_QUICK") == "1"

target = pbmc68k_reduced()

# 1. Pretrain on the large data set, without labels, with gene names; save.
if os.environ.get("SCAUG_DATA_DIR"):
    source = load("pbmc3k")
else:  # simulated stand-in: 600 of the target's genes and 400 it lacks
    source = simulate(n_cells=2000, n_genes=1000, random_state=0)
    source.var_names = list(target.var_names[:600]) + [f"OTHER{i}" for i in range(400)]
ae = CellAutoencoder(random_state=0, verbose=False,
                     **(dict(n_latent=4, hidden=(16,), max_epochs=1) if QUICK else {}))
ae.fit(source.X, feature_names=list(source.var_names))
ae.save("encoder_all_genes.scae", overwrite=True)
print(f"pretrained on {source.n_obs} cells x {source.n_vars} genes")

# 2. The target's cells, in a DataFrame with its gene names as columns.
X = pd.DataFrame(target.X.toarray(), columns=list(target.var_names))
y = target.obs["cell_type"].to_numpy()
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y,
                                                    random_state=0)
pretrained = CellAutoencoder.load("encoder_all_genes.scae")
print("gene overlap:", pretrained.gene_overlap(X_train))

# 3a. Adapt it once, explicitly (to inspect or share it), ...
adapted = pretrained.adapt(X_train, max_epochs=1 if QUICK else None)
adapted.save("encoder_pbmc68k.scae", overwrite=True)
print(f"adapted: {adapted.n_features_in_} genes, in the target's order:",
      list(adapted.feature_names_in_) == list(X.columns))

# 3b. ... or let the oversampler do it: the saved pretrained encoder on the target's genes.
counts = pd.Series(y_train).value_counts()
rare = list(counts.index[counts < 30])
quick = dict(max_epochs=1, n_sample_steps=3, scld_params=dict(width=16, depth=1,
                                                              diffusion_steps=10))
sampler = SCLDOverSampler(model="encoder_all_genes.scae", sampling_strategy={t: 60 for t in rare},
                          random_state=0, **(quick if QUICK else {}))
X_res, y_res = sampler.fit_resample(X_train, y_train)
overlap = sampler.model_.gene_overlap_
print(f"oversampled {rare}: {sampler.n_synthetic_} synthetic cells with the target's "
      f"{X_res.shape[1]} genes ({overlap['n_shared']} shared with the encoder, {overlap['n_new']} "
      f"new to it, {overlap['n_missing']} of its genes left out)")

# 4. What it buys a classifier on the rare types (held-out cells).
for name, (Xf, yf) in {"no augmentation": (X_train, y_train),
                       "pretrained encoder, other genes": (X_res, y_res)}.items():
    norm = NormalizeLog1p()
    clf = LogisticRegression(max_iter=200 if QUICK else 2000).fit(norm.fit_transform(Xf), yf)
    pred = clf.predict(norm.transform(X_test))
    f1 = f1_score(y_test, pred, labels=rare, average=None, zero_division=0)
    print(f"{name:>32}: rare-type F1", {t: round(float(v), 3) for t, v in zip(rare, f1, strict=True)})
