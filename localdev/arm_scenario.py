"""Scripting the ARM emulator: :class:`Fault` (one answer that is not the normal one) and
:class:`Scenario` (what a deletion request, its operation and the VM instance GETs get), and the
answers a fault makes (:func:`fault_reply`, :func:`after_fault`)."""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass, field
from typing import Any

from localdev.arm_common import Reply, full_error

__all__ = ["Fault", "Scenario", "add_retry_after", "after_fault", "fault_reply", "fault_stops"]

_SUBMIT_ANSWERS = ("accepted", "accepted_async", "done_200", "done_204")
_FINAL_ANSWERS = ("200", "204", "Succeeded", "Failed", "Canceled")


@dataclass(frozen=True)
class Fault:
    """One scripted answer that is not the normal one.

    - ``status``: HTTP status to answer with. ``None`` (with ``drop=False``) means "no answer of my
      own": sleep ``delay`` seconds, then give the normal answer (a slow answer).
    - ``error``: an ARM error ``{"code": ..., "message": ...}``; sent as a full ErrorResponse
      ``{"error": {code, message, target, details, additionalInfo}}`` (missing members filled in).
      ``None`` = empty body (e.g. a 500 with no ARM error).
    - ``retry_after``: ``Retry-After`` header; int seconds (sent as an HTTP-date when the scenario
      says ``retry_after_http_date``) or a str sent verbatim. ``None`` = no header.
    - ``delay``: seconds to sleep before answering (or before dropping).
    - ``drop``: close the connection without any answer, before the request is processed.
    - ``drop_after_processing``: a lost answer: process the request fully (an accepted POST starts
      its operation, a status GET counts, an instance GET settles due operations), then close the
      connection without answering.
    - ``location``: ``Location`` header (e.g. for ``Fault(status=302, location=...)``).
    - ``headers``: any extra response headers.
    """

    status: int | None = None
    error: dict | None = None
    retry_after: int | str | None = None
    delay: float = 0.0
    drop: bool = False
    location: str | None = None
    headers: dict = field(default_factory=dict)
    drop_after_processing: bool = False

    @classmethod
    def throttled(cls, retry_after: int | str | None = 1) -> Fault:
        """429 with ``Retry-After`` and ARM's ``TooManyRequests`` error body."""
        return cls(
            status=429,
            retry_after=retry_after,
            error={"code": "TooManyRequests", "message": "The request is being throttled (emulated)."},
        )

    @classmethod
    def arm_error(cls, status: int, code: str, message: str = "", **error: Any) -> Fault:
        """``status`` with a full ErrorResponse ``{"error": {"code": code, "message": message, ...}}``."""
        return cls(status=status, error={"code": code, "message": message or code, **error})

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        """Sleep ``seconds``, then answer normally."""
        return cls(delay=seconds)

    @classmethod
    def dropped(cls, delay: float = 0.0) -> Fault:
        """Close the connection without answering (after ``delay`` seconds)."""
        return cls(drop=True, delay=delay)

    @classmethod
    def lost(cls, delay: float = 0.0) -> Fault:
        """Process the request fully, then close the connection without answering (after ``delay``)."""
        return cls(drop_after_processing=True, delay=delay)

    def __post_init__(self) -> None:
        if self.status is not None and not 100 <= int(self.status) <= 599:
            raise ValueError(f"Fault.status out of range: {self.status}")
        if self.drop and self.status is not None:
            raise ValueError("Fault: drop=True takes no status")
        if self.drop_after_processing and (self.drop or self.status is not None):
            raise ValueError("Fault: drop_after_processing=True takes no status and no drop")
        if self.delay < 0:
            raise ValueError("Fault.delay must be >= 0")


