"""The figures of :mod:`.inflight` and how they are printed: status reads per second, the
poller's RSS, each process's share of a CPU, and what held the rate. Pure functions of the samples
the parent took once a second and of the emulator's records, so that they can be checked alone."""

from __future__ import annotations

import math
import statistics

from localdev.bench.measure import percentile

# of one CPU: a process whose work runs on one thread at a time (the GIL, Node's event loop); past
# this its threads (or callbacks) queue for it and each call waits longer
SATURATED = 0.75
MACHINE_BUSY = 0.8  # of every CPU of the machine
FLAT_MB = 5.0  # RSS from 30 s to the end within this: flat
STORAGE_BUSY = 5  # tracking-queue calls in a second from which the poller's workers are busy with storage
PROCESSES = ("app", "emulator", "azurite")
WHY = {
    "app": "the poller's own process: its 16 workers share one GIL, and each status read costs it CPU "
    "(TLS, requests, the app's logging)",
    "emulator": "the ARM emulator (this process: Python, one GIL for every connection); real ARM would not be",
    "azurite": "Azurite: it scans every message of every queue on each receive, update and delete, so each "
    "tracking call costs it more the more operations wait (docs/benchmark.md, Azurite); real storage has no such cost",
    "machine": "this machine's CPUs: the poller, the emulator and Azurite share them with each other and with "
    "other work (see 'other work' above)",
}


def read_rates(reads: list[tuple[float, str]], operations: int, seconds: int) -> dict:
    """Status reads per whole second from `reads` ((seconds after go, operation id) each), and when
    the poller was cycling: from its first read of an operation it had read before (it came round
    again), or later, from when every one of the N had been read, if that left 5 seconds or more."""
    per_second = [0] * seconds
    seen: set[str] = set()
    first_reread = all_read = None
    for t, opid in sorted(reads):
        if 0 <= t < seconds:
            per_second[int(t)] += 1
        if opid in seen:
            first_reread = t if first_reread is None else first_reread
        else:
            seen.add(opid)
            if len(seen) == operations:
                all_read = t
    cycling = first_reread
    if first_reread is not None and all_read is not None and seconds - math.ceil(max(first_reread, all_read)) >= 5:
        cycling = max(first_reread, all_read)
    steady = per_second[math.ceil(cycling) :] if cycling is not None else []
    return {
        "per_second": per_second,
        "operations_read": len(seen),
        "first_reread_s": first_reread,
        "all_read_s": all_read,
        "cycling_from_s": cycling,
        "steady_seconds": len(steady),
        "reads_per_s_median": statistics.median(steady) if steady else None,
        "reads_per_s_p10": percentile(steady, 0.1),
        "reads_per_s_mean": statistics.fmean(steady) if steady else None,
    }


def rss_figures(samples: list[dict]) -> dict:
    """RSS at the start, 30 s in (or the middle of a shorter run), at the end; flat when the end is
    within FLAT_MB of the 30 s figure."""
    rss = [(s["t"], s["rss_mb"]) for s in samples if s.get("rss_mb") is not None]
    if not rss:
        return {}
    mid_t, mid = next(((t, mb) for t, mb in rss if t >= min(30.0, rss[-1][0] / 2)), rss[-1])
    return {
        "rss_start_mb": rss[0][1],
        "rss_30s_mb": mid,
        "rss_30s_at_s": mid_t,
        "rss_end_mb": rss[-1][1],
        "rss_max_mb": max(mb for _, mb in rss),
        "rss_flat": abs(rss[-1][1] - mid) <= FLAT_MB,
    }


def utilisation(samples: list[dict], since: float) -> dict:
    """Each process's CPU as a share of one CPU, and the machine's busy share of all its CPUs, over
    the samples from `since` (seconds after go) to the last."""
    window = [s for s in samples if s["t"] >= since] or samples[-1:]
    first, last = window[0], samples[-1]
    span = last["t"] - first["t"]
    out: dict = {"from_s": first["t"], "to_s": last["t"]}
    for name in PROCESSES:
        a, b = first.get(f"{name}_cpu_s"), last.get(f"{name}_cpu_s")
        out[name] = (b - a) / span if span > 0 and a is not None and b is not None else None
    busy = last.get("machine_busy_s", 0) - first.get("machine_busy_s", 0)
    total = last.get("machine_total_s", 0) - first.get("machine_total_s", 0)
    out["machine"] = busy / total if total > 0 else None
    if out["machine"] is not None and span > 0:  # CPUs' worth of work on the machine that is none of the three
        ours = sum(out[name] or 0.0 for name in PROCESSES)
        out["other_cpus"] = max(0.0, busy / span - ours)
    return out


def storage_phases(samples: list[dict], per_second: list[int], since: float) -> dict:
    """Reads per second from `since` on, split by whether the poller made STORAGE_BUSY tracking-queue
    calls or more in that second (taking operations, or putting back those whose lease ran out)."""
    busy, quiet = [], []
    for previous, sample in zip(samples, samples[1:], strict=False):
        k = round(sample["t"]) - 1  # the sample at k+1 s covers second k
        if k < since or k >= len(per_second):
            continue
        calls = sum(sample["storage_calls"].values()) - sum(previous["storage_calls"].values())
        (busy if calls >= STORAGE_BUSY else quiet).append(per_second[k])
    return {
        "busy_seconds": len(busy),
        "reads_per_s_median_busy": statistics.median(busy) if busy else None,
        "quiet_seconds": len(quiet),
        "reads_per_s_median_quiet": statistics.median(quiet) if quiet else None,
    }


