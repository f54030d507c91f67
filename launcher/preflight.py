"""What the image would refuse, refused before any upload or job: hyperparameters against the image's schema
(`hyperparameter_schema.json`, written from the container package by `python -m imgclf.schema`), tuning ranges'
ends and choices, and a local data folder's layout, each with the container's own message.

Script mode (a `sagemaker_program` hyperparameter) runs the user's script, which reads what it likes: then only
the schema's platform keys are known, and nothing is checked."""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launcher.backends.base import TrainingSpec
from launcher.contract import S3_SCHEME
from launcher.errors import LauncherError
from launcher.progress import say

if TYPE_CHECKING:
    from launcher.tuning.spec import ParameterRange, TuningSpec

SCHEMA_FILE = "hyperparameter_schema.json"
# The container's names for the splits (imgclf.data): separate channels, or subfolders of one `training` channel.
SPLIT_NAMES = {"train": ("train",), "valid": ("valid", "validation", "val"), "test": ("test",)}
COMBINED_CHANNEL = "training"
HYPERPARAMETER_FIX = "change it with -H NAME=VALUE or in the job config's hyperparameters (docs/launcher.md)"
DATA_FIX = (
    "lay the data out as train/, valid/ (or val/) and test/, each with one folder per class and the same class "
    "folders in each (docs/launcher.md)"
)


@dataclass(frozen=True)
class Schema:
    """The built-in trainer's hyperparameters as the image declares them."""

    parameters: dict[str, dict[str, Any]]
    platform_prefixes: tuple[str, ...]
    script_mode_key: str

    @classmethod
    def load(cls, text: str | None = None) -> Schema:
        """The schema shipped with the launcher (or the given JSON text)."""
        data = json.loads(text if text is not None else resources.files("launcher").joinpath(SCHEMA_FILE).read_text())
        return cls(
            parameters={entry["name"]: entry for entry in data["hyperparameters"]},
            platform_prefixes=tuple(data["platform_prefixes"]),
            script_mode_key=data["script_mode_hyperparameter"],
        )


@cache
def shipped_schema() -> Schema:
    return Schema.load()


def check_training(spec: TrainingSpec, schema: Schema | None = None) -> None:
    """Refuse a training job the image would refuse (bad hyperparameters, a bad data folder); warn of unknown
    hyperparameters, naming the close matches."""
    schema = schema or shipped_schema()
    if _script_mode(spec.hyperparameters, schema):
        return
    problems = hyperparameter_problems(spec.hyperparameters, schema)
    _refuse(problems, HYPERPARAMETER_FIX)
    _refuse(data_problems(spec.channels), DATA_FIX)


def check_tuning(spec: TuningSpec, schema: Schema | None = None) -> None:
    """As `check_training` for every trial: the fixed hyperparameters, each range's ends and choices, the data."""
    schema = schema or shipped_schema()
    if _script_mode(spec.training.hyperparameters, schema):
        return
    problems = hyperparameter_problems(spec.training.hyperparameters, schema)
    problems += [problem for r in spec.ranges for problem in range_problems(r, schema)]
    _refuse(problems, f"{HYPERPARAMETER_FIX}; tuning ranges: in the job config's `tuning` section (docs/tuning.md)")
    _refuse(data_problems(spec.training.channels), DATA_FIX)


def _script_mode(hyperparameters: dict[str, Any], schema: Schema) -> bool:
    return schema.script_mode_key in hyperparameters


def _refuse(problems: list[str], fix: str) -> None:
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise LauncherError(f"the image would refuse this job, so nothing was started:\n{listed}\nTo fix: {fix}")


def hyperparameter_problems(hyperparameters: dict[str, Any], schema: Schema) -> list[str]:
    """The container's message for each value it would refuse; a warning (said) for each name it does not know."""
    problems = []
    for name, value in hyperparameters.items():
        entry = schema.parameters.get(name)
        if entry is None:
            warn_unknown(name, schema)
            continue
        problem = value_problem(entry, json.loads(json.dumps(value)))  # what the container decodes
        if problem:
            problems.append(problem)
    return problems


def warn_unknown(name: str, schema: Schema) -> None:
    """An unknown name trains with the defaults: say so, with the names it may have meant."""
    if name.startswith(schema.platform_prefixes):
        return
    close = difflib.get_close_matches(name, list(schema.parameters), n=3)
    hint = f"did you mean {' or '.join(close)}?" if close else f"the image knows {', '.join(schema.parameters)}"
    say(f"warning: the image's built-in trainer ignores unknown hyperparameter {name!r}; {hint}")


def range_problems(spec: ParameterRange, schema: Schema) -> list[str]:
    """What the container would refuse among the values a tuning range reaches: its ends, or its choices."""
    entry = schema.parameters.get(spec.name)
    if entry is None:
        warn_unknown(spec.name, schema)
        return []
    where = f"tuning range {spec.name!r}"
    if spec.kind == "categorical":
        values = [("choice", value) for value in spec.values]
    elif entry["kind"] in ("integer", "number"):
        if entry["kind"] == "integer" and spec.kind == "continuous":
            return [f"{where}: hyperparameter {spec.name!r} takes integers; give it an integer range (or choices)"]
        values = [("minimum", spec.min_value), ("maximum", spec.max_value)]
    else:
        choices = ", ".join(_choices(entry)) or "its values"
        return [f"{where}: hyperparameter {spec.name!r} is not a number; tune it with categorical values ({choices})"]
    problems = []
    for end, value in values:
        problem = value_problem(entry, value)
        if problem:
            problems.append(f"{where}, {end} {value!r}: {problem}")
    return problems


