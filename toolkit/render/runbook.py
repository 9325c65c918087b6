"""Runbook pages: the topics the renderer writes under BUNDLE/files/runbooks/, and finding them again.

Each page is rendered per deployment from `templates/runbooks/<topic>.md.j2` with this site's hosts,
ports, model and commands (see toolkit/render.py: `template_outputs`, `template_context`). Alert
rules (toolkit/monitoring.py) name the topic that answers them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import ConfigError, check_bundle
from toolkit.render.site import bundle_hosts

OVERVIEW = "overview"
TOPICS: dict[str, str] = {  # topic → one-line title (order = `selfhost runbook` listing order)
    OVERVIEW: "What runs where; health, logs, restart, API keys, common failures",
    "oom-kv-cache": "The server exits at start: out of memory / KV cache too small",
    "driver-cuda-mismatch": "The server cannot use the GPU: driver ↔ CUDA ↔ image mismatch",
    "slow-tokens": "Answers are slow: time to first token or tokens/s below the plan",
    "disk-full": "A host's disk is full (weights, images, logs)",
    "certificate-expiry": "The gateway's TLS certificate expires or clients reject it",
    "leaked-api-key": "An API key leaked: revoke and rotate it now",
    "host-lost": "A host is down or unreachable",
}
LOCK = "selfhost.lock.yml"


def page_file(topic: str) -> str:
    """Bundle path under files/ of a topic's page."""
    return "runbooks/RUNBOOK.md" if topic == OVERVIEW else f"runbooks/{topic}.md"


def template_name(topic: str) -> str:
    return "runbooks/RUNBOOK.md.j2" if topic == OVERVIEW else f"runbooks/{topic}.md.j2"


@dataclass(frozen=True)
class Page:
    topic: str
    """Topic name."""
    title: str
    """One line."""
    path: Path
    """The rendered page in the bundle."""


def check_topic(topic: str) -> str:
    if topic in TOPICS:
        return topic
    close = difflib.get_close_matches(topic, list(TOPICS), n=1, cutoff=0.4)
    raise ConfigError(f"no runbook topic '{topic}'" + (f" — did you mean '{close[0]}'?" if close else ""),
                      hint="selfhost runbook  lists the topics")


def find_bundle(bundle: Path | None, site_hosts: list[str] | None, search: Path = Path("build")) -> Path:
    """The bundle to read pages from: the one given, or the only bundle under `search` for the site's hosts."""
    if bundle is not None:
        check_bundle(bundle, (LOCK,))
        return Path(bundle)
    candidates = sorted(p.parent for p in Path(search).glob(f"*/{LOCK}"))
    if site_hosts is not None:
        candidates = [c for c in candidates if set(site_hosts) <= _bundle_hosts(c)]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ConfigError(f"no rendered bundle for this site under {search}/",
                          fix="render one first, or pass --bundle DIR", hint="selfhost render plan.yml -i SITE")
    raise ConfigError(f"several bundles under {search}/: " + ", ".join(str(c) for c in candidates),
                      fix=f"pass --bundle {candidates[0]}")


def _bundle_hosts(bundle: Path) -> set[str]:
    try:
        return set(bundle_hosts(bundle))
    except ConfigError:  # an unreadable candidate is not this site's bundle
        return set()


def pages(bundle: Path) -> list[Page]:
    """Every topic's page in the bundle (rendered or not: `read` says so)."""
    return [Page(t, title, Path(bundle) / "files" / page_file(t)) for t, title in TOPICS.items()]


def read(bundle: Path, topic: str) -> str:
    topic = check_topic(topic)
    path = Path(bundle) / "files" / page_file(topic)
    if not path.is_file():
        raise ConfigError(f"{path}: missing (the bundle was rendered by an older selfhost)",
                          fix="render the bundle again", hint="selfhost render plan.yml -i SITE")
    return path.read_text()
