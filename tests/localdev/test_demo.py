"""The README's first command: the demo runs the main job on the stand-ins and checks every outcome."""

import os
import subprocess
import sys

from tests.support.paths import ROOT


def test_demo_reaches_every_scripted_outcome():
    env = {k: v for k, v in os.environ.items() if k not in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER")}
    done = subprocess.run(
        [sys.executable, "-m", "localdev.demo", "--count", "7", "--timeout", "90"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "7/7 done" in out
    assert "OK: every request reached its scripted outcome" in out
    assert "1 token request(s); 0 spec violation(s)" in out
    # each kind of request appears with its outcome, the seventh is a second maximum-set
    for line in (
        "maximum-set -> Succeeded x2",
        "minimum-set -> Succeeded x1",
        "async-operation -> Succeeded x1",
        "throttled-once -> Succeeded x1",
        "arm-rejects -> Failed InvalidParameter x1",
        "malformed -> Failed InvalidRequest x1",
    ):
        assert line in out


def test_demo_refuses_a_bad_count():
    done = subprocess.run(
        [sys.executable, "-m", "localdev.demo", "--count", "0"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "--count must be at least 1" in done.stderr


def test_demo_in_one_subscription_meets_no_throttling():
    done = subprocess.run(
        [sys.executable, "-m", "localdev.demo", "--count", "6", "--one-subscription", "--timeout", "90"],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k not in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER")},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "one subscription: ARM answered 429 0 time(s)" in done.stdout
