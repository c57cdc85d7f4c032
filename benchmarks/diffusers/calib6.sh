#!/bin/bash
# sixth batch: is calib5's lower UNet / SD3 slope the dtype (bf16) or the architecture? The same SDXL UNet
# in fp32, Flux's transformer and SD 1.5's UNet in bf16
C=/work/shared/catalog-configs/pipelines
XL=$C/stabilityai__stable-diffusion-xl-base-1.0
SD=$C/runwayml__stable-diffusion-v1-5
FL=$C/black-forest-labs__FLUX.1-dev
PY=/work/main/.venv/bin/python
OUT=${OUT:-benchmarks/diffusers/calib.jsonl}
run() { MALLOC_MMAP_THRESHOLD_=65536 timeout 1200 $PY benchmarks/diffusers/measure.py "$1" 2>>/tmp/calib6.err >> $OUT; }
run "{\"part\":\"unet\",\"config\":\"$XL/unet/config.json\",\"width\":1024,\"height\":1024,\"batch\":2,\"transformer_layers\":[1,1,1]}"
run "{\"part\":\"dit\",\"config\":\"$FL/transformer/config.json\",\"width\":1024,\"height\":1024,\"batch\":1,\"dtype\":\"bfloat16\"}"
run "{\"part\":\"unet\",\"config\":\"$SD/unet/config.json\",\"width\":768,\"height\":768,\"batch\":2,\"dtype\":\"bfloat16\"}"