@dataclass
class Scenario:
    """What the emulator does with a deletion request (and the operation it starts).

    Submit (the POST):

    - ``submit_faults``: answers given, in order, to the first POSTs of each request identity
      (resourceUri + checkpoint id) before the real answer, e.g. ``[Fault.throttled(1),
      Fault(status=503), Fault.slow(5.0), Fault.dropped()]``. Each is used once.
    - ``submit``: the real answer. ``"accepted"``: 202 with ``Location`` (+ ``Retry-After``);
      ``"accepted_async"``: 202 with ``Azure-AsyncOperation`` and ``Location``; ``"done_200"`` /
      ``"done_204"``: finished at once (no operation); or a ``Fault`` with a status (e.g.
      ``Fault.arm_error(409, "Conflict", "...")``) answered to every later POST.
    - ``retry_after``: ``Retry-After`` seconds on 202 answers and on "still running" status answers
      (default 0 so tests run fast); ``None`` = omit the header.
    - ``retry_after_http_date``: send ``Retry-After`` values as HTTP-dates (now + seconds).

    Status (GETs of the returned URLs):

    - ``poll_faults``: answers given, in order, to the operation's first status GETs before the
      normal ones (``Fault.throttled()``, ``Fault(status=500)``, ``Fault.slow(2)``,
      ``Fault.dropped()``, ``Fault(status=302, location=...)``...). Each is used once per operation.
    - ``done_after_polls``: the first ``k`` normal status GETs answer "still running" (202 on the
      Location URL, 200 ``{"status": "InProgress"}`` on the Azure-AsyncOperation URL) ...
    - ``done_after_seconds``: ... and it keeps running until this many seconds after the submit.
      Both must be reached; then the operation is done and every later GET gets the final answer.
    - ``final``: ``"200"`` / ``"204"`` (Location URL answers that status, empty body);
      ``"Succeeded"`` (default; Location 200, async status Succeeded); ``"Failed"`` (async status
      Failed with ``error``; the Location URL answers 400 with that ErrorResponse); ``"Canceled"``
      (async status Canceled, with ``error`` if given; the Location URL answers 400 with
      ``OperationCanceled``); or a ``Fault`` with a status: every status URL of the operation
      answers that (an ErrorResponse failure, ``Fault(status=500)`` with no body, or a redirect
      ``Fault(status=302, location=...)``).
    - ``error``: the ARM error of a Failed/Canceled operation (default ``CheckpointDeleteFailed``).
    - ``new_location_each_poll``: every 202 "still running" answer of the Location URL carries a
      new ``Location`` (same host, another URL of the same operation).
    - ``location_base``: base of the status URLs handed out (default: the emulator's own
      endpoint), e.g. ``emulator.other_host_endpoint`` to test untrusted status URLs.

    VM instance (GETs of the instance, when this scenario is the resourceUri's script or the default):

    - ``instance_faults``: answers given, in order, to the first instance GETs of each resourceUri
      before the normal ones, like ``poll_faults``. Each is used once.
    """

    submit_faults: list[Fault] = field(default_factory=list)
    submit: str | Fault = "accepted"
    retry_after: int | None = 0
    retry_after_http_date: bool = False
    done_after_polls: int = 0
    done_after_seconds: float = 0.0
    final: str | Fault = "Succeeded"
    error: dict | None = None
    poll_faults: list[Fault] = field(default_factory=list)
    new_location_each_poll: bool = False
    location_base: str | None = None
    instance_faults: list[Fault] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.submit, Fault):
            if self.submit.status is None:
                raise ValueError("Scenario.submit Fault needs a status")
        elif self.submit not in _SUBMIT_ANSWERS:
            raise ValueError(f"Scenario.submit must be one of {_SUBMIT_ANSWERS} or a Fault")
        if isinstance(self.final, Fault):
            if self.final.status is None:
                raise ValueError("Scenario.final Fault needs a status")
        elif str(self.final) not in _FINAL_ANSWERS:
            raise ValueError(f"Scenario.final must be one of {_FINAL_ANSWERS} or a Fault")
        else:
            self.final = str(self.final)
        if self.done_after_polls < 0 or self.done_after_seconds < 0:
            raise ValueError("done_after_polls / done_after_seconds must be >= 0")

    @property
    def succeeds(self) -> bool:
        """Whether an operation of this scenario ends Succeeded (and so removes its checkpoint)."""
        return self.final in ("200", "204", "Succeeded")


def add_retry_after(reply: Reply, value: int | str | None, scenario: Scenario) -> None:
    if value is None:
        return
    if isinstance(value, str):
        reply.headers.append(("Retry-After", value))
    elif scenario.retry_after_http_date:
        reply.headers.append(("Retry-After", email.utils.formatdate(time.time() + int(value), usegmt=True)))
    else:
        reply.headers.append(("Retry-After", str(int(value))))


def after_fault(reply: Reply, fault: Fault | None) -> Reply:
    """The normal answer under a fault that lets the request be processed (slow, lost)."""
    if fault is not None:
        reply.delay += fault.delay
        reply.drop = reply.drop or fault.drop_after_processing
    return reply


def fault_reply(fault: Fault, scenario: Scenario, target: str) -> Reply:
    """The answer of a fault that stops the request (a status, or a dropped connection)."""
    if fault.drop:
        return Reply(drop=True, delay=fault.delay)
    status = int(fault.status or 500)
    if fault.error is not None:
        reply = Reply.json(status, full_error(fault.error, target), delay=fault.delay)
    else:
        reply = Reply(status=status, delay=fault.delay)
    if fault.location:
        reply.headers.append(("Location", fault.location))
    add_retry_after(reply, fault.retry_after, scenario)
    reply.headers.extend((str(k), str(v)) for k, v in fault.headers.items())
    return reply


def fault_stops(fault: Fault | None) -> bool:
    """Whether ``fault`` answers in place of the request (else it only slows or loses the answer)."""
    return fault is not None and (fault.drop or fault.status is not None)
