"""The errors scaug raises beyond Python's and scikit-learn's own."""

from __future__ import annotations


class TrainingDivergedError(FloatingPointError, ValueError):
    """A training stage produced a non-finite loss or non-finite weights.

    Raised instead of returning a model that would decode every cell from NaN latents. The
    message names the stage and the setting that most likely caused it (a learning rate too
    large for the data). A :class:`ValueError` too, as the cause is a setting's value; the model
    keeps the state it had before the fit.
    """
