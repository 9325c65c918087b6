"""The router's policy file: one YAML document, validated by a strict pydantic model.

Unknown keys, wrong types and impossible combinations are refused with one line naming the key
(`PolicyError`), so a typo in a compliance setting can never be silently ignored.

Secrets are never in the policy itself: it names files (root-only on the host, mode 0600/0400)
holding the closed API's key, the gateway's shared secret and the site secret that keys every
HMAC (conversation keys, prompt HMACs in the audit log).
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)


class PolicyError(ValueError):
    """A policy (or a secret file it names) that cannot be used; the message is one line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocalUpstream(_Strict):
    base_url: str = "http://vllm:8000/v1"
    """The local vLLM's OpenAI base URL (internal network)."""
    default_model: str
    """The local model that serves requests addressed to an alias but kept local."""
    api_key_file: Path | None = None
    timeout_s: float = Field(600.0, gt=0)


class RemoteUpstream(_Strict):
    base_url: str
    """The closed API's OpenAI-compatible base URL, e.g. https://api.openai.com/v1."""
    api_key_file: Path
    aliases: dict[str, str] = Field(min_length=1)
    """Model name a client asks for (`frontier`) → the closed API's model name."""
    timeout_s: float = Field(600.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http(s) URL")
        return v.rstrip("/")


class Gateway(_Strict):
    """How the router knows a request came through the TLS gateway (see router/README.md)."""

    secret_file: Path
    secret_header: str = "X-Selfhost-Gateway-Secret"
    caller_header: str = "X-Selfhost-Caller"
    data_source_header: str = "X-Selfhost-Data-Source"


LABEL_RE = re.compile(r"^[A-Za-z0-9._:@/-]{1,128}$")
"""A caller label (the gateway sets it from the API key: `selfhost keys add --label`)."""


class Callers(_Strict):
    remote_allowed: list[str] = []
    """Caller labels allowed to use the closed API at all; "*" means every caller."""
    local_only: list[str] = []
    """Caller labels whose requests always stay local (wins over remote_allowed)."""
    models: dict[str, list[str]] | None = None
    """Caller label → the model names it may ask for (the local model, adapter names, remote aliases, the
    difficulty alias; "*" in a list: any). Key "*": every caller not listed. None: no allow-list (anyone
    may ask for anything); a caller neither listed nor covered by "*" may ask for nothing."""

    @field_validator("remote_allowed", "local_only")
    @classmethod
    def _labels(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if c != "*" and not LABEL_RE.match(c)]
        if bad:
            raise ValueError(f"caller label(s) {bad}: letters, digits and ._:@/- only (or \"*\")")
        return v

    @field_validator("models")
    @classmethod
    def _allow_list(cls, v: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        if v is None:
            return v
        bad = [c for c in v if c != "*" and not LABEL_RE.match(c)]
        if bad:
            raise ValueError(f"caller label(s) {bad}: letters, digits and ._:@/- only (or \"*\")")
        for caller, names in v.items():
            if any(not n.strip() for n in names):
                raise ValueError(f"{caller}: empty model name")
        return v

    def may_use(self, caller: str, model: str) -> bool:
        """Whether `caller` may ask for `model` (always, without an allow-list)."""
        if self.models is None:
            return True
        names = self.models.get(caller, self.models.get("*", []))
        return "*" in names or model in names


class DataSources(_Strict):
    local_only: list[str] = []
    """Collections whose data never leaves: a request declaring one stays local, and the names are a
    content deny-list too (a prompt mentioning one stays local)."""


class Plugin(_Strict):
    name: str
    options: dict[str, Any] = {}


KNOWN_IDENTIFIERS = ("CREDIT_CARD", "IBAN_CODE", "UK_NHS", "US_SSN", "EMAIL_ADDRESS", "US_ITIN",
                     "AU_TFN", "AU_MEDICARE", "ES_NIF", "IT_FISCAL_CODE", "PL_PESEL", "IN_AADHAAR",
                     "SG_NRIC_FIN", "FI_PERSONAL_IDENTITY_CODE", "UK_NINO", "US_NPI", "US_MBI", "IP_ADDRESS")


class Detect(_Strict):
    identifiers: list[str] = ["CREDIT_CARD", "IBAN_CODE"]
    """Presidio entity types to detect (model-free pattern recognizers, checksum-validated where one exists)."""
    min_score: float = Field(0.5, ge=0, le=1)
    """Presidio score floor: a checksum-validated match scores 1.0; an unvalidated weak pattern < 0.5."""
    code_names: list[str] = []
    markings: list[str] = ["TOP SECRET", "SECRET", "CONFIDENTIAL", "INTERNAL ONLY"]
    markings_case_sensitive: bool = True
    """Markings are matched as written (upper case), so prose saying "keep it confidential" is not one."""
    patterns: dict[str, str] = {}
    """Site regexes, name → pattern (Python `re`), matched on the normalised text."""
    plugins: list[Plugin] = []
    """Extra detectors from the registry (e.g. a local ML detector, or `fault_injection` for drills)."""
    timeout_s: float = Field(5.0, gt=0)
    """Scanning costs ~1.5 µs per character on one core: 5 s covers ~3 M characters; past it → fail closed."""

    @field_validator("identifiers")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [e for e in v if e not in KNOWN_IDENTIFIERS]
        if bad:
            raise ValueError(f"unknown identifier type(s) {bad}; known: {', '.join(KNOWN_IDENTIFIERS)}")
        return v

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, v: dict[str, str]) -> dict[str, str]:
        for name, pat in v.items():
            try:
                re.compile(pat)
            except re.error as e:
                raise ValueError(f"pattern {name!r} does not compile: {e}") from None
        return v


class Redaction(_Strict):
    enabled: bool = False
    entities: list[str] = ["CREDIT_CARD", "IBAN_CODE", "UK_NHS", "US_SSN", "EMAIL_ADDRESS"]
    """Identifier types that may be replaced by placeholders (<CREDIT_CARD_1>) and sent out. Markings,
    code names, data sources and site patterns are never redacted: they keep the request local."""


class Difficulty(_Strict):
    alias: str = "auto"
    """A client asking for this model lets the router choose: hard → remote_alias, else local."""
    remote_alias: str | None = None
    """Which remote alias a hard `auto` request goes to (default: the first alias)."""
    min_chars: int = Field(6000, ge=1)
    keywords: list[str] = ["prove", "proof", "theorem", "refactor", "architecture", "optimize",
                           "step by step", "derive", "algorithm", "debug"]
    min_keywords: int = Field(2, ge=1)


class Conversations(_Strict):
    max_entries: int = Field(100_000, ge=1)
    store_file: Path | None = None
    """Where flagged-conversation keys (HMACs, never text) persist across restarts; None: memory only."""


class Audit(_Strict):
    path: Path


class Policy(_Strict):
    version: Literal[1] = 1
    local: LocalUpstream
    remote: RemoteUpstream | None = None
    """No remote section: nothing can ever go out."""
    gateway: Gateway
    site_secret_file: Path
    callers: Callers = Callers()
    data_sources: DataSources = DataSources()
    detect: Detect = Detect()
    on_detector_error: Literal["local", "refuse"] = "local"
    redaction: Redaction = Redaction()
    difficulty: Difficulty = Difficulty()
    conversations: Conversations = Conversations()
    audit: Audit

    @model_validator(mode="after")
    def _aliases(self) -> Policy:
        if self.remote is not None:
            if self.difficulty.alias in self.remote.aliases:
                raise ValueError(f"difficulty.alias {self.difficulty.alias!r} is also a remote alias")
            if self.difficulty.remote_alias and self.difficulty.remote_alias not in self.remote.aliases:
                raise ValueError(f"difficulty.remote_alias {self.difficulty.remote_alias!r} is not a remote alias")
        return self

    def remote_alias_for_auto(self) -> str | None:
        if self.remote is None:
            return None
        return self.difficulty.remote_alias or next(iter(self.remote.aliases))


def _one_line(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    more = f" (+{len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    return f"{where}: {msg}{more}"


def parse_policy(data: Any, *, source: str = "policy") -> Policy:
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: the policy must be a YAML mapping")
    try:
        return Policy.model_validate(data)
    except ValidationError as e:
        raise PolicyError(f"{source}: {_one_line(e)}") from None


def load_policy(path: str | Path) -> Policy:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise PolicyError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise PolicyError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    return parse_policy(data, source=str(path))


def read_secret(path: Path, *, what: str) -> str:
    """A secret from a file that only its owner can read (0600/0400). The value is never logged."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise PolicyError(f"{what} file {path}: {e.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PolicyError(f"{what} file {path}: readable by group/other (mode {stat.S_IMODE(st.st_mode):o}); "
                          "chmod 600 it")
    value = path.read_text(encoding="utf-8").strip()
    if not value:
        raise PolicyError(f"{what} file {path}: empty")
    return value
