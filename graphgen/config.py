"""Typed, validated configuration: the model file, the hardware file, and the scenario they make.

Everything a user can set is a field here, with help text. Loading is split from parsing so that
tests and tools can build configs from dicts; the loaders are the only file readers below the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from graphgen.errors import RankflowError

Precision = Literal["fp32", "bf16", "fp16", "fp8"]


class _Strict(BaseModel):
    """Unknown fields are errors: a typo must never silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------- model file


class ModelSpec(_Strict):
    """Architecture of a dense decoder-only transformer."""

    name: str = Field(description="Display name, e.g. 'Llama-2-7B'.")
    layers: Annotated[int, Field(gt=0)] = Field(description="Number of transformer blocks.")
    hidden: Annotated[int, Field(gt=0)] = Field(description="Model width d_model.")
    heads: Annotated[int, Field(gt=0)] = Field(description="Query attention heads.")
    kv_heads: Annotated[int, Field(gt=0)] | None = Field(
        None, description="Key/value heads (GQA/MQA); defaults to heads (MHA).")
    head_dim: Annotated[int, Field(gt=0)] | None = Field(
        None, description="Per-head width; defaults to hidden / heads.")
    ffn_hidden: Annotated[int, Field(gt=0)] = Field(description="MLP inner width.")
    vocab: Annotated[int, Field(gt=0)] = Field(description="Vocabulary size (unpadded).")
    activation: Literal["gelu", "swiglu", "relu"] = Field(
        "gelu", description="MLP activation; swiglu has three weight matrices, gelu/relu two.")
    norm: Literal["layernorm", "rmsnorm"] = Field("layernorm", description="Normalisation layer.")
    tied_embeddings: bool = Field(False, description="Input embedding shared with the LM head.")
    position_encoding: Literal["rope", "learned", "alibi", "none"] = Field(
        "rope", description="Position encoding; 'learned' adds a position-embedding table.")
    max_position: Annotated[int, Field(gt=0)] | None = Field(
        None, description="Rows of a learned position table (learned encoding only).")
    bias: bool = Field(False, description="Linear layers carry biases (GPT-2/3, BLOOM).")
    dropout: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.0, description="Hidden/attention dropout probability; > 0 stores 1-byte masks for backward.")

    @model_validator(mode="after")
    def _check_heads(self) -> ModelSpec:
        kv = self.kv_heads or self.heads
        if self.heads % kv:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv_heads ({kv})")
        if self.head_dim is None and self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) is not divisible by heads ({self.heads}); "
                             "set head_dim explicitly")
        return self

    @property
    def n_kv_heads(self) -> int:
        return self.kv_heads or self.heads

    @property
    def d_head(self) -> int:
        return self.head_dim or self.hidden // self.heads


LORA_TARGETS = ("qkv_proj", "out_proj", "fc1", "fc2")


class FineTune(_Strict):
    """How the weights are trained. Pretraining is `full`."""

    method: Literal["full", "freeze", "lora", "qlora", "dora"] = Field(
        "full", description="full: all weights train; freeze: the first frozen_layers blocks (and the "
                            "embedding) are frozen; lora/qlora/dora: base weights frozen, low-rank adapters train "
                            "(qlora: NF4 base weights; dora: plus a trained magnitude vector).")
    frozen_layers: Annotated[int, Field(ge=0)] = Field(0, description="Blocks frozen from the input side (freeze).")
    lora_rank: Annotated[int, Field(gt=0)] = Field(16, description="Adapter rank r.")
    lora_alpha: Annotated[float, Field(gt=0)] = Field(32.0, description="Adapter scale numerator (alpha / r).")
    target_modules: list[Literal["qkv_proj", "out_proj", "fc1", "fc2"]] = Field(
        default_factory=lambda: list(LORA_TARGETS), description="Linears that get adapters.")
    double_quant: bool = Field(True, description="QLoRA: quantise the NF4 block scales again (8-bit).")
    quant_block: Annotated[int, Field(gt=0)] = Field(64, description="QLoRA: NF4 block size.")
    train_embeddings: bool = Field(False, description="Adapter methods: also train embedding and LM head.")


