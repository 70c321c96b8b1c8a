"""Coverage-guided fuzzing of the request decoder (shared/request.py) with atheris.

Every input is a queue message body (bytes, as the queue trigger hands it over). The check is the
property suite's (tests/app/test_request_properties.py): decode_request returns a DeletionRequest or raises
InvalidRequest, never anything else, and the event written for the outcome can be written. An input the
decoder's last line of defence had to answer ("message could not be read") is a defect too.

Seeds: valid requests in each envelope (plain, Event Grid, CloudEvents with data, data as a JSON string
and data_base64), as JSON text and as base64, and a few invalid ones; libFuzzer mutates them, guided by
the coverage of the shared package, with a dictionary of JSON and request tokens.

    python -m localdev.fuzz_decode [--runs N] [--seconds S] [--seed N] [--corpus DIR]

Prints runs, elapsed time, uncaught exceptions, unwritable events and how many inputs gave an
InvalidRequest or a valid request; exits 1 when any input escaped or gave an unwritable event, and
saves each such input under .localrun/fuzz/.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["shared"]):
    from shared.request import DeletionRequest, InvalidRequest, decode_request

from tests.test_request_properties import event_problem  # noqa: E402 (after the instrumented import)

ROOT = Path(__file__).resolve().parents[1]
FINDINGS = ROOT / ".localrun" / "fuzz"
MESSAGE_ID = "fuzz-message-1"
DEFENCE = "message could not be read"  # the decoder's answer to an exception it did not expect
URI = "/subscriptions/4bf92f35-77b3-4da6-a3ce-929d0e0e4736/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/vm1"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TOKENS = [  # libFuzzer's dictionary: pieces a mutation may insert
    *(b'"resourceUri"', b'"checkpointId"', b'"requestId"', b'"correlationId"', b'"traceparent"'),
    *(b'"specversion"', b'"eventType"', b'"id"', b'"data"', b'"data_base64"', b'"subject"', b'"type"'),
    *(b'"1.0"', b"null", b"true", b"false", b"NaN", b"-Infinity", b"1e999999", b"9" * 40, b"[[[[", b"{{{{"),
    *(b'"\\ud800"', b'"\\udfff"', b'"\\ufffe"', b'"\\ufdd0"', b"\\u0000", b"\xef\xbb\xbf", b"\xed\xa0\x80", b"=="),
    *(b"/subscriptions/", b"/resourceGroups/", b"/providers/", b"/..", b"/./", b"//", b"%2F", b"\xef\xbf\xbe"),
]


def seeds() -> dict[str, bytes]:
    """Valid requests in each envelope and encoding, and a few invalid messages."""
    full = {"resourceUri": URI, "checkpointId": "cp-1", "requestId": "req-1", "correlationId": "c-1"}
    requests = {"minimal": {"resourceUri": URI}, "full": {**full, "traceparent": TRACEPARENT}}
    messages: dict[str, object] = {}
    for name, request in requests.items():
        data = json.dumps(request)
        messages[f"plain-{name}"] = request
        messages[f"eventgrid-{name}"] = {
            "id": "eg-1",
            "eventType": "T",
            "subject": "s",
            "eventTime": "t",
            "data": request,
        }
        messages[f"eventgrid-string-{name}"] = {"id": "eg-1", "eventType": "T", "data": data}
        event = {"specversion": "1.0", "type": "T", "source": "/s", "id": "ce-1", "traceparent": TRACEPARENT}
        messages[f"cloudevent-{name}"] = {**event, "data": request}
        messages[f"cloudevent-string-{name}"] = {**event, "data": data}
        messages[f"cloudevent-base64-{name}"] = {**event, "data_base64": base64.b64encode(data.encode()).decode()}
    corpus: dict[str, bytes] = {}
    for name, document in messages.items():
        text = json.dumps(document).encode()
        corpus[name] = text
        corpus[name + "-b64"] = base64.b64encode(text)
    corpus["array-of-one"] = b"[" + corpus["plain-minimal"] + b"]"
    corpus["deep"] = b"[" * 70 + b"]" * 70
    corpus["nan"] = b'{"resourceUri": "' + URI.encode() + b'", "x": NaN}'
    corpus["twice"] = b'{"resourceUri": "' + URI.encode() + b'", "resourceUri": "/x"}'
    return corpus


def describe(error: BaseException) -> str:
    """The exception and the innermost line that raised it."""
    frame = traceback.extract_tb(error.__traceback__)[-1]
    return f"{type(error).__name__}: {str(error)[:200]} at {Path(frame.filename).name}:{frame.lineno} ({frame.name})"


def dictionary_line(token: bytes) -> str:
    """One libFuzzer dictionary entry: printable ASCII as is, every other byte (and \\ and ") as \\xNN."""
    return '"' + "".join(chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\x{b:02x}" for b in token) + '"\n'


class Fuzzing:
    def __init__(self, runs: int, seconds: float, work: Path):
        self.max_runs, self.max_seconds, self.work = runs, seconds, work
        self.started = time.monotonic()
        self.runs = 0
        self.outcomes: Counter = Counter()
        self.findings: dict[str, Path] = {}  # each kind of finding, with one input that shows it

    def one_input(self, data: bytes) -> None:
        self.runs += 1
        try:
            outcome: DeletionRequest | InvalidRequest = decode_request(data, MESSAGE_ID)
            self.outcomes["valid request"] += 1
        except InvalidRequest as invalid:
            outcome = invalid
            self.outcomes["InvalidRequest"] += 1
            if invalid.message.startswith(DEFENCE):
                self.found("caught by the last line of defence", data, invalid.message)
        except Exception as error:
            self.found("uncaught exception", data, describe(error))
            outcome = None
        if outcome is not None:
            problem = event_problem(outcome)
            if problem:
                self.found("unwritable event", data, problem)
        if self.runs >= self.max_runs or time.monotonic() - self.started >= self.max_seconds:
            self.finish()

    def found(self, kind: str, data: bytes, detail: str) -> None:
        self.outcomes[kind] += 1
        FINDINGS.mkdir(parents=True, exist_ok=True)
        path = FINDINGS / f"{kind.replace(' ', '-')}-{hashlib.sha1(data).hexdigest()[:16]}"
        path.write_bytes(data)
        finding = f"{kind}: {detail}"
        if finding not in self.findings:
            self.findings[finding] = path.relative_to(ROOT)

    def finish(self) -> None:
        elapsed = time.monotonic() - self.started
        failures = sum(self.outcomes[k] for k in ("uncaught exception", "unwritable event"))
        failures += self.outcomes["caught by the last line of defence"]
        lines = [
            "",
            f"runs: {self.runs}",
            f"elapsed: {elapsed:.1f} s ({self.runs / max(elapsed, 1e-9):,.0f} runs/s)",
            f"uncaught exceptions: {self.outcomes['uncaught exception']}",
            f"caught by the last line of defence: {self.outcomes['caught by the last line of defence']}",
            f"unwritable events: {self.outcomes['unwritable event']}",
            f"InvalidRequest: {self.outcomes['InvalidRequest']}",
            f"valid requests: {self.outcomes['valid request']}",
            *(f"{finding} (input: {path})" for finding, path in list(self.findings.items())[:10]),
            "fuzz: FAILED" if failures else "fuzz: passed",
        ]
        print("\n".join(lines), flush=True)
        sys.stderr.flush()
        shutil.rmtree(self.work, ignore_errors=True)
        os._exit(1 if failures else 0)  # libFuzzer's loop never returns; end the process here


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000, help="inputs to run (default 100,000)")
    parser.add_argument("--seconds", type=float, default=float("inf"), help="stop after this long")
    parser.add_argument("--seed", type=int, default=1, help="libFuzzer's random seed (default 1)")
    parser.add_argument("--corpus", help="corpus directory to keep (default: a fresh one, removed afterwards)")
    parser.add_argument("--max-len", type=int, default=4096, help="longest input libFuzzer makes")
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)  # the decoder logs each dropped traceparent and each defect it answers

    work = Path(tempfile.mkdtemp(prefix="fuzz-decode-"))
    corpus = Path(args.corpus) if args.corpus else work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for name, data in seeds().items():
        (corpus / f"seed-{name}").write_bytes(data)
    dictionary = work / "tokens.dict"
    dictionary.write_text("".join(map(dictionary_line, TOKENS)), encoding="ascii")
    FINDINGS.mkdir(parents=True, exist_ok=True)

    fuzzing = Fuzzing(args.runs, args.seconds, work)
    print(f"fuzz: decode_request, {args.runs:,} runs at most, seed {args.seed}, corpus {corpus}", flush=True)
    libfuzzer = [
        sys.argv[0],
        f"-seed={args.seed}",
        "-runs=-1",  # Fuzzing.one_input ends the run, so that the summary is printed
        f"-max_len={args.max_len}",
        "-len_control=0",  # inputs up to max_len from the start (deep nesting needs length)
        "-timeout=10",  # an input that takes 10 s is a finding (a decoder that can be made slow)
        "-rss_limit_mb=4096",
        f"-dict={dictionary}",
        f"-artifact_prefix={FINDINGS}/",
        "-print_final_stats=0",
        str(corpus),
    ]
    try:
        atheris.Setup(libfuzzer, fuzzing.one_input)
        atheris.Fuzz()
    finally:  # reached only when libFuzzer itself gives up (it exits the process on a finding of its own)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
