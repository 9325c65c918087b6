"""A site: the user-owned folder that says where and how to deploy (`selfhost init SITE`).

    SITE/hosts.yml                  Ansible YAML inventory; group `inference` holds the servers
    SITE/group_vars/inference.yml   ansible_* connection keys (passed through) + typed selfhost_* settings
    SITE/group_vars/all.yml         the same keys, below inference.yml (Ansible's order: all < group < host)
    SITE/host_vars/<host>.yml       per-host ansible_* keys (selfhost_* settings are per deployment)
    SITE/.selfhost/last-bundle      the bundle last rendered for this site (day-2 commands use it)
    SITE/templates/                 ejected templates that override the packaged ones
    SITE/pki/                       internal CA and per-host certificates (made on first render)
    SITE/.cache/                    weight-hash cache (re-renders of a 140 GB model are not re-hashed)

Nothing in a site is trusted: every var at every level is checked by name, pattern and range
(see `_check_vars` and SiteSettings' validators); no string may hold a control character or Jinja.
Any other file under group_vars/ or host_vars/ is an error (it would otherwise be silently ignored).
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import ValidationError, field_validator

from toolkit.catalog.files import SITE_LIMIT, load_yaml
from toolkit.errors import ConfigError
from toolkit.catalog.spec import validation_error
from toolkit.resources import data_dir
from toolkit.catalog.spec import Strict

GROUP = "inference"

# Input rules. Every value that reaches a rendered file, a shell snippet or Ansible passes one of these.
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # newlines, NUL, ANSI, unicode line breaks
JINJA_RE = re.compile(r"{{|{%|{#|}}|%}|#}")  # Ansible would evaluate these on the control node
HOST_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")  # inventory names: also file and cert names
DNS_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")  # RFC 1123
USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
VAR_KEY_RE = re.compile(r"^(ansible|selfhost)_[a-z0-9_]+$")
MAX_BODY_RE = re.compile(r"^[0-9]{1,9}[kKmMgG]?$")  # nginx size syntax
IMAGE_REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$")  # docker image reference characters
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]{0,100}(=[A-Za-z0-9.+:~-]{1,100})?$")  # apt name[=version]
ENV_KEY_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")  # Linux interface names (IFNAMSIZ - 1)
FLEET_HEADER_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,63}$")  # becomes $http_<name> in nginx
ROOT_RE = re.compile(r"^/[A-Za-z0-9._/-]+$")
SYSTEM_DIRS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run", "/sbin",
               "/sys", "/usr")  # selfhost_root may not be (under) one of these
TOP_DIRS = ("/home", "/media", "/mnt", "/opt", "/root", "/srv", "/tmp", "/var", "/var/lib", "/snap")  # nor one of these
PORT_KEYS = ("ansible_port", "ansible_ssh_port", "selfhost_gateway_port")


def check_text(value, where: str) -> str:
    """Any string from a site or plan: no control characters (newline, NUL, ESC, U+2028/9) and no Jinja."""
    text = str(value)
    if CONTROL_RE.search(text):
        raise ConfigError(f"{where}: control characters (newline, NUL, escape, line separator) are not allowed "
                          f"(got {text!r})")
    if JINJA_RE.search(text):
        raise ConfigError(f"{where}: template markers ('{{{{', '{{%', '{{#') are not allowed (got {text!r})",
                          fix="write the value literally")
    return text


def check_address(value, where: str) -> str:
    """An IP address, or a DNS name by RFC 1123 (never an option-looking `-x`, never a bad dotted quad)."""
    text = str(value)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    labels = text.rstrip(".").split(".") if text else []
    if (not labels or len(text) > 253 or not all(DNS_LABEL_RE.match(lb) for lb in labels)
            or re.fullmatch(r"[0-9.]+", text)):
        raise ConfigError(f"{where}: '{text}' is neither an IP address nor a DNS host name",
                          fix="use an address like 10.0.0.11 or a name like gpu-01.lab.internal")
    return text


def check_port(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(f"{where}: port must be a number from 1 to 65535 (got {value!r})")
    return value


def check_root(value: str) -> str:
    """selfhost_root: absolute, normalised, plain characters, and not a system directory."""
    if not ROOT_RE.match(value) or posixpath.normpath(value) != value or value.startswith("//"):
        raise ValueError("must be an absolute, normalised path of letters, digits, '.', '_', '-' "
                         "(e.g. /opt/selfhost)")
    if value in TOP_DIRS or any(value == d or value.startswith(d + "/") for d in SYSTEM_DIRS):
        raise ValueError("must not be a system directory; use a folder of its own such as /opt/selfhost")
    return value


def check_env(env: dict, forced: dict, where: str) -> None:
    """Container environment from a plan: keys `^[A-Z_][A-Z0-9_]*$`, values without control characters,
    and the forced (offline/telemetry) settings cannot be changed."""
    for key, value in env.items():
        if not ENV_KEY_RE.match(str(key)):
            raise ConfigError(f"{where}: environment name {str(key)!r} must match [A-Z_][A-Z0-9_]*")
        if CONTROL_RE.search(str(value)):
            raise ConfigError(f"{where}.{key}: control characters (newline, NUL, escape) are not allowed "
                              f"(got {str(value)!r})")
        if key in forced and str(value) != forced[key]:
            raise ConfigError(f"{where}.{key}: forced to {forced[key]!r} (the server stays offline); "
                              "it cannot be overridden", fix=f"remove {key} from runtime.env")


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
    selfhost_images_router_ref: str = "selfhost/router:1"
    """Hybrid router image (built from router/Dockerfile); used only when the site has router/policy.yaml."""
    selfhost_images_router_tarball: str | None = None
    """Control-node path of `docker save` output for the router image; None = pull."""
    selfhost_router_caller_label: str = "default"
    """Team label the gateway sends the router as the caller of its API keys (policy `callers`)."""
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
    selfhost_fleet: bool = False
    """One endpoint for the fleet: every host's gateway balances over every host's server (README "Fleet"); with
    multi-node replicas, every group's rank 0 over every group's rank 0."""
    selfhost_fleet_policy: Literal["least_conn", "round_robin", "hash"] = "least_conn"
    """How a gateway picks a replica: fewest active requests, in turn, or a consistent hash of a client header."""
    selfhost_fleet_hash_header: str = "X-Session-Id"
    """Policy `hash`: the request header whose value pins a client to one replica."""
    selfhost_fleet_port: int = 8444
    """Peer listener on each host (TLS + fleet secret) that proxies only to that host's own server."""
    selfhost_fleet_peers: dict[str, str] | None = None
    """Inventory host → private address the peers use; None = each host's ansible_host (multi-node groups: their
    rank 0's selfhost_private_addresses entry first)."""
    selfhost_fleet_max_fails: int = 1
    """Failed tries within `fail_timeout_s` that take a replica out of rotation (passive health check)."""
    selfhost_fleet_fail_timeout_s: int = 10
    """Seconds a failed replica stays out of rotation before it is tried again."""
    selfhost_fleet_tries: int = 3
    """Replicas one request may try (first try included) before the error goes back to the client."""

    selfhost_private_addresses: dict[str, str] | None = None
    """Multi-node: inventory host → its IP address on the private network between the nodes of a group
    (vLLM's VLLM_HOST_IP and master address, the firewall's peers); None = selfhost_fleet_peers, then ansible_host."""
    selfhost_private_interface: str | None = None
    """Multi-node: the network interface of that private network on every node (GLOO/NCCL_SOCKET_IFNAME)."""
    selfhost_multinode_master_port: int = 29500
    """Multi-node: rank 0's torch.distributed port (`--master-port`)."""
    selfhost_multinode_guard_port: int = 29600
    """Multi-node: TCP port of the group guard on every node's private address (heartbeats between the ranks)."""
    selfhost_multinode_guard_timeout_s: int = 30
    """Multi-node: seconds a rank may stay unreachable before the whole group restarts (a rank whose container
    restarts makes the group restart at once)."""
    selfhost_infiniband: Literal["auto", "on", "off"] = "auto"
    """Multi-node: InfiniBand/RoCE for NCCL between a group's nodes. auto: used when the preflight finds an active
    RDMA port and /dev/infiniband on every node of the group; on: required (preflight fails without); off: never."""

    @field_validator("*", mode="after")
    @classmethod
    def _plain_text(cls, v):
        if isinstance(v, str):
            if CONTROL_RE.search(v):
                raise ValueError("control characters (newline, NUL, escape, line separator) are not allowed")
            if JINJA_RE.search(v):
                raise ValueError("template markers ('{{', '{%', '{#') are not allowed")
            if v.startswith("-"):
                raise ValueError("must not start with '-'")
        return v

    @field_validator("selfhost_root")
    @classmethod
    def _root(cls, v: str) -> str:
        return check_root(v)

    @field_validator("selfhost_gateway_port")
    @classmethod
    def _port(cls, v: int) -> int:
        if not 1 <= v <= 65535:
            raise ValueError("must be from 1 to 65535")
        return v

    @field_validator("selfhost_fleet_port")
    @classmethod
    def _fleet_port(cls, v: int, info) -> int:
        if not 1 <= v <= 65535:
            raise ValueError("must be from 1 to 65535")
        if v == info.data.get("selfhost_gateway_port"):
            raise ValueError("must differ from selfhost_gateway_port")
        return v

    @field_validator("selfhost_fleet_hash_header")
    @classmethod
    def _fleet_header(cls, v: str) -> str:
        if not FLEET_HEADER_RE.match(v):
            raise ValueError("must be an HTTP header name of letters, digits and '-' (e.g. X-Session-Id)")
        return v

    @field_validator("selfhost_fleet_max_fails", "selfhost_fleet_tries")
    @classmethod
    def _fleet_count(cls, v: int) -> int:
        if not 1 <= v <= 16:
            raise ValueError("must be from 1 to 16")
        return v

    @field_validator("selfhost_fleet_fail_timeout_s")
    @classmethod
    def _fleet_timeout(cls, v: int) -> int:
        if not 1 <= v <= 3600:
            raise ValueError("must be from 1 to 3600 seconds")
        return v

    @field_validator("selfhost_fleet_peers")
    @classmethod
    def _fleet_peers(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is None:
            return v
        for name, address in v.items():
            if not HOST_NAME_RE.match(str(name)):
                raise ValueError(f"{name!r} is not an inventory host name")
            try:
                check_address(address, str(name))
            except ConfigError:
                raise ValueError(f"{name}: {address!r} is neither an IP address nor a DNS host name") from None
        return v

    @field_validator("selfhost_private_addresses")
    @classmethod
    def _private_addresses(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for name, address in (v or {}).items():
            if not HOST_NAME_RE.match(str(name)):
                raise ValueError(f"{name!r} is not an inventory host name")
            try:
                ipaddress.ip_address(str(address))
            except ValueError:
                raise ValueError(f"{name}: {address!r} is not an IP address") from None
        return v

    @field_validator("selfhost_private_interface")
    @classmethod
    def _ifname(cls, v: str | None) -> str | None:
        if v is not None and not IFNAME_RE.match(v):
            raise ValueError("must be a network interface name like eth1 or ens5f0")
        return v

    @field_validator("selfhost_infiniband", mode="before")
    @classmethod
    def _infiniband_yaml_bool(cls, v):
        """YAML reads a bare `on` / `off` as true / false: take them as the words they were written as."""
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("selfhost_multinode_master_port", "selfhost_multinode_guard_port")
    @classmethod
    def _master_port(cls, v: int) -> int:
        if not 1024 <= v <= 65535:
            raise ValueError("must be from 1024 to 65535")
        return v

    @field_validator("selfhost_multinode_guard_port")
    @classmethod
    def _guard_port(cls, v: int, info) -> int:
        if v == info.data.get("selfhost_multinode_master_port"):
            raise ValueError("must differ from selfhost_multinode_master_port")
        return v

    @field_validator("selfhost_multinode_guard_timeout_s")
    @classmethod
    def _guard_timeout(cls, v: int) -> int:
        if not 5 <= v <= 3600:
            raise ValueError("must be from 5 to 3600 seconds")
        return v

    @field_validator("selfhost_gateway_max_body")
    @classmethod
    def _max_body(cls, v: str) -> str:
        if not MAX_BODY_RE.match(v):
            raise ValueError("must be a size like 4m, 512k, 1g or 1048576")
        return v

    @field_validator("selfhost_images_vllm_ref", "selfhost_images_gateway_ref", "selfhost_images_router_ref")
    @classmethod
    def _image(cls, v: str | None) -> str | None:
        if v is not None and not IMAGE_REF_RE.match(v):
            raise ValueError("must be an image reference like registry.internal:5000/vllm/vllm-openai:v0.8.5")
        return v

    @field_validator("selfhost_runtime_driver_package")
    @classmethod
    def _package(cls, v: str | None) -> str | None:
        if v is not None and not PACKAGE_RE.match(v):
            raise ValueError("must be a package name like nvidia-driver-550-server (optionally =VERSION)")
        return v

    @field_validator("selfhost_verify_egress_probe")
    @classmethod
    def _probe(cls, v: str | None) -> str | None:
        if v is None:
            return v
        host, sep, port = v.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            check_address(host, "host")
            check_port(int(port) if port.isdigit() else None, "port")
        except ConfigError:
            raise ValueError("must be host:port (an IP address or DNS name, and a port 1-65535)") from None
        return v


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


def bundle_hosts(bundle: Path) -> list[str]:
    """Host names of a rendered bundle's inventory (group `inference`, top level or under all.children), in order."""
    try:
        inv = yaml.safe_load((Path(bundle) / "inventory" / "hosts.yml").read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{bundle}/inventory/hosts.yml: cannot read it ({exc})") from None
    group = inv.get(GROUP) or ((inv.get("all") or {}).get("children") or {}).get(GROUP) or {}
    return [str(h) for h in (group.get("hosts") or {})]


def init_site(path: Path) -> list[Path]:
    """Copy the example site to `path`; never overwrites. Returns the files created."""
    path = Path(path)
    if path.exists():
        raise ConfigError(f"{path} already exists (remove it first or pick another name)")
    shutil.copytree(data_dir("inventories") / "example", path)
    (path / "templates").mkdir(exist_ok=True)
    return sorted(p for p in path.rglob("*") if p.is_file())


def load_site(path: Path) -> Site:
    """Read and validate a site. Vars merge as Ansible merges them: all < inference < host, where each
    level's inventory `vars:` come before its group_vars/host_vars file. Every level is validated."""
    path = Path(path)
    hosts_file = path / "hosts.yml"
    if not path.is_dir():
        raise ConfigError(f"{path}: no such site folder", hint=f"selfhost init {path}  creates one")
    inventory = _read_yaml(hosts_file, required=True)
    _check_strings(inventory, str(hosts_file))
    group = _find_group(inventory, hosts_file)
    hosts = _hosts(group, hosts_file)
    var_files = _var_files(path, [h.name for h in hosts])
    all_vars = (inventory.get("all") or {}).get("vars") if isinstance(inventory.get("all"), dict) else None
    levels = [  # (source, vars) from lowest to highest precedence, group level
        (f"{hosts_file}: all.vars", all_vars or {}),
        (str(var_files["all"]), _read_yaml(var_files["all"], required=False)),
        (f"{hosts_file}: {GROUP}.vars", group.get("vars") or {}),
        (str(var_files[GROUP]), _read_yaml(var_files[GROUP], required=False)),
    ]
    group_vars: dict = {}
    for source, layer in levels:
        group_vars.update(_check_vars(layer, source))
        _settings({k: v for k, v in layer.items() if not str(k).startswith("ansible_")}, source)  # names the file
    connection = {k: v for k, v in group_vars.items() if str(k).startswith("ansible_")}
    rest = {k: v for k, v in group_vars.items() if k not in connection}
    settings = _settings(rest, str(var_files[GROUP]))
    for h in hosts:  # host level: host line, then host_vars/<host>.yml
        hfile = var_files.get(f"host:{h.name}")
        line = group["hosts"][h.name] or {}
        hlayer = {**_check_vars(line, f"{hosts_file}: {GROUP}.hosts.{h.name}"),
                  **(_check_vars(_read_yaml(hfile, required=False), str(hfile)) if hfile else {})}
        own = {k: v for k, v in hlayer.items() if not str(k).startswith("ansible_")}
        if own:
            where = str(hfile) if hfile else f"{hosts_file}: {GROUP}.hosts.{h.name}"
            host_settings = _settings({**rest, **own}, where)
            changed = sorted(k for k in own if getattr(host_settings, k) != getattr(settings, k))
            if changed:
                raise ConfigError(f"{where}: {', '.join(changed)} differs per host; a deployment has one value",
                                  fix=f"set it in group_vars/{GROUP}.yml")
        if hfile:  # the bundle has no host_vars folder: the host line carries its connection vars
            conn = {k: v for k, v in hlayer.items() if str(k).startswith("ansible_")}
            group["hosts"][h.name] = {**line, **conn} or None
        address = (group["hosts"][h.name] or {}).get("ansible_host")
        if address is not None and str(address) != h.address:
            h = SiteHost(name=h.name, address=str(address))
        hosts[[x.name for x in hosts].index(h.name)] = h
    for key in ("selfhost_fleet_peers", "selfhost_private_addresses"):
        unknown = sorted(set(getattr(settings, key) or {}) - {h.name for h in hosts})
        if unknown:
            raise ConfigError(f"{var_files[GROUP]}: {key} names {', '.join(unknown)}, not in the inventory",
                              fix=f"key {key} by the inventory host names")
    return Site(path=path, inventory=inventory, hosts=hosts, settings=settings, connection=connection)


def _settings(values: dict, source: str) -> SiteSettings:
    try:
        return SiteSettings.model_validate(values)
    except ValidationError as exc:
        raise validation_error(exc, SiteSettings, source) from None


def _var_files(path: Path, host_names: list[str]) -> dict[str, Path]:
    """group_vars/{all,inference}.yml and host_vars/<host>.yml; any other file there is an error."""
    found: dict[str, Path] = {"all": path / "group_vars" / "all.yml", GROUP: path / "group_vars" / f"{GROUP}.yml"}
    unknown: list[Path] = []
    for folder, names in (("group_vars", ["all", GROUP]), ("host_vars", host_names)):
        d = path / folder
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):
            if f.name.startswith("."):
                continue
            stem, ext = (f.stem, f.suffix) if f.is_file() else (f.name, "")
            if f.is_file() and ext in (".yml", ".yaml") and stem in names:
                key = stem if folder == "group_vars" else f"host:{stem}"
                if key in found and found[key] != f and found[key].is_file():
                    unknown.append(f)  # both x.yml and x.yaml: ambiguous
                else:
                    found[key] = f
            else:
                unknown.append(f)
    if unknown:
        raise ConfigError("selfhost does not read " + ", ".join(str(f) for f in unknown)
                          + f" (only group_vars/all.yml, group_vars/{GROUP}.yml and host_vars/<inventory host>.yml)",
                          fix="move those settings into one of the files read, or remove the files")
    return found


def _check_strings(node, where: str) -> None:
    """Every key and string anywhere in a site file: no control characters, no Jinja."""
    if isinstance(node, dict):
        for k, v in node.items():
            check_text(k, f"{where}: key")
            _check_strings(v, f"{where}.{k}" if ": " in where else f"{where}: {k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_strings(v, f"{where}[{i}]")
    elif isinstance(node, str):
        check_text(node, where)


def _check_vars(layer: dict, source: str) -> dict:
    """One level of vars: only ansible_*/selfhost_* names, connection values by pattern and range."""
    if not isinstance(layer, dict):
        raise ConfigError(f"{source}: expected a mapping of vars (got {layer!r})")
    _check_strings(layer, source)
    for key, value in layer.items():
        where = f"{source}: {key}"
        if not VAR_KEY_RE.match(str(key)):
            raise ConfigError(f"{where}: unknown variable (only ansible_* connection keys and selfhost_* settings)")
        if isinstance(value, (dict, list)) and str(key).startswith("ansible_"):
            raise ConfigError(f"{where}: expected a single value")
        if key == "ansible_host":
            check_address(value, where)
        elif key in PORT_KEYS and str(key).startswith("ansible_"):
            check_port(value, where)
        elif key in ("ansible_user", "ansible_ssh_user", "ansible_become_user") and not USER_RE.match(str(value)):
            raise ConfigError(f"{where}: '{value}' is not a user name (letters, digits, '_', '.', '-')")
        elif isinstance(value, str) and value.startswith("-") and not str(key).endswith("_args"):
            raise ConfigError(f"{where}: must not start with '-' (got {value!r})")  # ssh/scp *_args are options
    return layer


def _read_yaml(path: Path, *, required: bool) -> dict:
    """A site file through the bounded reader (size cap, no alias bombs, one-line errors)."""
    if not path.exists() and not path.is_symlink():
        if required:
            raise ConfigError(f"{path}: missing", hint="selfhost init NEW_SITE  shows the expected layout")
        return {}
    data = load_yaml(path, limit=SITE_LIMIT, what="site file")
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
        if not isinstance(name, str) or not HOST_NAME_RE.match(name):
            raise ConfigError(f"{source}: {GROUP}.hosts: {str(name)!r} is not a valid host name",
                              fix="use letters, digits, '.', '_' or '-' (e.g. gpu-01), starting with a letter or digit")
        address = (hvars or {}).get("ansible_host")
        result.append(SiteHost(name=str(name), address=None if address is None else str(address)))
    return result
