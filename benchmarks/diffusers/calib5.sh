#!/bin/bash
# fifth batch: SDXL's UNet (all of it, bf16), SD3.5-large's transformer (2 of its 38 joint blocks at the
# real width, bf16) and its T5-XXL encoder (2 of 24 blocks, bf16), at real shapes; one process per line,
# each under 8 GiB RSS
C=/work/shared/catalog-configs/pipelines
XL=$C/stabilityai__stable-diffusion-xl-base-1.0
S3=$C/stabilityai__stable-diffusion-3.5-large
PY=/work/main/.venv/bin/python
OUT=${OUT:-benchmarks/diffusers/calib.jsonl}
run() { MALLOC_MMAP_THRESHOLD_=65536 timeout 1200 $PY benchmarks/diffusers/measure.py "$1" 2>>/tmp/calib5.err >> $OUT; }
run "{\"part\":\"unet\",\"config\":\"$XL/unet/config.json\",\"width\":1024,\"height\":1024,\"batch\":2,\"dtype\":\"bfloat16\"}"
run "{\"part\":\"unet\",\"config\":\"$XL/unet/config.json\",\"width\":768,\"height\":768,\"batch\":2,\"dtype\":\"bfloat16\"}"
run "{\"part\":\"sd3\",\"config\":\"$S3/transformer/config.json\",\"width\":1024,\"height\":1024,\"batch\":2,\"dtype\":\"bfloat16\",\"layers\":2}"
run "{\"part\":\"t5\",\"config\":\"$S3/text_encoder_3/config.json\",\"width\":1024,\"height\":1024,\"batch\":2,\"dtype\":\"bfloat16\",\"layers\":2}"
run "{\"part\":\"unet\",\"config\":\"$XL/unet/config.json\",\"width\":1024,\"height\":1024,\"batch\":2,\"dtype\":\"bfloat16\",\"transformer_layers\":[1,1,1]}"
run "{\"part\":\"sd3\",\"config\":\"$S3/transformer/config.json\",\"width\":768,\"height\":768,\"batch\":2,\"dtype\":\"bfloat16\",\"layers\":2}"
