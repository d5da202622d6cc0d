"""Device selection and file safety."""

import numpy as np
import pytest
import torch

from scaug import _torch_utils, _utils


def test_auto_picks_cuda_only_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _torch_utils.resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _torch_utils.resolve_device("auto") == torch.device("cuda")


def test_cpu_is_forced_even_with_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _torch_utils.resolve_device("cpu") == torch.device("cpu")
    assert _torch_utils.resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_cuda_without_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        _torch_utils.resolve_device("cuda")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        _torch_utils.resolve_device("cuda:1")


def test_cuda_index_out_of_range(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="only 1 CUDA"):
        _torch_utils.resolve_device("cuda:3")


@pytest.mark.parametrize("bad", ["tpu", "gpu0", 3])
def test_unknown_device_names(bad):
    with pytest.raises((ValueError, TypeError), match="device"):
        _torch_utils.resolve_device(bad)


def test_atomic_save_leaves_no_partial_file(tmp_path):
    path = tmp_path / "m.pt"

    class Boom:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError):
        _torch_utils.atomic_save({"x": Boom()}, path, overwrite=False)
    assert list(tmp_path.iterdir()) == []


def test_seed_from_is_deterministic():
    assert _utils.seed_from(3) == _utils.seed_from(3)
    assert _utils.seed_from(np.random.RandomState(0)) == _utils.seed_from(0)


@pytest.mark.parametrize(
    ("y", "expected"),
    [(np.array([0, -1, 2]), [False, True, False]),
     (np.array([0.5, -1.0]), [False, True]),
     (np.array(["a", -1, True, -1.0, "x-1"], dtype=object), [False, True, False, True, False]),
     # the README's recipe for string labels
     (np.where([True, False], np.array(["a", "b"]).astype(object), -1), [False, True])],
)
def test_unlabelled_mask(y, expected):
    assert list(_utils.unlabelled_mask(y)) == expected


@pytest.mark.parametrize("y", [np.array(["a", "-1"]), np.array(["a", " -1"], dtype=object)])
def test_string_minus_one_is_refused(y):
    with pytest.raises(ValueError, match="number -1"):
        _utils.unlabelled_mask(y)
