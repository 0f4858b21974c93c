"""Shared by the benchmark scripts."""
from __future__ import annotations

# the flags that decide how fast training and inference can be: vector width, bfloat16 dot products, matrix units
_MATRIX_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_name() -> str:
    """The CPU's model name and its vector/matrix flags (every timing is reported beside them), e.g.
    ``AMD EPYC [avx2 fma]``: the package's own reading of /proc/cpuinfo. Machines sold under one name differ
    (an EPYC with AVX-512 BF16, another with AVX2 only), and settings are measured, never inferred from it."""
    from eegloop._machine import cpu_flags, cpu_model

    flags = cpu_flags()
    return f"{cpu_model()} [{' '.join(f for f in _MATRIX_FLAGS if f in flags) or 'no avx2'}]"
