"""The contract between the renderer and the playbooks: the variables serialized to `env/extravars`.

`render` builds one `DeployVars` from the Plan and the site; the roles under `playbooks/roles/`
read exactly these names (their `defaults/main.yml` document the same names). Nothing here is
templated: the bundle's extravars file is `DeployVars.model_dump()` written as YAML.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_serializer

from toolkit.catalog.spec import Strict


class ImageArtifact(Strict):
    ref: str
    """Image reference as the container runtime names it (`selfhost/vllm-cpu:0.32.0`)."""
    tarball: str | None = None
    """Control-node path of a `docker save` tarball to ship (air-gapped); None = pull from the site registry."""
    sha256: str | None = None
    """SHA-256 of the tarball; the host refuses a tarball that does not match."""


class TlsConfig(Strict):
    mode: Literal["internal-ca", "site"] = "internal-ca"
    """`internal-ca`: a CA kept in the site folder signs a certificate per host; `site`: the site's own files."""
    ca_cert: str
    """Control-node path of the CA certificate clients trust."""
    ca_key: str | None = None
    """Control-node path of the CA key (internal-ca mode only; stays in the site folder, mode 0600)."""
    cert: str | None = None
    """Control-node path of the site certificate (site mode)."""
    key: str | None = None
    """Control-node path of the site private key (site mode)."""
    host_dir: str | None = None
    """Control-node directory with `<inventory_hostname>.crt` / `.key` per host (internal-ca mode; keys 0600)."""


class FleetMember(Strict):
    name: str
    """Inventory host name of the replica."""
    address: str
    """Private address its peers reach its fleet listener on."""


class FleetVars(Strict):
    members: list[FleetMember]
    """Every replica of the deployment (this host's own included), in inventory order."""
    first_host: str
    """Inventory host that creates the fleet's API keys and peer secret; the others copy them."""
    port: int = 8444
    """Peer listener published on each member's address: TLS, fleet secret required, proxies only to its own server."""
    policy: Literal["least_conn", "round_robin", "hash"] = "least_conn"
    """Balancing policy of the fleet upstream."""
    hash_header: str = "X-Session-Id"
    """Policy hash: client header of the consistent hash."""
    max_fails: int = 1
    """Passive health check: failures within fail_timeout_s that take a replica out of rotation."""
    fail_timeout_s: int = 10
    """Seconds a failed replica stays out of rotation."""
    tries: int = 3
    """Replicas one request may try before the client sees the error."""
    ssl_name: str
    """Name the peer certificates are verified against (a SAN of every host certificate)."""


class Mount(Strict):
    type: Literal["bind"] = "bind"
    """Docker mount type (host directories only)."""
    source: str
    """Host path."""
    target: str
    """Path inside the container."""
    read_only: bool | None = None
    """True: mounted read-only (the weights). None: read-write (Docker's default, left unset so the module
    compares it as before); the role creates a read-write source before start."""


class DeviceRequest(Strict):
    driver: str = "nvidia"
    """Device driver (the NVIDIA container toolkit)."""
    count: int
    """GPUs to hand the container; -1 = all."""
    capabilities: list[list[str]] = [["gpu"]]
    """Docker device capabilities (OR of AND lists)."""


class Healthcheck(Strict):
    test: list[str]
    """Health test in Docker `CMD` form (first item `CMD`)."""
    interval: str
    """Time between probes (`10s`)."""
    timeout: str
    """Time one probe may take."""
    retries: int
    """Failed probes in a row (after start_period) before the container counts as unhealthy."""
    start_period: str
    """Grace period while the weights load; failures then do not count."""


class AdapterArtifact(Strict):
    """A LoRA adapter shipped like the weights (roles/selfhost_weights/tasks/adapters.yml)."""

    name: str
    """Served model name (`--lora-modules NAME=…`)."""
    source: str
    """Control-node adapter directory."""
    manifest: str
    """SHA-256 manifest, relative to the bundle root (`sha256sum` format, paths relative to the adapter dir)."""
    digest: str
    """First 12 hex of the SHA-256 of the manifest: the content address of this adapter revision."""
    dir: str
    """Host directory (`<root>/<name>/adapters/<digest>/<NAME>`): revisions live side by side for rollback."""
    mount: str
    """Absolute path inside the server container (`/adapters/NAME`), mounted read-only."""


class EgressTarget(Strict):
    host: str
    """Host name or IP address of the closed API (resolved on each host when the allow-list is applied)."""
    port: int
    """TCP port of the closed API."""


