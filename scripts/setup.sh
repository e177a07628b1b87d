#!/usr/bin/env bash
# Create .venv and install qbench with its test tools and the `fast` extra (numba: the tests compare its kernels with
# the NumPy reference) (CPU torch pinned: an unpinned torch pulls CUDA wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[dev,fast]"
echo "qbench installed in .venv ($(.venv/bin/qbench --help | head -n 1))"
