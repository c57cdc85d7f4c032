#!/bin/bash
# first calibration batch (components at real shapes, random weights); one process per line
C=/work/shared/catalog-configs/pipelines
SD=$C/runwayml__stable-diffusion-v1-5
FL=$C/black-forest-labs__FLUX.1-dev
PY=/work/main/.venv/bin/python
OUT=${OUT:-benchmarks/diffusers/calib.jsonl}
run() { MALLOC_MMAP_THRESHOLD_=65536 timeout 900 $PY benchmarks/diffusers/measure.py "$1" 2>/dev/null >> $OUT; }
run "{\"part\":\"unet\",\"config\":\"$SD/unet/config.json\",\"width\":256,\"height\":256,\"batch\":2}"
run "{\"part\":\"dit\",\"config\":\"$FL/transformer/config.json\",\"width\":256,\"height\":256,\"batch\":1}"
run "{\"part\":\"vae\",\"config\":\"$SD/vae/config.json\",\"width\":512,\"height\":512,\"batch\":1}"
run "{\"part\":\"unet\",\"config\":\"$SD/unet/config.json\",\"width\":512,\"height\":512,\"batch\":2}"
run "{\"part\":\"dit\",\"config\":\"$FL/transformer/config.json\",\"width\":512,\"height\":512,\"batch\":1}"
run "{\"part\":\"unet\",\"config\":\"$SD/unet/config.json\",\"width\":512,\"height\":512,\"batch\":2,\"attention_slicing\":\"max\"}"
run "{\"part\":\"vae\",\"config\":\"$SD/vae/config.json\",\"width\":768,\"height\":768,\"batch\":1,\"tiling\":true}"
run "{\"part\":\"vae\",\"config\":\"$SD/vae/config.json\",\"width\":256,\"height\":256,\"batch\":2,\"slicing\":true}"
run "{\"part\":\"vae\",\"config\":\"$SD/vae/config.json\",\"width\":256,\"height\":256,\"batch\":2}"
