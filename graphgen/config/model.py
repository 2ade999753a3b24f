"""The model file: architecture (`model`) and what one step processes (`workload`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictInt, field_validator, model_validator

from graphgen.config.base import Bool, DimInt, Fraction, LayerCount, PosFloat, PosInt, Str, Strict

Precision = Literal["fp32", "bf16", "fp16", "fp8", "fp4"]
AttentionKind = Literal["full", "sliding", "gated_delta"]


class MoESpec(Strict):
    """Mixture-of-experts MLP: routed experts (top-k of `experts` per token) plus shared experts that
    every token passes through. Which layers are MoE: every `every`-th layer after the first
    `first_dense_layers`, except those listed in `dense_layers`."""

    experts: DimInt = Field(description="Routed experts per MoE layer.")
    top_k: DimInt = Field(description="Routed experts each token is sent to.")
    expert_ffn_hidden: DimInt = Field(description="Inner width of one routed expert's MLP.")
    shared_experts: Annotated[StrictInt, Field(ge=0, le=1024)] = Field(
        0, description="Shared experts (DeepSeek, Qwen2-MoE, Llama 4), each as wide as shared_ffn_hidden / count.")
    shared_ffn_hidden: DimInt | None = Field(
        None, description="Total inner width of the shared experts (one MLP); default shared_experts x "
                          "expert_ffn_hidden.")
    shared_gate: Bool = Field(
        False, description="A sigmoid gate (a hidden -> 1 linear) scales the shared experts' output per token "
                           "(HF Qwen2-MoE/Qwen3-Next shared_expert_gate, Megatron --moe-shared-expert-gate).")
    first_dense_layers: Annotated[StrictInt, Field(ge=0, le=10_000)] = Field(
        0, description="Leading layers with a dense MLP (DeepSeek first_k_dense_replace).")
    every: PosInt = Field(1, description="MoE every k-th layer after the dense prefix (Llama 4's interleave step, "
                                         "Qwen2-MoE's decoder_sparse_step), counted from the first MoE layer.")
    dense_layers: list[Annotated[StrictInt, Field(ge=0, le=10_000)]] = Field(
        default_factory=list, max_length=10_000, description="Further layers with a dense MLP (Qwen mlp_only_layers).")
    router: Literal["softmax", "sigmoid"] = Field(
        "softmax", description="Router score function (DeepSeek-V3 uses sigmoid); its cost is the same.")
    aux_loss: Bool = Field(
        True, description="Training computes a load-balancing loss on the router's scores (Switch/GShard, "
                          "per batch or per sequence: Megatron --moe-aux-loss-coeff > 0, HF router_aux_loss_coef "
                          "or aux_loss_alpha); false for routing without one (Megatron's default coefficient 0).")
    capacity_factor: PosFloat | None = Field(
        None, description="Tokens an expert takes at most, as a multiple of the balanced share; unset: dropless.")
    expert_groups: PosInt = Field(
        1, description="Experts fall into this many equal groups (DeepSeek n_group), which group-limited routing "
                       "picks from.")
    groups_per_token: PosInt | None = Field(
        None, description="A token's experts come from at most this many groups (DeepSeek topk_group; with a "
                          "group per node, DeepSeek-V3's node-limited routing); unset: from any.")

    @model_validator(mode="after")
    def _check(self) -> MoESpec:
        if self.top_k > self.experts:
            raise ValueError(f"top_k ({self.top_k}) exceeds the number of experts ({self.experts})")
        if self.experts % self.expert_groups:
            raise ValueError(f"{self.experts} experts do not split into {self.expert_groups} equal groups")
        g = self.groups_per_token
        if g is not None and (g > self.expert_groups or self.top_k > g * self.experts // self.expert_groups):
            raise ValueError(f"groups_per_token {g} must be at most expert_groups ({self.expert_groups}) and hold "
                             f"the token's top_k ({self.top_k}) experts")
        return self

    @property
    def shared_width(self) -> int:
        return self.shared_ffn_hidden or self.shared_experts * self.expert_ffn_hidden


class MLASpec(Strict):
    """DeepSeek's multi-head latent attention: queries and keys/values pass through low-rank latents;
    the KV cache holds the kv latent and the shared rotary key."""

    q_lora_rank: DimInt | None = Field(None, description="Query latent width; unset: a plain query projection "
                                                         "(DeepSeek-V2-Lite).")
    kv_lora_rank: DimInt = Field(description="Key/value latent width (what the KV cache stores per token).")
    qk_nope_head_dim: DimInt = Field(description="Per-head query/key width without rotary embedding.")
    qk_rope_head_dim: DimInt = Field(description="Per-head query/key width with rotary embedding (the key's is shared).")
    v_head_dim: DimInt = Field(description="Per-head value width.")


class LinearAttentionSpec(Strict):
    """Gated DeltaNet linear attention (Yang et al. 2024, arXiv 2412.06464; Qwen3-Next, Megatron-Core's
    GatedDeltaNet): the layers attention_pattern marks 'gated_delta' project to keys, values, an output
    gate and per-head decay/step scalars, run a short causal convolution, then the chunked delta rule
    over a (key x value) state per head instead of softmax attention."""

    key_heads: DimInt = Field(description="Query/key heads (linear_num_key_heads).")
    value_heads: DimInt = Field(description="Value heads (linear_num_value_heads).")
    key_head_dim: DimInt = Field(description="Per-head query/key width.")
    value_head_dim: DimInt = Field(description="Per-head value width.")
    conv_kernel: PosInt = Field(4, le=64, description="Width of the short causal depthwise convolution.")

    @model_validator(mode="after")
    def _grouped(self) -> LinearAttentionSpec:
        # Each key head serves value_heads / key_heads value heads, as grouped-query attention does
        # (Megatron-LM megatron/core/transformer/transformer_config.py @d98e8a64: 'linear_num_value_heads
        # must be a multiple of linear_num_key_heads'; HF Qwen3NextGatedDeltaNet repeat_interleave).
        if self.value_heads % self.key_heads:
            raise ValueError(f"value_heads ({self.value_heads}) must be a multiple of key_heads ({self.key_heads})")
        return self


class ModelSpec(Strict):
    """Architecture of a decoder-only transformer."""

    name: Str = Field(description="Display name, e.g. 'Llama-2-7B'.")
    layers: LayerCount = Field(description="Number of transformer blocks.")
    hidden: DimInt = Field(description="Model width d_model.")
    heads: DimInt = Field(description="Query attention heads.")
    kv_heads: DimInt | None = Field(None, description="Key/value heads (GQA/MQA); defaults to heads (MHA).")
    head_dim: DimInt | None = Field(None, description="Per-head width; defaults to hidden / heads.")
    ffn_hidden: DimInt = Field(description="MLP inner width.")
    vocab: DimInt = Field(description="Vocabulary size (unpadded).")
    activation: Literal["gelu", "swiglu", "relu"] = Field(
        "gelu", description="MLP activation; swiglu has three weight matrices, gelu/relu two.")
    norm: Literal["layernorm", "rmsnorm"] = Field("layernorm", description="Normalisation layer.")
    tied_embeddings: Bool = Field(False, description="Input embedding shared with the LM head.")
    rotary_fraction: Annotated[float, Field(gt=0, le=1, strict=True)] = Field(
        1.0, description="Share of each head's width rotary embedding rotates (HF partial_rotary_factor, Megatron "
                         "--rotary-percent).")
    position_encoding: Literal["rope", "learned", "alibi", "none"] = Field(
        "rope", description="Position encoding; 'learned' adds a position-embedding table.")
    max_position: DimInt | None = Field(
        None, description="Longest sequence the model takes: rows of a learned position table, or the "
                          "context length a rotary model was trained for. Unset: no limit is checked.")
    bias: Bool = Field(False, description="Linear layers carry biases (GPT-2/3, BLOOM).")
    qkv_bias: Bool = Field(
        False, description="Query/key/value projections carry biases even where `bias` is false (Qwen2, "
                           "Qwen2-MoE); the output projection and the MLP follow `bias`.")
    parallel_residual: Bool = Field(
        False, description="Attention and MLP both read the block input, each through its own norm, and add to "
                           "the residual stream together: x + attn(ln1(x)) + mlp(ln2(x)) (GPT-NeoX, GPT-J). "
                           "Same parameters and FLOPs; one activation fewer is saved per layer.")
    dropout: float = Field(0.0, ge=0, lt=1, strict=True,
                           description="Hidden/attention dropout probability; > 0 stores 1-byte masks for backward.")
    sliding_window: DimInt | None = Field(
        None, description="Keys each query attends to in sliding-window layers (Mistral, gpt-oss).")
    attention_pattern: list[AttentionKind] | None = Field(
        None, min_length=1, max_length=10_000,
        description="Attention kind of each layer, repeated over the layers (gpt-oss: [sliding, full]). "
                    "Unset: every layer 'sliding' when sliding_window is set, else 'full'.")
    moe: MoESpec | None = Field(None, description="Mixture-of-experts MLP (unset: every layer dense).")
    mla: MLASpec | None = Field(None, description="Multi-head latent attention (unset: MHA/GQA/MQA).")
    linear_attention: LinearAttentionSpec | None = Field(
        None, description="Dimensions of the layers attention_pattern marks 'gated_delta' (Gated DeltaNet).")
    attention_output_gate: Bool = Field(
        False, description="Softmax-attention layers gate their output per head with a sigmoid of a second "
                           "query projection (Qwen3-Next): the query projection is twice as wide.")
    mtp_layers: Annotated[StrictInt, Field(ge=0, le=16)] = Field(
        0, description="Multi-token-prediction modules after the last layer (DeepSeek-V3: 1), each a "
                       "projection and one more transformer block with its own loss over the shared head.")

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        kv = self.kv_heads or self.heads
        if self.heads % kv:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv_heads ({kv})")
        if self.head_dim is None and self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) is not divisible by heads ({self.heads}); "
                             "set head_dim explicitly")
        if self.qkv_bias and self.mla is not None:
            raise ValueError("qkv_bias is for q/k/v projections; latent attention (mla) has none")
        if self.attention_pattern and "sliding" in self.attention_pattern and self.sliding_window is None:
            raise ValueError("attention_pattern names sliding layers but sliding_window is not set")
        if self.attention_pattern and "gated_delta" in self.attention_pattern:
            if self.linear_attention is None:
                raise ValueError("attention_pattern names gated_delta layers but linear_attention is not set")
            if self.mla is not None:
                raise ValueError("gated_delta layers beside latent attention (mla) are not modelled")
        if self.moe is not None:
            if self.moe.first_dense_layers >= self.layers:
                raise ValueError(f"moe.first_dense_layers ({self.moe.first_dense_layers}) leaves none of the "
                                 f"{self.layers} layers with experts")
            beyond = [x for x in self.moe.dense_layers if x >= self.layers]
            if beyond:
                raise ValueError(f"moe.dense_layers names layer {beyond[0]}; layers are numbered 0 to {self.layers - 1}")
        if self.attention_output_gate and self.mla is not None:
            raise ValueError("attention_output_gate widens a query projection; latent attention (mla) has its own")
        return self

    @property
    def n_kv_heads(self) -> int:
        return self.kv_heads or self.heads

    @property
    def d_head(self) -> int:
        return self.head_dim or self.hidden // self.heads

    def attention_kind(self, layer: int) -> AttentionKind:
        """The attention kind of one layer (full or sliding window)."""
        if self.attention_pattern:
            return self.attention_pattern[layer % len(self.attention_pattern)]
        return "sliding" if self.sliding_window else "full"

    def is_moe(self, layer: int) -> bool:
        """Whether a layer's MLP is the mixture of experts."""
        moe = self.moe
        if moe is None or layer < moe.first_dense_layers or layer in moe.dense_layers:
            return False
        return (layer - moe.first_dense_layers) % moe.every == 0


