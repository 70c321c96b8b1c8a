"""The token cache: one fetch at a time, in the background, never blocking callers that hold a valid token."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest
from azure.core.credentials import AccessToken

from shared.logs import request_scope
from shared.submit import SubmitDeferred
from shared.tokens import REFRESH_MARGIN, TokenCache, TokenUnavailable
from tests.support.app_harness import new_resource_uri


class GatedCredential:
    """A credential whose fetches wait for the test to let them go."""

    def __init__(self, lifetime: float):
        self.lifetime = lifetime
        self.gate = threading.Event()
        self.calls = 0

    def get_token(self, scope):
        self.calls += 1
        self.gate.wait(10)
        return AccessToken(f"token-{self.calls}", int(time.time() + self.lifetime))


def test_a_valid_token_is_used_while_a_fresh_one_is_fetched():
    credential = GatedCredential(lifetime=REFRESH_MARGIN - 60)  # valid, but due for renewal
    cache = TokenCache(credential, "scope")
    credential.gate.set()
    assert cache.token(wait=5) == "token-1"
    credential.gate.clear()  # the next fetch hangs
    started = time.monotonic()
    assert [cache.token(wait=5) for _ in range(20)] == ["token-1"] * 20
    assert time.monotonic() - started < 0.5  # nobody waited for the hung fetch
    assert credential.calls == 2  # one fetch, not one per caller
    credential.gate.set()


def test_without_a_valid_token_callers_wait_a_bounded_time():
    credential = GatedCredential(lifetime=3600)
    cache = TokenCache(credential, "scope")
    started = time.monotonic()
    with pytest.raises(TokenUnavailable, match="within 0.3 s"):
        cache.token(wait=0.3)
    assert time.monotonic() - started < 1.0
    credential.gate.set()
    assert cache.token(wait=5) == "token-1"  # the same fetch, once it ends


@pytest.mark.parametrize("failure", [ValueError("expires_on is 'soon'"), KeyError("access_token"), RecursionError()])
def test_any_failure_of_the_credential_is_a_token_unavailable_with_its_message(failure):
    class Failing:
        def get_token(self, scope):
            raise failure

    with pytest.raises(TokenUnavailable) as raised:
        TokenCache(Failing(), "scope").token(wait=5)
    assert type(failure).__name__ in str(raised.value)


def test_a_failed_fetch_is_logged_under_the_request_that_started_it(caplog):
    class Failing:
        def get_token(self, scope):
            raise ValueError("the endpoint said no")

    cache = TokenCache(Failing(), "scope")
    with (
        caplog.at_level(logging.WARNING, logger="shared.tokens"),
        request_scope("req-7", "corr-7"),
        pytest.raises(TokenUnavailable),
    ):
        cache.token(wait=5)
    (line,) = [r.getMessage() for r in caplog.records if "token fetch failed" in r.getMessage()]
    assert line.startswith("requestId=req-7 correlationId=corr-7: token fetch failed: ValueError")


def test_a_token_without_a_usable_expiry_is_refused():
    class Odd:
        def get_token(self, scope):
            return AccessToken("t", "soon")

    with pytest.raises(TokenUnavailable, match="usable token"):
        TokenCache(Odd(), "scope").token(wait=5)


@pytest.mark.parametrize("kind", ["html502", "bad_expires_on", "not_json"])
def test_garbage_from_the_identity_endpoint_is_a_transient_failure(make_app, arm, identity, kind):
    # Before, a 502 with an HTML body or a non-numeric expires_on raised an error the app did not
    # treat as transient: the request went to poison with the error lost.
    app = make_app()
    identity.garbage_for(30.0, kind)
    body = json.dumps({"resourceUri": new_resource_uri(), "requestId": f"r-{kind}"})
    with pytest.raises(SubmitDeferred, match="TokenRequestFailed"):
        app.services.submitter.handle(body, "m", 1)
    assert identity.faults_served >= 1
    identity.reset_counts()  # the window ends; a later delivery gets a token
    deadline = time.monotonic() + 10  # MSAL replays a 5xx answer for 5 s without asking again
    while True:
        try:
            assert app.services.submitter.handle(body, "m", 2) == "accepted"
            break
        except SubmitDeferred:
            assert time.monotonic() < deadline
            time.sleep(1.0)
