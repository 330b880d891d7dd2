"""The machine a benchmark ran on: CPU model, core count and BLAS, printed at the top of every output."""

import ctypes
import glob
import os
import platform


def cpu_model():
    """/proc/cpuinfo's "model name" (platform.processor() where there is no /proc), its family and model
    numbers (a "model name" can cover several generations) and AVX-512 if present."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or "unknown CPU"
    details = [f"family {fields['cpu family']}, model {fields['model']}"] if "cpu family" in fields else []
    details += ["AVX-512"] if "avx512f" in fields.get("flags", "").split() else []
    return f"{name} ({'; '.join(details)})" if details else name


def blas():
    """numpy's BLAS and the kernel it runs here, e.g. "scipy-openblas 0.3.31 (SkylakeX kernel)"."""
    import numpy as np

    config = np.show_config(mode="dicts")
    info = config.get("Build Dependencies", {}).get("blas", {})
    text = f"{info.get('name', '?')} {info.get('version', '')}".strip()
    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*"))
    for lib in libs:
        try:
            handle = ctypes.CDLL(lib)
        except OSError:
            continue
        for symbol in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename"):
            if hasattr(handle, symbol):
                get = getattr(handle, symbol)
                get.restype = ctypes.c_char_p
                return f"{text} ({get().decode()} kernel)"
    return text


def benchmark_env():
    """The environment benchmark children run in: without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, which some
    machines here set to force an old OpenBLAS kernel (numpy then picks the one a user's machine would)."""
    return {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}


def describe():
    """One line: CPU, cores, BLAS as benchmark children see it, numpy and torch versions."""
    import subprocess
    import sys

    code = "import sys; sys.path.insert(0, sys.argv[1]); import machine; print(machine.blas())"
    here = os.path.dirname(os.path.abspath(__file__))
    child_blas = subprocess.run([sys.executable, "-c", code, here], capture_output=True, text=True,
                                env=benchmark_env()).stdout.strip()
    import numpy as np

    try:
        import torch

        torch_text = f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        torch_text = ""
    return (f"CPU: {cpu_model()}, {os.cpu_count()} cores; BLAS: {child_blas}; numpy {np.__version__}{torch_text}; "
            f"Python {platform.python_version()}")