LORA_TARGETS = ("qkv_proj", "out_proj", "fc1", "fc2")
FinetuneMethod = Literal["full", "freeze", "lora", "qlora", "dora"]


class FineTune(Strict):
    """How the weights are trained. Pretraining is `full`."""

    method: FinetuneMethod = Field(
        "full", description="full: all weights train; freeze: the first frozen_layers blocks (and the "
                            "embedding) are frozen; lora/qlora/dora: base weights frozen, low-rank adapters train "
                            "(qlora: NF4 base weights; dora: plus a trained magnitude vector).")
    frozen_layers: Annotated[StrictInt, Field(ge=0, le=10_000)] = Field(
        0, description="Blocks frozen from the input side (freeze).")
    lora_rank: DimInt = Field(16, description="Adapter rank r.")
    lora_alpha: PosFloat = Field(32.0, description="Adapter scale numerator (alpha / r).")
    target_modules: list[Literal["qkv_proj", "out_proj", "fc1", "fc2"]] = Field(
        default_factory=lambda: list(LORA_TARGETS), max_length=4, description="Linears that get adapters.")
    double_quant: Bool = Field(True, description="QLoRA: quantise the NF4 block scales again (8-bit).")
    quant_block: DimInt = Field(64, description="QLoRA: NF4 block size.")
    train_embeddings: Bool = Field(False, description="Adapter methods: also train embedding and LM head.")


