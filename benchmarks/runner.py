"""Runs the suite: engines interleaved per layer, medians, floor, memory, reports."""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from sepconv._src import native

from . import remote, report, roofline, suite
from .data import make_arrays
from .onnx_engine import OnnxRuntimeEngine
from .timing import median
from .torch_engines import ENGINES as TORCH_ENGINES

REMOTE_ENGINES = ("tensorflow", "jax")
ALL_ENGINES = tuple(e.name for e in TORCH_ENGINES) + ("onnxruntime",) + REMOTE_ENGINES
# An engine's output may differ from sepconv's by float32 summation order only.
OUTPUT_TOLERANCE = 1e-3
# Seconds of timed calls per engine, layer and mode, beyond which it gets fewer samples.
ENGINE_BUDGET_SECONDS = 4.0


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m sepconv bench",
        description="Benchmark sepconv's separable layer against its peers on this CPU.")
    parser.add_argument("--quick", action="store_true",
                        help="fewer rounds and no memory pass (about a minute)")
    parser.add_argument("--layers", nargs="+", default=[], metavar="LAYER",
                        help=f"subset of {[l.name for l in suite.LAYERS]}")
    parser.add_argument("--modes", nargs="+", default=[], metavar="MODE",
                        help=f"subset of {[m.name for m in suite.MODES]}")
    parser.add_argument("--engines", nargs="+", default=[], metavar="ENGINE",
                        help=f"subset of {list(ALL_ENGINES)} (sepconv always runs)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds per layer (default 7, quick 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for every engine (default: all cores of this machine)")
    parser.add_argument("--tf-python", default=None,
                        help="Python of a TensorFlow (and JAX) environment; default "
                             "$SEPCONV_TF_PYTHON or /work/venvs/tf/bin/python")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    parser.add_argument("--out", default="bench-results", help="directory for bench.json and bench.png")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.engines) - set(ALL_ENGINES))
    if unknown:
        parser.error(f"unknown engines {unknown}: expected some of {list(ALL_ENGINES)}")
    for items, names, what in ((suite.LAYERS, args.layers, "layers"), (suite.MODES, args.modes, "modes")):
        try:
            suite.select(items, names, what)
        except ValueError as error:
            parser.error(str(error))
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    # An explicit TensorFlow Python that does not run is an error, not a skipped peer.
    for source, python in (("--tf-python", args.tf_python),
                           ("$SEPCONV_TF_PYTHON", os.environ.get("SEPCONV_TF_PYTHON"))):
        if python:
            if not os.access(python, os.X_OK):
                parser.error(f"{source} {python!r} is not an executable file")
            break
    try:  # before the run, which takes minutes, not after it
        os.makedirs(args.out, exist_ok=True)
    except OSError as error:
        parser.error(f"--out: cannot create directory {args.out!r}: {error.strerror}")
    return args


def machine():
    """What the numbers were measured on."""
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "load_average_at_start": os.getloadavg()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        for key in ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket",
                    "Socket(s)", "L2 cache", "L3 cache", "Flags"):
            if key in fields:
                value = fields[key].strip()
                info[key] = " ".join(f for f in value.split() if f.startswith("avx")) if key == "Flags" else value
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


class Progress:
    """One updating status line on stderr."""

    def __init__(self, total):
        self.total, self.done, self.start = total, 0, time.time()

    def show(self, text):
        elapsed = time.time() - self.start
        sys.stderr.write(f"\r[{self.done}/{self.total} {elapsed:5.0f}s] {text:<70.70}")
        sys.stderr.flush()

    def step(self):
        self.done += 1

    def close(self):
        sys.stderr.write("\n")


def build_engines(args, wanted, threads, scratch, log):
    engines, skipped, versions = [cls() for cls in TORCH_ENGINES if cls.name in wanted], {}, {}
    if "onnxruntime" in wanted:
        reason = OnnxRuntimeEngine.available()
        if reason:
            skipped["onnxruntime"] = reason
        else:
            engines.append(OnnxRuntimeEngine(threads))
            versions["onnxruntime"] = OnnxRuntimeEngine.version()
    peer, python = None, None
    remote_wanted = [e for e in REMOTE_ENGINES if e in wanted]
    if remote_wanted:
        python = remote.find_tf_python(args.tf_python)
        if python is None:
            for name in remote_wanted:
                skipped[name] = ("no TensorFlow Python found (pass --tf-python or set "
                                 "SEPCONV_TF_PYTHON)")
        else:
            log(f"starting the peer worker: {python}")
            peer = remote.PeerProcess(python, threads, remote_wanted)
            versions.update(peer.versions)
            for name, reason in peer.skipped.items():
                skipped[name] = f"not available in {python}: {reason}"
            engines += [remote.RemoteEngine(n, peer, scratch) for n in remote_wanted if n in peer.versions]
    return engines, skipped, versions, peer, python


