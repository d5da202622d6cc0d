"""Write simulated atlas-sized AnnData stores (100k, 300k, 1M cells x 2,000 genes) to a folder.

Counts are negative binomial (a gamma-Poisson draw, vectorised) with log-normal gene means, a
log-normal library size per cell and 10 cell types with their own marker genes, one of them rare
(1 %); about 90 % of the entries are zero, as in 10x data on 2,000 variable genes. The cells are
drawn and appended ``--chunk`` at a time (anndata's ``sparse_dataset(...).append``), so memory is
bounded by one chunk whatever the number of cells. The 1M-cell store takes about 1 GB of disk.

    python benchmarks/atlas_store.py /tmp/atlas                     # 100k, 300k and 1M cells
    python benchmarks/atlas_store.py /tmp/atlas --sizes 100000 --format zarr
"""

from __future__ import annotations

import argparse
import os
import time

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

N_TYPES = 10
RARE_SHARE = 0.01


class Simulator:
    """Fixed gene and type parameters; :meth:`draw` gives any number of cells from them."""

    def __init__(self, n_genes: int, seed: int):
        rng = np.random.default_rng(seed)
        self.n_genes = n_genes
        self.base = np.exp(rng.normal(np.log(0.05), 1.5, n_genes))  # mean count per gene
        self.fold = np.ones((N_TYPES, n_genes))
        markers = 20
        for t in range(N_TYPES):
            self.fold[t, t * markers:(t + 1) * markers] = 4 * np.exp(rng.normal(0, 0.2, markers))
        self.dispersion = 0.3 * np.exp(rng.normal(0, 0.5, n_genes))
        share = np.full(N_TYPES, (1 - RARE_SHARE) / (N_TYPES - 1))
        share[-1] = RARE_SHARE
        self.share = share

    def draw(self, n: int, rng: np.random.Generator):
        types = rng.choice(N_TYPES, size=n, p=self.share)
        size = np.exp(rng.normal(0, 0.4, n))[:, None]
        mu = (size * self.base * self.fold[types]).astype(np.float32)
        shape = (1 / self.dispersion).astype(np.float32)
        counts = rng.poisson(rng.gamma(shape, mu / shape)).astype(np.float32)
        return sp.csr_matrix(counts), types


def write_store(path: str, n_cells: int, n_genes: int, chunk: int, seed: int) -> dict:
    """Write one store chunk by chunk; returns its size and sparsity."""
    import h5py
    import zarr

    sim = Simulator(n_genes, seed)
    rng = np.random.default_rng([seed, n_cells])
    var = pd.DataFrame(index=[f"gene{i}" for i in range(n_genes)])
    tmp = path + ".partial"
    zarr_store = path.endswith(".zarr")
    root = zarr.open_group(tmp, mode="w", zarr_format=2) if zarr_store else h5py.File(tmp, "w")
    types, nnz = [], 0
    t0 = time.perf_counter()
    for start in range(0, n_cells, chunk):
        X, t = sim.draw(min(chunk, n_cells - start), rng)
        X.indices = X.indices.astype(np.int32)
        types.append(t)
        nnz += X.nnz
        if start == 0:
            kwargs = {} if zarr_store else {"chunks": (1 << 18,)}  # anndata makes it resizable
            ad.io.write_elem(root, "X", X, dataset_kwargs=kwargs)
            matrix = ad.io.sparse_dataset(root["X"])
        else:
            matrix.append(X)
    types = np.concatenate(types)
    obs = pd.DataFrame({"cell_type": pd.Categorical.from_codes(
        types, [f"type_{t}" for t in range(N_TYPES)])}, index=[f"cell{i}" for i in range(n_cells)])
    ad.io.write_elem(root, "obs", obs)
    ad.io.write_elem(root, "var", var)
    for name in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
        ad.io.write_elem(root, name, {})
    root.attrs["encoding-type"] = "anndata"
    root.attrs["encoding-version"] = "0.1.0"
    if not zarr_store:
        root.close()
    os.replace(tmp, path)
    return {"path": path, "n_cells": n_cells, "n_genes": n_genes,
            "zero_fraction": 1 - nnz / (n_cells * n_genes), "seconds": time.perf_counter() - t0}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--chunk", type=int, default=10_000, help="cells drawn and written at once")
    parser.add_argument("--format", choices=["h5ad", "zarr"], default="h5ad")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.makedirs(args.folder, exist_ok=True)
    for n in args.sizes:
        path = os.path.join(args.folder, f"atlas_{n}.{args.format}")
        if os.path.exists(path):
            print(f"{path} exists, kept")
            continue
        info = write_store(path, n, args.genes, args.chunk, args.seed)
        print(f"{path}: {n} cells x {args.genes} genes, {info['zero_fraction']:.1%} zeros, "
              f"{info['seconds']:.0f} s")


if __name__ == "__main__":
    main()
