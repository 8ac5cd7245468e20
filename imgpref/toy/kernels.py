"""The same toy model on every x86-64 CPU: the build runs in a child process with pinned CPU kernels.

Training from scratch amplifies float rounding, and the rounding depends on the CPU's vector kernels: the
same seed built with AVX-512 kernels gave a different ``micro`` model (colour 0.39 at CFG 3) than with AVX2
kernels (0.75), and ``small`` all-correct 0.28 against 0.43. The child process of a build therefore asks
PyTorch (``ATEN_CPU_CAPABILITY``), MKL (``MKL_ENABLE_INSTRUCTIONS``) and oneDNN (``ONEDNN_MAX_CPU_ISA``)
for their AVX2 code paths, which every x86-64 CPU of the last decade has, and for 2 threads. An AVX-512
machine built with these settings reproduced the rates of an AVX2 machine's build exactly. Other CPUs
(ARM) build with their own kernels; each build records the settings it ran with in ``toy_build.json``.
"""

from __future__ import annotations

import os
import platform

#: Environment of the build's child process on x86-64 (names documented by PyTorch, MKL and oneDNN).
PINNED_X86 = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OMP_NUM_THREADS": "2",
    "MKL_NUM_THREADS": "2",
}


def pinned_settings() -> dict[str, str]:
    """The pinned settings for this machine: :data:`PINNED_X86` on x86-64, none elsewhere."""
    return dict(PINNED_X86) if platform.machine().lower() in ("x86_64", "amd64") else {}


def current_settings() -> dict[str, str]:
    """This process's values of the pinned settings' variables (unset ones left out); a build records them."""
    return {k: os.environ[k] for k in pinned_settings() if k in os.environ}


def kernels_pinned() -> bool:
    """Whether this process already runs with the pinned settings (so it may build in-process)."""
    return current_settings() == pinned_settings()
