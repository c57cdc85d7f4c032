#!/bin/bash
# third batch: batch 4, attention slicing "auto", batch 2 at 512^2
C=/work/shared/catalog-configs/pipelines
SD=$C/runwayml__stable-diffusion-v1-5
PY=/work/main/.venv/bin/python
OUT=${OUT:-benchmarks/diffusers/calib.jsonl}
run() { MALLOC_MMAP_THRESHOLD_=65536 timeout 1500 $PY benchmarks/diffusers/measure.py "$1" 2>/dev/null >> $OUT; }
while pgrep -f calib2.sh >/dev/null; do sleep 5; done
run "{\"part\":\"vae\",\"config\":\"$SD/vae/config.json\",\"width\":256,\"height\":256,\"batch\":4}"
run "{\"part\":\"unet\",\"config\":\"$SD/unet/config.json\",\"width\":512,\"height\":512,\"batch\":2,\"attention_slicing\":\"auto\"}"
run "{\"part\":\"vae\",\"config\":\"$SD/vae/config.json\",\"width\":512,\"height\":512,\"batch\":2}"
run "{\"part\":\"unet\",\"config\":\"$SD/unet/config.json\",\"width\":256,\"height\":256,\"batch\":4}"
