"""vLLM serving plans: tensor and pipeline parallel across GPUs and nodes, KV capacity."""
