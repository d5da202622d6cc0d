"""Training machinery: plans (one LightningModule per stage), minibatch data, the Trainer set-up.

The user-facing :class:`scaug.SCLD` and :class:`scaug.CellAutoencoder` build the networks of
:mod:`scaug.nn`, wrap each in its plan and hand it to :func:`fit_plan` with its data.
"""

from .calibration import match_detection
from .data import (
    BalancedDraws,
    MinibatchData,
    class_codes,
    default_epochs,
    gene_moments,
    process_rank,
    validation_split,
)
from .disk import OnDiskCells
from .plans import AdaptPlan, AutoencoderPlan, ClassifierPlan, DenoiserPlan
from .trainer import (
    RESERVED_TRAINER_KWARGS,
    ConvergenceStop,
    check_trainer_kwargs,
    fit_plan,
    trainer_options,
)

__all__ = ["AdaptPlan", "AutoencoderPlan", "BalancedDraws", "ClassifierPlan", "ConvergenceStop",
           "DenoiserPlan", "MinibatchData", "OnDiskCells", "RESERVED_TRAINER_KWARGS",
           "check_trainer_kwargs", "class_codes", "default_epochs", "fit_plan", "gene_moments",
           "match_detection",
           "process_rank", "trainer_options", "validation_split"]