class Workload(_Strict):
    """What one optimizer step processes."""

    run_type: Literal["training"] = Field(
        "training", description="Only training steps are simulated by this version.")
    seq_len: Annotated[int, Field(gt=0)] = Field(2048, description="Tokens per sequence.")
    global_batch: Annotated[int, Field(gt=0)] | None = Field(
        None, description="Sequences per optimizer step, across all data-parallel replicas.")
    micro_batch: Annotated[int, Field(gt=0)] = Field(1, description="Sequences per microbatch.")
    precision: Precision = Field(
        "bf16", description="Matmul precision; fp8 runs GEMMs in fp8 and the rest in bf16.")
    flash_attention: bool = Field(True, description="Fused attention kernel (no s x s scores).")
    attention_kernel: str | None = Field(
        None, description="Named fused-attention implementation whose efficiency curve the device lists "
                          "under efficiency.attention_kernels (e.g. 'triton'); unset: efficiency.attention.")
    fused_kernels: bool = Field(
        True, description="Norms, rotary embedding and SwiGLU run as fused kernels (Megatron/TE, "
                          "torch.compile); false models eager PyTorch, which runs them as chains of "
                          "element-wise kernels with fp32 round trips.")
    fused_swiglu: bool | None = Field(
        None, description="SwiGLU as one fused kernel that recomputes silu in backward; false: eager "
                          "silu(gate) * up, which also keeps silu(gate) for backward. Unset: fused_kernels.")
    optimizer: Literal["adamw", "adam8bit", "sgd", "adafactor"] = Field(
        "adamw", description="adamw: fp32 m and v; adam8bit: 8-bit m and v (bitsandbytes); sgd: fp32 "
                             "momentum; adafactor: factored second moment, no momentum.")
    fused_cross_entropy: bool = Field(
        True, description="Loss fused with the LM head's softmax (no fp32 copy of the logits).")
    finetune: FineTune = FineTune()


class ModelConfig(_Strict):
    model: ModelSpec
    workload: Workload = Workload()


# ------------------------------------------------------------------------------------ hardware file


class EfficiencyCurve(_Strict):
    """Achieved fraction of peak as a function of an op's work, interpolated in log space.

    Points are [x, fraction of peak]: x is GFLOP per kernel for GEMMs, the sequence length (tokens)
    for fused attention, MiB per message for a network link. Below the first point the first
    fraction holds, above the last the last.
    """

    points: list[tuple[float, float]] = Field(min_length=1)
    # EfficiencyCurve must be declared before LinkSpec uses it.
    source: str = Field("", description="Where the measurements come from.")

    @model_validator(mode="after")
    def _sorted(self) -> EfficiencyCurve:
        xs = [p[0] for p in self.points]
        if xs != sorted(xs) or any(x <= 0 for x in xs):
            raise ValueError("points must have positive, increasing x values")
        if any(not 0 < p[1] <= 1 for p in self.points):
            raise ValueError("efficiencies must be in (0, 1]")
        return self


class GemmTable(_Strict):
    """Measured efficiencies of exact GEMM shapes, as the framework runs them.

    Each entry is [m, k, n, pass, fraction of peak] with the shape cuBLAS sees: fwd (tokens, in, out),
    dgrad (tokens, out, in), wgrad (out, tokens, in). A GEMM whose shape is listed uses its entry;
    any other falls back to the matmul curve. BF16/FP16 GEMMs only.
    """

    entries: list[tuple[int, int, int, Literal["fwd", "dgrad", "wgrad"], Annotated[float, Field(gt=0, le=1)]]] = (
        Field(min_length=1, description="[m, k, n, pass, fraction of peak] rows."))
    source: str = Field("", description="Where the measurements come from.")


class Efficiency(_Strict):
    matmul: EfficiencyCurve = Field(description="GEMM efficiency versus GEMM size.")
    matmul_shapes: GemmTable | None = Field(
        None, description="Measured efficiencies of exact GEMM shapes (fwd, dgrad and wgrad), used before the curve.")
    matmul_fp8: EfficiencyCurve | None = Field(
        None, description="FP8 GEMM efficiency versus size (defaults to the matmul curve).")
    attention: EfficiencyCurve = Field(description="Fused attention efficiency versus sequence length (tokens).")
    attention_kernels: dict[str, EfficiencyCurve] = Field(
        default_factory=dict, description="Other fused-attention implementations by name (workload.attention_kernel).")
    memory_bound: Annotated[float, Field(gt=0, le=1)] = Field(
        0.8, description="Fraction of HBM bandwidth reached by element-wise kernels and norms.")
    memory_bound_source: str = ""


