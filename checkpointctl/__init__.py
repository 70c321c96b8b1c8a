"""checkpointctl: a command line for producers and operators of the checkpoint-deletion function app.

Run from the repo root as ``python -m checkpointctl <command> ...``; see docs/cli.md.
"""

from .cli import main

__all__ = ["main"]
