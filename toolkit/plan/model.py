"""The Plan: the one typed object that flows planner → renderer → deployer.

`plan.yml` is this object dumped to YAML. Loading validates it; unknown keys are rejected with a
did-you-mean and every error names its path (`vllm.max_model_len: ...`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import ValidationError, model_serializer

from toolkit.errors import ConfigError, LicenseError
from toolkit.catalog.spec import Strict, validation_error
from toolkit.sizing.results import Capacity, MemoryBreakdown
from toolkit.plan.vllm_args import VllmServeArgs

PLAN_SCHEMA_VERSION = 1
PLAN_HEADER = "# selfhost plan — generated; edit with care, it is validated on load."

class ModelRef(Strict):
    id: str
    """Hugging Face repo id (or local directory / GGUF file name) of the weights served."""
    base_id: str
    """Catalog id whose geometry was used (the id itself unless a quantized variant was resolved)."""
    source: Literal["catalog", "local", "gguf"] = "catalog"
    """Where the geometry came from."""
    revision: str | None = None
    """Model revision (commit) to deploy, when pinned."""
    quantization: str = "none"
    """Weight format (catalog quantization name)."""
    served_model_name: str
    """Name clients use in API calls."""
    weights_gib: float
    """Total size of the weights on disk, GiB (all ranks)."""
    max_position_embeddings: int
    """Model's own context limit."""


class Hardware(Strict):
    device: Literal["gpu", "cpu"] = "gpu"
    """Accelerator kind vLLM runs on."""
    gpu: str | None = None
    """GPU SKU (catalog name) or `custom` when sized from --gpu-memory-gib; None on CPU."""
    memory_gib: float
    """Memory of one device as the runtime sees it (GPU) or the KV-cache space given (CPU), GiB."""
    tensor_parallel_size: int = 1
    """GPUs per tensor-parallel group."""
    pipeline_parallel_size: int = 1
    """Pipeline stages."""
    gpus_per_replica: int = 1
    """tensor_parallel_size × pipeline_parallel_size."""
    hosts_per_replica: int = 1
    """Hosts one replica spans: tensor parallel stays inside a host (NVLink), pipeline stages go across
    hosts (vLLM's multi-node mode, one container per host, rank 0 behind the gateway)."""
    replicas: int = 1
    """Independent copies of the server needed for the throughput asked."""


class Performance(Strict):
    decode_tokens_per_s: float
    """Single-stream decode speed, tokens/s."""
    aggregate_tokens_per_s: float
    """Decode throughput of one replica at `at_concurrency`, tokens/s."""
    per_user_tokens_per_s: float
    """Decode speed each user sees at `at_concurrency`."""
    at_concurrency: int
    """Concurrency the aggregate figure is for."""
    ttft_s: float = 0.0
    """Mean time to first token at `at_concurrency` (queue-free: prefill + HTTP/tokenizer overhead), seconds."""
    saturation_tokens_per_s: float = 0.0
    """Output tokens/s of one replica with no client cap (batch bounded by max_num_seqs and the KV cache)."""
    input_tokens: int = 0
    """Mean prompt tokens per request the figures assume."""
    output_tokens: int = 0
    """Mean output tokens per request the figures assume."""
    assumptions: list[str]
    """What the estimate assumes (bandwidth efficiency, context, routing)."""


class HybridCost(Strict):
    """A share of the requests routed to the closed API, the rest served on hardware sized for what is left."""

    routed_out: float
    """Share of requests cleared to go to the closed API (--routed-out), 0 ≤ share < 1."""
    api_usd: float
    """That share on the API per month: share × the API's monthly cost at the full volume (prices are per token)."""
    local_requests_per_month: float
    """Requests per month left to serve locally: (1 − share) × the volume."""
    replicas: int
    """Replicas of the same layout the local share needs (the capacity sizing run on the remaining load)."""
    gpus_bought: int
    """GPUs bought for those replicas (whole baseboards for SXM/OAM parts)."""
    hardware_usd: float
    """Purchase price of those GPUs plus their host share."""
    local_monthly_usd: float
    """Owning the local part per month: amortized hardware + power + operations + team."""
    breakdown: dict[str, float]
    """Named parts of local_monthly_usd."""
    monthly_usd: float
    """api_usd + local_monthly_usd."""
    break_even_months: float | None = None
    """Months until the hybrid's hardware is paid by what it saves against the API alone (None: it saves nothing)."""
    how: list[str] = []
    """The arithmetic, one line per step."""