def time_interleaved(engines, rounds, min_samples, chunk_seconds):
    """Median seconds per engine; engines alternate chunk by chunk, order rotating per round."""
    counts, rounds_of = {}, {}
    for engine in engines:
        once = median(engine.time(2))
        # A very slow engine gets fewer samples (at least 3) within its budget.
        affordable = max(3, int(ENGINE_BUDGET_SECONDS / max(once, 1e-6)))
        wanted = min(min_samples, affordable)
        rounds_of[engine.name] = min(rounds, wanted)
        counts[engine.name] = max(1, min(50, int(chunk_seconds / max(once, 1e-6))),
                                  -(-wanted // rounds_of[engine.name]))
    samples = {engine.name: [] for engine in engines}
    for r in range(rounds):
        for engine in engines[r % len(engines):] + engines[:r % len(engines)]:
            if r >= rounds_of[engine.name]:
                continue
            time.sleep(0.05)  # let the previous engine's spinning worker threads park
            samples[engine.name] += engine.time(counts[engine.name])
    return {name: median(values) for name, values in samples.items()}, samples


def check_outputs(outputs):
    """Largest error of each engine's forward output relative to sepconv's, scaled by its max."""
    ours = outputs["sepconv"]
    scale = float(np.abs(ours).max()) or 1.0
    return {name: float(np.abs(out - ours).max()) / scale for name, out in outputs.items()
            if out is not None and name != "sepconv"}


def measure_memory(engine, layer, mode, arrays, threads, scratch, python):
    path = os.path.join(scratch, f"{layer.name}-{mode.name}.npz")
    if not os.path.exists(path):
        np.savez(path, **arrays)
    if engine in REMOTE_ENGINES:
        return remote.peak_memory(python, threads, engine, layer, mode, path)
    if engine == "onnxruntime":
        return None
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-m", "benchmarks.torch_memory", engine,
                           json.dumps(layer.as_dict()), path, str(threads)],
                          capture_output=True, text=True, cwd=root, check=True)
    return int(done.stdout.strip().splitlines()[-1])


def run(argv):
    args = parse_args(argv)
    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    log = lambda text: print(text, file=sys.stderr)  # noqa: E731
    info = machine()
    log(f"machine: {info.get('Model name', '?')}, {info['cpu_count']} CPUs, {threads} threads per "
        f"engine, load average {info['load_average_at_start']}")
    # The memory pass saves each layer's arrays (about 1 GB for the whole suite): removed on exit.
    with tempfile.TemporaryDirectory(prefix="sepconv-bench-") as scratch:
        document = measure(args, threads, scratch, log)
    info["load_average_at_end"] = os.getloadavg()
    document = {"command": "python -m sepconv bench " + " ".join(argv), "machine": info, **document}
    names = document["engines"]
    print(report.table(document["results"], names, document["summary"]))
    report.write_all(args.out, document, names)
    log(f"wrote {os.path.join(args.out, 'bench.json')} and {os.path.join(args.out, 'bench.png')}")
    return 0


def measure(args, threads, scratch, log):
    """Times every selected layer and mode; the fields of bench.json that describe the runs."""
    layers = suite.select(suite.LAYERS, args.layers, "layers")
    modes = suite.select(suite.MODES, args.modes, "modes")
    wanted = set(args.engines or ALL_ENGINES) | {"sepconv"}
    rounds = args.rounds or (3 if args.quick else 7)
    chunk = 0.02 if args.quick else 0.05
    memory = not (args.no_memory or args.quick)
    engines, skipped, versions, peer, python = build_engines(args, wanted, threads, scratch, log)
    versions["torch"] = torch.__version__
    kernel = native.status()
    log(f"sepconv kernel: {kernel}")
    for name, reason in skipped.items():
        log(f"skipping {name}: {reason}")
    log("measuring the roofline: GEMM peak and copy bandwidth ...")
    peak = roofline.gemm_peak_flops(suite.peak_gemm_shapes(layers, modes))
    bandwidth = roofline.copy_bandwidth()
    log(f"GEMM peak {peak / 1e9:.0f} GFLOP/s, copy bandwidth {bandwidth / 1e9:.1f} GB/s")
    progress = Progress(len(layers) * len(modes))
    results = []
    try:
        for mode in modes:
            for layer in layers:
                progress.show(f"{mode.name} {layer.name}: setup")
                arrays = make_arrays(layer, mode.batch)
                active = [e for e in engines if getattr(e, "supports", lambda m: True)(mode)]
                outputs = {e.name: e.setup(layer, mode, arrays) for e in active}
                progress.show(f"{mode.name} {layer.name}: timing {len(active)} engines")
                medians, samples = time_interleaved(active, rounds, 10 if not args.quick else 5, chunk)
                flops, nbytes = suite.work(layer, mode)
                row = {"mode": mode.name, "layer": layer.name, "batch": mode.batch,
                       "ms": {n: 1e3 * t for n, t in medians.items()},
                       "min_ms": {n: 1e3 * min(v) for n, v in samples.items()},
                       "samples": {n: len(v) for n, v in samples.items()},
                       "floor_ms": 1e3 * roofline.floor_seconds(flops, nbytes, peak, bandwidth),
                       "flops": flops, "bytes": nbytes}
                if not mode.training:
                    row["max_rel_error_vs_sepconv"] = check_outputs(outputs)
                    bad = {n: e for n, e in row["max_rel_error_vs_sepconv"].items() if e > OUTPUT_TOLERANCE}
                    if bad:
                        log(f"\nWARNING: outputs differ from sepconv's on {layer.name}: {bad}")
                elif memory:
                    row["peak_mib"] = {}
                    for e in active:
                        progress.show(f"{mode.name} {layer.name}: peak memory of {e.name}")
                        value = measure_memory(e.name, layer, mode, arrays, threads, scratch, python)
                        row["peak_mib"][e.name] = None if value is None else value / 2 ** 20
                results.append(row)
                progress.step()
    finally:
        progress.close()
        if peer is not None:
            peer.close()
        for engine in engines:
            engine.close()
    names = [e.name for e in engines]
    return {"engines": names, "threads": threads, "versions": versions, "skipped": skipped,
            "sepconv_kernel": kernel,
            "gemm_peak_gflops": peak / 1e9, "copy_bandwidth_gbs": bandwidth / 1e9,
            "rounds": rounds, "results": results, "summary": report.summarise(results, names)}
