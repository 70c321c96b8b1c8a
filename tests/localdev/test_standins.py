"""The local stand-ins (managed-identity endpoint, ARM emulator) driven by the real clients."""

from __future__ import annotations

import email.utils
import threading
import time

import pytest
import requests
from azure.identity import ManagedIdentityCredential

from localdev.arm_emulator import ArmEmulator, Fault, Scenario
from localdev.arm_spec import load_record

ARM = "https://management.azure.com"
SCOPE = ARM + "/.default"
RESOURCE = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/vm1"
T = 10  # client timeout, seconds


@pytest.fixture(autouse=True)
def _fresh(request, monkeypatch, no_proxies):
    if "arm" in request.fixturenames:
        emu = request.getfixturevalue("arm")
        emu.reset()
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", emu.ca_bundle_path)
    if "identity" in request.fixturenames:
        request.getfixturevalue("identity").reset_counts()


@pytest.fixture
def session(identity, arm):
    s = requests.Session()
    s.headers["Authorization"] = "Bearer " + identity.mint(ARM)
    yield s
    s.close()


def _credential(monkeypatch, identity, **kw) -> ManagedIdentityCredential:
    for k, v in identity.env().items():
        monkeypatch.setenv(k, v)
    for var in ("IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    return ManagedIdentityCredential(**kw)


def _error(resp: requests.Response) -> dict:
    body = resp.json()
    assert set(body) == {"error"}
    assert {"code", "message", "target", "details", "additionalInfo"} <= set(body["error"])
    return body["error"]


# ---------------------------------------------------------------------------------------------
# Managed identity
# ---------------------------------------------------------------------------------------------
def test_real_credential_gets_a_cached_token(monkeypatch, identity):
    cred = _credential(monkeypatch, identity)
    first = cred.get_token(SCOPE)
    second = cred.get_token(SCOPE)
    assert first.token == second.token
    assert identity.tokens_issued == 1, "azure-identity should serve the second call from its cache"
    assert identity.issued == [(ARM, None)]
    assert identity.verify(first.token, ARM)
    assert identity.verify(first.token, ARM + "/.default")
    assert not identity.verify(first.token, "https://storage.azure.com")
    assert 7000 < first.expires_on - time.time() <= 7200


def test_real_credential_user_assigned_and_injected_failures(monkeypatch, identity):
    cred = _credential(monkeypatch, identity, client_id="11111111-2222-3333-4444-555555555555")
    identity.fail_next(1, status=500)  # azure-core's retry policy retries it at once
    tok = cred.get_token(SCOPE)
    assert identity.verify(tok.token, ARM)
    assert identity.requests_received == 2 and identity.failures_served == 1
    assert identity.issued == [(ARM, "11111111-2222-3333-4444-555555555555")]

    cred2 = _credential(monkeypatch, identity)
    identity.fail_next(1, status=400)  # not retried by the client: the call fails
    with pytest.raises(Exception, match="400"):
        cred2.get_token(SCOPE)
    assert identity.verify(cred2.get_token(SCOPE).token, ARM)


def test_identity_endpoint_rejects_bad_requests(identity):
    url = identity.endpoint
    ok = {"X-IDENTITY-HEADER": identity.header_secret}
    r = requests.get(url, params={"api-version": "2019-08-01", "resource": ARM}, timeout=T)
    assert r.status_code == 401 and r.json()["statusCode"] == 401
    r = requests.get(
        url, params={"api-version": "2019-08-01", "resource": ARM}, headers={"X-IDENTITY-HEADER": "nope"}, timeout=T
    )
    assert r.status_code == 401
    r = requests.get(url, params={"api-version": "2019-08-01"}, headers=ok, timeout=T)
    assert r.status_code == 400 and "resource" in r.json()["message"]
    r = requests.get(url, params={"api-version": "2019-08-01", "resource": ARM}, headers=ok, timeout=T)
    body = r.json()
    assert r.status_code == 200
    assert set(body) == {"access_token", "expires_on", "resource", "token_type", "client_id"}
    assert body["token_type"] == "Bearer" and body["resource"] == ARM
    assert int(body["expires_on"]) > time.time() + 7000
    assert identity.tokens_issued == 1


# ---------------------------------------------------------------------------------------------
# ARM emulator: submit
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("example", ["MaximumSet", "MinimumSet"])
def test_spec_examples_are_accepted(monkeypatch, identity, arm, example):
    record = load_record()  # the published examples' requests, as our record of the operation holds them
    params = {"api-version": record["apiVersion"], **record["deleteCheckpoint"]["examples"][example]}
    assert arm.api_version == params["api-version"]
    token = _credential(monkeypatch, identity).get_token(SCOPE).token
    url = f"{arm.endpoint}/{params['resourceUri']}/providers/Microsoft.ScVmm/virtualMachineInstances/default/deleteCheckpoint"
    r = requests.post(
        url,
        params={"api-version": params["api-version"]},
        json=params["body"],
        headers={"Authorization": f"Bearer {token}"},
        timeout=T,
    )
    assert r.status_code == 202, r.text
    assert r.headers["Location"].startswith(
        arm.endpoint + "/providers/Microsoft.ScVmm/locations/local/operationResults/"
    )
    assert int(r.headers["Retry-After"]) == 0
    rec = arm.requests(kind="submit")[-1]
    assert rec.body == params["body"] and rec.header("Authorization") == "Bearer ***"
    (op,) = arm.operations
    assert op.resource_uri == "/" + params["resourceUri"] and op.checkpoint_id == params["body"].get("id")
    g = requests.get(r.headers["Location"], headers={"Authorization": f"Bearer {token}"}, timeout=T)
    assert g.status_code == 200
    assert arm.violations == []


@pytest.mark.parametrize(
    ("mutate", "status", "code"),
    [
        (lambda u, b, h: (u.replace("2024-06-01", "2023-10-07"), b, h), 400, "InvalidApiVersionParameter"),
        (lambda u, b, h: (u.split("?")[0], b, h), 400, "MissingApiVersionParameter"),
        (lambda u, b, h: (u, b'{"id": 5}', h), 400, "InvalidRequestContent"),
        (lambda u, b, h: (u, b"not json", h), 400, "InvalidRequestContent"),
        (lambda u, b, h: (u, b"", h), 400, "InvalidRequestContent"),
        (lambda u, b, h: (u, b, {**h, "Content-Type": "text/plain"}), 415, "UnsupportedMediaType"),
        (lambda u, b, h: (u, b, {k: v for k, v in h.items() if k != "Authorization"}), 401, "AuthenticationFailed"),
        (lambda u, b, h: (u, b, {**h, "Authorization": "Bearer forged"}), 401, "InvalidAuthenticationToken"),
        (lambda u, b, h: (u.replace("/default/", "/other/"), b, h), 404, "NotFound"),
    ],
    ids=[
        "bad-api-version",
        "no-api-version",
        "bad-body",
        "not-json",
        "no-body",
        "content-type",
        "no-token",
        "bad-token",
        "bad-path",
    ],
)
def test_bad_requests_get_arm_errors_and_violations(identity, arm, mutate, status, code):
    url = arm.url_for(RESOURCE)
    headers = {"Authorization": "Bearer " + identity.mint(ARM), "Content-Type": "application/json"}
    url, body, headers = mutate(url, b'{"id": "cp"}', headers)
    r = requests.post(url, data=body, headers=headers, timeout=T)
    assert r.status_code == status
    assert _error(r)["code"] == code
    if status == 401:
        assert "WWW-Authenticate" in r.headers
    assert len(arm.violations) == 1 and code in arm.violations[0]
    assert "Bearer" not in arm.violations[0]
    assert arm.operations == []


def test_tokens_for_other_audiences_or_expired_are_refused(identity, arm):
    for token, code in [
        (identity.mint("https://storage.azure.com"), "InvalidAuthenticationToken"),
        (identity.mint(ARM, lifetime=-1), "ExpiredAuthenticationToken"),
    ]:
        r = requests.post(arm.url_for(RESOURCE), json={}, headers={"Authorization": f"Bearer {token}"}, timeout=T)
        assert r.status_code == 401 and _error(r)["code"] == code
    assert len(arm.violations) == 2


def test_submit_faults_then_accepted(arm, session):
    arm.script(
        "cp-faults", Scenario(submit_faults=[Fault.throttled(retry_after=1), Fault(status=503), Fault(status=500)])
    )
    url = arm.url_for(RESOURCE)
    answers = [session.post(url, json={"id": "cp-faults"}, timeout=T) for _ in range(4)]
    assert [a.status_code for a in answers] == [429, 503, 500, 202]
    assert answers[0].headers["Retry-After"] == "1" and _error(answers[0])["code"] == "TooManyRequests"
    assert answers[1].content == b"" and "Retry-After" not in answers[1].headers
    # another checkpoint under the default scenario is not affected
    assert session.post(url, json={"id": "cp-other"}, timeout=T).status_code == 202
    assert arm.violations == []


def test_slow_and_dropped_submits(arm, session):
    arm.script("cp-slow", Scenario(submit_faults=[Fault.slow(0.3), Fault.dropped()]))
    url = arm.url_for(RESOURCE)
    t0 = time.monotonic()
    r = session.post(url, json={"id": "cp-slow"}, timeout=T)
    assert r.status_code == 202 and time.monotonic() - t0 >= 0.3
    with pytest.raises(requests.ConnectionError):
        session.post(url, json={"id": "cp-slow"}, timeout=T)
    assert session.post(url, json={"id": "cp-slow"}, timeout=T).status_code == 202
    assert arm.requests(kind="submit")[1].dropped
    assert len(arm.operations_for("cp-slow")) == 2


@pytest.mark.parametrize(("answer", "status"), [("done_200", 200), ("done_204", 204)])
def test_submit_finished_at_once(arm, session, answer, status):
    arm.script(RESOURCE.upper(), Scenario(submit=answer))  # resourceUri keys ignore case
    r = session.post(arm.url_for(RESOURCE), json={}, timeout=T)
    assert r.status_code == status and "Location" not in r.headers
    assert arm.operations == []


def test_submit_error_is_a_full_error_response(arm, session):
    arm.default = Scenario(submit=Fault.arm_error(409, "Conflict", "Checkpoint is in use."))
    r = session.post(arm.url_for(RESOURCE), json={"id": "x"}, timeout=T)
    err = _error(r)
    assert r.status_code == 409 and err["code"] == "Conflict" and err["message"] == "Checkpoint is in use."
    arm.rules.validator_for("ErrorResponse").validate(r.json())


# ---------------------------------------------------------------------------------------------
# ARM emulator: status
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("final", ["200", "204"])
def test_location_protocol_k_polls_then_done(arm, session, final):
    arm.script("cp-loc", Scenario(done_after_polls=2, final=final, retry_after=3))
    r = session.post(arm.url_for(RESOURCE), json={"id": "cp-loc"}, timeout=T)
    assert r.status_code == 202 and r.headers["Retry-After"] == "3" and "Azure-AsyncOperation" not in r.headers
    loc = r.headers["Location"]
    seen = []
    for _ in range(4):
        g = session.get(loc, timeout=T)
        seen.append(g.status_code)
        if g.status_code == 202:
            assert g.headers["Retry-After"] == "3"
    assert seen == [202, 202, int(final), int(final)]
    (op,) = arm.operations_for("cp-loc")
    assert op.polls == 4 and op.location_polls == 4 and op.running_answers == 2 and op.done
    assert arm.operation(op.id) is op and [c.status for c in op.calls] == seen
    assert arm.violations == []


def test_location_protocol_new_location_each_poll(arm, session):
    arm.default = Scenario(done_after_polls=2, new_location_each_poll=True)
    loc = session.post(arm.url_for(RESOURCE), json={}, timeout=T).headers["Location"]
    urls = [loc]
    while True:
        g = session.get(urls[-1], timeout=T)
        if g.status_code != 202:
            break
        assert g.headers["Location"].startswith(arm.endpoint + "/") and g.headers["Location"] != urls[-1]
        urls.append(g.headers["Location"])
    assert g.status_code == 200 and len(urls) == 3
    (op,) = arm.operations
    assert op.location_urls == urls and [c.url for c in op.calls] == [u[len(arm.endpoint) :] for u in urls]
    assert arm.violations == []


@pytest.mark.parametrize("final", ["Succeeded", "Failed", "Canceled"])
def test_async_protocol(arm, session, final):
    arm.default = Scenario(submit="accepted_async", done_after_polls=1, final=final)
    r = session.post(arm.url_for(RESOURCE), json={"id": "cp-a"}, timeout=T)
    assert r.status_code == 202
    status_url = r.headers["Azure-AsyncOperation"]
    assert "/operationStatuses/" in status_url and "/operationResults/" in r.headers["Location"]
    first = session.get(status_url, timeout=T)
    assert first.status_code == 200 and first.json()["status"] == "InProgress" and "Retry-After" in first.headers
    last = session.get(status_url, timeout=T).json()
    assert last["status"] == final
    if final == "Failed":
        assert last["error"]["code"] == "CheckpointDeleteFailed"
        assert {"message", "target", "details", "additionalInfo"} <= set(last["error"])
    else:
        assert "error" not in last
    loc = session.get(r.headers["Location"], timeout=T)
    assert loc.status_code == (200 if final == "Succeeded" else 400)
    assert arm.operations[0].async_polls == 2 and arm.operations[0].location_polls == 1
    assert arm.violations == []


def test_done_after_seconds(arm, session):
    arm.default = Scenario(done_after_seconds=0.3)
    loc = session.post(arm.url_for(RESOURCE), json={}, timeout=T).headers["Location"]
    assert session.get(loc, timeout=T).status_code == 202
    time.sleep(0.35)
    assert session.get(loc, timeout=T).status_code == 200


def test_poll_faults_and_final_faults(arm, session):
    other = arm.other_host_endpoint + "/elsewhere"
    arm.script(
        "cp-pf",
        Scenario(
            poll_faults=[Fault.throttled(2), Fault(status=500), Fault.dropped()],
            final=Fault.arm_error(404, "ResourceNotFound", "Checkpoint not found."),
        ),
    )
    arm.script("cp-500", Scenario(final=Fault(status=500)))
    arm.script("cp-302", Scenario(final=Fault(status=302, location=other)))
    url = arm.url_for(RESOURCE)
    loc = session.post(url, json={"id": "cp-pf"}, timeout=T).headers["Location"]
    a = session.get(loc, timeout=T)
    assert a.status_code == 429 and a.headers["Retry-After"] == "2"
    assert session.get(loc, timeout=T).status_code == 500
    with pytest.raises(requests.ConnectionError):
        session.get(loc, timeout=T)
    final = session.get(loc, timeout=T)
    assert final.status_code == 404 and _error(final)["code"] == "ResourceNotFound"

    loc = session.post(url, json={"id": "cp-500"}, timeout=T).headers["Location"]
    g = session.get(loc, timeout=T)
    assert g.status_code == 500 and g.content == b""

    loc = session.post(url, json={"id": "cp-302"}, timeout=T).headers["Location"]
    g = session.get(loc, timeout=T, allow_redirects=False)
    assert g.status_code == 302 and g.headers["Location"] == other
    assert arm.operations_for("cp-pf")[0].polls == 4
    assert arm.other_host_received == [] and arm.violations == []


def test_retry_after_as_http_date(arm, session):
    arm.default = Scenario(retry_after=30, retry_after_http_date=True, done_after_polls=1)
    r = session.post(arm.url_for(RESOURCE), json={}, timeout=T)
    when = email.utils.parsedate_to_datetime(r.headers["Retry-After"]).timestamp()
    assert 25 <= when - time.time() <= 31
    g = session.get(r.headers["Location"], timeout=T)
    assert g.status_code == 202 and email.utils.parsedate_to_datetime(g.headers["Retry-After"])


def test_untrusted_location_and_other_host(arm, session):
    arm.default = Scenario(location_base=arm.other_host_endpoint)
    r = session.post(arm.url_for(RESOURCE), json={}, timeout=T)
    assert r.status_code == 202 and r.headers["Location"].startswith(arm.other_host_endpoint + "/providers/")
    assert arm.other_host_received == [] and arm.violations == []
    # the other host itself works (over TLS, name localhost) and records + reports what reaches it
    g = requests.get(r.headers["Location"], timeout=T)
    assert g.status_code == 200
    (rec,) = arm.other_host_received
    assert not rec.has_authorization and rec.path.endswith(arm.operations[0].id)
    assert len(arm.violations) == 1 and "other host" in arm.violations[0]


def test_status_url_checks(arm, session):
    loc = session.post(arm.url_for(RESOURCE), json={}, timeout=T).headers["Location"]
    assert requests.get(loc, timeout=T).status_code == 401
    assert session.get(loc.split("?")[0], timeout=T).status_code == 400
    unknown = (
        loc.split("/operationResults/")[0]
        + "/operationResults/00000000-0000-0000-0000-000000000000?api-version=2024-06-01"
    )
    assert session.get(unknown, timeout=T).status_code == 404
    never = loc.replace("operationResults", "operationStatuses")  # not handed out for a Location-protocol operation
    assert session.get(never, timeout=T).status_code == 404
    assert len(arm.violations) == 4


# ---------------------------------------------------------------------------------------------
# Connections, load, variants
# ---------------------------------------------------------------------------------------------
def test_one_connection_serves_many_calls(arm, session):
    url = arm.url_for(RESOURCE)
    for i in range(5):
        r = session.post(url, json={"id": f"cp-{i}"}, timeout=T)
        assert session.get(r.headers["Location"], timeout=T).status_code == 200
    assert arm.connections_opened == 1
    assert len({rec.connection_id for rec in arm.received}) == 1 and len(arm.received) == 10


def test_many_operations_from_concurrent_clients(identity, arm):
    token = identity.mint(ARM)
    n_clients, per_client = 16, 32  # 512 operations
    url = arm.url_for(RESOURCE)
    failures: list[str] = []

    def client(c: int) -> None:
        with requests.Session() as s:
            s.headers["Authorization"] = f"Bearer {token}"
            for i in range(per_client):
                r = s.post(url, json={"id": f"c{c}-{i}"}, timeout=T)
                g = s.get(r.headers["Location"], timeout=T)
                if (r.status_code, g.status_code) != (202, 200):
                    failures.append(f"{c}-{i}: {r.status_code} {g.status_code}")

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    assert failures == []
    assert len(arm.operations) == n_clients * per_client
    assert arm.connections_opened == n_clients
    assert arm.violations == []
    assert elapsed < 8, f"{n_clients * per_client} operations took {elapsed:.1f}s"


def test_record_rules_and_throttling(ca, identity, monkeypatch):
    with ArmEmulator(ca, identity, throttle={"writes": (2, 0.5)}) as emu:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", emu.ca_bundle_path)
        assert emu.api_version == "2024-06-01"
        with requests.Session() as s:
            s.headers["Authorization"] = "Bearer " + identity.mint(ARM)
            url = emu.url_for(RESOURCE)
            assert s.post(url, json={"id": 1}, timeout=T).status_code == 400
            assert [s.post(url, json={}, timeout=T).status_code for _ in range(3)] == [202, 202, 429]
            assert emu.throttled == 1 and len(emu.violations) == 1
    with ArmEmulator(ca, None) as emu:  # identity=None: any bearer token
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", emu.ca_bundle_path)
        r = requests.post(emu.url_for(RESOURCE), json={}, headers={"Authorization": "Bearer x"}, timeout=T)
        assert r.status_code == 202 and emu.violations == []
