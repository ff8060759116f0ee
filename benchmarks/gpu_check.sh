#!/usr/bin/env bash
# Measure everything on one GPU (under 8 minutes); with --cpu or without CUDA, the same parts at
# tiny sizes (CI).  Writes OUTDIR/<part>.json and OUTDIR/summary.json; see benchmarks/README.md.
#   bash benchmarks/gpu_check.sh OUTDIR [--cpu] [--parts PART ...] [--keep-scratch]
set -euo pipefail
exec "${PYTHON:-$(command -v python || command -v python3)}" "$(dirname "$0")/gpu_check.py" "$@"
