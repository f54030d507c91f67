"""What the image would refuse, refused before any upload or job, in the image's own words: hyperparameters and
each tuning range's ends and choices (`imgclf_contract.hyperparameters`, the parser the image trains with), and a
local data folder's layout (`imgclf_contract.layout`, on the files as they are: counted here, decoded by the image).

Script mode (a `sagemaker_program` hyperparameter) runs the user's script, which reads what it likes: then nothing is
checked."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgclf_contract import layout, platform
from imgclf_contract.errors import HyperparameterError, LayoutError
from imgclf_contract.hyperparameters import SPECS, is_platform_key
from launcher.backends import TrainingSpec
from launcher.contract import S3_SCHEME
from launcher.errors import LauncherError
from launcher.progress import say

if TYPE_CHECKING:
    from launcher.tuning import Range, TuningSpec

HYPERPARAMETER_FIX = "change it with -H NAME=VALUE or in the job config's hyperparameters (docs/launcher.md)"
DATA_FIX = f"{layout.FIX} (docs/launcher.md)"


def check_training(spec: TrainingSpec) -> None:
    """Refuse a training job the image would refuse (bad hyperparameters, a bad data folder); warn of unknown
    hyperparameters, naming the close matches."""
    if platform.USER_PROGRAM_HYPERPARAMETER in spec.hyperparameters:
        return
    _refuse(hyperparameter_problems(spec.hyperparameters), HYPERPARAMETER_FIX)
    _refuse(data_problems(spec.channels), DATA_FIX)


def check_tuning(spec: TuningSpec) -> None:
    """As `check_training` for every trial: the fixed hyperparameters, each range's ends and choices, the data."""
    if platform.USER_PROGRAM_HYPERPARAMETER in spec.training.hyperparameters:
        return
    problems = hyperparameter_problems(spec.training.hyperparameters)
    problems += [problem for name, r in spec.ranges.items() for problem in range_problems(name, r)]
    _refuse(problems, f"{HYPERPARAMETER_FIX}; tuning ranges: in the job config's `tuning` section (docs/tuning.md)")
    _refuse(data_problems(spec.training.channels), DATA_FIX)


def _refuse(problems: list[str], fix: str) -> None:
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise LauncherError(f"the image would refuse this job, so nothing was started:\n{listed}\nTo fix: {fix}")


def hyperparameter_problems(hyperparameters: dict[str, Any]) -> list[str]:
    """The image's message for each value it would refuse; a warning (said) for each name it does not know."""
    problems = []
    for name, value in hyperparameters.items():
        if name not in SPECS:
            warn_unknown(name)
            continue
        problem = value_problem(name, json.loads(json.dumps(value)))  # the value as the image decodes it
        if problem:
            problems.append(problem)
    return problems


def value_problem(name: str, value: Any) -> str | None:
    """The image's message for a value of this hyperparameter it refuses, or None."""
    try:
        SPECS[name].parse(name, value)
    except HyperparameterError as err:
        return str(err)
    return None


def warn_unknown(name: str) -> None:
    """An unknown name trains with the defaults: say so, with the names it may have meant."""
    if is_platform_key(name):
        return
    close = difflib.get_close_matches(name, list(SPECS), n=3)
    hint = f"did you mean {' or '.join(close)}?" if close else f"the image knows {', '.join(SPECS)}"
    say(f"warning: the image's built-in trainer ignores unknown hyperparameter {name!r}; {hint}")


def range_problems(name: str, spec: Range) -> list[str]:
    """What the image would refuse among the values a tuning range reaches: its ends, or its choices."""
    declared = SPECS.get(name)
    if declared is None:
        warn_unknown(name)
        return []
    where = f"tuning range {name!r}"
    if spec.type == "categorical":
        values = [("choice", value) for value in spec.values or ()]
    elif declared.kind in ("integer", "number"):
        if declared.kind == "integer" and spec.type == "continuous":
            return [f"{where}: hyperparameter {name!r} takes integers; give it an integer range (or choices)"]
        values = [("minimum", spec.min), ("maximum", spec.max)]
    else:
        choices = ", ".join(declared.named()) if declared.kind != "rules" else "its values"
        return [f"{where}: hyperparameter {name!r} is not a number; tune it with categorical values ({choices})"]
    problems = []
    for end, value in values:
        problem = value_problem(name, value)
        if problem:
            problems.append(f"{where}, {end} {value!r}: {problem}")
    return problems


def data_problems(channels: dict[str, str]) -> list[str]:
    """What the image would refuse in data on this machine, in its words; S3 data is not read from here."""
    if any(source.startswith(S3_SCHEME) for source in channels.values()):
        return []
    missing = [
        f"channel {name!r}: {Path(source).resolve()} does not exist (give a local path or an s3:// URI)"
        for name, source in channels.items()
        if not Path(source).exists()
    ]
    if missing:
        return missing
    try:
        layout.check_files({name: Path(source).resolve() for name, source in channels.items()})
    except LayoutError as err:
        return [str(err)]
    return []
