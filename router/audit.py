"""The audit log: append-only, hash-chained JSON lines, one per routing decision. Never the prompt text.

Each line is a JSON object with `prev` (the previous line's `hash`; 64 zeros for the first) and
`hash` = SHA-256 over `prev` + "\\n" + the canonical JSON (sorted keys, no spaces) of the record
without `hash`. Editing, inserting, reordering or deleting any line breaks the chain from there on;
`verify` finds the first broken line. (Cutting lines off the end leaves a valid shorter chain: the
router logs its head hash at start so a truncation shows; shipping the log off-host closes that.)

Record fields: seq, time (UTC ISO-8601), caller, endpoint, model (as asked), route
(local|remote|refused), upstream_model, reasons, detectors {detector: findings}, findings
{kind: count}, redacted {kind: count}, prompt_hmac (HMAC-SHA256 of the canonical request body under
the site secret), conversation (HMAC key of the conversation, or null), stream.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def _canon(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev: str, record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256((prev + "\n" + _canon(body)).encode()).hexdigest()


def _last_line(f) -> bytes:
    f.seek(0, os.SEEK_END)
    end = f.tell()
    if end == 0:
        return b""
    pos, buf = end, b""
    while pos > 0:
        step = min(4096, pos)
        pos -= step
        f.seek(pos)
        buf = f.read(step) + buf
        stripped = buf.rstrip(b"\n")
        nl = stripped.rfind(b"\n")
        if nl != -1:
            return stripped[nl + 1:]
    return buf.rstrip(b"\n")


class AuditLog:
    """Appends records under an exclusive lock (safe across router worker processes), fsync'd."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.close(fd)

    def head(self) -> tuple[int, str]:
        with open(self.path, "rb") as f:
            return self._head(f)

    @staticmethod
    def _head(f) -> tuple[int, str]:
        line = _last_line(f)
        if not line:
            return 0, GENESIS
        rec = json.loads(line)
        return int(rec["seq"]), str(rec["hash"])

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        with open(self.path, "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                seq, prev = self._head(f)
                rec = {**record, "seq": seq + 1, "prev": prev}
                rec.setdefault("time", dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"))
                rec["hash"] = chain_hash(prev, rec)
                f.seek(0, os.SEEK_END)
                f.write((_canon(rec) + "\n").encode())
                f.flush()
                os.fsync(f.fileno())
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return rec


def leaked_identifiers(rec: dict[str, Any]) -> int:
    """How many detected identifiers a record says went out unredacted (must always be 0)."""
    if rec.get("route") != "remote":
        return 0
    red = rec.get("redacted") or {}
    return sum(max(0, n - red.get(k, 0)) for k, n in (rec.get("findings") or {}).items())


@dataclass
class AuditReport:
    path: str
    ok: bool
    records: int
    head: str
    first_bad_line: int | None = None
    error: str | None = None
    days: int = 30
    window_records: int = 0
    routes: dict[str, int] = field(default_factory=dict)
    with_findings: int = 0
    with_findings_out: int = 0
    """Requests in the window with a detection that went out (only ever redacted ones: else a breach)."""
    leaked: int = 0
    """Requests in the window that went out carrying an unredacted detection: must be 0."""
    redacted_out: int = 0

    @property
    def summary(self) -> str:
        if not self.ok:
            return f"audit chain BROKEN at line {self.first_bad_line}: {self.error}"
        return (f"chain intact ({self.records} records); last {self.days} days: {self.window_records} requests "
                f"({', '.join(f'{k} {v}' for k, v in sorted(self.routes.items())) or 'none'}); "
                f"{self.leaked} requests with a detected identifier went out"
                + (f" ({self.redacted_out} went out redacted)" if self.redacted_out else ""))


def verify(path: str | Path, *, days: int = 30, now: dt.datetime | None = None) -> AuditReport:
    """Check the whole chain and summarise the last `days` days."""
    path = Path(path)
    now = now or dt.datetime.now(dt.UTC)
    since = now - dt.timedelta(days=days)
    rep = AuditReport(str(path), ok=True, records=0, head=GENESIS, days=days)
    prev, seq = GENESIS, 0
    if not path.is_file():
        rep.ok, rep.error, rep.first_bad_line = False, "cannot read: no such file", 0
        return rep
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            try:
                rec = json.loads(raw)
            except ValueError as e:
                return _bad(rep, n, f"not JSON ({e})")
            if not isinstance(rec, dict):
                return _bad(rep, n, "not a JSON object")
            if rec.get("prev") != prev:
                return _bad(rep, n, "prev does not match the previous line's hash")
            if rec.get("hash") != chain_hash(prev, rec):
                return _bad(rep, n, "hash does not match the line's content")
            if rec.get("seq") != seq + 1:
                return _bad(rep, n, f"seq {rec.get('seq')} after {seq}")
            prev, seq = rec["hash"], rec["seq"]
            rep.records += 1
            try:
                t = dt.datetime.fromisoformat(rec["time"])
            except (KeyError, TypeError, ValueError):
                return _bad(rep, n, "no valid time")
            if t >= since:
                rep.window_records += 1
                route = str(rec.get("route"))
                rep.routes[route] = rep.routes.get(route, 0) + 1
                if rec.get("findings"):
                    rep.with_findings += 1
                    if route == "remote":
                        rep.with_findings_out += 1
                        if leaked_identifiers(rec):
                            rep.leaked += 1
                        else:
                            rep.redacted_out += 1
    rep.head = prev
    return rep


def _bad(rep: AuditReport, line: int, why: str) -> AuditReport:
    rep.ok, rep.first_bad_line, rep.error = False, line, why
    return rep
