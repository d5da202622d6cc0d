"""
XGBoost with SCLD augmentation, cross-validated
===============================================

An imbalanced-learn pipeline ``[SCLDOverSampler, NormalizeLog1p, XGBClassifier]`` against the
same pipeline without augmentation, in stratified cross-validation on PBMC cells. XGBoost needs
the labels ``0..K-1``: encode them with :class:`~sklearn.preprocessing.LabelEncoder` first and
decode predictions with its ``inverse_transform``. The sampler only runs while fitting, so every
fold's SCLD sees that fold's training cells only.

Run as is: ``python examples/xgboost_pipeline.py`` (about five minutes on a 2-core laptop CPU).
"""

import os

import numpy as np
from imblearn.pipeline import Pipeline
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.preprocessing import LabelEncoder
from xgboost import XGBClassifier

from scaug import SCLDOverSampler
from scaug.datasets import pbmc68k_reduced
from scaug.preprocessing import NormalizeLog1p

# the test suite sets SCAUG_EXAMPLES_QUICK=1: tiny models, meaningless scores
QUICK = os.environ.get("SCAUG_EXAMPLES_QUICK") == "1"
TINY = dict(max_epochs=1, n_sample_steps=3,
            scld_params=dict(n_latent=4, ae_hidden=(16,), width=16, depth=1, diffusion_steps=10))

adata = pbmc68k_reduced()
encoder = LabelEncoder()
y = encoder.fit_transform(adata.obs["cell_type"])  # XGBoost needs 0..K-1
rare = np.argsort(np.bincount(y))[:3]              # the three rarest types


def pipeline(augment):
    steps = [("norm", NormalizeLog1p()),
             ("clf", XGBClassifier(n_estimators=2 if QUICK else 200, max_depth=2 if QUICK else 6,
                                   tree_method="hist", n_jobs=1 if QUICK else 2,
                                   random_state=0))]
    if augment:
        steps.insert(0, ("aug", SCLDOverSampler(random_state=0, **(TINY if QUICK else {}))))
    return Pipeline(steps)


def rare_f1(estimator, X, y_true):
    from sklearn.metrics import f1_score

    return f1_score(y_true, estimator.predict(X), labels=rare, average="macro", zero_division=0)


cv = StratifiedKFold(2 if QUICK else 3, shuffle=True, random_state=0)
for name, augment in [("no augmentation", False), ("SCLDOverSampler", True)]:
    scores = cross_validate(pipeline(augment), adata.X, y, cv=cv,
                            scoring={"macro_f1": "f1_macro", "rare_f1": rare_f1})
    print(f"{name:<16} macro-F1 {scores['test_macro_f1'].mean():.3f}   "
          f"F1 of {', '.join(encoder.classes_[rare])}: {scores['test_rare_f1'].mean():.3f}")
