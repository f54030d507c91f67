"""Hyperparameter tuning, whichever backend runs the trials: what a tuning run is (`spec`), Optuna on this machine
with each trial a training job of the backend (`optuna_tuner`), and the results every tuner writes (`results`). A
backend that tunes with a service of its own implements `launcher.backends.TunesAsService` instead."""

from launcher.tuning.optuna_tuner import OptunaTuner
from launcher.tuning.results import TrialRow, load_best_hyperparameters, write_results
from launcher.tuning.spec import (
    DIRECTIONS,
    EARLY_STOPPING,
    SCALINGS,
    STRATEGIES,
    Objective,
    Range,
    Tuning,
    TuningSpec,
)

__all__ = [
    "DIRECTIONS",
    "EARLY_STOPPING",
    "SCALINGS",
    "STRATEGIES",
    "Objective",
    "OptunaTuner",
    "Range",
    "TrialRow",
    "Tuning",
    "TuningSpec",
    "load_best_hyperparameters",
    "write_results",
]