class DeviceSpec(_Strict):
    name: str
    peak_tflops: dict[Literal["fp32", "tf32", "bf16", "fp16", "fp8"], Annotated[float, Field(gt=0)]] = (
        Field(description="Dense (non-sparse) peak TFLOP/s per dtype."))
    hbm_gib: Annotated[float, Field(gt=0)] = Field(description="Device memory in GiB.")
    hbm_bandwidth_gbs: Annotated[float, Field(gt=0)] = Field(description="HBM bandwidth, GB/s.")
    launch_overhead_us: Annotated[float, Field(ge=0)] = Field(
        4.0, description="Fixed cost per kernel, microseconds.")
    sm_count: Annotated[int, Field(gt=0)] | None = Field(
        None, description="Streaming multiprocessors (compute units): a fused attention call with fewer "
                          "query blocks than this leaves SMs idle. Unset: no such penalty.")
    efficiency: Efficiency
    overlap_slowdown: Annotated[float, Field(ge=0, le=1)] = Field(
        0.0, description="Fractional slowdown of compute kernels while communication kernels run beside "
                         "them (SM and memory-bandwidth contention).")
    allocator_fragmentation: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.15, description="Caching-allocator slack as a fraction of allocated memory: memory reserved but "
                          "not usable because it is split into pieces too small for the next request.")
    memory_reserved_gib: Annotated[float, Field(ge=0)] = Field(
        1.5, description="CUDA context, NCCL buffers and allocator slack, GiB.")
    sources: dict[str, str] = Field(default_factory=dict, description="field -> source.")


class CollectiveFit(_Strict):
    """A measured linear fit of one collective kind on one dimension:
    time = bus bytes / (bandwidth x efficiency) + steps x step latency + base latency."""

    efficiency: Annotated[float, Field(gt=0, le=1)] = Field(description="Fraction of the link bandwidth reached.")
    step_latency_us: Annotated[float, Field(ge=0)] = Field(description="Latency per ring step, microseconds.")
    base_latency_us: Annotated[float, Field(ge=0)] = Field(
        0.0, description="Fixed cost per collective (launch and synchronisation), microseconds.")
    source: str = ""


class LinkSpec(_Strict):
    """One network dimension as seen by one GPU."""

    topology: Literal["switch", "ring", "fully_connected"] = Field(
        "switch", description="switch: non-blocking switch (NVSwitch, fat tree); ring; fully_connected.")
    bandwidth_gbs: Annotated[float, Field(gt=0)] = Field(
        description="Per-GPU unidirectional bandwidth in GB/s (decimal).")
    latency_us: Annotated[float, Field(ge=0)] = Field(description="Per-hop latency, microseconds.")
    efficiency: Annotated[float, Field(gt=0, le=1)] = Field(
        1.0, description="Achieved fraction of bandwidth for large collectives (NCCL bus bandwidth / link).")
    derate: Annotated[float, Field(gt=0, le=1)] = Field(
        1.0, description="Degraded-link factor applied on top of efficiency (1 = healthy).")
    algorithm: Literal["ring", "tree", "direct"] = Field(
        "ring", description="Collective algorithm on this dimension.")
    message_efficiency: EfficiencyCurve | None = Field(
        None, description="Extra factor versus message size, points [MiB, fraction]: NCCL reaches its "
                          "peak bus bandwidth only for messages of hundreds of MiB.")
    collective_fits: dict[Literal["all_reduce", "all_gather", "reduce_scatter", "all_to_all"], CollectiveFit] = Field(
        default_factory=dict, description="Measured fits per collective kind; a kind listed here uses its fit "
                                          "instead of efficiency, message_efficiency and latency_us (analytical "
                                          "backend; ASTRA-sim uses the link's own numbers).")
    source: str = ""


class NodeSpec(_Strict):
    gpus_per_node: Annotated[int, Field(gt=0)]
    intra: LinkSpec = Field(description="Scale-up fabric (NVLink/NVSwitch, Infinity Fabric).")


