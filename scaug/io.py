"""Read any model file scaug writes, whatever it holds."""

from __future__ import annotations

from . import _torch_utils
from .autoencoder import CellAutoencoder
from .model import SCLD

#: the saved class -> the class that loads it
_LOADERS = {"SCLD": SCLD, "CellAutoencoder": CellAutoencoder}


def saved_class(path) -> str:
    """The name of the class a scaug model file holds (``"SCLD"`` or ``"CellAutoencoder"``)."""
    return _torch_utils.checked_load(path, expected_class=None)["class"]


def load(path, device="auto") -> SCLD | CellAutoencoder:
    """Load a file written by :meth:`SCLD.save` or :meth:`CellAutoencoder.save`.

    The file's saved class decides what comes back: a fitted :class:`~scaug.SCLD` or a fitted
    :class:`~scaug.CellAutoencoder` (a pretrained encoder). ``device`` picks where it runs.

    Examples
    --------
    >>> import os, tempfile
    >>> import scaug
    >>> adata = scaug.datasets.simulate(n_cells=60, n_genes=20, n_types=2, n_markers=5,
    ...                                 random_state=0)
    >>> ae = scaug.CellAutoencoder(n_latent=2, hidden=(8,), max_epochs=1, verbose=False,
    ...                            random_state=0).fit(adata.X)
    >>> path = os.path.join(tempfile.mkdtemp(), "encoder.pt")
    >>> ae.save(path)
    >>> type(scaug.load(path)).__name__
    'CellAutoencoder'
    """
    kind = saved_class(path)
    if kind not in _LOADERS:
        raise ValueError(f"{path!r} holds a {kind}, which this scaug cannot load; it loads "
                         f"{sorted(_LOADERS)}.")
    return _LOADERS[kind].load(path, device=device)