class Cost(Strict):
    hardware_usd: float
    """Purchase price of all GPUs bought (plus host share)."""
    gpus_bought: int | None = None
    """GPUs bought: replicas × GPUs per replica, rounded up to whole baseboards for SXM/OAM parts."""
    purchase_note: str | None = None
    """Why more GPUs are bought than the replicas use (baseboard rounding), when they are."""
    monthly_usd: float
    """Owning per month: amortized hardware + power + operations + team."""
    breakdown: dict[str, float]
    """Named parts of monthly_usd."""
    cloud_monthly_usd: float | None = None
    """Renting the GPUs the replicas use, on demand at a GPU cloud, plus the team, per month (None: no cloud price)."""
    api: str | None = None
    """Closed API compared against (`provider/model`)."""
    api_reason: str | None = None
    """Why that API: given with --api, or the tier matching the model's size."""
    api_prices_as_of: str | None = None
    """Date of the API price list used."""
    requests_per_month: float | None = None
    """Monthly volume the comparison is for (None: no volume given)."""
    api_monthly_usd: float | None = None
    """What the user's volume would cost on that API per month (input and output tokens)."""
    break_even_months: float | None = None
    """Months until owning has paid for its hardware; only when owning is cheaper per month than the API."""
    break_even_requests_per_month: float | None = None
    """When the API is cheaper: the monthly volume from which owning would be cheaper (None: at no volume)."""
    verdict: str | None = None
    """One line a manager can read."""
    verdict_kind: Literal["self_host_mandatory", "use_api_prototype", "self_host_pays_back", "api_cheaper",
                          "hybrid_cheapest", "no_volume"] | None = None
    """Which verdict, as a stable key."""
    hybrid: HybridCost | None = None
    """Part of the requests routed to the API and the rest owned (--routed-out); None without it."""
    assumptions: list[str] = []
    """Every cost assumption, with the flag that overrides it."""


class LicenseVerdict(Strict):
    license: str
    """Licence name."""
    allowed: bool
    """Use as described is allowed."""
    summary: str
    """One line for the table."""
    duties: list[str]
    """What the licensee must do (attribution, AUP, naming)."""
    openness: dict[str, bool]
    """weights / inference_code / training_code / training_data open."""
    risk_accepted: bool = False
    """The licence does not allow the use described and the user planned anyway (`--accept-license-risk`);
    render and deploy proceed only because of this acknowledgement."""

    def require_ok(self, action: str) -> None:
        """Raise LicenseError unless the use is allowed or its risk was accepted (the one licence gate).

        action: what is refused (`plan`, `render`, `deploy`); the error names the flag that overrides it.
        """
        if self.allowed or self.risk_accepted:
            return
        how = (
            "pass --accept-license-risk to plan anyway (recorded in plan.yml)"
            if action == "plan"
            else "re-plan with --accept-license-risk to acknowledge it"
        )
        raise LicenseError(f"licence not allowed for this use, refusing to {action}: {self.summary} — {how}")


class AdapterRef(Strict):
    name: str
    """Served model name of the adapter (clients pass it as `model`)."""
    source: str
    """Absolute adapter directory on the control node (checked at plan time)."""
    path: str
    """Absolute path inside the server container (`--lora-modules NAME=PATH`), mounted read-only."""
    rank: int
    """Largest LoRA rank in the adapter."""
    base_model: str
    """adapter_config.json base_model_name_or_path (checked against the planned model)."""
    modules: list[str]
    """Module kinds the adapter changes."""
    sha256: dict[str, str] | None = None
    """File → sha256 manifest, filled when the adapter is shipped."""


class Runtime(Strict):
    vllm_version: str
    """vLLM release whose defaults were modelled and whose image is deployed."""
    image: str
    """Container image reference for the server."""
    load_time_s: int
    """Estimated time from container start to healthy (sets the health-check start period)."""
    env: dict[str, str] = {}
    """Extra environment for the server decided by the planner (e.g. VLLM_CPU_KVCACHE_SPACE)."""


