"""A small OpenAI-compatible streaming load test (stdlib only: http.client + threads).

It always stops: workers take at most `max_requests` requests in all and start none after
`duration_s`; a request still streaming `grace_s` after that is cut off (and counted as an error).
Each request streams a chat completion and records the time to the first token and the gaps
between tokens (one SSE chunk with content ≈ one token in vLLM).

Pure apart from the network: returns a `BenchResult`, raises `ConfigError` for a bad target,
never prints.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from toolkit.errors import ConfigError
from toolkit.plan.model import Performance

DEFAULT_PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


@dataclass(frozen=True)
class Target:
    url: str
    """Base URL: `https://host:443` (gateway) or `http://127.0.0.1:8000` (vLLM directly)."""
    api_key: str | None = None
    """Bearer key (the gateway needs one; a bare vLLM does not)."""
    ca_file: str | None = None
    """CA certificate that signed the server's certificate (https)."""
    model: str | None = None
    """Model name to ask for; None = the first one `/v1/models` lists."""


@dataclass
class _One:
    ok: bool = False
    status: int | None = None
    error: str | None = None
    ttft_s: float | None = None
    gaps_s: list[float] = field(default_factory=list)
    output_tokens: int = 0
    latency_s: float = 0.0


@dataclass(frozen=True)
class BenchResult:
    url: str
    """What was measured."""
    model: str
    """Model asked for."""
    concurrency: int
    """Parallel streams."""
    requests: int
    """Requests sent."""
    ok: int
    """Requests that streamed to the end."""
    errors: int
    """Requests that failed (HTTP status, connection, cut off)."""
    duration_s: float
    """Wall time from the first request to the last answer."""
    requests_per_s: float
    """Completed requests per second."""
    output_tokens: int
    """Tokens generated over all successful requests."""
    output_tokens_per_s: float
    """Aggregate generation throughput."""
    per_stream_tokens_per_s: float | None
    """1 / mean inter-token latency: the decode speed one user sees."""
    ttft_p50_s: float | None
    """Time to first token, median."""
    ttft_p95_s: float | None
    """Time to first token, 95th percentile."""
    itl_p50_s: float | None
    """Inter-token latency, median."""
    itl_p95_s: float | None
    """Inter-token latency, 95th percentile."""
    error_samples: list[str]
    """Up to five distinct error messages."""
    predicted: Performance | None = None
    """The plan's speed model (`Plan.performance`), when a plan was given."""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["predicted"] = self.predicted.model_dump(mode="json") if self.predicted is not None else None
        return d


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); None for no values."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


class _Client:
    """One keep-alive connection per worker thread."""

    def __init__(self, target: Target, timeout_s: float) -> None:
        parts = urlsplit(target.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"--url {target.url}: expected http://HOST:PORT or https://HOST:PORT")
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname, parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout_s = timeout_s
        self.target = target
        self.context = None
        if self.https:
            try:
                self.context = ssl.create_default_context(cafile=target.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"--ca {target.ca_file}: cannot load it as a CA certificate ({exc})") from None
        self.conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self.conn is None:
            if self.https:
                self.conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout_s,
                                                        context=self.context)
            else:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.target.api_key:
            h["Authorization"] = f"Bearer {self.target.api_key}"
        return h

    def request(self, method: str, path: str, body: dict | None = None) -> http.client.HTTPResponse:
        conn = self._connect()
        try:
            conn.request(method, self.prefix + path, body=None if body is None else json.dumps(body),
                         headers=self.headers())
            return conn.getresponse()
        except Exception:
            self.close()
            raise


def discover_model(target: Target, timeout_s: float = 10.0) -> str:
    """The first model `/v1/models` lists (raises ConfigError with the reason when the server says no)."""
    client = _Client(target, timeout_s)
    try:
        resp = client.request("GET", "/v1/models")
        body = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise ConfigError(f"{target.url}/v1/models: {_describe(exc)}",
                          fix="check the URL, that the server is up, and --ca for https") from None
    finally:
        client.close()
    if resp.status in (401, 403):
        raise ConfigError(f"{target.url}/v1/models: HTTP {resp.status} (API key refused or missing)",
                          fix="pass --api-key-file FILE (or set SELFHOST_API_KEY)")
    if resp.status != 200:
        raise ConfigError(f"{target.url}/v1/models: HTTP {resp.status}: {body[:200]!r}")
    try:
        return json.loads(body)["data"][0]["id"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ConfigError(f"{target.url}/v1/models: no model listed", fix="pass the model name with --model") from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message}); pass the site CA with --ca"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _one(client: _Client, model: str, prompt: str, max_tokens: int, hard_deadline: float) -> _One:
    r = _One()
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.monotonic()
    last = None
    chunks = 0
    usage_tokens = None
    done = False
    try:
        resp = client.request("POST", "/v1/chat/completions", body)
        r.status = resp.status
        if resp.status != 200:
            r.error = f"HTTP {resp.status}: {resp.read()[:200].decode(errors='replace').strip()}"
            if resp.will_close:
                client.close()
            return r
        while True:
            if time.monotonic() > hard_deadline:
                r.error = "cut off: still streaming when the test ended"
                client.close()
                return r
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                resp.read()  # the chunked body's end: the keep-alive connection is reusable only after it
                break
            event = json.loads(data)
            if event.get("usage"):
                usage_tokens = event["usage"].get("completion_tokens")
            for choice in event.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("content") or delta.get("reasoning_content"):
                    now = time.monotonic()
                    if last is None:
                        r.ttft_s = now - start
                    else:
                        r.gaps_s.append(now - last)
                    last = now
                    chunks += 1
    except (OSError, http.client.HTTPException, ValueError) as exc:
        client.close()
        r.error = _describe(exc)
        return r
    if not done:
        client.close()
        r.error = "stream ended without [DONE]"
        return r
    if resp.will_close:
        client.close()
    r.latency_s = time.monotonic() - start
    r.output_tokens = usage_tokens if usage_tokens is not None else chunks
    r.ok = True
    return r


