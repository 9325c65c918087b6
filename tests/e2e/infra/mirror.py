"""Find the Debian mirror this machine uses, so images fetch packages from the same place."""
from __future__ import annotations

import re
from pathlib import Path

DEFAULT = "http://deb.debian.org/debian"


def _uris(apt_dir: Path) -> list[str]:
    uris: list[str] = []
    files = sorted(apt_dir.glob("sources.list.d/*.sources")) + sorted(
        apt_dir.glob("sources.list.d/*.list")) + [apt_dir / "sources.list"]
    for f in files:
        if not f.is_file():
            continue
        text = f.read_text(errors="replace")
        uris += re.findall(r"^\s*URIs:\s*(\S+)", text, re.M)  # deb822
        uris += re.findall(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M)  # one-line
    return uris


def debian_mirrors(apt_dir: Path = Path("/etc/apt")) -> tuple[str, str]:
    """(main archive URL, security archive URL) used by the host's apt."""
    uris = [u.rstrip("/") for u in _uris(apt_dir)]
    main = next((u for u in uris if u.endswith("/debian")), DEFAULT)
    security = next((u for u in uris if u.endswith("/debian-security")),
                    main.rsplit("/", 1)[0] + "/debian-security")
    return main, security


def sources_file(suite: str, apt_dir: Path = Path("/etc/apt")) -> str:
    """A deb822 sources file for images: same mirrors as the host, incl. updates + security."""
    main, security = debian_mirrors(apt_dir)
    key = "/usr/share/keyrings/debian-archive-keyring.gpg"
    return (
        f"Types: deb\nURIs: {main}\nSuites: {suite} {suite}-updates\nComponents: main\n"
        f"Signed-By: {key}\n\n"
        f"Types: deb\nURIs: {security}\nSuites: {suite}-security\nComponents: main\n"
        f"Signed-By: {key}\n"
    )