class ParallelPlan(_Strict):
    """Parallelism plan, named as Megatron and RAPID-LLM users expect."""

    tp: Annotated[int, Field(gt=0)] = Field(1, description="Tensor-parallel size.")
    sp: bool = Field(False, description="Megatron sequence parallelism (needs tp > 1 to matter).")
    pp: Annotated[int, Field(gt=0)] = Field(1, description="Pipeline stages.")
    dp: Annotated[int, Field(gt=0)] = Field(1, description="Data-parallel replicas.")
    cp: Annotated[int, Field(gt=0)] = Field(1, description="Context parallel size (only 1 for now).")
    ep: Annotated[int, Field(gt=0)] = Field(1, description="Expert parallel size (only 1 for now).")
    schedule: Literal["gpipe", "1f1b", "interleaved"] = Field("1f1b", description="Pipeline schedule.")
    virtual_stages: Annotated[int, Field(gt=0)] = Field(
        1, description="Model chunks per pipeline rank (interleaved schedule).")
    stage_split: Literal["even", "balanced"] = Field(
        "even", description="Layers per pipeline stage: even (Megatron), or balanced by compute with the LM "
                            "head counted (nanotron), which gives the first stages more layers.")
    microbatches: Annotated[int, Field(gt=0)] | None = Field(
        None, description="Microbatches per step per replica; derived from global_batch when unset.")
    zero_stage: Literal[0, 1, 2, 3] = Field(
        0, description="0 DDP; 1 distributed optimizer; 2 + sharded grads; 3 + sharded params (FSDP).")
    recompute: Literal["none", "selective", "full"] = Field("none", description="Activation recompute.")
    recompute_every: Annotated[int, Field(gt=0)] = Field(
        1, description="Under full recompute, checkpoint every k-th block only (torchtitan's layer-level "
                       "selective AC with ac_freq=2 is full recompute with k=2).")
    bucket_mb: Annotated[float, Field(gt=0)] = Field(
        40.0, description="Gradient-reduction bucket size, MiB of gradients.")
    grad_reduce_dtype: Literal["fp32", "bf16"] = Field(
        "fp32", description="Dtype of gradient reduction (Megatron keeps fp32 main grads for bf16).")
    overlap_grad_reduce: bool = Field(True, description="Overlap DP gradient reduction with backward.")
    shard_master_weights: bool = Field(
        True, description="ZeRO-1 and above shard the fp32 master weights with the optimizer states "
                          "(Megatron, DeepSpeed); false keeps a full master copy on every rank (nanotron).")
    param_dtype_grads: bool = Field(
        False, description="Gradients are also held in the parameter dtype beside the fp32 accumulation "
                           "buffer (PyTorch DDP buckets without gradient_as_bucket_view, as nanotron's "
                           "ZeRO-0 path keeps them).")
    tp_gather_buffers: Annotated[int, Field(ge=0)] = Field(
        0, description="Persistent full-sequence activation buffers kept for sequence-parallel all-gathers "
                       "(nanotron keeps two MemoryBuffer singletons, 'allgather' and 'allgather2'; "
                       "Megatron allocates them per use).")
    param_gather_copies: Annotated[float, Field(ge=0)] = Field(
        0.0, description="Temporary full parameter copies the post-step ZeRO-1/2 all-gather allocates: "
                         "Megatron gathers in place (0); nanotron's coalesced all-gather copies into a new "
                         "output buffer and NCCL flattens it again (2).")
    overlap_param_gather: bool = Field(True, description="Overlap ZeRO/FSDP parameter all-gathers.")
    zero3_regather_after_recompute: bool = Field(
        False, description="ZeRO-3 gathers a recomputed layer's parameters a second time for its backward "
                           "(DeepSpeed frees them after every module forward, the recompute's too: three "
                           "gathers per layer and microbatch); FSDP keeps them from the recompute to the "
                           "backward (two).")
    zero3_grad_all_reduce: bool = Field(
        False, description="ZeRO-3 reduces gradients with an all-reduce and keeps its own shard (DeepSpeed 0.3 "
                           "did, DeepSpeed #1173) instead of a reduce-scatter: twice the traffic.")
    zero3_gather_gbs: Annotated[float, Field(gt=0)] | None = Field(
        None, description="Ceiling on the bus bandwidth (GB/s per GPU) of ZeRO-3/FSDP parameter all-gathers, "
                          "for implementations that the host, not the network, limits (DeepSpeed 0.3: 18.6 "
                          "GB/s, see benchmarks/frameworks.yaml). Unset: the network model alone. The "
                          "ASTRA-sim backend times these collectives on its own network model, without it.")

    @property
    def world(self) -> int:
        return self.tp * self.cp * self.ep * self.dp * self.pp


class AstraOptions(_Strict):
    mode: Literal["full", "scalable"] = Field(
        "full", description="full: every rank and node replayed by ASTRA-sim; scalable: every distinct "
                            "communication op timed by ASTRA-sim at full scale, the DAG replayed analytically.")
    network: Literal["aware", "unaware"] = Field(
        "aware", description="Congestion-aware build (one-dimensional networks only; multi-dimensional "
                             "ones fall back to unaware, with a note) or congestion-unaware.")
    timeout_s: Annotated[float, Field(gt=0)] = Field(600.0, description="Wall-clock limit for ASTRA-sim, seconds.")
    binary: str | None = Field(None, description="ASTRA-sim binary or bin directory (else $ASTRA_SIM_BIN).")


