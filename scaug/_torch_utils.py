"""Helpers that need torch: devices, CPU threads and denormals, model files.

The torch-free helpers are in :mod:`scaug._utils`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile

import torch

from . import _utils
from ._version import __version__


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn a user's ``device`` argument into a :class:`torch.device`.

    ``"auto"`` picks CUDA when it is available and the CPU otherwise; ``"cpu"`` forces the CPU;
    ``"cuda"`` or ``"cuda:N"`` without a usable GPU is an error rather than a silent fallback.
    """
    if isinstance(device, torch.device):
        name = str(device)
    elif isinstance(device, str):
        name = device.strip().lower()
    else:
        raise TypeError(
            f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device; got {device!r}."
        )
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as err:
        raise ValueError(
            f"device={device!r} is not a device name; use 'auto', 'cpu', 'cuda' or 'cuda:N'."
        ) from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} asks for CUDA, but torch sees no CUDA GPU here "
                f"(torch {torch.__version__}). Use device='auto' or device='cpu'."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} asks for GPU {dev.index}, but only "
                f"{torch.cuda.device_count()} CUDA device(s) are visible."
            )
    elif dev.type != "cpu":
        raise ValueError(f"device={device!r} is not supported; use 'auto', 'cpu' or 'cuda[:N]'.")
    return dev


def atomic_save(obj: dict, path, *, overwrite: bool) -> None:
    """Write ``obj`` with torch.save via a temporary file, so no half-written model is ever left."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"path={path!r} is a directory; give a file name such as 'model.pt'.")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path!r} already exists; pass overwrite=True to replace it.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"The folder {folder!r} for path={path!r} does not exist.")
    fd, tmp = tempfile.mkstemp(prefix=".scaug-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def checked_load(path, *, expected_class: str | None, required=()) -> dict:
    """Load a file written by :func:`atomic_save` and check its format version, class and that
    it holds every field in ``required`` (a damaged file names what it lacks)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No saved model at {path!r}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for files that are not its own
        raise ValueError(f"{path!r} is not a scaug model file ({type(err).__name__}: {err}).") from err
    if not isinstance(state, dict) or "format_version" not in state or "class" not in state:
        raise ValueError(f"{path!r} is not a scaug model file.")
    if expected_class is not None and state["class"] != expected_class:
        raise ValueError(
            f"{path!r} holds a {state['class']}, not a {expected_class}; load it with "
            f"scaug.{state['class']}.load."
        )
    if state["format_version"] != _utils.FORMAT_VERSION:
        raise ValueError(
            f"{path!r} was written in scaug model format {state['format_version']}, but this "
            f"scaug reads format {_utils.FORMAT_VERSION}; re-fit or use the scaug version that wrote it."
        )
    _utils.check_fields(state, required, f"{path!r}", expected_class)
    return state


@contextlib.contextmanager
def seeded(seed: int, device):
    """Inside: torch's global random state seeded with ``seed`` (the caller's, and that of
    ``device`` when it is a GPU, restored after) and denormal floats flushed (:class:`flush_denormal`)."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), flush_denormal():
        torch.manual_seed(seed)
        yield


class flush_denormal:
    """Flush denormal floats to zero while training or sampling on the CPU.

    Tiny weights and Adam statistics become denormal numbers, which x86 CPUs process up to 50
    times slower; flushing them changes no result at float32 precision. torch has no getter for
    the flag, so it is restored to torch's default (off) on exit.
    """

    def __enter__(self):
        torch.set_flush_denormal(True)
        return self

    def __exit__(self, *exc):
        torch.set_flush_denormal(False)
        return False


def provenance(*, n_obs, n_features) -> dict:
    """Who wrote a model file, when, and from what shape of data."""
    import datetime

    return {"provenance": {
        "scaug_version": __version__, "torch_version": str(torch.__version__),
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "n_obs": None if n_obs is None else int(n_obs), "n_features": int(n_features)}}


def with_cpu_threads(method):
    """Run an estimator method on ``self.cpu_threads`` torch CPU threads, then restore the
    caller's setting (whatever happens inside)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        wanted = getattr(self, "cpu_threads", None)
        if wanted is None:
            return method(self, *args, **kwargs)
        previous = torch.get_num_threads()
        torch.set_num_threads(int(wanted))
        try:
            return method(self, *args, **kwargs)
        finally:
            torch.set_num_threads(previous)

    return wrapper
