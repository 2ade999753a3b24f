"""Result -> the human-readable summary printed by run_perf.py."""

from __future__ import annotations

from backends.base import HFU_DEFINITION, INFERENCE_MFU_DEFINITION, MFU_DEFINITION, Result
from graphgen.units import GIB


def _pct(x: float, total: float) -> str:
    return f"{100 * x / total:5.1f} %" if total > 0 else "   - %"


def inference_memory_table(memory) -> str:
    cols = ("weights", "kv cache", "work", "reserved", "total", "capacity")
    lines = ["Memory per GPU (GiB):", f"  {'role':8} " + " ".join(f"{c:>9}" for c in cols) + "  kv blocks  verdict"]
    for m in memory:
        verdict = (f"fits ({m.headroom / GIB:.1f} GiB free)" if m.fits
                   else f"DOES NOT FIT (short by {-m.headroom / GIB:.1f} GiB)")
        vals = (m.weights, m.kv_cache, m.transient, m.reserved, m.total, m.capacity)
        lines.append(f"  {m.role:8} " + " ".join(f"{v / GIB:9.2f}" for v in vals) + f"  {m.kv_blocks:9,d}  {verdict}")
    return "\n".join(lines)


def memory_table(memory) -> str:
    if any(m.kv_cache for m in memory):
        return inference_memory_table(memory)
    cols = ("weights", "master", "grads", "optim", "activ", "transnt", "buffers", "slack", "reserved", "total",
            "capacity")
    lines = ["Memory per GPU (GiB):", f"  {'role':8} " + " ".join(f"{c:>8}" for c in cols) + "  verdict"]
    for m in memory:
        verdict = (f"fits ({m.headroom / GIB:.1f} GiB free)" if m.fits
                   else f"DOES NOT FIT (short by {-m.headroom / GIB:.1f} GiB)")
        vals = (m.weights, m.master_weights, m.gradients, m.optimizer_states, m.activations, m.transient,
                m.comm_buffers, m.fragmentation, m.reserved, m.total, m.capacity)
        lines.append(f"  {m.role:8} " + " ".join(f"{v / GIB:8.2f}" for v in vals) + f"  {verdict}")
    peak = max(memory, key=lambda m: m.total)
    lines.append(f"  peak {peak.total / GIB:.2f} GiB on {peak.role} of {peak.capacity / GIB:.2f} GiB; "
                 f"trainable parameters per GPU on {peak.role}: {peak.trainable_params:,.0f}")
    return "\n".join(lines)


