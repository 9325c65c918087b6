"""What a plan means, checked on every load: plan.yml is hand-editable, so nothing in it is trusted.

pydantic checks the types; this module checks the rest, after them:

- every number is finite and inside a physical range; every string is short and free of control
  characters; names and identifiers match the patterns the renderer and the container runtime need;
- the schema version is one this release reads;
- the layout is consistent: tp × pp = gpus_per_replica, the server arguments agree with the hardware,
  max_model_len fits both the model and the KV capacity, the quantization flag matches the weights;
- and, when the catalog knows the model, the sizing engine re-runs the budget for the plan's layout
  with its vLLM arguments and refuses a plan that no longer fits.

Each problem is one line naming the file and key; values are echoed only as short excerpts.
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Any

from toolkit import catalog
from toolkit.catalog.files import excerpt
from toolkit.errors import ConfigError, SelfhostError

SUPPORTED_SCHEMA_VERSIONS = (1,)
MAX_LINES = 8

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
"""Deployment name: a directory, container and compose-project name."""
SERVED_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
"""Name clients pass as `model`."""
REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
LOCAL_RE = re.compile(r"^/[^\x00-\x1f\x7f{}$`;|&<>\"'\\*?]{0,1023}$")
MOUNT_RE = re.compile(r"^/[A-Za-z0-9._/-]{1,255}$")
REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$")
GPU_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._()-]{0,63}$")
IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,255}$")
VERSION_RE = re.compile(r"^[0-9][0-9A-Za-z.+-]{0,31}$")
ENV_KEY_RE = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")
ENV_VALUE_RE = re.compile(r"^[A-Za-z0-9._,:=/+-]{0,256}$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")

MAX_STRING = 1000
MAX_ITEMS = 200
MAX_NUMBER = 1e15


def check_plan(plan: Any, source: str) -> None:
    """Raise one ConfigError listing (one line each) what is wrong with a type-valid Plan; else return."""
    problems: list[tuple[str, str]] = []
    _generic(plan.model_dump(mode="python"), "", problems)
    if not problems:
        _semantic(plan, problems)
    sized = False
    if not problems:
        sized = _resize(plan, problems)
    if not problems:
        return
    lines = [f"{source}: {key}: {what}" if key else f"{source}: {what}" for key, what in problems[:MAX_LINES]]
    if len(problems) > MAX_LINES:
        lines.append(f"{source}: … and {len(problems) - MAX_LINES} more problems")
    model_id = plan.model.id if REPO_RE.match(plan.model.id) or LOCAL_RE.match(plan.model.id) else "MODEL"
    fix = (
        f"re-run `selfhost plan {excerpt(model_id, 80).strip(chr(39))} -o {excerpt(source, 80).strip(chr(39))} --force` "
        "for the layout you want, or undo the hand edit"
        if sized
        else "correct the keys above, or regenerate the file with `selfhost plan`"
    )
    raise ConfigError("\n".join(lines), fix=fix)


# ---------------------------------------------------------------- every leaf


def _generic(value: Any, key: str, out: list) -> None:
    """Finite, bounded numbers; short strings without control characters; bounded collections."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            out.append((key, f"must be a finite number (got {excerpt(value)})"))
        elif abs(value) > MAX_NUMBER:
            out.append((key, f"{excerpt(value)} is out of range"))
        return
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            out.append((key, f"text longer than {MAX_STRING} characters (got {excerpt(value)})"))
        elif CONTROL.search(value):
            out.append((key, f"must not contain newlines or control characters (got {excerpt(value)})"))
        return
    if isinstance(value, dict):
        if len(value) > MAX_ITEMS:
            out.append((key, f"more than {MAX_ITEMS} entries"))
            return
        for k, v in value.items():
            sub = f"{key}.{k}" if key else str(k)
            if len(str(k)) > 64 or CONTROL.search(str(k)):
                out.append((key, f"bad key {excerpt(k)}"))
                continue
            _generic(v, sub, out)
        return
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_ITEMS:
            out.append((key, f"more than {MAX_ITEMS} entries"))
            return
        for i, v in enumerate(value):
            _generic(v, f"{key}[{i}]", out)


# ---------------------------------------------------------------- meaning


