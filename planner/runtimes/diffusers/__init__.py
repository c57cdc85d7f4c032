"""The diffusers runtime: pipelines planned per phase (see docs/diffusers.md)."""
