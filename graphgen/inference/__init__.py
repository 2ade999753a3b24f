"""Inference through the training engine: a prefill or a decode iteration is a forward-only step whose
workload is the iteration's tokens. This package holds what differs: the scenario view (graphgen.
inference.view), the KV cache and the inference memory (graphgen.inference.memory), and the tabulated
iteration costs the serving simulation reads (graphgen.inference.table)."""