class RouterVars(Strict):
    """The hybrid router (router/, roles/selfhost_router): present only when the site has `router/policy.yaml`."""

    container: str
    """Container name; the gateway reaches it by this name on the internal network."""
    image: ImageArtifact
    """The router image (built from this repository's router/Dockerfile, shipped like the others)."""
    uid: int = 10001
    """User the container runs as; it owns its secret files (0600) and the audit log."""
    port: int = 8080
    """Port the router listens on inside the internal network (never published)."""
    dir: str
    """Host directory: `audit.jsonl` (the `selfhost route audit` contract), `etc/` (policy + secrets), `state/`."""
    mount: str = "/etc/selfhost/router"
    """Where `dir`/etc appears in the container (read-only): policy.yaml, remote.key, gateway.secret, site.secret."""
    state_mount: str = "/var/lib/selfhost/router"
    """Where `dir`/state appears (read-write): flagged-conversation keys (HMACs only)."""
    audit_mount: str = "/var/log/selfhost/router/audit.jsonl"
    """Where `dir`/audit.jsonl appears (read-write, append-only by the router)."""
    policy: str
    """Deployed policy, relative to the bundle root (serialized by render from the site's policy)."""
    remote_key_source: str | None = None
    """Control-node path of the closed API's key file (site folder, 0600); never copied into the bundle."""
    network_egress: str
    """The router's second network: the only route out of any selfhost container, limited by `egress_allow`."""
    egress_chain: str
    """iptables chain (jumped to from DOCKER-USER for the egress network's subnet) holding the allow-list."""
    egress_allow: list[EgressTarget] = []
    """The closed API endpoints the router may reach; every other destination is dropped. Empty: none."""
    gateway_include: str
    """File in the gateway directory setting the shared-secret header (root-only, written on the host)."""
    caller_label: str
    """Team label the gateway sends as the caller for its API keys (the keys file carries no per-key label)."""
    argv: list[str]
    """Command of the container."""
    healthcheck: list[str]
    """Container health test (Docker CMD form)."""


class NodeMember(Strict):
    name: str
    """Inventory host name."""
    address: str
    """Private address of the host (VLLM_HOST_IP; rank 0's is the group's master address)."""
    rank: int
    """Node rank in the group (0: the API server behind the gateway; > 0: headless)."""


class NodeGroup(Strict):
    index: int
    """Replica number, from 1 (inventory order)."""
    members: list[NodeMember]
    """The group's hosts in rank order."""


class InfinibandVars(Strict):
    """InfiniBand/RoCE for NCCL between a group's nodes (site `selfhost_infiniband`). Everything but the HCAs is
    decided here; the selfhost_vllm role applies it to a rank's container when `mode` is `on`, or `auto` and the
    preflight probe found an active RDMA port and /dev/infiniband on every node of the group, and sets
    `hca_env` to exactly the active ports it found there (`=mlx5_0:1,mlx5_1:1`)."""

    mode: Literal["auto", "on", "off"] = "auto"
    """`on`: required (the preflight fails a node without); `off`: never (NCCL_IB_DISABLE=1 in the spec)."""
    devices: list[str] = ["/dev/infiniband:/dev/infiniband:rwm"]
    """The RDMA device nodes (uverbs*, rdma_cm) passed into the container."""
    ulimits: list[str] = ["memlock:-1:-1"]
    """Unlimited locked memory: RDMA registers (pins) NCCL's buffers."""
    capabilities: list[str] = ["IPC_LOCK"]
    """Lets the server lock memory beyond the ulimit too."""
    env: dict[str, str] = {"NCCL_IB_DISABLE": "0"}
    """Environment added with InfiniBand on (NCCL_SOCKET_IFNAME stays the private interface: bootstrap)."""
    hca_env: str = "NCCL_IB_HCA"
    """The variable set to the active ports found on the host (`=`: exact names, no prefix match)."""


class MultiNodeVars(Strict):
    """A replica spans `hosts_per_replica` hosts (vLLM multi-node, mp backend, one container per host)."""

    groups: list[NodeGroup]
    """Every group of the deployment, in inventory order."""
    interface: str
    """Private network interface of every node (GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME)."""
    master_port: int
    """Rank 0's torch.distributed port (`--master-port`)."""
    guard_port: int = 29600
    """The group guard's TCP port on every node's private address (preflight checks it is free)."""
    guard_timeout_s: int = 30
    """Seconds a rank may be unreachable before the group guard restarts the whole group."""
    egress_uid: int
    """Uid the server runs as: the host firewall's OUTPUT rules match its packets (`-m owner`)."""
    egress_chain: str
    """iptables chain holding the rules (jumped to from OUTPUT for `egress_uid`)."""
    infiniband: InfinibandVars = Field(default_factory=InfinibandVars)
    """InfiniBand/RoCE settings of the rank containers (applied by the role where the group has it)."""


