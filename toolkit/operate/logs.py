"""`selfhost logs`: container logs from the hosts (`playbooks/logs.yml`, `docker logs --timestamps`).

Lines of stdout and stderr are merged by their Docker timestamp. Every line passes `redact`
before it leaves this module: the gateway strips the Authorization header and vLLM does not log
it, but an API key must never reach a terminal or a CI log, so `Bearer …` values and key-like
assignments are masked anyway. `follow` polls with `--since <last timestamp>` (Docker has no
cross-host stream over SSH) until interrupted. Pure except `fetch`/`follow`.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from toolkit.deploy import readout

FACT = readout.Fact(playbook="logs.yml", var="_selfhost_logs", kind=dict, nothing="logs reported nothing")
SERVICES = ("vllm", "gateway")
POLL_S = 2.0
REDACTED = "[REDACTED]"

_TS_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d))\s?(.*)$")
_SECRET_RES = (
    re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?i)((?:api[_-]?key|authorization|token|password|secret)[\"']?\s*[:=]\s*[\"']?)(?!\[REDACTED)[^\s\"',}]{8,}"),
)


@dataclass(frozen=True)
class LogLine:
    host: str
    ts: str
    """Docker's RFC 3339 timestamp (nanoseconds); sorts as text."""
    text: str
    """The line, already redacted."""

    def to_dict(self) -> dict:
        return asdict(self)


def redact(text: str) -> str:
    """Mask bearer tokens and key/token/password assignments."""
    for pattern in _SECRET_RES:
        text = pattern.sub(lambda mt: mt.group(1) + REDACTED, text)
    return text


def parse(host: str, stdout: str, stderr: str) -> list[LogLine]:
    """`docker logs --timestamps` output (stdout and stderr) → lines in time order, redacted."""
    lines = []
    for stream in (stdout or "", stderr or ""):
        for raw in stream.splitlines():
            match = _TS_RE.match(raw)
            ts, text = (match.group(1), match.group(2)) if match else ("", raw)
            lines.append(LogLine(host=host, ts=_sortable(ts), text=redact(text)))
    return sorted(lines, key=lambda ln: ln.ts)  # stable: same-time lines keep their stream order


def _sortable(ts: str) -> str:
    """Pad the fraction to 9 digits so timestamps compare as text (Docker trims trailing zeros)."""
    match = re.match(r"^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", ts)
    if not match:
        return ts
    base, frac, tz = match.groups()
    return f"{base}.{(frac or '').ljust(9, '0')[:9]}{tz}"


def new_lines(lines: Iterable[LogLine], seen: set[tuple[str, str, str]]) -> list[LogLine]:
    """The lines not shown yet (a poll with --since T returns the lines at T again); updates `seen`."""
    fresh = []
    for line in lines:
        key = (line.host, line.ts, line.text)
        if key not in seen:
            seen.add(key)
            fresh.append(line)
    return fresh


def shape(answers: dict[str, Any]) -> tuple[list[LogLine], dict[str, str]]:
    """Per-host reports (`readout.gather` answers) → (merged lines, host → error)."""
    lines: list[LogLine] = []
    errors: dict[str, str] = {}
    for host, raw in answers.items():
        if isinstance(raw, readout.Unreachable):
            errors[host] = f"unreachable: {raw.why}"
            continue
        if isinstance(raw, readout.NoReport):
            errors[host] = raw.why
            continue
        if int(raw.get("rc", 0) or 0) != 0:
            errors[host] = redact(" ".join(str(raw.get("stderr") or "docker logs failed").split()))[:500]
            continue
        lines += parse(host, raw.get("stdout") or "", raw.get("stderr") or "")
    return sorted(lines, key=lambda ln: ln.ts), errors


def fetch(bundle: Path, hosts: list[str], *, service: str = "vllm", since: str | None = None,
          tail: int | str = 100, limit: str | None = None) -> tuple[list[LogLine], dict[str, str]]:
    """One read of the logs (all hosts, or `limit`)."""
    extravars = {"selfhost_logs_service": service, "selfhost_logs_since": since or "", "selfhost_logs_tail": str(tail)}
    return shape(readout.gather(bundle, FACT, hosts, limit=limit, extravars=extravars))


def follow(read: Callable[[str | None], tuple[list[LogLine], dict[str, str]]],
           emit: Callable[[list[LogLine], dict[str, str]], None], *, since: str | None = None,
           interval_s: float = POLL_S, max_polls: int | None = None, sleep: Callable[[float], None] = time.sleep) -> int:
    """Poll `read(since)` every `interval_s`, emitting only new lines, until `max_polls` (or Ctrl-C in the caller).

    The first read uses the caller's `since`; later reads ask for lines since the newest timestamp
    seen. Returns the number of polls made.
    """
    seen: set[tuple[str, str, str]] = set()
    polls = 0
    cursor = since
    while max_polls is None or polls < max_polls:
        if polls:
            sleep(interval_s)
        lines, errors = read(cursor)
        polls += 1
        fresh = new_lines(lines, seen)
        emit(fresh, errors)
        stamps = [ln.ts for ln in lines if ln.ts]
        if stamps:
            cursor = max(stamps)
    return polls
