#!/usr/bin/env bash
# Download, into .whl/, what the GPU machine lacks for bench/gpu.sh (it has torch, pillow,
# rich, opencv, scikit-image, scipy; it cannot reach a registry). Python 3.12 there.
set -euo pipefail
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
PLATFORM="--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --only-binary=:all:"
python3 -m pip download -q --no-deps $PLATFORM -d .whl \
  albumentations==1.3.1 qudida==0.0.4 jina-hubble-sdk==0.39.0 docker python-jose ecdsa rsa pyasn1 \
  "importlib-metadata<8" zipp six
# pure-Python packages published as source only: built there with --no-build-isolation
python3 -m pip download -q --no-deps --no-binary=:all: -d .whl finetuner==0.4.1 docarray==0.21.1
ls .whl
