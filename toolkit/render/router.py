"""The hybrid router's deployment, decided in Python: the site's policy, checked, and what the playbooks get.

A site turns the router on by holding `SITE/router/policy.yaml` (no file: no router, bundles unchanged).
The site's file says *what* the router does (remote API and aliases, callers, data sources, detectors,
redaction, difficulty); render decides *where* things are on the host (local vLLM URL, secret and audit
paths inside the container) and writes the deployed policy into the bundle. The whole deployed policy is
validated by the router's own schema (`router.policy`, pydantic + YAML only) before anything is rendered,
so a typo in a compliance setting stops `selfhost render` with one line.

Secrets never enter the bundle: the closed API's key stays in the site (a 0600 file the policy names,
relative to SITE/router/) until the playbook copies it root-only to the host; the gateway's shared secret
and the HMAC site secret are generated on the host, once.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from toolkit.errors import RenderError
from toolkit.render.deploy_vars import EgressTarget, ImageArtifact, RouterVars

POLICY = Path("router") / "policy.yaml"
"""The site's policy file, relative to the site folder."""
BUNDLE_POLICY = "files/router/policy.yaml"
MOUNT = "/etc/selfhost/router"
STATE_MOUNT = "/var/lib/selfhost/router"
AUDIT_MOUNT = "/var/log/selfhost/router/audit.jsonl"
PORT = 8080
DEFAULT_IMAGE = "selfhost/router:1"
# Sections render decides (container paths, the local upstream): a site value would point at nothing.
DECIDED = ("local", "gateway", "site_secret_file", "audit")
LABEL_RE = re.compile(r"^[A-Za-z0-9._:@/-]{1,128}$")  # the router's caller-label rule (router/app.py)


@dataclass(frozen=True)
class SiteRouter:
    """The site's router, checked: the deployed policy (data), the key file and the egress targets."""

    policy: dict
    """The deployed policy as data (serialized to the bundle's files/router/policy.yaml)."""
    remote_key: Path | None
    """Control-node path of the closed API's key file; None without a remote section."""
    egress: list[EgressTarget]
    """Where the router may connect outside the host (the remote API's host and port)."""


def policy_file(site_path: Path) -> Path:
    return Path(site_path) / POLICY


