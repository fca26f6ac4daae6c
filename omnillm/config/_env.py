"""Environment overrides: ``OMNI_NATS_URL``, ``OMNI_GATEWAY_PORT``, ``OMNI_LOG_LEVEL`` and
``OMNI_DATA_DIR`` replace what the file says; a bad value is an error naming the variable.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from omnillm.config._checks import log_level_problem, port_problems
from omnillm.config.schema import Config, LogConfig
from omnillm.errors import ConfigError

__all__ = ["apply_env"]


def apply_env(config: Config, env: Mapping[str, str]) -> Config:
    replace = msgspec.structs.replace
    if url := env.get("OMNI_NATS_URL"):
        config = replace(config, nats=replace(config.nats, url=url))
    if port := env.get("OMNI_GATEWAY_PORT"):
        config = replace(config, gateway=replace(config.gateway, port=_env_port(port)))
    if level := env.get("OMNI_LOG_LEVEL"):
        if (problem := log_level_problem(level)) is not None:
            raise ConfigError(f"OMNI_LOG_LEVEL: {problem}")
        config = replace(config, log=LogConfig(level=level))
    if data_dir := env.get("OMNI_DATA_DIR"):
        config = replace(config, data_dir=data_dir)
    return config


def _env_port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ConfigError(f"OMNI_GATEWAY_PORT: expected an integer, got {text!r}") from None
    for _, problem in port_problems("", port):
        raise ConfigError(f"OMNI_GATEWAY_PORT: {problem}")
    return port
