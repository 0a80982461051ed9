#!/usr/bin/env bash
# Every GPU measurement of BENCHMARKS.md in one run (about 8 minutes on an H100/H200).
# On the lent device machine (see BENCHMARKS.md): first, here, `bash bench/fetch_gpu_wheels.sh`,
# then run this there with `.whl` carried; results land in $OUT (or ./gpu-results).
set -euo pipefail
OUT="${OUT:-$PWD/gpu-results}"; mkdir -p "$OUT"
SITE=/tmp/fss-site
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$SITE" .whl/* .
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  # a --target folder is no site-packages: load its .pth files (our plugin's switch) by hand
  python3 - <<'PY'
import site, sysconfig
from pathlib import Path
# make every python3 started below process /tmp/fss-site/*.pth
Path(sysconfig.get_paths()["purelib"], "zz-fss-site.pth").write_text("import site; site.addsitedir('/tmp/fss-site')\n")
PY
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"; } | tee "$OUT/gpu.txt"
PYTHONUNBUFFERED=1 timeout 540 python3 bench/gpu.py --json "$OUT/gpu.json" "$@" 2>&1 | tee "$OUT/gpu.log"
