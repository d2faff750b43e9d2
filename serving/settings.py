"""The prediction service's settings: the ``serving:`` block of ``churnops.yaml``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from tasks.config import DEFAULT_SETTINGS_FILE, ConfigError, resolve_path

HOST_VARIABLE = "CHURNOPS_SERVING_HOST"
PORT_VARIABLE = "CHURNOPS_SERVING_PORT"
URL_VARIABLE = "CHURNOPS_SERVING_URL"


@dataclass(frozen=True)
class ServingSettings:
    """How the service routes, reloads and logs; defaults work on the embedded setup."""

    canary_share: float = 0.2
    reload_interval_seconds: float = 30.0
    host: str = "127.0.0.1"
    port: int = 8765
    log_batch_size: int = 500
    log_flush_seconds: float = 10.0
    log_prefix: str = "predictions"
    latency_window: int = 5000
    max_customers_per_request: int = 1000
    require_pseudonymized_ids: bool = True
    url: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.canary_share <= 1.0:
            raise ConfigError(
                f"serving.canary_share is {self.canary_share}; it must be a share "
                "between 0 and 1 (0.2 sends a fifth of customers to the canary)"
            )
        for name in ("reload_interval_seconds", "log_flush_seconds"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"serving.{name} must be positive seconds")
        for name in ("log_batch_size", "latency_window", "max_customers_per_request"):
            if getattr(self, name) < 1:
                raise ConfigError(f"serving.{name} must be at least 1")


def parse_serving_settings(raw: Mapping[str, Any] | None) -> ServingSettings:
    """Settings from a ``serving:`` mapping; unknown keys are refused by name."""
    raw = dict(raw or {})
    known = {f.name: f.type for f in fields(ServingSettings)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(
            f"serving: unknown setting(s) {unknown}; known ones are {sorted(known)}"
        )
    defaults = ServingSettings()
    values = {name: type(getattr(defaults, name))(value) for name, value in raw.items()}
    return replace(defaults, **values)


def load_serving_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> ServingSettings:
    """Read the ``serving:`` block; ``CHURNOPS_SERVING_HOST``, ``_PORT`` and ``_URL``
    win (a container listens on 0.0.0.0; everywhere else it stays on loopback)."""
    env = os.environ if environ is None else environ
    settings_path = resolve_path(
        path or env.get("CHURNOPS_SETTINGS") or DEFAULT_SETTINGS_FILE
    )
    try:
        data = yaml.safe_load(settings_path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read serving settings from {settings_path}") from exc
    settings = parse_serving_settings(data.get("serving"))
    if env.get(HOST_VARIABLE):
        settings = replace(settings, host=env[HOST_VARIABLE])
    if env.get(PORT_VARIABLE):
        settings = replace(settings, port=int(env[PORT_VARIABLE]))
    if env.get(URL_VARIABLE):
        settings = replace(settings, url=env[URL_VARIABLE])
    return settings
