"""Backends by name: the three built in, and any that a plug-in adds through the `imgclf.backends` entry point group
(`name = "package.module:BackendClass"` in its distribution's metadata). A backend's module is imported when its
name is first asked for. What a backend can do is the roles it implements (`launcher.backends.base`)."""

from __future__ import annotations

import dataclasses
import importlib
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from launcher.backends.base import Backend
from launcher.errors import LauncherError
from launcher.progress import say
from launcher.records import RecordStore
from launcher.specs import BackendOptions
from launcher.tracking import Tracker

ENTRY_POINT_GROUP = "imgclf.backends"
BUILT_IN = {
    "process": "launcher.backends.process:ProcessBackend",
    "local": "launcher.backends.local:LocalBackend",
    "sagemaker": "launcher.backends.sagemaker.backend:SageMakerBackend",
}
DEFAULT_BACKEND = "process"


@cache
def targets() -> dict[str, str]:
    """Every backend's name and where its class is: the built-in ones, then the plug-ins' (which cannot take a
    built-in name)."""
    found = dict(BUILT_IN)
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name in BUILT_IN:
            raise LauncherError(
                f"the plug-in backend {point.value} takes the name {point.name!r} of a built-in backend: rename it "
                f"in its distribution's {ENTRY_POINT_GROUP} entry points"
            )
        found[point.name] = point.value
    return found


def backend_names() -> list[str]:
    return list(targets())


@cache
def backend_class(name: str) -> type[Backend]:
    """The class of the backend called `name`, its module imported now."""
    target = targets().get(name)
    if target is None:
        raise LauncherError(f"no backend named {name!r}; there are {', '.join(targets())}")
    module, _, attribute = target.partition(":")
    try:
        found = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as err:
        raise LauncherError(f"backend {name!r}: cannot load {target}: {err}") from err
    if not (isinstance(found, type) and issubclass(found, Backend) and found.name == name):
        raise LauncherError(f"backend {name!r}: {target} is not a launcher Backend class whose name is {name!r}")
    return found


def get_backend(name: str, workdir: Path, records: RecordStore, tracker: Tracker | None = None) -> Backend:
    return backend_class(name)(workdir, records, tracker)


@cache
def loadable() -> dict[str, type[Backend]]:
    """Every backend that can be loaded, by name; a plug-in that cannot is left out with a warning (choosing it
    with --backend says why)."""
    found = {}
    for name in backend_names():
        try:
            found[name] = backend_class(name)
        except LauncherError as err:
            say(f"warning: {err}; left out")
    return found


def offering(role: type[Backend]) -> str:
    """`--backend A or --backend B`: the backends that implement `role`."""
    having = [name for name, cls in loadable().items() if issubclass(cls, role)]
    return " or ".join(f"--backend {name}" for name in having) or "a backend that has it (none is installed)"


def require(name: str, role: type[Backend], asked: str) -> None:
    """Refuse what the backend called `name` cannot do (`asked`: the command or flag), naming those that can."""
    if not issubclass(backend_class(name), role):
        raise LauncherError(f"{asked} needs {offering(role)}: the {name} backend cannot {role.does}")


def option_names() -> dict[str, list[str]]:
    """Each backend option's name, and the backends whose `Options` have it."""
    owners: dict[str, list[str]] = {}
    for name, cls in loadable().items():
        for option in dataclasses.fields(cls.Options):
            owners.setdefault(option.name, []).append(name)
    return owners


def backend_options(name: str, given: dict[str, Any], defaults: dict[str, Any] | None = None) -> BackendOptions:
    """The backend's `Options` from the values given by option name (None, False or empty: not given), else from
    `defaults` where it has them. A given option that only other backends have is refused, naming them."""
    options_class = backend_class(name).Options
    own = {option.name for option in dataclasses.fields(options_class)}
    chosen = {key: value for key, value in given.items() if value not in (None, False, (), [])}
    for key in sorted(chosen.keys() - own):
        owners = " or ".join(f"--backend {owner}" for owner in option_names().get(key, []))
        raise LauncherError(f"--{key.replace('_', '-')} is an option of {owners}, not of the {name} backend")
    values = {**{key: value for key, value in (defaults or {}).items() if key in own}, **chosen}
    return options_class(**{key: tuple(value) if isinstance(value, list) else value for key, value in values.items()})
