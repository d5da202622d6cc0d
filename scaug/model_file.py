"""The model file of :class:`scaug.SCLD`: what :meth:`~scaug.SCLD.save` writes and
:meth:`~scaug.SCLD.load` reads back.

One dict of plain values and tensors (readable by ``torch.load(weights_only=True)``): format
version, class, settings, the autoencoder's and networks' weights, gene names, per-type
summaries, conditions and provenance; never a training cell. :data:`scaug._utils.FORMAT_VERSION`
is its version; files written before conditions existed load without them.
"""

from __future__ import annotations

import numpy as np
import torch

from . import _torch_utils, _utils, conditions, sampling
from .autoencoder import CellAutoencoder
from .diffusion import GaussianDiffusion
from .nn import Denoiser, LatentClassifier

#: what a saved SCLD must hold (see :func:`to_state`)
STATE_FIELDS = ("params", "random_state", "autoencoder", "denoiser", "classifier", "classes",
                "classes_dtype", "class_counts", "n_unlabelled", "n_features_in",
                "feature_names_in", "input_dtype", "sparse_input", "latent_mean", "latent_scale",
                "type_summaries", "diffusion_steps", "history", "provenance")


def to_state(model) -> dict:
    """The fitted ``model`` as the dict its file holds."""
    names = getattr(model, "feature_names_in_", None)
    params = _utils.plain_params(model, exclude=("autoencoder", "device", "random_state",
                                                "trainer_kwargs", "cpu_threads"))

    def weights(module):
        return None if module is None else {k: v.detach().cpu() for k, v in module.state_dict().items()}

    state = {
        "format_version": _utils.FORMAT_VERSION, "class": "SCLD", "params": params,
        "random_state": model.random_state if isinstance(model.random_state, int) else None,
        "autoencoder": model.autoencoder_.state(),
        "gene_overlap": model.gene_overlap_,
        "denoiser": weights(model.denoiser_), "classifier": weights(model.classifier_),
        "classes": None if model.classes_ is None else _utils.to_plain_list(model.classes_),
        "classes_dtype": None if model.classes_ is None else str(model.classes_.dtype),
        "class_counts": [int(c) for c in model.class_counts_],
        "n_unlabelled": int(model.n_unlabelled_),
        "n_features_in": int(model.n_features_in_),
        "feature_names_in": None if names is None else _utils.to_plain_list(names),
        "input_dtype": model.input_dtype_, "sparse_input": model.sparse_input_,
        "latent_mean": torch.from_numpy(model.latent_mean_),
        "latent_scale": torch.from_numpy(model.latent_scale_),
        "type_summaries": model.type_summaries_.state(),
        "conditions": conditions.to_state(model),
        "diffusion_steps": model.diffusion_.n_steps,
        "history": {"diffusion": [float(v) for v in model.diffusion_history_],
                    "classifier": [float(v) for v in model.classifier_history_]},
        "stopped_at": model.stopped_at_,
        **_torch_utils.provenance(n_obs=model.n_train_, n_features=model.n_features_in_),
    }
    return state


def from_state(cls, state: dict, path, device):
    """The fitted model (of class ``cls``) that a file's ``state`` describes, on ``device``;
    ``path`` names the file in errors."""
    params = dict(state["params"])
    params["ae_hidden"] = tuple(params["ae_hidden"])
    model = cls(**params, device=device, random_state=state["random_state"])
    dev = _torch_utils.resolve_device(device)
    model.autoencoder_ = CellAutoencoder.from_state(state["autoencoder"], device=device)
    model.gene_overlap_ = state.get("gene_overlap")
    model.counts_ = model.autoencoder_.likelihood_ == "nb"
    if state["classes"] is None:
        model.classes_ = None
    else:
        model.classes_ = np.asarray(state["classes"], dtype=np.dtype(state["classes_dtype"])
                                    if state["classes_dtype"] != "object" else object)
    model.class_counts_ = np.asarray(state["class_counts"], dtype=np.int64)
    model.n_unlabelled_ = state["n_unlabelled"]
    model.n_features_in_ = state["n_features_in"]
    if state["feature_names_in"] is not None:
        model.feature_names_in_ = np.asarray(state["feature_names_in"], dtype=object)
    model.input_dtype_ = state["input_dtype"]
    model.sparse_input_ = state["sparse_input"]
    model.n_train_ = state["provenance"]["n_obs"]
    model.provenance_ = dict(state["provenance"])
    model.latent_mean_ = state["latent_mean"].numpy()
    model.latent_scale_ = state["latent_scale"].numpy()
    model.type_summaries_ = sampling.TypeSummaries.from_state(state["type_summaries"])
    # files written before conditions existed have none
    (model.conditions_, model.condition_counts_,
     model.library_shifts_) = conditions.from_state(state.get("conditions"), model, path,
                                                     state["denoiser"])
    model.diffusion_ = GaussianDiffusion(state["diffusion_steps"])
    model.diffusion_history_ = state["history"]["diffusion"]
    model.classifier_history_ = state["history"]["classifier"]
    model.stopped_at_ = state.get("stopped_at", {"autoencoder": None, "diffusion": None})
    d, n_classes = len(model.latent_mean_), len(model.class_counts_)
    model.classifier_ = None
    if state["classifier"] is not None:
        model.classifier_ = LatentClassifier(d, n_classes)
        model.classifier_.load_state_dict(state["classifier"])
        model.classifier_.to(dev).eval()
    model.device_ = dev
    model.denoiser_ = Denoiser(d, n_classes, int(model.width), int(model.depth),
                               n_values=[len(v) for v in model.conditions_.values()])
    model.denoiser_.load_state_dict(state["denoiser"])
    model.denoiser_.to(dev).eval()
    return model
