"""Start the local stand-ins and keep them running, for `func start` or the local host.

Starts Azurite (queues), the managed-identity endpoint and the ARM emulator (HTTPS with a local
CA; every deletion succeeds after two status polls), then writes a local.settings.json whose
Values point the app at them, and waits for Ctrl-C:

    python -m localdev.standins [--settings .localrun/local.settings.json]
    func start                                   # in another terminal, with that file copied to ./local.settings.json
    python -m localdev.functions_host --settings .localrun/local.settings.json    # or without Core Tools
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from contextlib import ExitStack
from pathlib import Path

import trustme

from localdev.arm_emulator import ArmEmulator, Scenario
from localdev.azurite import Azurite
from localdev.identity_endpoint import IdentityEndpoint

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SETTINGS = ROOT / ".localrun" / "local.settings.json"


def local_settings(azurite: Azurite, identity: IdentityEndpoint, arm: ArmEmulator) -> dict:
    """local.settings.sample.json with its Values pointed at the running stand-ins."""
    settings = json.loads((ROOT / "local.settings.sample.json").read_text())
    settings["Values"].update(
        {
            "AzureWebJobsStorage": azurite.connection_string,
            "ARM_ENDPOINT": arm.endpoint,
            "REQUESTS_CA_BUNDLE": arm.ca_bundle_path,
            **identity.env(),
        }
    )
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localdev.standins", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--settings",
        type=Path,
        default=DEFAULT_SETTINGS,
        help=f"file to write (default {DEFAULT_SETTINGS.relative_to(ROOT)})",
    )
    args = parser.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with ExitStack() as running:
        azurite = running.enter_context(Azurite())
        identity = running.enter_context(IdentityEndpoint())
        arm = running.enter_context(ArmEmulator(trustme.CA(), identity))
        arm.default = Scenario(retry_after=2, done_after_polls=2)
        args.settings.parent.mkdir(parents=True, exist_ok=True)
        args.settings.write_text(json.dumps(local_settings(azurite, identity, arm), indent=2) + "\n")
        print(f"Azurite queues:      {azurite.connection_string}")
        print(f"identity endpoint:   {identity.endpoint}")
        print(f"ARM emulator:        {arm.endpoint} (CA: {arm.ca_bundle_path})")
        print(f"settings written to: {args.settings}")
        print("Ctrl-C stops them.", flush=True)
        stop.wait()
        print(f"stopping; the ARM emulator received {len(arm.received)} request(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
