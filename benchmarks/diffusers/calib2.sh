#!/bin/bash
# second calibration batch: the 1024^2 points and batch linearity
C=/work/shared/catalog-configs/pipelines
SD=$C/runwayml__stable-diffusion-v1-5
FL=$C/black-forest-labs__FLUX.1-dev
PY=/work/main/.venv/bin/python
OUT=${OUT:-benchmarks/diffusers/calib.jsonl}
run() { MALLOC_MMAP_THRESHOLD_=65536 timeout 1500 $PY benchmarks/diffusers/measure.py "$1" 2>/dev/null >> $OUT; }
while pgrep -f calib1.sh >/dev/null; do sleep 5; done
run "{\"part\":\"dit\",\"config\":\"$FL/transformer/config.json\",\"width\":1024,\"height\":1024,\"batch\":1}"
run "{\"part\":\"unet\",\"config\":\"$SD/unet/config.json\",\"width\":512,\"height\":512,\"batch\":1}"
run "{\"part\":\"unet\",\"config\":\"$SD/unet/config.json\",\"width\":1024,\"height\":1024,\"batch\":2}"
run "{\"part\":\"dit\",\"config\":\"$FL/transformer/config.json\",\"width\":512,\"height\":512,\"batch\":2}"
run "{\"part\":\"vae\",\"config\":\"$SD/vae/config.json\",\"width\":1024,\"height\":1024,\"batch\":1,\"tiling\":true}"
