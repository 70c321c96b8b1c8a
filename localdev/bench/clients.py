"""The contenders that call ARM themselves, each run in a child process (see :mod:`.child`):

- ``ideal``: the floor. One ``requests.Session`` (told where the emulator's CA is, so it does not
  read the environment on every call: ``trust_env`` off), one token from the managed identity, a
  pool of 16 threads; a scheduler hands each free thread a status GET whose ``Retry-After`` has just
  passed, else the next POST, so that each status URL is read when its ``Retry-After`` ends and
  not later. With ARM's throttling on it also keeps each subscription within ARM's published
  buckets (it knows them; kept 1% below), lending tokens ahead as ARM's bucket refills.
- ``sdk-sync``: ``azure-mgmt-scvmm``'s ``begin_delete_checkpoint(...).result()``, the POSTs sent
  from a thread pool; each ``LROPoller`` polls in a thread of its own, as the SDK does.
- ``sdk-aio``: the same with ``azure.mgmt.scvmm.aio`` (aiohttp), every deletion in one
  ``asyncio.gather``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from localdev.bench.plan import ARM_READS, ARM_WRITES, Item, read_items

SCOPE = "https://management.azure.com/.default"
OPERATION_PATH = "/providers/Microsoft.ScVmm/virtualMachineInstances/default/deleteCheckpoint"
IDEAL_WORKERS = 16
PACING_MARGIN = 0.01
TIMEOUT = (5.0, 30.0)


def run(contender: str, config: dict, channel, window) -> None:
    deletions = read_items(Path(config["items"]))
    runner = {"ideal": _ideal, "sdk-sync": _sdk_sync, "sdk-aio": _sdk_aio}[contender]
    outcomes = runner(config, deletions, channel, window)
    ended = time.time()
    channel.send("done", ended=ended, outcomes=outcomes, **window.stop())


def _ready(channel, window) -> None:
    channel.send("ready")
    channel.expect("go")
    window.start()


def _tally(results: list[str | Exception]) -> dict:
    errors = [r for r in results if isinstance(r, Exception)]
    samples = sorted({f"{type(e).__name__}: {' '.join(str(e).split())[:160]}" for e in errors})[:3]
    return {"succeeded": len(results) - len(errors), "failed": len(errors), "errors": samples}


# ------------------------------------------------------------------------------------------------
# ideal
# ------------------------------------------------------------------------------------------------
class _Bucket:
    """ARM's token bucket, lending ahead: `reserve` says how long to wait. It is kept 1% below ARM's
    (capacity and refill): ARM starts its own bucket when the first call arrives, a little later
    than this one, and counts arrivals, which come a little after the sends."""

    def __init__(self, capacity: float, rate: float) -> None:
        capacity, rate = capacity * (1 - PACING_MARGIN), rate * (1 - PACING_MARGIN)
        self.capacity, self.rate, self.level, self.stamp = capacity, rate, capacity, time.monotonic()

    def reserve(self) -> float:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        self.level -= 1
        return 0.0 if self.level >= 0 else -self.level / self.rate


@dataclass(order=True)
class _Call:
    due: float
    seq: int
    method: str = field(compare=False)
    url: str = field(compare=False)
    item: Item = field(compare=False)
    paced: bool = field(default=False, compare=False)
    failures: int = field(default=0, compare=False)


class _Ideal:
    def __init__(self, config: dict, deletions: list[Item]) -> None:
        import requests
        from azure.identity import ManagedIdentityCredential
        from requests.adapters import HTTPAdapter

        self.endpoint = config["arm_endpoint"].rstrip("/")
        self.api_version = config["api_version"]
        self.deletions = deletions
        self.throttle = bool(config["throttle"])
        self.session = requests.Session()
        self.session.mount("https://", HTTPAdapter(pool_connections=1, pool_maxsize=IDEAL_WORKERS, max_retries=0))
        self.session.verify = config["ca_bundle"]
        self.session.trust_env = False  # no proxy, netrc or CA lookups in the environment on each call
        self.credential = ManagedIdentityCredential()
        self.pool = ThreadPoolExecutor(IDEAL_WORKERS, thread_name_prefix="ideal")
        self.cond = threading.Condition()
        self.timed: list[_Call] = []  # status GETs and retries, by the time they are due
        self.fresh: deque[_Call] = deque()  # first POSTs, sent when no timed call is due
        self.free = IDEAL_WORKERS
        self.seq = itertools.count()
        self.results: dict[int, str | Exception] = {}
        self.buckets: dict[tuple[str, str], _Bucket] = {}

    def run(self) -> list[str | Exception]:
        """Hand calls to the pool as workers come free: a due status GET (or retry) first, else
        the next first POST. So no GET waits behind POSTs, and the POSTs go as fast as the GETs
        leave room for."""
        token = self.credential.get_token(SCOPE).token
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        now = time.monotonic()
        for item in self.deletions:
            url = f"{self.endpoint}{item.resource_uri}{OPERATION_PATH}?api-version={self.api_version}"
            self.fresh.append(_Call(now, next(self.seq), "POST", url, item))
        with self.cond:
            while len(self.results) < len(self.deletions):
                now = time.monotonic()
                if self.free == 0:
                    self.cond.wait()
                    continue
                if self.timed and self.timed[0].due <= now:
                    call = heapq.heappop(self.timed)
                elif self.fresh:
                    call = self.fresh.popleft()
                else:
                    self.cond.wait(self.timed[0].due - now if self.timed else None)
                    continue
                if self.throttle and not call.paced:
                    delay = self._bucket(call).reserve()
                    if delay > 0:  # the token is taken: the call goes when it is there
                        call.paced, call.due = True, now + delay
                        heapq.heappush(self.timed, call)
                        continue
                self.free -= 1
                self.pool.submit(self._send, call)
        self.pool.shutdown()
        self.session.close()
        return [self.results[i.index] for i in self.deletions]

    def _bucket(self, call: _Call) -> _Bucket:
        kind = "writes" if call.method == "POST" else "reads"
        key = (kind, call.item.resource_uri.split("/")[2])
        if key not in self.buckets:
            self.buckets[key] = _Bucket(*(ARM_WRITES if kind == "writes" else ARM_READS))
        return self.buckets[key]

    def _push(self, call: _Call) -> None:
        with self.cond:
            heapq.heappush(self.timed, call)
            self.cond.notify()

    def _finish(self, item: Item, result: str | Exception) -> None:
        with self.cond:
            self.results[item.index] = result
            self.cond.notify()

    def _again(self, call: _Call, after: float, method: str | None = None, url: str | None = None) -> None:
        due = time.monotonic() + after
        self._push(_Call(due, next(self.seq), method or call.method, url or call.url, call.item, False, call.failures))

    def _send(self, call: _Call) -> None:
        try:
            self._call(call)
        finally:
            with self.cond:
                self.free += 1
                self.cond.notify()

    def _call(self, call: _Call) -> None:
        body = json.dumps({"id": call.item.checkpoint_id}) if call.method == "POST" else None
        headers = {**self.headers, "Content-Type": "application/json"} if body else self.headers
        try:
            r = self.session.request(
                call.method, call.url, headers=headers, data=body, timeout=TIMEOUT, allow_redirects=False
            )
        except Exception as exc:  # noqa: BLE001 - a dropped connection: tried again, three times at most
            call.failures += 1
            if call.failures >= 3:
                self._finish(call.item, exc)
            else:
                self._again(call, 1.0)
            return
        retry_after = _seconds(r.headers.get("Retry-After"))
        if r.status_code == 202:
            self._again(call, retry_after, "GET", r.headers.get("Location") or call.url)
        elif r.status_code in (200, 204):
            self._finish(call.item, "succeeded")
        elif r.status_code == 429:
            self._again(call, retry_after)
        else:
            self._finish(call.item, RuntimeError(f"{call.method} answered {r.status_code}: {r.text[:200]}"))


def _seconds(value: str | None, default: float = 60.0) -> float:
    try:
        return max(0.0, float(value)) if value is not None else default
    except ValueError:
        return default


def _ideal(config: dict, deletions: list[Item], channel, window) -> dict:
    client = _Ideal(config, deletions)
    _ready(channel, window)
    return _tally(client.run())


# ------------------------------------------------------------------------------------------------
# azure-mgmt-scvmm, sync and aio
# ------------------------------------------------------------------------------------------------
def _sdk_target(item: Item) -> str:
    # The SDK's URL template is "/{resourceUri}/providers/...", the value inserted as is
    # (skip_quote): a resource id with its leading slash would make the path start with "//".
    return item.resource_uri.lstrip("/")


def _sdk_options(config: dict) -> dict:
    # api-version: azure-mgmt-scvmm 1.0.0 defaults to 2023-10-07; the app and the emulator use 2024-06-01.
    # TLS: the emulator's CA is trusted through the environment (SSL_CERT_FILE, REQUESTS_CA_BUNDLE),
    # as a real trust store trusts ARM. Not through connection_verify=<path>: with a path, azure-core's
    # aiohttp transport builds a new SSLContext for every request, and aiohttp pools connections per
    # context, so every call would open a TLS connection of its own.
    return {"base_url": config["arm_endpoint"], "api_version": config["api_version"]}


def _sdk_sync(config: dict, deletions: list[Item], channel, window) -> dict:
    from azure.identity import ManagedIdentityCredential
    from azure.mgmt.scvmm import ScVmmMgmtClient
    from azure.mgmt.scvmm.models import VirtualMachineDeleteCheckpoint

    subscription = deletions[0].resource_uri.split("/")[2]
    client = ScVmmMgmtClient(ManagedIdentityCredential(), subscription, **_sdk_options(config))
    operations = client.virtual_machine_instances

    def begin(item: Item):
        return operations.begin_delete_checkpoint(
            _sdk_target(item), VirtualMachineDeleteCheckpoint(id=item.checkpoint_id)
        )

    _ready(channel, window)
    results: list[str | Exception] = []
    with ThreadPoolExecutor(config["sdk_threads"], thread_name_prefix="sdk") as pool:
        begun = [pool.submit(begin, item) for item in deletions]
        pollers = []
        for future in begun:
            try:
                pollers.append(future.result())
            except Exception as exc:  # noqa: BLE001 - the POST failed for good
                results.append(exc)
    for poller in pollers:
        try:
            poller.result()
            results.append("succeeded")
        except Exception as exc:  # noqa: BLE001 - the operation failed, or polling gave up
            results.append(exc)
    client.close()
    return _tally(results)


def _sdk_aio(config: dict, deletions: list[Item], channel, window) -> dict:
    return asyncio.run(_sdk_aio_main(config, deletions, channel, window))


async def _sdk_aio_main(config: dict, deletions: list[Item], channel, window) -> dict:
    from azure.identity.aio import ManagedIdentityCredential
    from azure.mgmt.scvmm.aio import ScVmmMgmtClient
    from azure.mgmt.scvmm.models import VirtualMachineDeleteCheckpoint

    subscription = deletions[0].resource_uri.split("/")[2]
    credential = ManagedIdentityCredential()
    client = ScVmmMgmtClient(credential, subscription, **_sdk_options(config))
    operations = client.virtual_machine_instances

    async def one(item: Item) -> str:
        body = VirtualMachineDeleteCheckpoint(id=item.checkpoint_id)
        poller = await operations.begin_delete_checkpoint(_sdk_target(item), body)
        await poller.result()
        return "succeeded"

    async with credential, client:
        _ready(channel, window)  # blocks the loop until "go": nothing runs on it yet
        results = await asyncio.gather(*(one(item) for item in deletions), return_exceptions=True)
    return _tally(list(results))
