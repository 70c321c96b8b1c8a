"""Folders of the checkout the tests read."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Microsoft's OpenAPI document, beside the checkout; only tests/contract/test_spec_drift.py reads it
SPEC_DIR = Path(os.environ.get("SCVMM_SPEC_DIR") or ROOT.parent / "shared" / "spec")
EXAMPLES = ROOT / "examples"
