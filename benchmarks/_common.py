"""Shared pieces of the benchmarks: data sets, rare-cell splits, machine description."""

from __future__ import annotations

import json
import os
import platform
import subprocess

import numpy as np
import scanpy as sc
import scipy.sparse as sp
import torch
from sklearn.model_selection import train_test_split

from scaug import datasets

# Small MLPs gain little from a second thread, and torch's threads slow down badly when the other
# core is busy (data loading, a second job); one thread gives steadier timings on a 2-core laptop.
THREADS = int(os.environ.get("SCAUG_BENCH_THREADS", "1"))
torch.set_num_threads(THREADS)

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


def machine() -> str:
    try:
        cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo"],
                             capture_output=True, text=True).stdout.split(":")[-1].strip()
    except OSError:
        cpu = platform.processor()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores ({cpu}), {gpu}; "
            f"Python {platform.python_version()}, torch {torch.__version__} "
            f"({torch.get_num_threads()} thread(s)); scaug at {code_version()}")


def code_version() -> str:
    """The commit the figures come from, marked ``+changes`` when the tree differs from it."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=os.path.dirname(DOCS), capture_output=True,
                              text=True).stdout.strip()
    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "scaug", "benchmarks")
    except OSError:
        return "an unknown commit"
    return f"commit {commit}{' +changes' if dirty else ''}" if commit else "an unknown commit"


def write_json(value, path: str, default=None) -> None:
    """Write ``value`` as JSON to ``path`` atomically: a cache file is whole or absent, never torn."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as fh:
        json.dump(value, fh, default=default)
    os.replace(path + ".tmp", path)


def load_counts(name: str, n_top_genes: int = 2000):
    """Counts, labels and gene names; data sets with more genes keep the most variable ones.

    Gene selection uses all cells' counts but no labels, so it leaks nothing about the test
    labels; it keeps the all-genes pbmc3k (32k genes) within a laptop's minutes.
    """
    adata = datasets.load(name)
    if adata.n_vars > n_top_genes:
        lognorm = adata.copy()
        sc.pp.normalize_total(lognorm, target_sum=1e4)
        sc.pp.log1p(lognorm)
        sc.pp.highly_variable_genes(lognorm, n_top_genes=n_top_genes, flavor="seurat")
        adata = adata[:, lognorm.var["highly_variable"].to_numpy()].copy()
    X = adata.X.tocsr() if sp.issparse(adata.X) else sp.csr_matrix(adata.X)
    # scanpy's normalize_total resets the OpenMP thread count, and torch's with it, to every core
    torch.set_num_threads(THREADS)
    return X.astype(np.float32), adata.obs["cell_type"].astype(str).to_numpy()


def rare_split(y, *, seed: int, test_size: float = 0.3, n_rare: int = 3, cap: int | None = 10,
               largest: bool = False):
    """Stratified train/test indices; the ``n_rare`` rarest types keep ``cap`` training cells.

    The training cells a cap removes are not used anywhere; the test set is untouched by the cap,
    so every regime is scored on the same held-out real cells. ``largest=True`` caps the largest
    types instead: made rare in training, they keep hundreds of held-out cells to be judged on.
    """
    idx = np.arange(len(y))
    train, test = train_test_split(idx, test_size=test_size, stratify=y, random_state=seed)
    types, counts = np.unique(y[train], return_counts=True)
    order = np.argsort(-counts if largest else counts, kind="stable")
    rare = list(types[order[:n_rare]])
    if cap is not None:
        rng = np.random.default_rng(seed)
        parts = [train[~np.isin(y[train], rare)]]
        for t in rare:
            members = train[y[train] == t]
            parts.append(rng.choice(members, size=min(cap, len(members)), replace=False))
        train = np.sort(np.concatenate(parts))
    return train, test, rare


def ten_shot_model(X, y, *, seed: int, settings: dict, verbose: bool):
    """The low-noise 10-shot test (``sampler_variants.py``, ``discriminator.py``): a half/half split
    whose three largest types keep 10 labelled training cells, an autoencoder pretrained without
    labels on the whole training half, and SCLD fitted on the capped split through it
    (``settings["ae"]``, ``settings["scld"]``). Returns ``train, test, capped, model``."""
    from scaug import SCLD, CellAutoencoder

    train, test, capped = rare_split(y, seed=seed, cap=10, test_size=0.5, largest=True)
    half = np.setdiff1d(np.arange(len(y)), test)  # the training half, before the cap
    ae = CellAutoencoder(random_state=seed, verbose=verbose, **settings["ae"]).fit(X[half])
    model = SCLD(autoencoder=ae, random_state=seed, verbose=verbose,
                 **settings["scld"]).fit(X[train], y[train])
    return train, test, capped, model


def realism(held_log, own_log, syn_log, seed: int) -> dict:
    """Synthetic cells of a type against its held-out cells (``c2st_auc``, 0.5: indistinguishable)
    and the copy check against its training cells (``dcr_ratio``, about 1: as new as real)."""
    from scaug import metrics

    return dict(c2st_auc=metrics.c2st_auc(held_log, syn_log, random_state=seed),
                dcr_ratio=metrics.dcr_ratio(own_log, syn_log, held_log, random_state=seed))


def semi_supervised_split(y, *, seed: int, largest: bool = False):
    """The half/half ``rare_split`` capped at 10 labelled cells, and the whole training half with
    the capped types' other cells labelled -1 (unlabelled), for a semi-supervised fit.

    Returns ``train, test, capped, full_train, y_semi`` (``y_semi`` aligned with ``full_train``).
    """
    train, test, capped = rare_split(y, seed=seed, cap=10, test_size=0.5, largest=largest)
    full_train, _, _ = rare_split(y, seed=seed, cap=None, test_size=0.5)
    y_semi = y[full_train].astype(object)
    y_semi[np.isin(y[full_train], capped) & ~np.isin(full_train, train)] = -1
    return train, test, capped, full_train, y_semi
