# Sourced by build-cuda.sh and gpu-check.sh: installs the CUDA 13 compiler, headers and
# libraries from PyPI into .venv-cuda/ (idempotent) and exports the paths a CUDA build and run need.
venv=.venv-cuda
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
# CUDA 13 (the PyPI nvcc wheels of CUDA 12 ship no `nvcc` binary). Versions pinned together.
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  nvidia-cuda-nvcc==13.5.37 nvidia-cuda-runtime==13.5.37 nvidia-cuda-crt==13.5.37 \
  nvidia-nvvm==13.5.37 nvidia-cuda-cccl \
  nvidia-cublas nvidia-curand nvidia-cuda-nvrtc
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
export CUDA_ROOT="$site/nvidia/cu13"
export CUDA_PATH="$CUDA_ROOT" CUDA_HOME="$CUDA_ROOT"
export PATH="$CUDA_ROOT/bin:$PATH"
export LIBRARY_PATH="$CUDA_ROOT/lib:$CUDA_ROOT/lib64:${LIBRARY_PATH:-}"
export LD_LIBRARY_PATH="$CUDA_ROOT/lib:$CUDA_ROOT/lib64:${LD_LIBRARY_PATH:-}"
# No GPU here to ask for its architecture: compile the kernels for the one named.
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