def value_problem(entry: dict[str, Any], value: Any) -> str | None:
    """The container's message for a value of this hyperparameter it refuses (imgclf.hyperparameters), or None."""
    name, kind = entry["name"], entry["kind"]
    if kind == "integer":
        if "auto" in entry and str(value).strip().lower() == "auto":
            return None
        number = _number(value)
        if number is None or not number.is_integer() or number < entry["minimum"]:
            return f"hyperparameter {name!r} must be an integer >= {entry['minimum']}, got {value!r}"
    elif kind == "number":
        number = _number(value)
        maximum, exclusive = entry.get("maximum", math.inf), entry.get("maximum_exclusive", False)
        too_big = number is not None and (number >= maximum if exclusive else number > maximum)
        if number is None or not math.isfinite(number) or number < entry["minimum"] or too_big:
            bound = f"< {float(maximum)}" if exclusive else f"<= {float(maximum)}"
            return f"hyperparameter {name!r} must be a number >= {entry['minimum']} and {bound}, got {value!r}"
    elif kind in ("boolean", "boolean_or_auto", "choice"):
        choices = _choices(entry)
        if str(value).strip().lower() not in _accepted(entry):
            return f"hyperparameter {name!r} must be one of {', '.join(choices)}, got {value!r}"
    return None  # "rules": the rule book is the image's; it checks them as the job starts


def _number(value: Any) -> float | None:
    try:
        return float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _choices(entry: dict[str, Any]) -> list[str]:
    """The choices the container names in its message."""
    if entry["kind"] == "choice":
        return entry["choices"]
    return ["true", "false", "auto"] if entry["kind"] == "boolean_or_auto" else ["true", "false"]


def _accepted(entry: dict[str, Any]) -> set[str]:
    """Every spelling the container accepts."""
    if entry["kind"] == "choice":
        return set(entry["choices"])
    spellings = {"true", "1", "yes", "false", "0", "no"}
    return spellings | {"auto", "none", ""} if entry["kind"] == "boolean_or_auto" else spellings


def data_problems(channels: dict[str, str]) -> list[str]:
    """What the container (imgclf.data) would refuse in data on this machine, in its words; S3 data is not read."""
    if any(source.startswith(S3_SCHEME) for source in channels.values()):
        return []
    missing = [
        f"channel {name!r}: {Path(source).resolve()} does not exist (give a local path or an s3:// URI)"
        for name, source in channels.items()
        if not Path(source).exists()
    ]
    if missing:
        return missing
    if "train" in channels:
        source, candidates = "channels", {name: Path(path) for name, path in channels.items()}
    elif COMBINED_CHANNEL in channels:
        root = Path(channels[COMBINED_CHANNEL]).resolve()
        source = f"the {COMBINED_CHANNEL!r} channel ({root})"
        candidates = {p.name: p for p in root.iterdir() if p.is_dir()} if root.is_dir() else {}
    else:
        return [
            f"no training data: got channels {sorted(channels) or 'none'}; give a 'train', 'valid' and 'test' "
            f"channel, or one {COMBINED_CHANNEL!r} channel with train/, valid/ (or val/) and test/ subfolders"
        ]
    dirs, problems = {}, []
    for split, names in SPLIT_NAMES.items():
        found = next((candidates[n] for n in names if candidates.get(n) is not None), None)
        if found is None:
            problems.append(f"no {split!r} split in {source}: expected one named {' or '.join(names)}")
        dirs[split] = found
    return problems or split_problems(dirs)


def split_problems(dirs: dict[str, Path]) -> list[str]:
    """Class folders and files per split, as the container checks them (files are counted here, not decoded)."""
    counts = {}
    for split, root in dirs.items():
        if not root.is_dir():
            return [f"split folder {root} does not exist"]
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        counts[split] = {name: _count_files(root / name) for name in classes}
    classes = list(counts["train"])
    if not classes:
        return [f"the train split {dirs['train']} has no class subfolders; put each class's images in its own folder"]
    problems = []
    for split in ("valid", "test"):
        if list(counts[split]) != classes:
            missing = sorted(set(classes) - set(counts[split]))
            extra = sorted(set(counts[split]) - set(classes))
            problems.append(
                f"class folders of the {split} split ({dirs[split]}) differ from train's: "
                f"missing {missing}, extra {extra}; every split needs the same class folders"
            )
    if problems:
        return problems
    problems = [
        f"the {split} split ({dirs[split]}) has no readable images" for split in dirs if not sum(counts[split].values())
    ]
    empty = [name for name, count in counts["train"].items() if not count]
    if empty and not problems:
        problems.append(f"classes {empty} have no readable images in the train split {dirs['train']}")
    return problems


def _count_files(folder: Path) -> int:
    return sum(1 for path in folder.rglob("*") if path.is_file() and not path.name.startswith("."))
