"""What every suite shares: the machine line, the child processes, the rounds, the ratios and the tables.

    from benchmarks import harness
    ap = harness.parser(__doc__)                  # --repeat --seconds --markdown --json --smoke
    args = harness.start(ap, argv)                # parses, prints the machine line
    rounds = harness.alternate({"ours": (fn, kw), "peer": (fn, kw)}, args.repeat)   # {name: [result per round]}
    table = harness.Table([("what", "what"), ...]); table.add(harness.ratio_row(rounds, "ours", "peer"), what=...)
    harness.finish(args, [table])                 # --markdown, --json

A measurement is a function of a suite module that returns a dict ("chars_per_sec", "peak_rss_mb", ...). It runs
in a fresh interpreter (``run_child``): the BLAS thread variables as asked, and without OPENBLAS_CORETYPE /
OPENBLAS_L2_SIZE, which some machines set to force an old OpenBLAS kernel (numpy then picks the one a user's
machine would; PyTorch does not use OpenBLAS). Contenders alternate within a round, in reverse order every other
round; a figure is the best of the rounds (the least disturbed one on a shared machine), a ratio is best over
best, and "per round" is the range of the ratios within each round. ``--smoke`` runs everything in this process
at toy sizes: it checks that the suites still run, and its figures mean nothing.
"""

import argparse
import ctypes
import glob
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLED = os.path.join(ROOT, "data", "shakespeare.txt")
CORPUS = os.path.join(os.pardir, "shared", "data", "tinyshakespeare.txt")  # beside the repository
FORCED = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
SMOKE = False  # set by parser(): measurements run in this process, at toy sizes


# ---- the machine


def cpu_model():
    """/proc/cpuinfo's model name with its family and model numbers (a name can cover several generations)."""
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

    info = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    text = f"{info.get('name', '?')} {info.get('version', '')}".strip()
    for lib in glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*")):
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