def _semantic(plan: Any, out: list) -> None:
    def bad(key: str, what: str) -> None:
        out.append((key, what))

    def between(key: str, value: float | None, lo: float, hi: float, *, lo_open: bool = False) -> None:
        if value is None:
            return
        if (value <= lo if lo_open else value < lo) or value > hi:
            left = "(" if lo_open else "["
            bad(key, f"{excerpt(value)} is outside {left}{lo:g}, {hi:g}]")

    def pattern(key: str, value: str | None, rx: re.Pattern, what: str) -> None:
        if value is not None and (not rx.match(value) or ".." in value.split("/")):
            bad(key, f"{excerpt(value)} is not {what}")

    if plan.schema_version not in SUPPORTED_SCHEMA_VERSIONS:
        bad("schema_version", f"{excerpt(plan.schema_version)} is not supported (this selfhost reads version "
            f"{', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))})")
    pattern("toolkit_version", plan.toolkit_version, VERSION_RE, "a version")
    pattern("name", plan.name, NAME_RE, "a valid name (lower-case letters, digits, '.', '_', '-'; at most 63)")

    m, hw, v, rt = plan.model, plan.hardware, plan.vllm, plan.runtime
    if m.source == "catalog":
        pattern("model.id", m.id, REPO_RE, "a Hugging Face repo id (org/name)")
    elif not REPO_RE.match(m.id):  # local weights, or a bare config.json that named its repo
        pattern("model.id", m.id, LOCAL_RE, "a repo id or an absolute local path without shell or template characters")
    if not (REPO_RE.match(m.base_id) or LOCAL_RE.match(m.base_id)) or ".." in m.base_id.split("/"):
        bad("model.base_id", f"{excerpt(m.base_id)} is not a repo id or local path")
    pattern("model.revision", m.revision, REVISION_RE, "a revision (commit, tag or branch)")
    pattern("model.served_model_name", m.served_model_name, SERVED_RE, "a valid served model name")
    quants = catalog.quantizations()
    if m.quantization not in quants:
        bad("model.quantization", f"unknown quantization {excerpt(m.quantization)}")
    between("model.weights_gib", m.weights_gib, 0, 100_000, lo_open=True)
    between("model.max_position_embeddings", m.max_position_embeddings, 16, 1 << 25)

    if hw.device == "gpu":
        if hw.gpu is None:
            bad("hardware.gpu", "required when device is gpu")
        elif not GPU_RE.match(hw.gpu):
            bad("hardware.gpu", f"{excerpt(hw.gpu)} is not a GPU name")
        elif hw.gpu != "custom":
            spec = _known_gpu(hw.gpu)  # a name the catalog does not know is re-checked by nothing, not refused
            if spec is not None and abs(spec.memory_gib - hw.memory_gib) > 0.01:
                bad("hardware.memory_gib", f"{excerpt(hw.memory_gib)} does not match {spec.name} ({spec.memory_gib:g} GiB)")
            if spec is not None and hw.tensor_parallel_size > spec.max_per_node:
                bad("hardware.tensor_parallel_size", f"{hw.tensor_parallel_size} spans hosts ({spec.name}: "
                    f"{spec.max_per_node} per host); keep TP within a host, pipeline stages across hosts")
            if spec is not None and hw.hosts_per_replica != -(-hw.gpus_per_replica // spec.max_per_node):
                bad("hardware.hosts_per_replica", f"{hw.hosts_per_replica} does not match {hw.gpus_per_replica} GPUs "
                    f"at {spec.max_per_node} per host")
        between("hardware.memory_gib", hw.memory_gib, 0, 4096, lo_open=True)
        if hw.gpus_per_replica != hw.tensor_parallel_size * hw.pipeline_parallel_size:
            bad("hardware.gpus_per_replica", f"{hw.gpus_per_replica} is not tensor_parallel_size × pipeline_parallel_size "
                f"({hw.tensor_parallel_size} × {hw.pipeline_parallel_size})")
        if v.gpu_memory_utilization is None:
            bad("vllm.gpu_memory_utilization", "required on GPU")
    else:
        if hw.gpu is not None:
            bad("hardware.gpu", "must be null when device is cpu")
        between("hardware.memory_gib", hw.memory_gib, 0, 65536, lo_open=True)
        if hw.gpus_per_replica not in (0, 1):
            bad("hardware.gpus_per_replica", "must be 0 when device is cpu")
        if hw.hosts_per_replica != hw.pipeline_parallel_size:
            bad("hardware.hosts_per_replica", "must equal pipeline_parallel_size on cpu (one stage per host)")
    between("hardware.tensor_parallel_size", hw.tensor_parallel_size, 1, 64)
    between("hardware.pipeline_parallel_size", hw.pipeline_parallel_size, 1, 64)
    between("hardware.replicas", hw.replicas, 1, 100_000)
    between("hardware.hosts_per_replica", hw.hosts_per_replica, 1, 64)

    pattern("vllm.model", v.model, MOUNT_RE, "an absolute path inside the container")
    pattern("vllm.served_model_name", v.served_model_name, SERVED_RE, "a valid served model name")
    if v.served_model_name != m.served_model_name:
        bad("vllm.served_model_name", f"{excerpt(v.served_model_name)} differs from model.served_model_name")
    if v.tensor_parallel_size != hw.tensor_parallel_size:
        bad("vllm.tensor_parallel_size", f"{v.tensor_parallel_size} differs from hardware.tensor_parallel_size "
            f"({hw.tensor_parallel_size})")
    if v.pipeline_parallel_size != hw.pipeline_parallel_size:
        bad("vllm.pipeline_parallel_size", f"{v.pipeline_parallel_size} differs from hardware.pipeline_parallel_size "
            f"({hw.pipeline_parallel_size})")
    between("vllm.gpu_memory_utilization", v.gpu_memory_utilization, 0, 1, lo_open=True)
    between("vllm.max_num_seqs", v.max_num_seqs, 1, 65536)
    between("vllm.max_num_batched_tokens", v.max_num_batched_tokens, 1, 1 << 24)
    if v.max_num_batched_tokens < v.max_num_seqs:
        bad("vllm.max_num_batched_tokens", f"{v.max_num_batched_tokens} is below max_num_seqs ({v.max_num_seqs}); vLLM refuses that")
    between("vllm.port", v.port, 1, 65535)
    try:
        ipaddress.ip_address(v.host)
    except ValueError:
        if v.host != "localhost":
            bad("vllm.host", f"{excerpt(v.host)} is not an IP address")
    between("vllm.max_model_len", v.max_model_len, 16, 1 << 25)
    if v.max_model_len > m.max_position_embeddings:
        bad("vllm.max_model_len", f"{v.max_model_len} exceeds the model's maximum "
            f"(model.max_position_embeddings {m.max_position_embeddings})")
    if v.max_model_len > plan.capacity.max_model_len_possible:
        bad("vllm.max_model_len", f"{v.max_model_len} exceeds what the KV cache holds "
            f"(capacity.max_model_len_possible {plan.capacity.max_model_len_possible})")
    if m.quantization in quants:
        _quantization(plan, quants[m.quantization], bad)

    pattern("runtime.image", rt.image, IMAGE_RE, "a container image reference")
    pattern("runtime.vllm_version", rt.vllm_version, VERSION_RE, "a vLLM release")
    if VERSION_RE.match(rt.vllm_version):
        from toolkit.sizing.engine import check_version

        try:
            check_version(rt.vllm_version)
        except SelfhostError:
            bad("runtime.vllm_version", f"{excerpt(rt.vllm_version)} has no engine profile")
    between("runtime.load_time_s", rt.load_time_s, 1, 7 * 86400)
    for k, val in rt.env.items():
        if not ENV_KEY_RE.match(k):
            bad("runtime.env", f"{excerpt(k)} is not an environment variable name")
        elif not ENV_VALUE_RE.match(val):
            bad(f"runtime.env.{k}", f"{excerpt(val)} has characters a server setting does not need")

    for name, value in plan.memory.model_dump().items():
        between(f"memory.{name}", value, -100_000 if name == "headroom_gib" else 0, 100_000)
    c = plan.capacity
    for name in ("kv_cache_tokens", "max_model_len", "max_model_len_possible", "kv_bytes_per_token"):
        between(f"capacity.{name}", getattr(c, name), 0, 1e13)
    between("capacity.max_concurrency", c.max_concurrency, 0, 1e9)
    p = plan.performance
    for name in ("decode_tokens_per_s", "aggregate_tokens_per_s", "per_user_tokens_per_s"):
        between(f"performance.{name}", getattr(p, name), 0, 1e9)
    between("performance.at_concurrency", p.at_concurrency, 1, 1e7)
    if plan.cost is not None:
        between("cost.hardware_usd", plan.cost.hardware_usd, 0, 1e12)
        between("cost.monthly_usd", plan.cost.monthly_usd, 0, 1e12)


def _known_gpu(name: str):
    try:
        return catalog.gpu(name)
    except SelfhostError:
        return None


def _quantization(plan: Any, q: Any, bad) -> None:
    """vllm.quantization must carry what the sizing assumed, and a catalog repo must hold those weights."""
    m, v = plan.model, plan.vllm
    if v.quantization is not None and v.quantization != q.vllm_quantization:
        bad("vllm.quantization", f"{excerpt(v.quantization)} does not match model.quantization {q.name!r} "
            f"(expected {q.vllm_quantization!r})")
        return
    if m.source != "catalog" or q.name == "none":
        return
    from toolkit.catalog.resolve import suffix_quant

    found = catalog.find_model(m.base_id)
    native = found[0].native_quantization if found else None
    in_repo = (suffix_quant(m.id) or catalog.quant("none")).name
    prequantized = q.name in (in_repo, native)
    if prequantized:
        return
    if q.kind == "vllm" and q.vllm_quantization:
        if v.quantization != q.vllm_quantization:
            bad("vllm.quantization", f"must be {q.vllm_quantization!r}: {excerpt(m.id)} is not a {q.name} checkpoint "
                "and vLLM quantizes it at load only when told")
    else:
        bad("model.quantization", f"{q.name!r} needs a pre-quantized checkpoint but model.id {excerpt(m.id)} "
            "holds other weights")


# ---------------------------------------------------------------- the sizing itself


def _resize(plan: Any, out: list) -> bool:
    """Re-run the budget for a catalog model's layout; add a problem when it no longer fits. True if re-run."""
    m, hw, v = plan.model, plan.hardware, plan.vllm
    if m.source != "catalog":
        return False
    found = catalog.find_model(m.base_id)
    if found is None:
        return False
    from toolkit.sizing.engine import engine_profile
    from toolkit.sizing.estimate import Device, Settings, estimate

    spec = found[0]
    q = catalog.quant(m.quantization)
    if hw.device == "gpu":
        if hw.gpu == "custom":
            from toolkit.plan.planner import _custom_gpu

            gpu = _custom_gpu(hw.memory_gib)
        else:
            gpu = _known_gpu(hw.gpu)
            if gpu is None:
                return False
        device = Device(memory_gib=gpu.memory_gib, gpu=gpu)
        kv_space = None
    else:
        device = Device(memory_gib=hw.memory_gib, kind="cpu")
        try:
            kv_space = float(plan.runtime.env.get("VLLM_CPU_KVCACHE_SPACE", "")) or None
        except ValueError:
            kv_space = None
    settings = Settings(
        max_model_len=v.max_model_len,
        gpu_memory_utilization=v.gpu_memory_utilization,
        max_num_batched_tokens=v.max_num_batched_tokens,
        max_num_seqs=v.max_num_seqs,
        kv_cache_dtype=v.kv_cache_dtype,
        enforce_eager=v.enforce_eager,
        cpu_kv_space_gib=kv_space,
    )
    try:
        est = estimate(spec, q, device, settings, tp=v.tensor_parallel_size, pp=v.pipeline_parallel_size,
                       profile=engine_profile(plan.runtime.vllm_version))
    except (SelfhostError, ArithmeticError, ValueError) as exc:
        out.append(("", f"cannot be re-checked against the sizing engine ({excerpt(str(exc), 80)})"))
        return True
    if not est.fits:
        reason = "; ".join(est.reasons[:2]) or "the memory budget does not close"
        out.append(("", f"no longer fits {hw.gpus_per_replica or 1}× {hw.gpu or 'CPU'} with these vLLM arguments: "
                        f"{reason}"))
    return True
