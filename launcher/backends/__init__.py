"""Where jobs and endpoints run. `base`: a backend and its roles (what the commands hand it: `launcher.specs`);
`registry`: backends by name, plug-ins included. The built-in backends: this machine without Docker (`process`),
SageMaker local mode (`local`) and SageMaker (`sagemaker`), each imported when first named."""

from launcher.backends.base import Backend, Hosts, StopsTraining, SwapsModels, Trains, Transforms, TunesAsService
from launcher.backends.registry import (
    BUILT_IN,
    DEFAULT_BACKEND,
    ENTRY_POINT_GROUP,
    backend_class,
    backend_names,
    backend_options,
    get_backend,
    offering,
    option_names,
    require,
)
from launcher.specs import (
    DEFAULT_IMAGE,
    BackendOptions,
    DeploySpec,
    EndpointSettings,
    TrainingSpec,
    TransformSettings,
    TransformSpec,
)

__all__ = [
    "BUILT_IN",
    "DEFAULT_BACKEND",
    "DEFAULT_IMAGE",
    "ENTRY_POINT_GROUP",
    "Backend",
    "BackendOptions",
    "DeploySpec",
    "EndpointSettings",
    "Hosts",
    "StopsTraining",
    "SwapsModels",
    "TrainingSpec",
    "Trains",
    "TransformSettings",
    "TransformSpec",
    "Transforms",
    "TunesAsService",
    "backend_class",
    "backend_names",
    "backend_options",
    "get_backend",
    "offering",
    "option_names",
    "require",
]