def bounds(util: dict) -> list[str]:
    """What held the rate: each process at SATURATED of one CPU or more, and the machine when all
    its CPUs were MACHINE_BUSY."""
    found = [name for name in PROCESSES if (util.get(name) or 0) >= SATURATED]
    if (util.get("machine") or 0) >= MACHINE_BUSY:
        found.append("machine")
    return found


def row(previous: dict | None, sample: dict) -> str:
    if previous is None:
        return f"{'t s':>5}  {'RSS MB':>7}  {'reads/s':>7}  {'app %':>6}  {'emulator %':>10}  {'Azurite %':>9}  " + (
            f"{'machine %':>9}  {'storage calls/s':>15}  {'ms/call':>7}"
        )
    dt = (sample["t"] - previous["t"]) or 1.0

    def pct(key: str) -> str:
        a, b = previous.get(key), sample.get(key)
        return "-" if a is None or b is None else f"{100 * (b - a) / dt:.0f}"

    busy = sample["machine_busy_s"] - previous["machine_busy_s"]
    total = sample["machine_total_s"] - previous["machine_total_s"]
    calls = sum(sample["storage_calls"].values()) - sum(previous["storage_calls"].values())
    spent = sum(sample["storage_seconds"].values()) - sum(previous["storage_seconds"].values())
    rss = "-" if sample["rss_mb"] is None else f"{sample['rss_mb']:.1f}"
    return (
        f"{sample['t']:5.0f}  {rss:>7}  {(sample['reads'] - previous['reads']) / dt:7.0f}  {pct('app_cpu_s'):>6}  "
        f"{pct('emulator_cpu_s'):>10}  {pct('azurite_cpu_s'):>9}  {(100 * busy / total if total else 0):9.0f}  "
        f"{calls / dt:15.0f}  {(1000 * spent / calls if calls else 0):7.1f}"
    )


def summary_lines(doc: dict) -> list[str]:
    w, rates, rss, util, cpu = (
        doc["workload"],
        doc["rates"],
        doc["rss"],
        doc["utilisation_cycling"],
        doc["cpu_window_s"],
    )
    n = w["operations"]
    out = [
        f"{n} operations in flight over {w['subscriptions']} subscriptions, Retry-After {w['retry_after']} s: "
        f"{w['reads_due_per_s']:.0f} status reads due per second; the poller (16 workers) ran {w['seconds']} s"
    ]
    if rss:
        growth = rss["rss_end_mb"] - rss["rss_30s_mb"]
        out.append(
            f"RSS of the poller's process: {rss['rss_start_mb']:.1f} MB at the start, {rss['rss_30s_mb']:.1f} MB "
            f"after {rss['rss_30s_at_s']:.0f} s, {rss['rss_end_mb']:.1f} MB at the end (max {rss['rss_max_mb']:.1f}): "
            + ("flat" if rss["rss_flat"] else "NOT flat")
            + f" ({growth:+.1f} MB from {rss['rss_30s_at_s']:.0f} s to the end)"
        )
    reached = (
        f"all {n} by {rates['all_read_s']:.1f} s"
        if rates["all_read_s"] is not None
        else f"{rates['operations_read']} of {n}"
    )
    out.append(f"operations read at least once: {reached}")
    if rates["steady_seconds"]:
        out.append(
            f"status reads per second once cycling (from {rates['cycling_from_s']:.1f} s, {rates['steady_seconds']} s): "
            f"median {rates['reads_per_s_median']:.0f}, p10 {rates['reads_per_s_p10']:.0f}, "
            f"mean {rates['reads_per_s_mean']:.0f}"
        )
        if rates.get("busy_seconds"):
            out.append(
                f"  in the {rates['quiet_seconds']} s without tracking-queue traffic: median "
                f"{_num(rates['reads_per_s_median_quiet'])}; in the {rates['busy_seconds']} s with "
                f"{STORAGE_BUSY} or more tracking-queue calls (operations taken, or put back when their lease "
                f"runs out): median {_num(rates['reads_per_s_median_busy'])}"
            )
    else:
        out.append("status reads per second: the poller never came round to an operation twice (run longer)")

    def share(name: str) -> str:
        return "-" if util.get(name) is None else f"{util[name]:.0%}"

    def secs(value) -> str:
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f} s"

    out.append(
        f"CPU over the {w['seconds']} s: the poller {secs(cpu['app'])}, the emulator (this process) "
        f"{secs(cpu['emulator'])}, Azurite {secs(cpu['azurite'])}; once cycling, of one CPU: the poller "
        f"{share('app')}, the emulator {share('emulator')}, Azurite {share('azurite')}; the machine's "
        f"{doc['machine']['cpus']} CPUs {share('machine')} busy"
        + ("" if util.get("other_cpus") is None else f" (other work: {util['other_cpus']:.2f} CPUs)")
    )
    if rates.get("reads_total") and not math.isnan(cpu["app"]):
        out.append(f"the poller's CPU per status read: {1000 * cpu['app'] / rates['reads_total']:.2f} ms")
    calls, spent = doc["poller"].get("calls") or {}, doc["poller"].get("seconds") or {}
    if calls:
        each = ", ".join(
            f"{k} {calls.get(k, 0)} ({1000 * spent.get(k, 0) / calls[k]:.0f} ms each)" for k in spent if calls.get(k)
        )
        out.append(f"the poller's tracking-queue calls: {each}; messages taken {calls.get('received', 0)}")
    found = doc["bounds"]
    if found:
        out += [f"bound: {WHY[name]}" + (f" ({util[name]:.0%})" if name in util else "") for name in found]
    else:
        out.append("bound: no process is CPU-bound: the poller's 16 workers wait on the round trips")
    return out


def _num(value) -> str:
    return "-" if value is None else f"{value:.0f}"
