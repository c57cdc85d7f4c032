"""The memory model: what each part of a load costs on each device.

- :mod:`.weights`: a placement unit's bytes for a dtype or quantization, on an accelerator or offloaded;
- :mod:`.kv`: the KV cache transformers allocates for a context and batch;
- :mod:`.activations`: prefill working memory and logits;
- :mod:`.overhead`: per-device fixed costs (CUDA context, the Python process) and allocator slack.

Every constant names its source or the measurement it came from.
"""