WeightDtype = Literal["bf16", "fp16", "fp8", "int8", "int4", "fp4"]


class InferenceSpec(Strict):
    """One inference iteration: a prefill of `input_len` prompt tokens for each of `batch` sequences, or
    one decode step for `batch` sequences that hold `context_len` tokens each in their KV cache."""

    phase: Literal["prefill", "decode"] = Field("decode", description="prefill (the prompt) or decode (one "
                                                                       "new token per sequence).")
    batch: PosInt = Field(1, le=1_000_000, description="Sequences in the iteration.")
    input_len: DimInt = Field(2048, description="Prompt tokens per sequence.")
    output_len: DimInt = Field(128, description="Tokens each sequence generates (sets the decode context when "
                                                "context_len is unset, and the serving default).")
    context_len: DimInt | None = Field(
        None, description="Decode: tokens already in each sequence's KV cache; unset: input_len + output_len / 2, "
                          "the average over a generation.")
    weight_dtype: WeightDtype | None = Field(
        None, description="Stored weights: bf16/fp16, fp8 (W8A8), int8/int4 (weight-only, dequantised into the "
                          "compute dtype) or fp4 (where the device has an fp4 peak). Unset: workload.precision.")
    kv_dtype: Literal["bf16", "fp16", "fp8"] | None = Field(
        None, description="KV-cache dtype. Unset: the compute dtype (bf16 for fp8/fp4 compute).")
    block_size: DimInt = Field(16, le=1024, description="Tokens per paged KV-cache block (vLLM's default 16).")
    gpu_memory_utilization: Fraction = Field(
        0.9, description="Share of each GPU's memory the engine may use for weights, activations and KV cache "
                         "(vLLM's gpu_memory_utilization, default 0.9).")
    kv_cache_free_fraction: Fraction | None = Field(
        None, description="TensorRT-LLM's kv_cache_free_gpu_mem_fraction: the KV cache takes this share of the memory "
                          "left after weights, activations and the runtime; when set it replaces "
                          "gpu_memory_utilization's accounting.")
    max_num_seqs: DimInt = Field(256, description="Sequences an iteration may hold (vLLM's max_num_seqs, 256; "
                                                  "TensorRT-LLM's max_batch_size).")
    max_num_batched_tokens: DimInt = Field(
        8192, description="Tokens one iteration may process (the activation peak the KV budget leaves room for; "
                          "vLLM's max_num_batched_tokens).")

    def context(self) -> int:
        return self.context_len if self.context_len is not None else self.input_len + self.output_len // 2


