"""Builds delayconv's operators against the torch already installed.

Install with ``pip install --no-build-isolation .`` into an environment that
has torch. An isolated build would compile against whatever torch pip fetches
into a throwaway environment, not the one the package will load next to, so
this script refuses to run without torch rather than build something that
fails to import.

Environment variables:
    FORCE_CUDA=1: build the CUDA kernels even where no GPU is visible.
    DELAYCONV_NO_CUDA=1: never build the CUDA kernels.
    TORCH_CUDA_ARCH_LIST: GPU architectures to build for; without a visible
        GPU it defaults to "9.0" (Hopper).
    CUDA_HOME: the CUDA toolkit; found from nvcc when unset.
    MAX_JOBS: parallel compile jobs.
"""

import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

try:
    import torch
except ImportError:
    sys.exit(
        "delayconv compiles against the torch it will run with, and none is "
        "installed in this build environment. Install torch first, then build "
        "without isolation:\n"
        "    pip install torch\n"
        "    pip install --no-build-isolation .\n"
        "(A plain 'pip install .' builds in an isolated environment without your "
        "torch, which is why it stops here.)"
    )


def find_cuda_home():
    """A toolkit root holding both nvcc and the runtime headers, or None.

    The nvcc on PATH may be a wrapper script elsewhere than its toolkit, so the
    candidates are checked for the headers rather than trusted.
    """
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
        candidates.append(os.path.dirname(os.path.dirname(nvcc)))
    toolkits = sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    candidates += ["/usr/local/cuda", *toolkits]
    for root in candidates:
        has_nvcc = os.path.exists(os.path.join(root, "bin", "nvcc"))
        has_headers = os.path.exists(
            os.path.join(root, "include", "cuda_runtime_api.h")
        )
        if has_nvcc and has_headers:
            return root
    return None


def want_cuda(cuda_home):
    if os.environ.get("DELAYCONV_NO_CUDA") == "1":
        return False
    if os.environ.get("FORCE_CUDA") == "1":
        if torch.version.cuda is None:
            sys.exit(
                "FORCE_CUDA=1 needs a CUDA build of torch, but this torch "
                f"({torch.__version__}) is CPU-only."
            )
        if cuda_home is None:
            sys.exit("FORCE_CUDA=1 needs the CUDA toolkit (nvcc); set CUDA_HOME.")
        return True
    return torch.version.cuda is not None and cuda_home is not None


cuda_home = find_cuda_home()
build_cuda = want_cuda(cuda_home)
if build_cuda:
    os.environ["CUDA_HOME"] = cuda_home
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        # Hopper's machine code, and its PTX, which the driver of a newer GPU
        # compiles when the extension loads.
        os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0+PTX"

# cpp_extension reads CUDA_HOME when imported, so it is imported only now.
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
cxx_flags = ["-O3", "-g0", "-fopenmp", "-ffp-contract=off"]
define_macros = [("DELAYCONV_WITH_CUDA", "1" if build_cuda else "0")]
kwargs = {
    "name": "delayconv._C",
    "include_dirs": [os.path.join(here, "csrc")],
    "extra_link_args": ["-fopenmp"],
    "define_macros": define_macros,
}
if build_cuda:
    sources += sorted(glob.glob("csrc/cuda/*.cu"))
    nvcc_flags = ["-O3", "-lineinfo", "--expt-relaxed-constexpr"]
    extension = CUDAExtension(
        sources=sources,
        extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
        **kwargs,
    )
else:
    extension = CppExtension(
        sources=sources, extra_compile_args={"cxx": cxx_flags}, **kwargs
    )

setup(
    packages=find_packages(include=["delayconv", "delayconv.*"]),
    ext_modules=[extension],
    cmdclass={"build_ext": BuildExtension.with_options(no_python_abi_suffix=False)},
)
