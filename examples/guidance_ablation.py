"""
Guidance ablation: how realistic are the synthetic cells under each guidance?
=============================================================================

One SCLD is fitted once; its rare type is then sampled under each guidance setting, and the
synthetic cells are judged against real cells of the type that the model never saw, with a
classifier two-sample test (:func:`scaug.metrics.c2st_auc`: 0.5 means indistinguishable from
real cells, 1.0 means every synthetic cell is recognisable):

- plain conditional sampling (the default, ``guidance_scale=1``);
- classifier-free guidance ``w=2`` (pre-guidance pushed toward what is typical of the type);
- classifier guidance (post-guidance, ``classifier_scale=1``);
- screening (post-guidance: keep cells the latent classifier assigns to the type);
- all three.

Guidance trades realism for typicality (``docs/archive/fidelity_10shot.md``): expect the default to
score lowest. One test on a few dozen held-out cells is noisy (about +-0.1).

Run as is: ``python examples/guidance_ablation.py`` (about two minutes on a 2-core laptop CPU).
"""

import os

from sklearn.model_selection import train_test_split

from scaug import SCLD
from scaug.datasets import pbmc68k_reduced
from scaug.metrics import c2st_auc
from scaug.preprocessing import NormalizeLog1p

# the test suite sets SCAUG_EXAMPLES_QUICK=1: tiny models, meaningless scores
QUICK = os.environ.get("SCAUG_EXAMPLES_QUICK") == "1"
TINY = dict(n_latent=4, ae_hidden=(16,), width=16, depth=1, diffusion_steps=10, max_epochs=1,
            n_sample_steps=3, max_rounds=1)

adata = pbmc68k_reduced()
X, y = adata.X, adata.obs["cell_type"].to_numpy()
X_train, X_held, y_train, y_held = train_test_split(X, y, test_size=0.5, stratify=y,
                                                    random_state=0)
# latent_classifier=True: post-guidance is switched on below, at sampling time
model = SCLD(latent_classifier=True, random_state=0, verbose=False,
             **(TINY if QUICK else {})).fit(X_train, y_train)

cell_type = "CD14+ Monocyte"  # 129 cells: 64 to train on, 65 held out to judge with
held = X_held[y_held == cell_type]
settings = {
    "conditional (default)": {},
    "CFG w=2": dict(guidance_scale=2.0),
    "classifier guidance": dict(classifier_scale=1.0),
    "screening": dict(screening=True),
    "all three": dict(guidance_scale=2.0, classifier_scale=1.0, screening=True),
}
lognorm = NormalizeLog1p()
print(f"{cell_type}: two-sample AUC of {held.shape[0]} synthetic against {held.shape[0]} "
      "held-out real cells (0.5: indistinguishable)")
for name, options in settings.items():
    X_syn, _ = model.sample({cell_type: held.shape[0]}, random_state=0, **options)
    auc = c2st_auc(lognorm.fit_transform(held), lognorm.fit_transform(X_syn),
                   n_components=min(10, held.shape[0] - 1), cv=3, random_state=0)
    print(f"  {name:<22} {auc:.2f}")
    if options.get("screening"):
        print(f"  {'':<22} screening accepted {model.sampling_report_[cell_type]}")
