"""A DeepSpeed JSON config and a LlamaFactory training YAML for a scenario.

DeepSpeed names: deepspeed/runtime/constants.py, zero/config.py, activation_checkpointing/config.py,
tensor_parallel/config.py and config.py (pipeline) of DeepSpeed 0.16.5 (commit
38327e07f6cd39b63418f60cedd1651b0be3e7c3). LlamaFactory names: src/llamafactory/hparams/*.py at
commit ff6d4d12eeb035d6ce06805a5733dd7b29f2ac30, plus the Hugging Face TrainingArguments it extends
(transformers 5.24.0, src/transformers/training_args.py). Neither file describes the architecture:
DeepSpeed wraps the user's model and LlamaFactory loads a Hugging Face checkpoint.
"""

from __future__ import annotations

from graphgen.scenario import Scenario
from rankflow.export_base import HF_LINEARS, LORA_ORDER, grad_bucket_elements, to_json, to_yaml, unsupported

DEEPSPEED_VERSION = "DeepSpeed 0.16.5"
_DS_OPTIMIZER = {"adamw": "AdamW", "sgd": "SGD"}  # SGD: DeepSpeed falls back to torch.optim by name
_HF_OPTIM = {"adamw": "adamw_torch", "adam8bit": "adamw_bnb_8bit", "sgd": "sgd", "adafactor": "adafactor"}
# transformers TrainingArguments.optim: adamw_torch_fused is torch's fused AdamW, adamw_torch its default (foreach)
_HF_ADAMW = {"fused": "adamw_torch_fused", "foreach": "adamw_torch"}


def _check_deepspeed(sc: Scenario) -> None:
    p, w, ds = sc.plan, sc.workload, "DeepSpeed"
    axes = {"cp": "context parallelism (Ulysses) is set up in code through an mpu, not in the JSON",
            "ep": "expert parallelism is the ep_size argument of deepspeed.moe.layer.MoE in the model code"}
    for axis, why in axes.items():
        if getattr(p, axis) > 1:
            raise unsupported(sc, ds, f"parallelism.{axis}", why, f"set parallelism.{axis}=1")
    if p.tp > 1 and p.sp:
        raise unsupported(sc, ds, "parallelism.sp", "AutoTP training (tensor_parallel.autotp_size) does not "
                          "shard activations over the sequence", "set parallelism.sp=false")
    if p.tp > 1 and p.zero_stage == 3:
        raise unsupported(sc, ds, "parallelism.zero_stage", "AutoTP training asserts zero stage <= 2",
                          "use zero_stage 0-2 with tp > 1")
    if p.pp > 1 and (p.schedule != "1f1b" or p.virtual_stages > 1):
        raise unsupported(sc, ds, "parallelism.schedule", f"the pipeline engine runs its own 1F1B schedule, not "
                          f"{p.schedule}", "set parallelism.schedule=1f1b")
    if p.pp > 1 and p.zero_stage >= 2:
        raise unsupported(sc, ds, "parallelism.zero_stage", "the pipeline engine asserts ZeRO-2 and ZeRO-3 are "
                          "incompatible with pipeline parallelism", "use zero_stage 0 or 1 with pp > 1")
    if p.recompute == "selective":
        raise unsupported(sc, ds, "parallelism.recompute", "activation checkpointing wraps whole layers; there "
                          "is no selective recompute", "use recompute=full or none")
    if w.precision == "fp8":
        raise unsupported(sc, ds, "workload.precision", "the JSON has bf16 and fp16 sections, no fp8 "
                          "(fp8 GEMMs come from Transformer Engine in the model code)", "use bf16")
    if w.optimizer not in _DS_OPTIMIZER:
        raise unsupported(sc, ds, "workload.optimizer", f"no built-in optimizer type for {w.optimizer}",
                          "set workload.optimizer=adamw or sgd (or build it in code)")
    if w.optimizer_impl == "per_tensor":
        raise unsupported(sc, ds, "workload.optimizer_impl", "its optimizers are FusedAdam or, with torch_adam, "
                          "torch's AdamW (foreach); a per-tensor loop is built in code", "use fused or foreach")


def _zero(sc: Scenario) -> dict[str, object]:
    p = sc.plan
    elements = grad_bucket_elements(sc)
    zero: dict[str, object] = {"stage": p.zero_stage, "overlap_comm": p.overlap_grad_reduce,
                               "contiguous_gradients": True, "reduce_bucket_size": elements}
    if p.zero_stage in (1, 2):
        zero["allgather_bucket_size"] = elements
    return zero


def _ds_params(sc: Scenario) -> dict[str, object]:
    """deepspeed/runtime/engine.py @v0.16.5 _configure_basic_optimizer: Adam/AdamW run FusedAdam unless
    torch_adam asks for torch.optim.AdamW (its foreach path)."""
    w = sc.workload
    return {"torch_adam": True} if w.optimizer == "adamw" and w.optimizer_impl == "foreach" else {}


