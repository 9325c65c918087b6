"""The inference server container, decided once: its environment, `ServerSpec`, release record and the
files serialized from them (compose, env file).

`build_vars` (bundle.py) makes the Python-side decisions (argv, mounts, shm, GPUs); `with_server` turns
them into the one `ServerSpec` the playbooks run (`selfhost_server`) and the release record the host keeps
(`selfhost_release` + the spec). The compose file and the env file in the bundle are dumped from the same
spec, so what a reviewer reads is what Ansible runs.
"""

from __future__ import annotations

import hashlib
import json

import yaml

from toolkit.render.deploy_vars import DeployVars, DeviceRequest, Healthcheck, Mount, ReleaseInfo, ServerSpec
from toolkit.render.site import check_env

OFFLINE_ENV = {  # the server never phones home, even when a library forgets the first switch
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "VLLM_DO_NOT_TRACK": "1",
}
RECORD_SCHEMA = 2


def server_env(plan_env: dict[str, str], cache_mount: str) -> dict[str, str]:
    """The server's environment: the plan's, then the forced offline switches (last: nothing undoes them).

    `check_env` (the site's rules) refuses bad names, values with control characters (the env file has
    no quoting: `KEY=VALUE` per line, read verbatim by `docker --env-file`) and an override of a forced
    switch (ConfigError)."""
    check_env(plan_env, OFFLINE_ENV, "plan.yml: runtime.env")
    return dict(sorted({"VLLM_CACHE_ROOT": cache_mount, **plan_env, **OFFLINE_ENV}.items()))


def with_server(fields: dict) -> DeployVars:
    """DeployVars from build_vars' decisions, plus the server spec and release record made from them."""
    dv = DeployVars.model_construct(**fields)  # defaults filled in; validated below
    spec = server_spec(dv)
    return DeployVars(**fields, selfhost_server=spec, selfhost_release=release_info(dv, spec))


def server_spec(dv: DeployVars) -> ServerSpec:
    gpus, ipc_host = dv.selfhost_vllm_gpus, dv.selfhost_vllm_ipc_host
    return ServerSpec(
        container=dv.selfhost_vllm_container,
        image=dv.selfhost_images_vllm.ref,
        argv=list(dv.selfhost_vllm_argv),
        env=dict(dv.selfhost_vllm_env),
        labels={"org.selfhost.name": dv.selfhost_name, "org.selfhost.plan-digest": dv.selfhost_plan_digest},
        mounts=[Mount(source=dv.selfhost_weights_dir, target=dv.selfhost_vllm_model_mount, read_only=True),
                Mount(source=dv.selfhost_vllm_cache_dir, target=dv.selfhost_vllm_cache_mount),
                # LoRA adapters: content-addressed host dirs, read-only; a rollback's stored spec still finds its own.
                *(Mount(source=a.dir, target=a.mount, read_only=True) for a in dv.selfhost_weights_adapters)],
        network=dv.selfhost_network_internal,
        # The host IPC namespace brings the host's /dev/shm: a size of our own would be ignored.
        ipc_mode="host" if ipc_host else None,
        shm_size=None if ipc_host else dv.selfhost_vllm_shm_size,
        device_requests=[DeviceRequest(count=-1 if gpus == "all" else int(gpus))] if gpus else [],
        healthcheck=Healthcheck(test=list(dv.selfhost_vllm_healthcheck), interval=f"{dv.selfhost_health_interval_s}s",
                                timeout=f"{dv.selfhost_health_timeout_s}s", retries=dv.selfhost_health_retries,
                                start_period=f"{dv.selfhost_vllm_health_start_period_s}s"),
    )


def release_info(dv: DeployVars, spec: ServerSpec, node: dict | None = None) -> ReleaseInfo:
    """The release record minus the spec; its id is the content hash of the whole record.
    node: a multi-node host's `selfhost_node` (its group and firewall rules), kept in its record."""
    body = {
        "record_schema": RECORD_SCHEMA,
        "name": dv.selfhost_name,
        "plan_digest": dv.selfhost_plan_digest,
        "images": {"vllm": spec.image, "gateway": dv.selfhost_images_gateway.ref},
        "weights_dir": dv.selfhost_weights_dir,
        "cache_dir": dv.selfhost_vllm_cache_dir,
        "served_model_name": dv.selfhost_vllm_served_model_name,
        "gateway": {"container": dv.selfhost_gateway_container, "image": dv.selfhost_images_gateway.ref,
                    "dir": dv.selfhost_gateway_dir, "mount": dv.selfhost_gateway_mount,
                    "port": dv.selfhost_gateway_port},
        "networks": {"internal": dv.selfhost_network_internal, "edge": dv.selfhost_network_edge},
        "systemd_unit": dv.selfhost_systemd_unit,
        **({"node": node} if node else {}),
    }
    whole = json.dumps({**body, "vllm": spec.model_dump(mode="json")}, sort_keys=True)
    return ReleaseInfo(release=hashlib.sha256(whole.encode()).hexdigest()[:16], **body)