def load(site_path: Path, *, name: str, vllm_container: str, vllm_port: int, served_model_name: str,
         multi_host_fleet: bool = False, spans_hosts: bool = False,
         adapter_names: tuple[str, ...] = ()) -> SiteRouter | None:
    """The site's router policy, validated whole; None when the site has none. `adapter_names`: the LoRA
    adapters the plan serves (a caller's model allow-list may name them). `spans_hosts`: the Ansible path
    with a replica over several hosts, refused (its rank 0 serves on the host network, which the router,
    on the deployment's internal Docker network, does not reach)."""
    path = policy_file(site_path)
    if not path.is_file():
        return None
    where = str(path)
    if multi_host_fleet:
        raise RenderError(f"{where}: the router is not deployed with selfhost_fleet yet",
                          fix="turn selfhost_fleet off, or remove router/policy.yaml from the site")
    if spans_hosts:
        raise RenderError(f"{where}: the router is not deployed with a replica that spans hosts yet (rank 0's "
                          "server runs on the host network, outside the internal network the router uses)",
                          fix="remove router/policy.yaml from the site, or render --target kubernetes, where the "
                              "router reaches the LeaderWorkerSet's Service")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise RenderError(f"{where}: not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RenderError(f"{where}: the policy must be a YAML mapping")
    for key in DECIDED:
        if key in data:
            raise RenderError(f"{where}: {key}: decided by selfhost render (the host's paths and the local "
                              "server); remove it")
    conversations = data.get("conversations")
    if isinstance(conversations, dict) and "store_file" in conversations:
        raise RenderError(f"{where}: conversations.store_file: decided by selfhost render; remove it")

    remote_key, egress = None, []
    remote = data.get("remote")
    deployed_remote = remote
    if isinstance(remote, dict):
        key_name = remote.get("api_key_file")
        if not isinstance(key_name, str) or not key_name:
            raise RenderError(f"{where}: remote.api_key_file: name the file holding the closed API's key "
                              "(relative to the site's router/ folder)")
        remote_key = _key_file(path.parent, key_name, where)
        deployed_remote = {**remote, "api_key_file": f"{MOUNT}/remote.key"}
        egress = [_target(remote.get("base_url"), where)]

    policy = {
        "version": data.get("version", 1),
        "local": {"base_url": f"http://{vllm_container}:{vllm_port}/v1", "default_model": served_model_name},
        **({"remote": deployed_remote} if remote is not None else {}),
        "gateway": {"secret_file": f"{MOUNT}/gateway.secret"},
        "site_secret_file": f"{MOUNT}/site.secret",
        **{k: v for k, v in data.items() if k not in ("version", "remote", "conversations")},
        "conversations": {**(conversations if isinstance(conversations, dict) else {}),
                          "store_file": f"{STATE_MOUNT}/flags"},
        "audit": {"path": AUDIT_MOUNT},
    }
    from router.policy import PolicyError, parse_policy  # the router's own schema: pydantic + YAML only

    try:
        parsed = parse_policy(policy, source=where)
    except PolicyError as e:
        raise RenderError(str(e)) from None
    _check_allow_list(parsed, (served_model_name, *adapter_names), where)
    return SiteRouter(policy=policy, remote_key=remote_key, egress=egress)


def _check_allow_list(policy, served: tuple[str, ...], where: str) -> None:
    """Every name in `callers.models` is one a client can ask this deployment for: a name nothing serves
    would read as allowed and answer 404, so a typo stops render instead."""
    if policy.callers.models is None:
        return
    known = {*served, policy.difficulty.alias, *(policy.remote.aliases if policy.remote else {}), "*"}
    for caller, names in policy.callers.models.items():
        unknown = [n for n in names if n not in known]
        if unknown:
            raise RenderError(f"{where}: callers.models.{caller}: {', '.join(map(repr, unknown))} is not served here",
                              fix="name the served model, an adapter or an alias: " + ", ".join(sorted(known - {"*"})))


def _key_file(folder: Path, name: str, where: str) -> Path:
    key = Path(name).expanduser()
    key = (key if key.is_absolute() else folder / key).absolute()
    try:
        st = key.stat()
    except OSError as e:
        raise RenderError(f"{where}: remote.api_key_file {key}: {e.strerror}",
                          fix="put the closed API's key in that file (chmod 600)") from None
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        raise RenderError(f"{where}: remote.api_key_file {key}: not a non-empty file")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise RenderError(f"{where}: remote.api_key_file {key}: readable by group/other "
                          f"(mode {stat.S_IMODE(st.st_mode):o})", fix=f"chmod 600 {key}")
    if not os.access(key, os.R_OK):
        raise RenderError(f"{where}: remote.api_key_file {key}: not readable by this user")
    return key


def _target(url: object, where: str) -> EgressTarget:
    if not isinstance(url, str):
        raise RenderError(f"{where}: remote.base_url: must be an http(s) URL")
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise RenderError(f"{where}: remote.base_url: {url!r} is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RenderError(f"{where}: remote.base_url: {url!r} must be an http(s) URL with a host")
    return EgressTarget(host=parts.hostname, port=port)


def checked_label(label: str) -> str:
    """The site's default caller label, checked: the router's rule, and not 0/1 (nginx.conf's "no key" and
    "site default" values in the keys map)."""
    if not LABEL_RE.match(label) or label in ("0", "1"):
        raise RenderError(f"selfhost_router_caller_label {label!r}: letters, digits and ._:@/- only (not 0 or 1)")
    return label


def router_vars(site_router: SiteRouter, *, name: str, root: str, image: ImageArtifact, caller_label: str) -> RouterVars:
    """What roles/selfhost_router and the gateway template get."""
    checked_label(caller_label)
    from router.policy import parse_policy

    policy = parse_policy(site_router.policy)
    if not policy.callers.may_use(caller_label, policy.local.default_model):
        # deploy's verify asks for the served model with a key of the site's default label
        raise RenderError(f"{policy_file(Path('SITE'))}: callers.models: the site's default label {caller_label!r} "
                          f"may not use the served model {policy.local.default_model!r}; deploy verifies with it",
                          fix=f"add {policy.local.default_model!r} to its list (or to \"*\"), or set "
                              "selfhost_router_caller_label to a label that may")
    container = f"{name}-router"
    return RouterVars(
        container=container,
        image=image,
        port=PORT,
        dir=f"{root}/{name}/router",
        mount=MOUNT,
        state_mount=STATE_MOUNT,
        audit_mount=AUDIT_MOUNT,
        policy=BUNDLE_POLICY,
        remote_key_source=str(site_router.remote_key) if site_router.remote_key else None,
        network_egress=f"{name}-egress",
        # iptables chain names are at most 28 characters: a digest keeps two deployments' chains apart.
        egress_chain="SELFHOST-EGR-" + hashlib.sha256(name.encode()).hexdigest()[:12].upper(),
        egress_allow=site_router.egress,
        gateway_include="router.conf",
        caller_label=caller_label,
        argv=["/opt/router/bin/python", "-m", "router", "--policy", f"{MOUNT}/policy.yaml",
              "--host", "0.0.0.0", "--port", str(PORT)],
        healthcheck=["CMD", "/opt/router/bin/python", "-c", "import urllib.request; urllib.request.urlopen("
                     f"'http://127.0.0.1:{PORT}/health', timeout=4)"],
    )


def policy_text(site_router: SiteRouter, header: str) -> str:
    """The deployed policy file (machine-read by the router: serialized, never templated)."""
    return header + yaml.safe_dump(site_router.policy, sort_keys=False, default_flow_style=False, width=120,
                                   allow_unicode=True)