class Plan(Strict):
    schema_version: int = PLAN_SCHEMA_VERSION
    """plan.yml format version."""
    toolkit_version: str
    """selfhost version that wrote the plan."""
    name: str
    """Deployment name (used for directories, containers and the bundle)."""
    model: ModelRef
    """What is served."""
    adapters: list[AdapterRef] = []
    """LoRA adapters served beside the base model (`--enable-lora`), each under its own name."""

    @model_serializer(mode="wrap")
    def _omit_without_adapters(self, handler):
        """Plans without adapters serialise (and digest) exactly as before the field existed."""
        data = handler(self)
        if not self.adapters and isinstance(data, dict):
            data.pop("adapters", None)
        return data
    hardware: Hardware
    """Where it runs."""
    vllm: VllmServeArgs
    """Exact server arguments."""
    runtime: Runtime
    """Engine version, image and start-up expectations."""
    memory: MemoryBreakdown
    """Per-GPU budget that justifies the arguments."""
    capacity: Capacity
    """Context and concurrency the budget allows."""
    performance: Performance
    """Expected speed."""
    cost: Cost | None = None
    """Monthly cost and break-even (None for CPU / custom devices without a price)."""
    license: LicenseVerdict
    """Licence verdict for the user's situation."""
    warnings: list[str] = []
    """Things the operator should read before buying."""

    def require_license_ok(self, action: str = "render") -> None:
        """Refuse a plan whose licence verdict is not allowed and not acknowledged (LicenseError)."""
        self.license.require_ok(action)

    def digest(self) -> str:
        """Stable content hash (recorded in the bundle lock)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def dump(self, path: Path) -> None:
        """Write plan.yml atomically (a failed write never leaves half a file).

        The first line records the sha256 of the body, so `selfhost plan` can tell an unchanged plan it
        wrote (safe to replace) from a hand-edited one or any other file (refused without --force).
        """
        from toolkit.plan.validate import check_plan

        check_plan(self, str(path))  # never write a plan that its own load would refuse
        body = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, width=100)
        text = f"{PLAN_HEADER} digest: sha256:{hashlib.sha256(body.encode()).hexdigest()}\n" + body
        path = Path(path)
        if path.exists() and not path.is_file():  # a device or FIFO is never replaced by a plan
            raise ConfigError(f"{path}: not a regular file; refusing to replace it with a plan")
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            tmp.write_text(text)
            tmp.replace(path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise ConfigError(
                f"{path}: cannot write the plan ({exc.strerror or type(exc).__name__})",
                fix="give a writable file path with -o/--out",
            ) from None

    @staticmethod
    def is_unchanged_output(path: Path) -> bool:
        """True when `path` is a plan.yml this tool wrote and nobody edited since (its recorded digest matches)."""
        from toolkit.catalog.files import PLAN_LIMIT, read_text_bounded

        try:
            text = read_text_bounded(path, PLAN_LIMIT, what="plan file")
        except ConfigError:
            return False
        head, _, body = text.partition("\n")
        found = re.fullmatch(re.escape(PLAN_HEADER) + r" digest: sha256:([0-9a-f]{64})", head)
        return found is not None and hashlib.sha256(body.encode()).hexdigest() == found.group(1)

    @classmethod
    def load(cls, path: Path) -> "Plan":
        """Read plan.yml (bounded: size, aliases, nesting) and validate it (`from_dict`)."""
        from toolkit.catalog.files import PLAN_LIMIT, load_yaml

        if not Path(path).exists():
            raise ConfigError(f"{path}: no such plan file", hint="selfhost plan MODEL --out plan.yml writes one")
        data = load_yaml(Path(path), limit=PLAN_LIMIT, what="plan file")
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "plan") -> "Plan":
        """Type-check, then check what the plan means (ranges, names, layout, the sizing itself)."""
        from toolkit.plan.validate import check_plan

        try:
            plan = cls.model_validate(data)
        except ValidationError as exc:
            raise validation_error(exc, cls, source) from None
        check_plan(plan, source)
        return plan
