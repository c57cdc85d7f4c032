"""Fine-tuning (full, LoRA, QLoRA) behind the Runtime seam: see runtime.py and docs/training.md."""
