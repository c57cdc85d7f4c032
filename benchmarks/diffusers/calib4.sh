#!/bin/bash
# fourth batch: the CLIP text encoder (prompt + negative prompt; 4 prompts x 2)
C=/work/shared/catalog-configs/pipelines
SD=$C/runwayml__stable-diffusion-v1-5
PY=/work/main/.venv/bin/python
OUT=${OUT:-benchmarks/diffusers/calib.jsonl}
run() { MALLOC_MMAP_THRESHOLD_=65536 timeout 600 $PY benchmarks/diffusers/measure.py "$1" 2>/dev/null >> $OUT; }
while pgrep -f calib3.sh >/dev/null; do sleep 5; done
run "{\"part\":\"clip\",\"config\":\"$SD/text_encoder/config.json\",\"width\":512,\"height\":512,\"batch\":2}"
run "{\"part\":\"clip\",\"config\":\"$SD/text_encoder/config.json\",\"width\":512,\"height\":512,\"batch\":8}"