class Workload(Strict):
    """What one optimizer step (training) or one iteration (inference) processes."""

    run_type: Literal["training", "inference"] = Field(
        "training", description="training (one optimizer step) or inference (one prefill or decode iteration, "
                                "workload.inference).")
    inference: InferenceSpec | None = Field(None, description="The inference iteration (run_type: inference).")
    seq_len: DimInt = Field(2048, description="Tokens per sequence.")
    packed_sample_len: DimInt | None = Field(
        None, description="Sequence packing (fine-tuning): the mean tokens of the samples packed into each "
                          "seq_len sequence. Attention stays within each sample (FlashAttention varlen, Transformer "
                          "Engine THD), so its work, its kernel's efficiency and the model FLOPs follow this length. "
                          "Unset: one sample per sequence.")
    framework: Str | None = Field(
        None, description="Training framework whose profile (framework_configs/<name>.yaml) fills the workload "
                          "and parallelism fields left unset, and whose FLOP and memory conventions the report "
                          "adds: megatron-lm, megatron-bridge, nemo, torchtitan, deepspeed, composer, nanotron, "
                          "hf-trainer.")
    framework_version: Str | None = Field(
        None, description="Framework version: the profile's newest version at or before it (unset: its newest). "
                          "A bare number is read as YAML reads it: quote '24.10' to keep its trailing zero.")
    global_batch: PosInt | None = Field(
        None, description="Sequences per optimizer step, across all data-parallel replicas.")
    train_tokens: PosFloat | None = Field(
        None, description="Tokens the whole run trains on: the report adds its steps, wall days, "
                                  "GPU-hours, cost (pricing/gpu_prices.yaml) and energy.")
    train_goodput: Fraction = Field(
        0.9, description="Share of wall time that trains (the rest is failures, restarts and checkpoints); "
                         "default 0.9 from Llama 3's 'higher than 90 % effective training time' on 16k H100 "
                         "(Dubey et al. 2024, The Llama 3 Herd of Models, Sec. 3.3.4).")
    price_offer: Literal["on-demand", "spot", "reserved", "1-year reserved", "3-year reserved"] = Field(
        "on-demand", description="Which price of pricing/gpu_prices.yaml a run's cost uses (its lowest of that offer).")
    micro_batch: PosInt = Field(1, description="Sequences per microbatch.")
    precision: Precision = Field(
        "bf16", description="Matmul precision; fp8 runs GEMMs in fp8 and the rest in bf16.")
    flash_attention: Bool = Field(True, description="Fused attention kernel (no s x s scores).")
    attention_kernel: Str | None = Field(
        None, description="Named fused-attention implementation whose efficiency curve the device lists "
                          "under efficiency.attention_kernels (e.g. 'triton'); unset: efficiency.attention.")
    fused_kernels: Bool = Field(
        True, description="Norms, rotary embedding and SwiGLU run as fused kernels (Megatron/TE, "
                          "torch.compile); false models eager PyTorch, which runs them as chains of "
                          "element-wise kernels with fp32 round trips.")
    fused_swiglu: Bool | None = Field(
        None, description="SwiGLU as one fused kernel that recomputes silu in backward; false: eager "
                          "silu(gate) * up, which also keeps silu(gate) for backward. Unset: fused_kernels.")
    optimizer: Literal["adamw", "adam8bit", "sgd", "adafactor"] = Field(
        "adamw", description="adamw: fp32 m and v; adam8bit: 8-bit m and v (bitsandbytes); sgd: fp32 "
                             "momentum; adafactor: factored second moment, no momentum.")
    optimizer_impl: Literal["fused", "foreach", "per_tensor"] = Field(
        "fused", description="How the update runs: fused (one kernel: apex/TE FusedAdam, torch fused=True), foreach "
                             "(torch's default multi-tensor AdamW, one pass per element-wise op) or per_tensor (a "
                             "Python loop, every op a kernel per tensor: composer's DecoupledAdamW); the unfused "
                             "forms move more HBM bytes per parameter (graphgen.model.optimizers).")
    grad_clip_rescale: Bool = Field(
        False, description="The gradient clip multiplies every gradient every step (torch.nn.utils.clip_grad_norm_ and "
                           "FSDP's clip_grad_norm_ scale by min(1, max_norm / norm) to avoid a host sync); false: "
                           "only when the norm exceeds the threshold (Megatron-LM), a pass that rarely runs.")
    fused_cross_entropy: Bool = Field(
        True, description="Loss fused with the LM head's softmax (no fp32 copy of the logits).")
    expert_imbalance: Annotated[float, Field(ge=1, le=1000, strict=True)] = Field(
        1.0, description="Tokens the busiest expert-parallel rank processes, as a multiple of the balanced share "
                         "(1: balanced, as forced-balance benchmarks run). The slowest rank sets the step. At most "
                         "min(ep, experts / top_k), one rank receiving every copy its experts can take: a larger "
                         "value is taken at that bound (no effect at ep = 1).")
    expert_load: list[Annotated[float, Field(ge=0, le=1, strict=True)]] | None = Field(
        None, max_length=100_000, description="Fraction of routed tokens each expert receives (one per expert); "
                                              "when given, it sets the busiest rank's share instead of "
                                              "expert_imbalance (experts are placed contiguously on ep ranks).")
    finetune: FineTune = FineTune()

    @field_validator("framework_version", mode="before")
    @classmethod
    def _version_text(cls, v: object) -> object:
        return repr(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    @model_validator(mode="before")
    @classmethod
    def _default_inference(cls, data: object) -> object:
        # run_type inference alone is a decode step of one sequence: every inference field has a default
        if isinstance(data, dict) and data.get("run_type") == "inference" and data.get("inference") is None:
            return {**data, "inference": {}}
        return data

    @model_validator(mode="after")
    def _inference_section(self) -> Workload:
        if self.run_type == "training" and self.precision == "fp4":
            raise ValueError("fp4 is an inference precision here: training in fp4 is not modelled")
        if self.packed_sample_len is not None and self.packed_sample_len > self.seq_len:
            raise ValueError(f"packed_sample_len={self.packed_sample_len} is longer than seq_len={self.seq_len}: "
                             "packed samples fill a sequence")
        if self.packed_sample_len is not None and self.run_type == "inference":
            raise ValueError("packed_sample_len describes training batches; serving lengths are "
                             "workload.inference's")
        return self

    def serving(self) -> InferenceSpec:
        """The inference section, or its defaults."""
        return self.inference or InferenceSpec()

    @property
    def attention_len(self) -> int:
        """Tokens a query's attention spans at most: the packed sample, or the whole sequence."""
        return min(self.packed_sample_len or self.seq_len, self.seq_len)


class ModelConfig(Strict):
    model: ModelSpec
    workload: Workload = Workload()


