"""The command line: ``python -m localdev.functions_host [--app-dir DIR] [--settings FILE]``.

Loads local.settings.json ``Values`` into the environment (a variable already set wins), imports
``function_app`` from the app folder and runs its functions until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import localdev.functions_host as package
from localdev.functions_host.config import HostConfigError, load_local_settings
from localdev.functions_host.host import LocalHost, find_function_app

log = logging.getLogger(__package__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localdev.functions_host", description=(package.__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--app-dir", default=".", help="folder holding function_app.py and host.json (default: .)")
    parser.add_argument(
        "--settings",
        default=None,
        help="local.settings.json to load into the environment (default: APP_DIR/local.settings.json)",
    )
    parser.add_argument("--host-json", default=None, help="host.json to read (default: APP_DIR/host.json)")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("azure").setLevel(logging.WARNING)

    app_dir = Path(args.app_dir).resolve()
    settings_path = Path(args.settings) if args.settings else app_dir / "local.settings.json"
    host_json_path = Path(args.host_json) if args.host_json else app_dir / "host.json"
    try:
        if settings_path.exists():
            count = load_local_settings(settings_path)
            log.info("Loaded %d setting(s) from %s", count, settings_path)
        elif args.settings:
            raise HostConfigError(f"settings file {settings_path} does not exist")
        else:
            log.warning("No %s: using the environment only", settings_path)
        sys.path.insert(0, str(app_dir))
        os.chdir(app_dir)
        module = importlib.import_module("function_app")
        app = find_function_app(module)
        host = LocalHost(app, os.environ, host_json_path if host_json_path.exists() else None)
    except HostConfigError as exc:
        log.error("%s", exc)
        return 2

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("Received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    host.start()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
