"""TF Serving's checks of a ``ModelServerConfig`` before it is applied (``server_core.cc``,
tensorflow/serving @ 9d981c5c), with its status codes and texts.

``ServerCore::ReloadConfig`` runs them for the config of ``--model_config_file`` (or
``--model_name`` / ``--model_base_path``) at start-up, for each polled config file and for
``HandleReloadConfigRequest``, in this order: model names listed once and base paths absolute
(``ValidateModelConfigList``), no model changing its platform (``ValidateNoModelsChangePlatforms``),
the version labels (the manager's ``checked_labels``), then each model's platform
(``CreateStoragePathRoutes``). ``tensorflow_model_server`` without ``--platform_config_file``
serves only the ``tensorflow`` platform.
"""

from __future__ import annotations

import logging

from tensorflow_serving.config import model_server_config_pb2

from fdl.base_paths import uri_is_relative_path
from serving.errors import invalid

ModelConfig = model_server_config_pb2.ModelConfig
ModelConfigList = model_server_config_pb2.ModelConfigList
TENSORFLOW_PLATFORM = "tensorflow"  # kTensorFlowModelPlatform
PLATFORMS = frozenset({TENSORFLOW_PLATFORM})
log = logging.getLogger("serving.server")


def platform_of(model: ModelConfig) -> str:
    """``GetPlatform``: ``model_platform``, or ``tensorflow`` for the deprecated
    ``model_type: TENSORFLOW``; INVALID_ARGUMENT when both or neither are set."""
    if model.model_type != model_server_config_pb2.MODEL_TYPE_UNSPECIFIED:
        log.warning(
            "Deprecated ModelServerConfig::model_type field used. "
            "Prefer ModelServerConfig::model_platform."
        )
        if model.model_platform:
            raise invalid(
                "Illegal setting both ModelServerConfig::model_type (deprecated) and "
                f"ModelServerConfig::model_platform, model name is {model.name}"
            )
        if model.model_type != model_server_config_pb2.TENSORFLOW:
            raise invalid(f"ModelServerConfig::model_type choice {model.model_type} not supported.")
        return TENSORFLOW_PLATFORM
    if not model.model_platform:
        raise invalid(
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            f"ModelServerConfig::model_platform, model name is {model.name}"
        )
    return model.model_platform


def check_model_list(new: ModelConfigList, old: ModelConfigList | None) -> None:
    """``ValidateModelConfigList`` and ``ValidateNoModelsChangePlatforms`` (``old``: the config
    being served, None at start-up). A model without a name is refused here only (TF Serving
    would serve a model named ``""``, which no request can name)."""
    names: set[str] = set()
    for model in new.config:
        if model.name in names:
            raise invalid(f"Illegal to list model {model.name} multiple times in config list")
        names.add(model.name)
    for model in new.config:
        if uri_is_relative_path(model.base_path):
            raise invalid(
                f"Expected model {model.name} to have an absolute path or URI; "
                f"got base_path()={model.base_path}"
            )
    if "" in names:
        raise invalid("Expected every model to have a name; got name() empty (fdl-model-server)")
    if old is None:
        return
    served = {model.name: platform_of(model) for model in old.config}
    for model in new.config:
        if model.name not in served:
            continue
        platform = platform_of(model)
        if platform != served[model.name]:
            raise invalid(
                f"Illegal to change a model's platform. For model {model.name} platform was "
                f"{served[model.name]} and new platform requested is {platform}"
            )


def check_platforms(models: ModelConfigList) -> None:
    """``CreateStoragePathRoutes``: each model's platform must be one this server serves."""
    for model in models.config:
        platform = platform_of(model)
        if platform not in PLATFORMS:
            raise invalid(f"Model {model.name} requests unsupported platform {platform}")