def release_record(dv: DeployVars) -> dict:
    """The record the host keeps for this bundle (what selfhost_release/tasks/record.yml writes)."""
    return {**dv.selfhost_release.model_dump(mode="json"), "vllm": dv.selfhost_server.model_dump(mode="json")}


# ---------------------------------------------------------------- files serialized from the spec

def compose_file(dv: DeployVars) -> str:
    """docker compose file of both containers, for review or a run by hand; dumped, not templated."""
    s = dv.selfhost_server
    vllm: dict = {
        "image": s.image,
        "container_name": s.container,
        "command": s.argv,
        "environment": s.env,
        "labels": s.labels,
        "volumes": [f"{m.source}:{m.target}" + (":ro" if m.read_only else "") for m in s.mounts],
        "networks": ["internal"],
    }
    if s.network == "host":  # multi-node (rank 0's spec; each host's own is in inventory/host_vars)
        del vllm["networks"]
        vllm["network_mode"] = "host"
    if s.entrypoint:
        vllm["entrypoint"] = s.entrypoint
    if s.user:
        vllm["user"] = s.user
    if s.ipc_mode:
        vllm["ipc"] = s.ipc_mode
    if s.shm_size:
        vllm["shm_size"] = s.shm_size
    if s.device_requests:
        vllm["deploy"] = {"resources": {"reservations": {"devices": [
            {"driver": d.driver, "count": "all" if d.count == -1 else d.count, "capabilities": d.capabilities[0]}
            for d in s.device_requests]}}}
    h = s.healthcheck
    vllm["healthcheck"] = {"test": h.test, "interval": h.interval, "timeout": h.timeout, "retries": h.retries,
                           "start_period": h.start_period}
    vllm["security_opt"] = s.security_opts
    vllm["restart"] = s.restart_policy
    health = {"interval": h.interval, "timeout": h.timeout, "retries": h.retries}
    gateway = {
        "image": dv.selfhost_images_gateway.ref,
        "container_name": dv.selfhost_gateway_container,
        "command": dv.selfhost_gateway_argv,
        # nginx.conf, api-keys.conf (root-only, written by the playbook) and tls/server.{crt,key}
        "volumes": [f"{dv.selfhost_gateway_dir}:{dv.selfhost_gateway_mount}:ro"],
        "ports": [f"{dv.selfhost_gateway_port}:443"],
        "networks": ["internal", "edge"],
        "depends_on": ["vllm"],
        "healthcheck": {"test": dv.selfhost_gateway_healthcheck, **health},
        "security_opt": list(s.security_opts),  # a copy: yaml would write an anchor for a shared list
        "restart": s.restart_policy,
    }
    compose = {
        "name": dv.selfhost_name,
        "services": {"vllm": vllm, "gateway": gateway},
        "networks": {"internal": {"name": dv.selfhost_network_internal, "internal": True},
                     "edge": {"name": dv.selfhost_network_edge}},
    }
    device = f"{dv.selfhost_vllm_gpus} GPU(s)" if dv.selfhost_vllm_gpus else "the CPU"
    return (f"# {dv.selfhost_name}: vLLM on {device} behind a TLS gateway.\n"
            "# Generated by `selfhost render` for review or to run by hand (`docker compose up -d` on the host);\n"
            "# `selfhost deploy` runs the same server spec (selfhost_server) with community.docker.docker_container.\n"
            "# The internal network has no route out: the server cannot reach the internet or your LAN.\n"
            + yaml.safe_dump(compose, sort_keys=False, default_flow_style=False, width=120, allow_unicode=True))


def env_file(dv: DeployVars) -> str:
    """`KEY=VALUE` lines for `docker run --env-file` (values are one line: checked in `server_env`)."""
    s = dv.selfhost_server
    return (f"# Environment of {s.container} (generated by `selfhost render`).\n"
            "# Offline switches and telemetry opt-outs are explicit: a container only sees what it is given.\n"
            "# By hand: docker run --env-file vllm.env ...\n"
            + "".join(f"{k}={v}\n" for k, v in s.env.items()))
