"""``python -m sepconv bench``: the benchmark suite of ``benchmarks/`` (repo root).

The suite lives beside the package, not inside it, so the installed library
carries no benchmark code; this entry point finds it in a source checkout.
"""
import os
import sys

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main(argv=None):
    """Runs the suite with command-line ``argv``; returns the exit status.

    Raises:
        SystemExit: if ``benchmarks/`` is not found (an installed, non-editable copy).
    """
    if not os.path.isfile(os.path.join(_REPO_ROOT, "benchmarks", "runner.py")):
        raise SystemExit("python -m sepconv bench needs a source checkout: benchmarks/ was not "
                         f"found next to {_REPO_ROOT}/src.")
    if _REPO_ROOT not in sys.path:
        sys.path.insert(0, _REPO_ROOT)
    from benchmarks import runner

    return runner.run(sys.argv[1:] if argv is None else list(argv))
