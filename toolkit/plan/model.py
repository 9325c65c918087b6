"""The Plan: the one typed object that flows planner → renderer → deployer.

`plan.yml` is this object dumped to YAML. Loading validates it; unknown keys are rejected with a
did-you-mean and every error names its path (`vllm.max_model_len: ...`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import ValidationError

from toolkit.errors import ConfigError
from toolkit.catalog.spec import Strict, validation_error
from toolkit.sizing.results import Capacity, Explanation, MemoryBreakdown
from toolkit.plan.vllm_args import VllmServeArgs

PLAN_SCHEMA_VERSION = 1

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
    assumptions: list[str]
    """What the estimate assumes (bandwidth efficiency, context, routing)."""


class Cost(Strict):
    hardware_usd: float
    """Purchase price of all GPUs (plus host share)."""
    monthly_usd: float
    """Amortized hardware + power + operations per month."""
    breakdown: dict[str, float]
    """Named parts of monthly_usd."""
    api: str | None = None
    """Closed API compared against (`provider/model`)."""
    api_monthly_usd: float | None = None
    """What the user's volume would cost on that API per month."""
    break_even_months: float | None = None
    """Months until owning is cheaper (None: never at this volume)."""
    assumptions: list[str] = []
    """Amortization period, power price, utilization."""


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

    def digest(self) -> str:
        """Stable content hash (recorded in the bundle lock)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def dump(self, path: Path) -> None:
        """Write plan.yml atomically (a failed write never leaves half a file)."""
        text = "# selfhost plan — generated; edit with care, it is validated on load.\n"
        text += yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, width=100)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "Plan":
        try:
            data = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such plan file", hint="selfhost plan MODEL --out plan.yml writes one")
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})")
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "plan") -> "Plan":
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise validation_error(exc, cls, source) from None
