"""A site: the user-owned folder that says where and how to deploy (`selfhost init SITE`).

    SITE/hosts.yml                  Ansible YAML inventory; group `inference` holds the servers
    SITE/group_vars/inference.yml   ansible_* connection keys (passed through) + typed selfhost_* settings
    SITE/templates/                 ejected templates that override the packaged ones
    SITE/pki/                       internal CA and per-host certificates (made on first render)
    SITE/.cache/                    weight-hash cache (re-renders of a 140 GB model are not re-hashed)
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import ValidationError

from toolkit.errors import ConfigError
from toolkit.catalog.spec import validation_error
from toolkit.resources import data_dir
from toolkit.catalog.spec import Strict

GROUP = "inference"


class SiteSettings(Strict):
    """The selfhost_* keys of `group_vars/inference.yml`; every one is optional."""

    selfhost_root: str = "/opt/selfhost"
    """Base directory on each host (weights, gateway config, state)."""
    selfhost_weights_source: str | None = None
    """Control-node directory of the weights (the in-network mirror); `render --weights` overrides it."""
    selfhost_images_vllm_ref: str | None = None
    """Inference image as your registry names it; None = the plan's image (plan.runtime.image)."""
    selfhost_images_vllm_tarball: str | None = None
    """Control-node path of `docker save` output for the inference image (air gap); None = pull."""
    selfhost_images_gateway_ref: str = "nginx:1.27"
    """Gateway (nginx) image reference."""
    selfhost_images_gateway_tarball: str | None = None
    """Control-node path of `docker save` output for the gateway image; None = pull."""
    selfhost_tls_mode: Literal["internal-ca", "site"] = "internal-ca"
    """`internal-ca`: SITE/pki signs a certificate per host; `site`: use the three files below."""
    selfhost_tls_ca_cert: str | None = None
    """Site mode: CA certificate clients trust."""
    selfhost_tls_cert: str | None = None
    """Site mode: server certificate (valid for every inference host name)."""
    selfhost_tls_key: str | None = None
    """Site mode: server private key (stays on the control node until the playbook copies it)."""
    selfhost_gateway_port: int = 443
    """Port the gateway publishes on each host."""
    selfhost_gateway_max_body: str = "4m"
    """Largest request body the gateway accepts (nginx size syntax)."""
    selfhost_verify_egress_probe: str | None = None
    """`host:port` the server must NOT reach after lockdown; None = the host's default gateway."""
    selfhost_ssh_host_key_checking: bool = True
    """Verify SSH host keys (turn off only for throwaway test hosts)."""
    selfhost_runtime_install_docker: bool = True
    """Install Docker from the site's package mirror when missing."""
    selfhost_runtime_driver_package: str | None = None
    """NVIDIA driver package to install and hold on GPU hosts (e.g. nvidia-driver-550-server)."""


@dataclass(frozen=True)
class SiteHost:
    name: str
    """Inventory host name."""
    address: str | None
    """`ansible_host` when set (IP or DNS name the control node connects to)."""


@dataclass(frozen=True)
class Site:
    path: Path
    inventory: dict
    """hosts.yml as parsed (serialized into the bundle, plus the group's connection vars)."""
    hosts: list[SiteHost]
    settings: SiteSettings
    connection: dict = field(default_factory=dict)
    """ansible_* keys from group_vars/inference.yml, passed through to the inventory untouched."""

    @property
    def templates_dir(self) -> Path:
        return self.path / "templates"

    @property
    def pki_dir(self) -> Path:
        return self.path / "pki"

    @property
    def cache_dir(self) -> Path:
        return self.path / ".cache"


def init_site(path: Path) -> list[Path]:
    """Copy the example site to `path`; never overwrites. Returns the files created."""
    path = Path(path)
    if path.exists():
        raise ConfigError(f"{path} already exists (remove it first or pick another name)")
    shutil.copytree(data_dir("inventories") / "example", path)
    (path / "templates").mkdir(exist_ok=True)
    return sorted(p for p in path.rglob("*") if p.is_file())


def load_site(path: Path) -> Site:
    path = Path(path)
    hosts_file = path / "hosts.yml"
    if not path.is_dir():
        raise ConfigError(f"{path}: no such site folder", hint=f"selfhost init {path}  creates one")
    inventory = _read_yaml(hosts_file, required=True)
    group = _find_group(inventory, hosts_file)
    hosts = _hosts(group, hosts_file)
    gv_file = path / "group_vars" / f"{GROUP}.yml"
    group_vars = _read_yaml(gv_file, required=False)
    connection = {k: v for k, v in group_vars.items() if str(k).startswith("ansible_")}
    rest = {k: v for k, v in group_vars.items() if k not in connection}
    try:
        settings = SiteSettings.model_validate(rest)
    except ValidationError as exc:
        raise validation_error(exc, SiteSettings, str(gv_file)) from None
    return Site(path=path, inventory=inventory, hosts=hosts, settings=settings, connection=connection)


def _read_yaml(path: Path, *, required: bool) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: missing", hint=f"selfhost init NEW_SITE  shows the expected layout") from None
        return {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _find_group(inventory: dict, source: Path) -> dict:
    """The `inference` group, either top-level or under `all.children` (both are valid Ansible)."""
    group = inventory.get(GROUP)
    if group is None:
        children = (inventory.get("all") or {}).get("children") or {}
        group = children.get(GROUP) if isinstance(children, dict) else None
    if not isinstance(group, dict):
        raise ConfigError(f"{source}: no group '{GROUP}' with hosts",
                          fix=f"add `{GROUP}: {{hosts: {{gpu-01: {{ansible_host: 10.0.0.11}}}}}}`")
    return group


def _hosts(group: dict, source: Path) -> list[SiteHost]:
    hosts = group.get("hosts")
    if not isinstance(hosts, dict) or not hosts:
        raise ConfigError(f"{source}: {GROUP}.hosts: needs at least one host",
                          fix="uncomment the example host and set its ansible_host")
    result = []
    for name, hvars in hosts.items():
        if hvars is not None and not isinstance(hvars, dict):
            raise ConfigError(f"{source}: {GROUP}.hosts.{name}: expected a mapping of host vars (got {hvars!r})")
        address = (hvars or {}).get("ansible_host")
        result.append(SiteHost(name=str(name), address=None if address is None else str(address)))
    return result