def summary(r: Result, layer_table: bool = False) -> str:
    b = r.breakdown
    p = r.plan
    lines = [
        f"Rankflow ({r.backend} backend): {r.model} on {r.gpus} x {r.device} ({r.hardware})",
        f"  plan: tp={p['tp']} sp={'on' if p['sp'] else 'off'} pp={p['pp']} dp={p['dp']} "
        f"{''.join(f'{a}={p[a]} ' for a in ('cp', 'ep', 'etp') if p.get(a, 1) > 1)}"
        f"schedule={p['schedule']} v={p['virtual_stages']} zero={p['zero_stage']} recompute={p['recompute']} "
        f"{p['precision']}",
        f"  batch: {r.global_batch} sequences x {p['seq_len']} tokens = {r.tokens_per_step:,} tokens/step; "
        f"micro batch {p['micro_batch']}, {r.microbatches} microbatches per replica",
        "",
        f"Step time            {r.step_time_s:12.4f} s",
        f"Throughput           {r.tokens_per_s:12,.0f} tokens/s   ({r.tokens_per_s_per_gpu:,.1f} tokens/s per GPU)",
        f"Model TFLOP/s/GPU    {r.model_tflops_per_gpu:12.1f} TFLOP/s    MFU {100 * r.mfu:5.1f} %",
        f"Hardware TFLOP/s/GPU {r.hardware_tflops_per_gpu:12.1f} TFLOP/s    HFU {100 * r.hfu:5.1f} %"
        f"   (peak {r.peak_flops_per_gpu / 1e12:.0f} TFLOP/s)",
        "",
        f"Time breakdown of the critical role ({r.critical_role}), seconds:",
        f"  compute                 {b.compute:10.4f} s  {_pct(b.compute, r.step_time_s)}",
    ]
    for axis, t in b.exposed_comm.items():
        if t <= 0 and p.get(axis, 1) == 1 and axis != "all":
            continue  # an axis this plan does not use
        lines.append(f"  exposed {axis + ' comm':15} {t:10.4f} s  {_pct(t, r.step_time_s)}")
    lines.append(f"  pipeline bubble         {b.pipeline_bubble:10.4f} s  {_pct(b.pipeline_bubble, r.step_time_s)}")
    if b.stragglers > 0:
        lines.append(f"  slowest-host wait       {b.stragglers:10.4f} s  {_pct(b.stragglers, r.step_time_s)}")
    if r.framework:
        f = r.framework
        lines += ["", f"As {f['name']} {f['version']} would log it ({f['flop_convention']} FLOPs, "
                      f"{f['memory_figure']}): {f['tflops_per_gpu']:.1f} TFLOP/s/GPU, MFU {100 * f['mfu']:.1f} %, "
                      f"peak memory {f['peak_memory_gib']:.2f} GiB"]
    if r.training_run:
        lines += ["", *_run_lines(r.training_run)]
    if r.inference:
        i = r.inference
        what = "time to first token" if i["phase"] == "prefill" else "time per output token"
        lines += ["", f"Inference {i['phase']}: {i['batch']} sequences at {i['context_len']:,} tokens of context "
                      f"({i['weight_dtype']} weights, {i['kv_dtype']} KV cache): {what} "
                      f"{1e3 * i['iteration_s']:.2f} ms; the KV cache holds {i['max_sequences_at_context']:,} such "
                      f"sequences ({i['kv_blocks']:,} blocks of {i['block_size']} tokens)"]
    lines += ["", memory_table(r.memory)]
    if layer_table:
        lines += ["", "Each kind of transformer layer, at its first layer, one microbatch, one GPU:"]
        for i, row in enumerate(r.layer_table):
            if i == 0 or row["layer"] != r.layer_table[i - 1]["layer"]:
                lines += [f" layer {row['layer']}:",
                          f"  {'op':16} {'kind':12} {'fwd ms':>9} {'bwd ms':>9} {'fwd GFLOP':>10}"]
            lines.append(f"  {row['op']:16} {row['kind']:12} {row['fwd_ms']:9.3f} {row['bwd_ms']:9.3f} "
                         f"{row['fwd_gflop']:10.2f}")
    lines += ["", "Definitions:", f"  {INFERENCE_MFU_DEFINITION if r.inference else MFU_DEFINITION}.", f"  {HFU_DEFINITION}."]
    lines += [f"Note: {n}" for n in r.notes]
    return "\n".join(lines) + "\n"


def _run_lines(t: dict) -> list[str]:
    out = [f"Training run of {t['tokens']:.3g} tokens: {t['steps']:,} steps, {t['wall_days']:.2f} days at "
           f"{100 * t['goodput']:.0f} % goodput, {t['gpu_hours']:,.0f} GPU-hours"]
    p = t["price"]
    if p:
        out.append(f"  cost ${t['cost_usd']:,.0f} at ${p['usd_per_gpu_hour']:.2f}/GPU-hour ({p['offer']}, {p['provider']}, "
                   f"{p['date']})")
    else:
        out.append("  cost: no price for this GPU in pricing/gpu_prices.yaml")
    if t["energy_kwh"] is not None:
        out.append(f"  energy {t['energy_kwh']:,.0f} kWh (board power x PUE {t['pue']:.2f}, an upper bound), "
                   f"${t['energy_cost_usd']:,.0f}")
    return out