def machine_line():
    """CPU, cores, BLAS as the children see it, numpy, torch (and a CUDA GPU), Python: printed by every run. Read
    in a child, so that this process does not load torch (its peak memory would pass to its children)."""
    code = "from benchmarks import harness; print(harness.software())"
    out = "" if SMOKE else subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                          env=child_env(), cwd=ROOT).stdout.strip()
    return (f"CPU: {cpu_model()}, {os.cpu_count()} cores; {out or software(load_torch=False)}; "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def software(load_torch=True):
    import numpy as np

    text = f"BLAS: {blas()}; numpy {np.__version__}"
    if have_torch() and not load_torch:
        text += f"; torch {importlib.metadata.version('torch')}"
    elif have_torch():
        import torch

        text += f"; torch {torch.__version__} ({torch.get_num_threads()} threads)"
        if torch.cuda.is_available():
            text += f"; GPU: {torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} visible)"
    return f"{text}; Python {platform.python_version()}"


def have_torch():
    return importlib.util.find_spec("torch") is not None


def need_torch(what="the PyTorch peers"):
    """True with torch installed; else says in one line what is skipped."""
    if have_torch():
        return True
    print(f"torch is not installed: {what} skipped (pip install torch==2.13.0)", flush=True)
    return False


# ---- data


def corpus_path(path=None):
    """tinyshakespeare (--corpus, $CHARRNN_CORPUS, or ../shared/data beside the repository); in smoke mode the
    bundled data/shakespeare.txt where it is not there."""
    path = path or os.environ.get("CHARRNN_CORPUS") or os.path.join(ROOT, CORPUS)
    if os.path.exists(path):
        return path
    if SMOKE:
        return BUNDLED
    raise SystemExit(f"{path} is not here: pass --corpus PATH or set CHARRNN_CORPUS (tinyshakespeare.txt)")


def token_ids(n, vocab=65, corpus=None):
    """The first ``n`` character ids of tinyshakespeare (random ids where it is absent: speed does not depend on
    them), and the vocabulary size."""
    import numpy as np

    path = corpus or os.environ.get("CHARRNN_CORPUS") or os.path.join(ROOT, CORPUS)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            text = f.read(n)
        chars = sorted(set(text))
        lookup = {c: i for i, c in enumerate(chars)}
        return np.fromiter((lookup[c] for c in text), np.int64, len(text)), len(chars)
    return np.random.default_rng(0).integers(0, vocab, n), vocab


# ---- timing and memory


def rate(call, seconds, warmup=2):
    """Units per second of ``call()`` (it returns how many units it did) over at least ``seconds`` of calls, one
    at the least, after ``warmup`` untimed calls (buffers, worker processes, BLAS threads)."""
    for _ in range(warmup):
        call()
    done, start = 0, time.perf_counter()
    while True:
        done += call()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def best_rate(call, seconds, warmup=1):
    """Units per second of the fastest call of ``call()`` over at least ``seconds`` of calls (one at the least)."""
    for _ in range(warmup):
        call()
    best, start = 0.0, time.perf_counter()
    while True:
        t = time.perf_counter()
        best = max(best, call() / (time.perf_counter() - t))
        if time.perf_counter() - start >= seconds:
            return best


def peak_rss_mb(pids=()):
    """Peak resident memory of this process plus ``pids`` (each one's VmHWM: pages they share count in each), in
    MB. Not ru_maxrss alone: a child keeps the peak of the process it was forked from across its exec."""
    total = 0.0
    for pid in ("self", *pids):
        try:
            total += process_peak_rss_mb(pid)
        except (OSError, StopIteration):
            if pid == "self":
                total += resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return total


def process_peak_rss_mb(pid):
    """The peak resident memory (VmHWM) of live process ``pid``, in MB (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def cpu_seconds(pid):
    """User and system CPU seconds of live process ``pid`` so far (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_measured(cmd):
    """Run ``cmd`` (in the measurement environment); its wall seconds and peak RSS in MB (the kernel's account
    of the finished child, ru_maxrss: what VmHWM gives for a live process)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=child_env(), cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed")
    return time.perf_counter() - start, usage.ru_maxrss / 1024.0


# ---- children and rounds


def child_env(threads=None):
    """The environment of a measurement: without the forced OpenBLAS kernel, ``threads`` BLAS/OpenMP threads."""
    env = {k: v for k, v in os.environ.items() if k not in FORCED}
    if threads:
        env.update({name: str(threads) for name in THREAD_VARIABLES})
    return env


def run_child(fn, launcher=(), **kwargs):
    """``fn(**kwargs)`` (a function of a suite module) in a fresh interpreter, with kwargs["threads"] BLAS threads
    if given; its result dict. ``launcher`` goes before the module (torchrun); in smoke mode it runs here."""
    if SMOKE:
        return fn(**kwargs)
    spec = json.dumps({"module": fn.__module__, "function": fn.__name__, "kwargs": kwargs})
    cmd = [sys.executable, *(launcher or ["-m"]), "benchmarks", "_child", spec]
    out = subprocess.run(cmd, capture_output=True, text=True, env=child_env(kwargs.get("threads")), cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"{fn.__module__}.{fn.__name__}({kwargs}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def child_main(spec):
    """The child's side of run_child: print the function's result as the last line of JSON."""
    spec = json.loads(spec)
    result = getattr(importlib.import_module(spec["module"]), spec["function"])(**spec["kwargs"])
    if result is not None:  # under torchrun, process 0 reports
        print(json.dumps(result), flush=True)


def alternate(contenders, rounds):
    """{name: (fn, kwargs)} measured ``rounds`` times, alternating (reversed every other round): {name: [results]}.
    A kwargs entry "threads" sets the child's BLAS threads too."""
    results = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            fn, kwargs = contenders[name]
            results[name].append(run_child(fn, **kwargs))
    return results


def ratio_row(results, ours, peer, key="chars_per_sec"):
    """The figures of a row: best of ours and of peer, best over best, the per-round range, peak RSS of each."""
    a, b = [r[key] for r in results[ours]], [r[key] for r in results[peer]]
    per_round = [x / y for x, y in zip(a, b)]
    row = {"ours": max(a), "peer": max(b), "ratio": max(a) / max(b),
           "per_round": f"{min(per_round):.2f}-{max(per_round):.2f}"}
    if "peak_rss_mb" in results[ours][0] and "peak_rss_mb" in results[peer][0]:
        rss = [min(r["peak_rss_mb"] for r in results[name]) for name in (ours, peer)]
        row["rss"] = f"{rss[0]:.0f} / {rss[1]:.0f} MB"
    return row


# ---- output


class Table:
    """Rows printed as they come (aligned columns) and, with --markdown, again as a Markdown table at the end.
    ``columns``: (header, key) pairs; a float is printed with thousands separators, a "ratio" as 1.23×."""

    def __init__(self, columns, title=None):
        self.columns, self.rows, self.title = columns, [], title
        if title:
            print(f"\n{title}", flush=True)
        print("  ".join(header.ljust(max(10, len(header))) for header, _ in columns), flush=True)

    @staticmethod
    def cell(key, value, markdown=False):
        if value is None:
            return "–"
        if key == "ratio":
            return f"**{value:.2f}×**" if markdown else f"{value:.2f}x"
        if isinstance(value, float):
            return f"{value:,.0f}" if value >= 100 else f"{value:.3f}" if value < 10 else f"{value:.1f}"
        return str(value)

    def add(self, row=None, **fields):
        row = {**(row or {}), **fields}
        self.rows.append(row)
        cells = [self.cell(key, row.get(key)) for _, key in self.columns]
        print("  ".join(c.rjust(max(10, len(h))) if isinstance(row.get(k), float) else c.ljust(max(10, len(h)))
                        for c, (h, k) in zip(cells, self.columns)), flush=True)
        return row

    def markdown(self):
        lines = ["| " + " | ".join(header for header, _ in self.columns) + " |",
                 "|" + "|".join("---:" if isinstance(self.rows[0].get(key), float) else "---"
                                for _, key in self.columns) + "|" if self.rows else "|---|"]
        for row in self.rows:
            lines.append("| " + " | ".join(self.cell(key, row.get(key), True) for _, key in self.columns) + " |")
        return "\n".join(([f"\n{self.title}\n"] if self.title else ["\n"]) + lines)


def parser(doc, repeat=3, seconds=4.0):
    """An argument parser with the options every suite has; ``doc`` (the suite's docstring) is its help."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks " + doc.split(":")[0], description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=repeat, help=f"rounds; a figure is the best [default: {repeat}]")
    ap.add_argument("--seconds", type=float, default=seconds, help=f"seconds per measurement [default: {seconds:g}]")
    ap.add_argument("--markdown", action="store_true", help="also print the tables in Markdown at the end")
    ap.add_argument("--json", metavar="PATH", help="also write the tables' rows as JSON")
    ap.add_argument("--corpus", metavar="PATH", help=f"tinyshakespeare.txt [default: {CORPUS}]")
    ap.add_argument("--smoke", action="store_true", help="toy sizes, in this process: does every part still run?")
    return ap


def start(ap, argv):
    """Parse, set smoke mode (one short round) and the corpus, print the machine line."""
    global SMOKE
    args = ap.parse_args(argv)
    SMOKE = args.smoke
    if args.smoke:  # one thread: a toy model's products are not worth a second one (and on a loaded machine
        args.repeat, args.seconds = 1, 0.01  # PyTorch's spinning OpenMP threads make it crawl)
        os.environ.update({name: "1" for name in THREAD_VARIABLES})
        if sys.modules.get("torch") is not None:  # imported already (by a test, say)
            sys.modules["torch"].set_num_threads(1)
    if args.corpus:
        os.environ["CHARRNN_CORPUS"] = os.path.abspath(args.corpus)
    print(machine_line(), flush=True)
    return args


def finish(args, tables):
    if args.markdown:
        print("\n".join(t.markdown() for t in tables if t.rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_line(), "tables": [{"title": t.title, "rows": t.rows} for t in tables]}, f,
                      indent=2)
