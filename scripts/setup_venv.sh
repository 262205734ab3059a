#!/usr/bin/env bash
# Create or update the project's virtual environment at .venv/ (idempotent: a no-op when
# requirements.txt and pyproject.toml have not changed since the last successful run).
#
# torch: an importable torch (Kaggle's, or one already in .venv) is left alone and pinned; otherwise
# torch==2.13.0 is installed (the CPU wheel on these machines). Every later install runs under a
# constraint file that pins that torch, so fastai's dependency on torchvision cannot drag in a
# different (multi-GB CUDA) torch.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
TORCH_DEFAULT=2.13.0

stamp="$VENV/.fatlib-setup-stamp"
want=$(cat requirements.txt pyproject.toml scripts/setup_venv.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c "import fatlib, torch, fastai" 2>/dev/null; then
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV (sees the system's packages, so an installed torch is reused)"
  "$PY" -m venv --system-site-packages "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
extra=()
[ -d /opt/wheels ] && extra+=(--find-links /opt/wheels)

if tv=$("$VENV/bin/python" -c "import torch; print(torch.__version__.split('+')[0])" 2>/dev/null); then
  echo "[setup] keeping the installed torch $tv"
else
  tv=$TORCH_DEFAULT
  echo "[setup] installing torch==$tv"
  "${PIP[@]}" install -q "${extra[@]}" "torch==$tv"
fi
cons="$VENV/fatlib-constraints.txt"
echo "torch==$tv" > "$cons"
[ -n "${PIP_CONSTRAINT:-}" ] && cat "$PIP_CONSTRAINT" | grep -v '^torch' >> "$cons" || true
echo "[setup] installing requirements (torch pinned to $tv)"
"${PIP[@]}" install -q "${extra[@]}" -c "$cons" -r requirements.txt
"${PIP[@]}" install -q "${extra[@]}" -c "$cons" --no-deps --no-build-isolation -e .
"$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null
echo "$want" > "$stamp"
echo "[setup] ready: $("$VENV/bin/python" -c 'import torch, fastai, librosa; print("torch", torch.__version__, "fastai", fastai.__version__, "librosa", librosa.__version__)')"
