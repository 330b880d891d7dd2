"""The memory preflight: refuse, in one line, a run whose training cannot fit in the memory this machine
(or its container) has free, before anything is read or overwritten.

    check_fits(params_bytes, step_bytes, batch_size, seq_length)   # TrainingError if more than free_memory()
"""

from .lifecycle import TrainingError


def check_fits(params, step, batch_size, seq_length):
    """Raise TrainingError if ``params`` bytes (parameters, gradients, optimizer state) and ``step`` bytes
    (a step's activations at ``batch_size`` x ``seq_length``) are more than the memory free here."""
    free = free_memory()
    if free is None or params + step <= free:
        return
    raise TrainingError(
        f"this model needs at least {(params + step) / 1e9:,.1f} GB to train ({params / 1e9:,.1f} GB for its "
        f"parameters, gradients and optimizer state, {step / 1e9:,.1f} GB for a step of {batch_size} x "
        f"{seq_length} characters), more than the {free / 1e9:.1f} GB free here: make it smaller, or "
        "lower --batch-size or --seq-length")


def free_memory():
    """Bytes of memory available to this process: Linux's MemAvailable, or less where a container's memory
    limit (cgroup v2 or v1) leaves less; None where neither can be read."""
    free = None
    try:
        with open("/proc/meminfo") as f:
            free = next((int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")), None)
    except (OSError, ValueError, IndexError):
        pass
    for limit_path, usage_path in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_path) as f, open(usage_path) as g:
                left = int(f.read()) - int(g.read())  # "max" (no limit) is not a number: skipped
        except (OSError, ValueError):
            continue
        if left < 2**60:  # v1 writes a huge number for no limit
            free = left if free is None else min(free, left)
    return free