class NodeVars(Strict):
    """One host of a group: written to the bundle's inventory/host_vars/<host>.yml as `selfhost_node`."""

    group: int
    """Replica number of its group."""
    rank: int
    """Node rank (0 serves HTTP behind the gateway)."""
    address: str
    """This host's private address."""
    master_addr: str
    """Rank 0's private address."""
    members: list[str]
    """Inventory names of the group, in rank order."""
    peers: list[str]
    """Private addresses of the other hosts of the group."""
    egress_rules: dict[str, list[list[str]]]
    """`iptables` / `ip6tables` → the chain's rules in `-S` form (loopback, replies, the group's peers, then
    reject): the role makes the chain hold exactly these."""
    egress_chain: str
    """The chain's name (MultiNodeVars.egress_chain): kept here so a release record re-applies its own rules."""
    egress_uid: int
    """The server's uid the OUTPUT jump matches (MultiNodeVars.egress_uid)."""
    egress_restore: dict[str, str]
    """`iptables` / `ip6tables` → the chain and its OUTPUT jump as an iptables-restore file: the role writes it
    where the selfhost-egress boot unit restores it before Docker starts the server after a reboot."""


class ServerSpec(Strict):
    """The inference server container, decided once: `community.docker.docker_container` runs it
    (playbooks/roles/selfhost_vllm/tasks/container.yml), the bundle's compose file is serialized from it,
    and the host's release record keeps it so a rollback runs exactly it again."""

    container: str
    """Container name."""
    image: str
    """Image reference (never pulled by the role: the images step loads it)."""
    argv: list[str]
    """Exact server arguments (the image's entrypoint is the OpenAI API server)."""
    env: dict[str, str]
    """Environment; the forced offline/telemetry switches are in it and cannot be overridden."""
    labels: dict[str, str]
    """Container labels (`org.selfhost.name`, `org.selfhost.plan-digest`: read by `selfhost status`)."""
    mounts: list[Mount]
    """Weights (read-only) and the compile cache (read-write)."""
    network: str
    """The one Docker network the server joins (internal: no route out); its alias is the container name."""
    ipc_mode: Literal["host"] | None = None
    """`host` for tensor parallel (NCCL); None: Docker's private namespace with `shm_size`."""
    shm_size: str | None = None
    """/dev/shm size when the IPC namespace is private (None with ipc_mode host: the host's /dev/shm)."""
    device_requests: list[DeviceRequest] = []
    """GPU request; empty on CPU."""
    healthcheck: Healthcheck
    """Container health check (the deploy and rollback wait for `healthy`)."""
    restart_policy: Literal["unless-stopped", "always", "on-failure", "no"] = "unless-stopped"
    """Docker restart policy."""
    security_opts: list[str] = ["no-new-privileges:true"]
    """Docker security options."""
    entrypoint: list[str] | None = None
    """Entrypoint instead of the image's (multi-node headless ranks: vLLM's `serve` CLI); None: the image's."""
    user: str | None = None
    """`uid:gid` the server runs as (multi-node: the uid the host firewall matches); None: the image's user."""

    @model_serializer(mode="wrap")
    def _omit_unset_multinode(self, handler):
        """Single-host specs serialise exactly as before these fields existed (release ids, golden bundles)."""
        data = handler(self)
        if isinstance(data, dict):
            for key in ("entrypoint", "user"):
                if data.get(key) is None:
                    data.pop(key, None)
        return data


class ReleaseInfo(Strict):
    """The host's release record apart from the server spec: the role writes this plus `vllm:` (the
    ServerSpec) to releases/<release>.json; `release` is the content address of the whole record."""

    release: str
    """Release id: first 16 hex of the SHA-256 of the record (this and `vllm`) without this field."""
    record_schema: int = 2
    """Layout of the record (1: written by Ansible before the server spec existed; not re-applicable)."""
    name: str
    """Deployment name."""
    plan_digest: str
    """Digest of the plan."""
    images: dict[str, str]
    """`vllm` and `gateway` image references (destroy --purge removes them)."""
    weights_dir: str
    """Host directory of this release's weights (must still exist for a rollback)."""
    cache_dir: str
    """Host directory of the compile cache."""
    served_model_name: str
    """Model name clients use (verify asks for it)."""
    gateway: dict[str, str | int]
    """Gateway container, image, dir, mount and port (verify goes through it)."""
    networks: dict[str, str]
    """`internal` and `edge` Docker network names."""
    systemd_unit: str
    """Boot unit name."""
    node: dict | None = None
    """Multi-node: this host's `selfhost_node` (NodeVars: group, rank, members, firewall rules), so a rollback
    knows which hosts roll back together and re-applies the release's own firewall rules. Absent otherwise."""

    @model_serializer(mode="wrap")
    def _omit_without_node(self, handler):
        """One-host records serialise exactly as before the field existed (golden bundles, release ids)."""
        data = handler(self)
        if self.node is None and isinstance(data, dict):
            data.pop("node", None)
        return data