def deepspeed_config(sc: Scenario) -> dict[str, object]:
    _check_deepspeed(sc)
    p, w = sc.plan, sc.workload
    cfg: dict[str, object] = {"train_batch_size": sc.global_batch, "train_micro_batch_size_per_gpu": w.micro_batch,
                              "gradient_accumulation_steps": sc.microbatches,
                              "optimizer": {"type": _DS_OPTIMIZER[w.optimizer], "params": _ds_params(sc)}}
    if w.precision == "bf16":
        cfg["bf16"] = {"enabled": True}
    elif w.precision == "fp16":
        cfg["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16}  # 0: dynamic scaling
    cfg["communication_data_type"] = p.grad_reduce_dtype
    cfg["zero_optimization"] = _zero(sc)
    if p.tp > 1:
        cfg["tensor_parallel"] = {"autotp_size": p.tp}
    if p.pp > 1:
        interval = p.recompute_every if p.recompute == "full" else 0
        cfg["pipeline"] = {"stages": p.pp, "activation_checkpoint_interval": interval}
    if p.recompute == "full":
        cfg["activation_checkpointing"] = {"partition_activations": False, "contiguous_memory_optimization": False,
                                           "cpu_checkpointing": False, "synchronize_checkpoint_boundary": False,
                                           "number_checkpoints": -(-sc.model.layers // p.recompute_every)}
    return cfg


def deepspeed(sc: Scenario) -> tuple[str, str]:
    return "ds_config.json", to_json(deepspeed_config(sc))


def _check_llamafactory(sc: Scenario) -> None:
    p, lf = sc.plan, "LlamaFactory"
    axes = {"tp": "tensor parallelism", "pp": "pipeline parallelism", "cp": "context parallelism",
            "ep": "expert parallelism"}
    for axis, what in axes.items():
        if getattr(p, axis) > 1:
            raise unsupported(sc, lf, f"parallelism.{axis}", f"its Hugging Face Trainer path has no {what}",
                              f"set parallelism.{axis}=1 (ZeRO shards the model instead)")
    if p.recompute == "selective" or (p.recompute == "full" and p.recompute_every > 1):
        field = "parallelism.recompute" if p.recompute == "selective" else "parallelism.recompute_every"
        raise unsupported(sc, lf, field, "gradient checkpointing is on or off for every layer",
                          "use recompute=full with recompute_every=1, or none")


def _hf_optim(sc: Scenario) -> str:
    w = sc.workload
    if w.optimizer != "adamw":
        return _HF_OPTIM[w.optimizer]
    if w.optimizer_impl not in _HF_ADAMW:
        raise unsupported(sc, "LlamaFactory", "workload.optimizer_impl", "the Trainer's AdamW is torch's, fused "
                          "(adamw_torch_fused) or foreach (adamw_torch); a per-tensor loop is not an optim name",
                          "use fused or foreach")
    return _HF_ADAMW[w.optimizer_impl]


def _finetune(sc: Scenario) -> dict[str, object]:
    ft = sc.workload.finetune
    if ft.method == "full":
        return {"finetuning_type": "full"}
    if ft.method == "freeze":
        # a positive count trains the last layers: everything after the frozen prefix
        return {"finetuning_type": "freeze", "freeze_trainable_layers": sc.model.layers - ft.frozen_layers}
    out: dict[str, object] = {"finetuning_type": "lora", "lora_rank": ft.lora_rank, "lora_alpha": ft.lora_alpha}
    targets = [t for t in LORA_ORDER if t in ft.target_modules]
    out["lora_target"] = "all" if len(targets) == len(LORA_ORDER) else \
        ",".join(name for t in targets for name in HF_LINEARS[t])
    if ft.method == "dora":
        out["use_dora"] = True
    if ft.method == "qlora":
        out.update({"quantization_bit": 4, "quantization_type": "nf4", "double_quantization": ft.double_quant})
    if ft.train_embeddings:
        out["additional_target"] = "embed_tokens,lm_head"
    return out


def llamafactory_args(sc: Scenario, model_id: str | None = None) -> dict[str, object]:
    _check_llamafactory(sc)
    p, w = sc.plan, sc.workload
    pretrain = w.finetune.method == "full"
    args: dict[str, object] = {"model_name_or_path": model_id or sc.model.name, "stage": "pt" if pretrain else "sft",
                               "do_train": True, **_finetune(sc)}
    if p.zero_stage:
        args["deepspeed"] = "ds_config.json"  # written by `rankflow export --to deepspeed` for the same plan
    args.update({"dataset": "c4_demo" if pretrain else "alpaca_en_demo", "template": "default",
                 "cutoff_len": w.seq_len, "output_dir": "saves/rankflow-export",
                 "per_device_train_batch_size": w.micro_batch, "gradient_accumulation_steps": sc.microbatches,
                 "optim": _hf_optim(sc)})
    if w.precision in ("bf16", "fp8"):
        args["bf16"] = True
    elif w.precision == "fp16":
        args["fp16"] = True
    if w.precision == "fp8":
        args["fp8"] = True
    args["flash_attn"] = "fa2" if w.flash_attention else "disabled"
    # LlamaFactory turns gradient checkpointing on unless told otherwise
    args["disable_gradient_checkpointing"] = p.recompute == "none"
    if p.zero_stage == 0:
        args["ddp_bucket_cap_mb"] = int(p.bucket_mb)
    return args


def llamafactory(sc: Scenario, model_id: str | None = None) -> tuple[str, str]:
    header = (f"# LlamaFactory training arguments for {sc.model.name} on {sc.world} GPUs, written by "
              "`rankflow export`.\n# Replace model_name_or_path, dataset, template and output_dir with yours; "
              "run: llamafactory-cli train llamafactory.yaml\n")
    return "llamafactory.yaml", to_yaml(llamafactory_args(sc, model_id), header)
