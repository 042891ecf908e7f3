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
# cudarc 0.19 knows CUDA APIs up to 13.4; the 13.5 toolkit runs code built against them.
export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13040}"
# Link-time names: the wheels ship only versioned libraries (libcublas.so.13), and the driver
# library (libcuda.so.1) comes with the GPU driver, not with any wheel. The linker gets unversioned
# links and a stub libcuda.so with the driver entry points cudarc declares; at run time the real
# driver library (soname libcuda.so.1) is loaded instead.
link_dir="$PWD/$venv/link"
mkdir -p "$link_dir"
for lib in "$CUDA_ROOT"/lib/lib*.so.*; do
  base="$(basename "$lib")"
  ln -sf "$lib" "$link_dir/${base%%.so.*}.so"
done
if [ ! -f "$link_dir/libcuda.so" ]; then
  cargo fetch --quiet
  sys="$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.*/src/driver/sys/mod.rs | head -1)"
  grep -oE "^\s+fn cu[A-Za-z0-9_]*\(" "$sys" | sed -E 's/.*fn (cu[A-Za-z0-9_]*)\(/void \1(void) {}/' | sort -u \
    > "$link_dir/cuda_stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$link_dir/libcuda.so" "$link_dir/cuda_stub.c"
fi
export LIBRARY_PATH="$link_dir:$LIBRARY_PATH"