class ExecutionBackend(_Strict):
    model: Literal["analytical", "astra"] = Field(
        "analytical", description="Evaluator of the DAG: built-in analytical replay, or ASTRA-sim.")
    astra: AstraOptions = AstraOptions()


class HardwareConfig(_Strict):
    name: str
    device: DeviceSpec
    node: NodeSpec
    scale_out: LinkSpec = Field(description="Scale-out fabric between nodes, per GPU (its NIC).")
    parallelism: ParallelPlan = ParallelPlan()
    execution_backend: ExecutionBackend = ExecutionBackend()


MODEL_SECTIONS = frozenset(ModelConfig.model_fields)
HARDWARE_SECTIONS = frozenset(HardwareConfig.model_fields)


# ----------------------------------------------------------------------------------------- loading


def _read_mapping(path: Path, what: str) -> dict[str, Any]:
    if not path.exists():
        raise RankflowError("file not found", file=str(path),
                            fix=f"pass an existing {what} file (see {what}s/ for shipped examples)")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RankflowError(f"cannot parse: {first}", file=str(path),
                            fix="check the YAML/JSON syntax") from None
    if not isinstance(data, dict):
        raise RankflowError("top level must be a mapping", file=str(path),
                            fix="write the config as key: value pairs")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """'a.b=c' -> (['a', 'b'], parsed c). Values are parsed as YAML scalars (so 8, true, 1e-3 work)."""
    if "=" not in text:
        raise RankflowError(f"override '{text}' has no '='", field="--set", fix="write --set a.b=value")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise RankflowError(f"override '{text}' has an empty key", field="--set", fix="write --set a.b=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[tuple[list[str], Any]]) -> dict[str, Any]:
    """Return a copy of data with each dotted override set (creating intermediate mappings)."""
    out = json.loads(json.dumps(data))
    for parts, value in overrides:
        node = out
        for p in parts[:-1]:
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            if not isinstance(child, dict):
                raise RankflowError(f"'{'.'.join(parts)}' goes through a non-mapping field '{p}'",
                                    field="--set", fix="override a leaf field")
            node = child
        node[parts[-1]] = value
    return out


def split_overrides(overrides: list[str]) -> tuple[list, list]:
    """Route each --set to the model file or the hardware file by its first key."""
    model_ov, hw_ov = [], []
    for text in overrides:
        parts, value = parse_override(text)
        if parts[0] in MODEL_SECTIONS:
            model_ov.append((parts, value))
        elif parts[0] in HARDWARE_SECTIONS:
            hw_ov.append((parts, value))
        else:
            known = ", ".join(sorted(MODEL_SECTIONS | HARDWARE_SECTIONS))
            raise RankflowError(f"unknown section '{parts[0]}' in '{text}'", field="--set",
                                fix=f"start the key with one of: {known}")
    return model_ov, hw_ov


def _pydantic_error(exc: ValidationError, file: str) -> RankflowError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        return RankflowError("unknown field", file=file, field=loc,
                             fix="remove it or correct its spelling (see README config reference)")
    if kind == "missing":
        return RankflowError("required field is missing", file=file, field=loc, fix="add it")
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return RankflowError(msg, file=file, field=loc,
                         fix=f"got {err.get('input')!r}; give a value of the documented type/range")


def parse_model_config(data: dict[str, Any], file: str = "<model config>") -> ModelConfig:
    try:
        return ModelConfig.model_validate(data)
    except ValidationError as exc:
        raise _pydantic_error(exc, file) from None


def parse_hardware_config(data: dict[str, Any], file: str = "<hardware config>") -> HardwareConfig:
    try:
        return HardwareConfig.model_validate(data)
    except ValidationError as exc:
        raise _pydantic_error(exc, file) from None


def load_model_config(path: str | Path, overrides: list[tuple[list[str], Any]] = ()) -> ModelConfig:
    """Read a Rankflow model YAML, or a Hugging Face config.json (detected by its keys)."""
    from graphgen.hf_import import is_hf_config, model_from_hf

    p = Path(path)
    data = _read_mapping(p, "model_config")
    if is_hf_config(data):
        data = {"model": model_from_hf(data, str(p))}
    return parse_model_config(apply_overrides(data, list(overrides)), str(p))


def load_hardware_config(path: str | Path, overrides: list[tuple[list[str], Any]] = ()) -> HardwareConfig:
    p = Path(path)
    data = _read_mapping(p, "hardware_config")
    return parse_hardware_config(apply_overrides(data, list(overrides)), str(p))
