"""Distributed training through Lightning DDP: 2 CPU processes (gloo) on a small on-disk store.

scaug has no process management of its own: the user passes Trainer arguments and Lightning's
launcher starts the processes. Here ``trainer_kwargs={"accelerator": "cpu", "devices": 2,
"strategy": "ddp"}`` makes Lightning re-execute the script (``sys.argv``) once more as rank 1;
both processes run the whole script, and each takes its stripe of the store's chunks.

A multi-node run is the same script on every machine with ``num_nodes`` set, e.g.
``trainer_kwargs={"accelerator": "gpu", "devices": 4, "strategy": "ddp", "num_nodes": 2}``, and
the rendezvous in the environment, as Lightning documents
(https://lightning.ai/docs/pytorch/stable/clouds/cluster_intermediate_1.html):

- by hand: on every node ``MASTER_ADDR=<node 0's address> MASTER_PORT=29500 NODE_RANK=<0..N-1>
  WORLD_SIZE=<nodes * devices> python train.py``; Lightning starts the node's ``devices``
  processes itself;
- with torchrun: ``torchrun --nnodes=2 --nproc_per_node=4 --node_rank=<i>
  --master_addr=<node 0> --master_port=29500 train.py`` (Lightning sees ``LOCAL_RANK`` and leaves
  process creation to torchrun);
- on SLURM: ``srun`` with ``--nodes=2 --ntasks-per-node=4`` (one task per device); Lightning reads
  SLURM's variables.

Only the process of rank 0 writes files (``SCLD.save`` / ``CellAutoencoder.save`` return at once
on the others), so the script needs no ``if rank == 0`` of its own.
"""

import json
import os
import subprocess
import sys
import textwrap
import warnings

import anndata as ad
import numpy as np
import pytest

from scaug import SCLD, CellAutoencoder, OnDiskCells
from scaug.datasets import simulate

SETTINGS = dict(n_latent=4, ae_hidden=(32,), width=32, depth=1, max_epochs=8, batch_size=32,
                diffusion_steps=100, n_sample_steps=5, verbose=False, device="cpu", random_state=0)
STORE = dict(labels_key="cell_type", chunk_size=32, buffer_chunks=4)
TWO_PROCESSES = {"accelerator": "cpu", "devices": 2, "strategy": "ddp"}

SCRIPT = textwrap.dedent('''
    import json, os, sys, warnings
    warnings.filterwarnings("ignore")
    from scaug import SCLD, OnDiskCells
    from scaug.train import process_rank

    store, out, settings, store_options, trainer_kwargs = sys.argv[1:6]
    model = SCLD(**json.loads(settings), trainer_kwargs=json.loads(trainer_kwargs))
    model.fit(OnDiskCells(store, **json.loads(store_options)))
    model.save(os.path.join(out, "model.scld"))  # writes on rank 0 only
    rank, world = process_rank()
    X, _ = model.sample({"type_0": 20}, random_state=1)
    with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
        json.dump({"rank": rank, "world": world, "ae_loss": model.autoencoder_.history_[-1],
                   "diffusion_loss": model.diffusion_history_[-1],
                   "sample_sum": float(X.sum())}, fh)
''')


def _run_two_processes(tmp_path, store):
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items()
           if k not in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    args = [json.dumps(v) for v in (SETTINGS, STORE, TWO_PROCESSES)]
    done = subprocess.run([sys.executable, str(script), store, str(out), *args], env=env,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    a = simulate(n_cells=640, n_genes=40, n_types=3, rare_sizes=(40,), random_state=0)
    a = ad.AnnData(a.X.tocsr(), obs=a.obs[["cell_type"]].astype("category"), var=a.var)
    path = str(tmp_path_factory.mktemp("ddp") / "cells.h5ad")
    a.write_h5ad(path)
    return path


def test_two_process_ddp_fit_equals_a_one_process_fit(tmp_path, store):
    out2, (r0, r1) = _run_two_processes(tmp_path, store)
    assert (r0["rank"], r0["world"]) == (0, 2) and (r1["rank"], r1["world"]) == (1, 2)
    # DDP keeps the replicas identical: both processes hold the same model
    assert r0["sample_sum"] == r1["sample_sum"]
    assert r0["ae_loss"] != r1["ae_loss"]  # each process saw its own stripe of the cells
    assert sorted(os.listdir(out2)) == ["model.scld", "rank0.json", "rank1.json"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = SCLD(**SETTINGS).fit(OnDiskCells(store, **STORE))
    # The 2-process run takes half the optimiser steps per epoch (each step averages two
    # processes' batches, twice the cells), so after the same 12 epochs its loss is close to, not
    # equal to, the 1-process loss: the per-gene NB loss of the autoencoder (each process's mean
    # over its own stripe) agrees within 10 % (measured: 3 %); the diffusion loss (a running
    # mean over random noise levels, noisy by nature, measured 3-5 % apart) within 25 %.
    ae_2 = (r0["ae_loss"] + r1["ae_loss"]) / 2
    assert ae_2 == pytest.approx(single.autoencoder_.history_[-1], rel=0.10)
    assert r0["diffusion_loss"] == pytest.approx(single.diffusion_history_[-1], rel=0.25)
    # the saved model has the same API as any other
    model = SCLD.load(out2 / "model.scld")
    X, y = model.sample({"type_0": 5}, random_state=0)
    assert X.shape == (5, 40) and list(y) == ["type_0"] * 5
    assert list(model.classes_) == ["type_0", "type_1", "type_2"]


def test_save_does_nothing_on_non_zero_ranks(tmp_path, monkeypatch):
    a = simulate(n_cells=120, n_genes=30, n_types=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ae = CellAutoencoder(n_latent=4, hidden=(16,), max_epochs=1, verbose=False,
                             device="cpu", random_state=0).fit(a.X)
        model = SCLD(autoencoder=ae, diffusion_steps=5, width=16, depth=1, verbose=False,
                     device="cpu", random_state=0).fit(a.X, a.obs["cell_type"].astype(str))
    import scaug.autoencoder
    import scaug.model

    for module in (scaug.model, scaug.autoencoder):
        monkeypatch.setattr(module, "process_rank", lambda: (1, 2))
    model.save(tmp_path / "m.scld")
    ae.save(tmp_path / "ae.pt")
    assert not list(tmp_path.iterdir())
    monkeypatch.setattr(scaug.model, "process_rank", lambda: (0, 2))
    model.save(tmp_path / "m.scld")
    assert np.isfinite(SCLD.load(tmp_path / "m.scld").n_train_)