class DeployVars(Strict):
    selfhost_name: str
    """Deployment name; prefixes containers, networks and directories."""
    selfhost_plan_digest: str
    """Digest of the plan this bundle came from (audit, drift detection)."""
    selfhost_device: Literal["gpu", "cpu"]
    """Accelerator kind; GPU-only tasks run only when `gpu`."""
    selfhost_root: str = "/opt/selfhost"
    """Base directory on each host."""

    # Preflight
    selfhost_preflight_min_memory_gib: float
    """Host RAM needed (weights are staged through page cache; CPU mode holds KV in RAM)."""
    selfhost_preflight_min_disk_gib: float
    """Free disk needed under selfhost_root: weights ×2 (upgrade keeps the previous release) + images."""
    selfhost_preflight_cpu_flags: list[str] = []
    """CPU flags the engine needs (CPU mode: avx2, the floor of vLLM's x86 CPU build)."""
    selfhost_preflight_gpu_count: int = 0
    """GPUs the plan uses per host."""
    selfhost_preflight_gpu_memory_gib: float = 0.0
    """Free memory each GPU must have at start-up (total × gpu_memory_utilization)."""
    selfhost_preflight_driver_min: str | None = None
    """Lowest NVIDIA driver the image's CUDA runs on."""

    # Runtime
    selfhost_runtime_install_docker: bool = True
    """Install the Docker engine from the site's package mirror when missing."""
    selfhost_runtime_nvidia: bool = False
    """Install/hold the NVIDIA driver and container toolkit (GPU hosts)."""
    selfhost_runtime_driver_package: str | None = None
    """Driver package to install and hold (e.g. `nvidia-driver-550-server`)."""

    # Images
    selfhost_images_vllm: ImageArtifact
    """The inference server image."""
    selfhost_images_gateway: ImageArtifact
    """The TLS gateway image."""

    # Weights
    selfhost_weights_source: str
    """Control-node directory holding the weights (the in-network mirror, mounted or synced)."""
    selfhost_weights_manifest: str
    """SHA-256 manifest, relative to the bundle root (`sha256sum` format, paths relative to the model dir)."""
    selfhost_weights_dir: str
    """Host directory the weights are copied to (mounted read-only into the server)."""
    selfhost_weights_adapters: list[AdapterArtifact] = []
    """LoRA adapters shipped with the weights and mounted read-only (absent from extravars when none)."""

    # Inference server. `selfhost_server` is what the roles run; the selfhost_vllm_* fields below are the
    # decisions it is made from (runbooks, preflight and the gateway read some of them). No playbook builds
    # the container from them (tests/unit/test_ops_write.py checks it).
    selfhost_server: ServerSpec
    """The inference server container (the one spec the role runs, compose shows and a release keeps)."""
    selfhost_release: ReleaseInfo
    """The rest of this release's record; the role stores it with `vllm: selfhost_server` after verify."""
    selfhost_vllm_container: str
    """Container name of the inference server."""
    selfhost_vllm_argv: list[str] 
    """Exact server arguments (the image's entrypoint is the OpenAI API server)."""
    selfhost_vllm_env: dict[str, str] 
    """Environment of the server: offline switches, telemetry off, device settings."""
    selfhost_vllm_model_mount: str 
    """Where the weights appear inside the container."""
    selfhost_vllm_cache_dir: str 
    """Host directory of vLLM's compile cache (torch.compile / CUDA-graph artifacts), mounted read-write:
    a restart, heal or rollback of the same model and flags skips recompiling."""
    selfhost_vllm_cache_mount: str = "/var/cache/vllm"
    """Where `selfhost_vllm_cache_dir` appears inside the container (the server's VLLM_CACHE_ROOT)."""
    selfhost_vllm_port: int = 8000
    """Port the server listens on inside the internal network."""
    selfhost_vllm_gpus: str | None = None
    """GPU request (`all` or a count) for the container; None on CPU."""
    selfhost_vllm_shm_size: str = "2g"
    """/dev/shm size (tensor parallel needs more than Docker's 64 MB)."""
    selfhost_vllm_ipc_host: bool = False
    """Share the host IPC namespace (NCCL with tensor parallel)."""
    selfhost_vllm_health_start_period_s: int 
    """Health-check grace period, from the plan's load-time estimate (slow loads are not killed)."""
    selfhost_vllm_served_model_name: str
    """Model name clients use."""
    selfhost_vllm_healthcheck: list[str] 
    """Container health test (Docker `CMD` form, first item `CMD`); needs only python3 in the image."""
    selfhost_health_interval_s: int = 10
    """Seconds between health probes (both containers)."""
    selfhost_health_timeout_s: int = 5
    """Seconds one health probe may take."""
    selfhost_health_retries: int = 3
    """Failed probes in a row (after the start period) before a container counts as unhealthy."""

    # Network and gateway
    selfhost_network_internal: str
    """Docker network with no route out: the server lives only here."""
    selfhost_network_edge: str
    """Docker network of the gateway's published port."""
    selfhost_gateway_container: str
    """Container name of the TLS gateway."""
    selfhost_gateway_port: int = 443
    """Port the gateway publishes on the host (the only listener outside); nginx listens on 443 inside."""
    selfhost_gateway_dir: str
    """Host directory mounted read-only at `selfhost_gateway_mount`: nginx.conf, api-keys.conf (root-only), tls/server.{crt,key}."""
    selfhost_gateway_mount: str = "/etc/selfhost/gateway"
    """Where `selfhost_gateway_dir` appears inside the gateway container (nginx.conf names files under it)."""
    selfhost_gateway_argv: list[str]
    """Command of the gateway container (nginx in the foreground with the rendered config)."""
    selfhost_gateway_healthcheck: list[str]
    """Gateway container health test (Docker `CMD` form); probes nginx itself, not the model."""
    selfhost_gateway_config: str
    """Rendered gateway (nginx) configuration, relative to the bundle root; installed as `selfhost_gateway_mount`/nginx.conf."""
    selfhost_gateway_max_body: str = "4m"
    """Request size limit at the gateway."""
    selfhost_gateway_caller_label: str = "default"
    """Caller label of the API key deploy creates, and of keys written before labels (value 1): the site's
    `selfhost_router_caller_label`. `selfhost keys add --label` issues keys with other labels."""
    selfhost_tls: TlsConfig
    """Certificate source."""
    selfhost_fleet: FleetVars | None = None
    """One endpoint for the fleet (site `selfhost_fleet: true`); None: each host serves alone (left out of extravars)."""

    selfhost_router: RouterVars | None = None
    """The hybrid router in front of vLLM (site `router/policy.yaml`); None: no router (left out of extravars)."""

    selfhost_multinode: MultiNodeVars | None = None
    """Replicas that span hosts (plan hardware.hosts_per_replica > 1); None: one host per replica (left out)."""
    selfhost_nodes: dict[str, dict] = Field(default_factory=dict, exclude=True)
    """Multi-node: inventory host → its own `selfhost_server`, `selfhost_release` and `selfhost_node`, written
    to inventory/host_vars/<host>.yml (extra vars would override host vars, so extravars leave those two out)."""

    # Reboots
    selfhost_systemd_unit: str
    """Name of the systemd unit (`files/systemd/selfhost.service` installed under this name) that starts both containers at boot."""

    selfhost_gateway_key_fetch_dir: str | None = Field(default=None, exclude=True)
    """Control-node directory that receives a newly created API keys file (`<host>.conf`) so the CLI can show
    the key once. Set by `selfhost deploy` at run time (`-e`), never serialized into the bundle."""

    # Verify
    selfhost_verify_egress_probe: str | None = None
    """`host:port` the server container must NOT reach after lockdown (None: the host's default gateway)."""

    @model_serializer(mode="wrap")
    def _omit_without_adapters(self, handler):
        """Bundles without adapters serialise exactly as before the field existed (golden bundles)."""
        data = handler(self)
        if not self.selfhost_weights_adapters and isinstance(data, dict):
            data.pop("selfhost_weights_adapters", None)
        if self.selfhost_fleet is None and isinstance(data, dict):  # likewise bundles without a fleet
            data.pop("selfhost_fleet", None)
        if self.selfhost_router is None and isinstance(data, dict):  # and without a router
            data.pop("selfhost_router", None)
        if isinstance(data, dict):
            if self.selfhost_multinode is None:  # and one-host replicas
                data.pop("selfhost_multinode", None)
            else:  # each host's own spec and record live in its host_vars (see selfhost_nodes)
                data.pop("selfhost_server", None)
                data.pop("selfhost_release", None)
        return data
