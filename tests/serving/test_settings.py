"""Serving settings: the committed defaults and the environment's overrides."""

from __future__ import annotations

from serving.settings import load_serving_settings


def test_load_serving_settings_defaults_stay_on_loopback() -> None:
    """Without environment the service listens on 127.0.0.1 only."""
    settings = load_serving_settings(environ={})
    assert settings.host == "127.0.0.1"
    assert settings.url == ""


def test_load_serving_settings_environment_wins() -> None:
    """A container sets host, port and the URL the release steps drive."""
    settings = load_serving_settings(
        environ={
            "CHURNOPS_SERVING_HOST": "0.0.0.0",
            "CHURNOPS_SERVING_PORT": "9000",
            "CHURNOPS_SERVING_URL": "http://serving:9000",
        }
    )
    assert (settings.host, settings.port, settings.url) == (
        "0.0.0.0",
        9000,
        "http://serving:9000",
    )
