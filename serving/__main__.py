"""``python -m serving``: the prediction service on the configured host and port."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from serving.app import build_service, create_app
from serving.settings import load_serving_settings
from tasks.config import load_settings
from tasks.storage import open_store


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m serving", description="Serve the churn model over HTTP."
    )
    parser.add_argument("--host", help="interface to bind (default: serving.host)")
    parser.add_argument("--port", type=int, help="port (default: serving.port)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    settings = load_settings()
    serving = load_serving_settings()
    store = open_store(settings.storage_root)
    service = build_service(store, serving, settings.dataset())
    uvicorn.run(
        create_app(service),
        host=args.host or serving.host,
        port=args.port or serving.port,
        log_level="info",
    )


if __name__ == "__main__":
    main()