def measure(target: Target, *, concurrency: int = 4, duration_s: float = 30.0, max_requests: int = 100,
        max_tokens: int = 128, prompt: str = DEFAULT_PROMPT, timeout_s: float = 60.0, grace_s: float = 30.0,
        prediction: Performance | None = None) -> BenchResult:
    """Run the load test; returns when `max_requests` are done or `duration_s` (+ grace for in-flight) is over."""
    if concurrency < 1 or max_requests < 1 or duration_s <= 0 or max_tokens < 1:
        raise ConfigError("--concurrency, --requests, --duration and --max-tokens must be positive")
    model = target.model or discover_model(target, timeout_s=min(timeout_s, 30.0))
    lock = threading.Lock()
    results: list[_One] = []
    issued = 0
    start = time.monotonic()
    stop_starting = start + duration_s
    hard_deadline = stop_starting + grace_s

    def worker() -> None:
        nonlocal issued
        client = _Client(target, timeout_s)
        try:
            while True:
                with lock:
                    if issued >= max_requests or time.monotonic() >= stop_starting:
                        return
                    issued += 1
                one = _one(client, model, prompt, max_tokens, hard_deadline)
                with lock:
                    results.append(one)
        finally:
            client.close()

    _Client(target, timeout_s)  # validate the URL and CA before starting threads
    threads = [threading.Thread(target=worker, name=f"bench-{i}", daemon=True) for i in range(min(concurrency, max_requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(hard_deadline - time.monotonic(), 0) + timeout_s)
    elapsed = max(time.monotonic() - start, 1e-9)

    with lock:
        done = list(results)
    ok = [r for r in done if r.ok]
    ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
    gaps = [g for r in ok for g in r.gaps_s]
    tokens = sum(r.output_tokens for r in ok)
    errors = [r.error or "unknown error" for r in done if not r.ok]
    mean_gap = sum(gaps) / len(gaps) if gaps else None
    return BenchResult(
        url=target.url, model=model, concurrency=concurrency, requests=len(done), ok=len(ok),
        errors=len(errors), duration_s=round(elapsed, 3),
        requests_per_s=round(len(ok) / elapsed, 3), output_tokens=tokens,
        output_tokens_per_s=round(tokens / elapsed, 2),
        per_stream_tokens_per_s=round(1 / mean_gap, 2) if mean_gap else None,
        ttft_p50_s=_r(percentile(ttfts, 50)), ttft_p95_s=_r(percentile(ttfts, 95)),
        itl_p50_s=_r(percentile(gaps, 50)), itl_p95_s=_r(percentile(gaps, 95)),
        error_samples=list(dict.fromkeys(errors))[:5], predicted=prediction,
    )


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def read_key(path: Path | None) -> str | None:
    """The API key from a file (first line), or None."""
    if path is None:
        return None
    try:
        key = Path(path).read_text().strip().splitlines()
    except OSError as exc:
        raise ConfigError(f"--api-key-file {path}: {exc.strerror}") from None
    if not key or not key[0].strip():
        raise ConfigError(f"--api-key-file {path}: empty")
    return key[0].strip()


def site_target(site, host: str | None, *, api_key: str | None, model: str | None = None,
                ca_file: str | None = None) -> Target:
    """The gateway of one inference host of `site` (a `toolkit.render.site.Site`): URL, CA and key."""
    names = [h.name for h in site.hosts]
    chosen = site.hosts[0] if host is None else next((h for h in site.hosts if h.name == host), None)
    if chosen is None:
        raise ConfigError(f"--host {host}: not an inference host of {site.path} ({', '.join(names)})")
    s = site.settings
    if ca_file is None:
        ca = Path(s.selfhost_tls_ca_cert) if s.selfhost_tls_mode == "site" and s.selfhost_tls_ca_cert else site.pki_dir / "ca.crt"
        ca = ca if ca.is_absolute() else site.path / ca
        if not ca.is_file():
            raise ConfigError(f"{ca}: CA certificate not found", fix="render the site first, or pass --ca FILE")
        ca_file = str(ca)
    if not api_key:
        raise ConfigError("the gateway needs an API key", fix="pass --api-key-file FILE or set SELFHOST_API_KEY")
    address = chosen.address or chosen.name
    return Target(url=f"https://{address}:{s.selfhost_gateway_port}", api_key=api_key, ca_file=ca_file, model=model)
