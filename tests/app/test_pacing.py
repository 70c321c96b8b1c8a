"""Client-side pacing of ARM calls within ARM's per-subscription token buckets."""

import pytest

from localdev.arm_emulator import ArmEmulator, Scenario
from shared.pacing import ArmPacer, TokenBucket, subscription_of
from tests.support.app_harness import new_resource_uri


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_bucket_lends_ahead_in_turn_up_to_the_longest_wait():
    clock = FakeClock()
    bucket = TokenBucket(2, 1.0, max_wait=3.0, clock=clock)
    assert [bucket.reserve() for _ in range(5)] == [0.0, 0.0, 1.0, 2.0, 3.0]
    assert bucket.reserve() == 3.0  # overloaded: the caller waits the longest wait, no token is lent
    clock.now += 10  # refilled (capped at the capacity)
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 1.0]


def test_each_subscription_and_kind_has_its_own_bucket():
    waited = []
    pacer = ArmPacer(writes=(1, 1.0), reads=(1, 1.0), sleep=waited.append)
    a, b = new_resource_uri(), new_resource_uri()
    assert [pacer.wait("writes", a), pacer.wait("writes", b), pacer.wait("reads", a)] == [0.0, 0.0, 0.0]
    assert pacer.wait("writes", a) == pytest.approx(1.0, abs=0.01)
    assert waited == [pytest.approx(1.0, abs=0.01)]


def test_subscription_of():
    assert subscription_of("/subscriptions/ABC/resourceGroups/r/providers/P.N/t/n") == "abc"
    assert subscription_of(None) == subscription_of("gtgclehcbsyave") == ""


@pytest.fixture
def throttling_arm(ca, identity):
    """An ARM emulator with small buckets: 4 writes, refilled at 4/s, per subscription and principal."""
    with ArmEmulator(ca, identity, throttle={"writes": (4, 4.0), "reads": (100, 100.0)}) as emulator:
        emulator.default = Scenario(submit="done_204")
        yield emulator


@pytest.mark.parametrize("paced", [True, False], ids=["paced", "unpaced"])
def test_a_burst_for_one_subscription_stays_within_arms_bucket(make_app, throttling_arm, paced):
    writes = (3, 3.6) if paced else (1000, 1000.0)  # paced: the emulator's bucket less a tenth, as in the app
    app = make_app(pacer=ArmPacer(writes=writes), ARM_ENDPOINT=throttling_arm.endpoint)
    uri = new_resource_uri()  # one subscription, twelve VMs (the app runs one operation per VM at a time)
    ids = [f"burst-{i}" for i in range(12)]
    for i, request_id in enumerate(ids):
        app.send({"resourceUri": uri.replace("/vm1", f"/vm{i}"), "checkpointId": request_id, "requestId": request_id})
    outcomes = app.run(ids, timeout=30)
    assert all(events[-1]["type"] == "ScVmm.CheckpointDelete.Succeeded" for events in outcomes.values())
    if paced:
        assert throttling_arm.throttled == 0  # every call waited here instead of meeting a 429
    else:
        assert throttling_arm.throttled > 0  # the same burst, unpaced, meets ARM's limit


def test_buckets_are_kept_only_for_recent_subscriptions():
    # Before, one bucket per distinct subscription stayed forever (50,000 subscriptions: 135 MiB).
    clock = FakeClock()
    pacer = ArmPacer(writes=(2, 1.0), sleep=lambda _: None, max_buckets=100, clock=clock)
    for _ in range(50_000):
        pacer.wait("writes", new_resource_uri())
    assert len(pacer) <= 100  # never more than the cap
    busy = new_resource_uri()
    pacer.wait("writes", busy)
    pacer.wait("writes", busy)  # its bucket is empty now: forgetting it would lend tokens ARM has not given
    clock.now += 1.5  # the others are full again (1 s after a single use): idle; the busy one is not (2 s)
    pacer.wait("writes", new_resource_uri())
    assert len(pacer) <= 3
    # the busy subscription's bucket was kept (1.5 tokens): a new one would hold 2 and not make the second wait
    assert [pacer.wait("writes", busy) > 0 for _ in range(2)] == [False, True]


def test_a_429_makes_the_next_call_wait_its_retry_after_and_arm_s_count_lowers_the_level():
    clock = FakeClock()
    bucket = TokenBucket(100, 10.0, max_wait=30.0, clock=clock)
    bucket.observe(pause=2.0)
    assert bucket.reserve() == pytest.approx(2.0)
    clock.now += 60  # full again
    bucket.observe(remaining=12.5)  # other instances spent most of the shared bucket: 12.5 less a tenth of 100 left
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, pytest.approx(0.05, abs=0.002)]


@pytest.fixture
def shared_bucket_arm(ca, identity):
    """ARM's write bucket for one subscription and principal, small: 10, refilled at 5/s."""
    with ArmEmulator(ca, identity, throttle={"writes": (10, 5.0), "reads": (100, 100.0)}) as emulator:
        emulator.default = Scenario(submit="done_204")
        yield emulator


def _two_instances_posting(arm, identity, monkeypatch, learn: bool) -> int:
    """Two app instances (one principal) each send 30 deletions for one subscription; ARM's 429s."""
    from concurrent.futures import ThreadPoolExecutor

    from azure.identity import ManagedIdentityCredential

    from shared.arm_client import ArmClient
    from shared.request import DeletionRequest

    for name, value in identity.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", arm.ca_bundle_path)
    uri = new_resource_uri()
    clients = [
        ArmClient(ManagedIdentityCredential(), arm.endpoint, "2024-06-01", pacer=ArmPacer(writes=(9, 4.5), learn=learn))
        for _ in range(2)
    ]

    def instance(client):
        for i in range(30):
            client.delete_checkpoint(DeletionRequest(resource_uri=uri, request_id=f"r{i}", checkpoint_id=f"cp{i}"))

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(instance, clients))
    for client in clients:
        client.close()
    return arm.throttled


def test_instances_sharing_one_bucket_stay_within_it_by_what_arm_says(shared_bucket_arm, identity, monkeypatch):
    learning = _two_instances_posting(shared_bucket_arm, identity, monkeypatch, learn=True)
    shared_bucket_arm.clear()
    guessing = _two_instances_posting(shared_bucket_arm, identity, monkeypatch, learn=False)
    print(f"429s: {learning} learning from ARM's headers, {guessing} with the fixed guess alone")
    assert guessing >= 15  # each instance alone would stay within the bucket; together they do not
    assert learning <= guessing / 4
