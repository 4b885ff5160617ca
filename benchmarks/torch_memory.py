"""Peak RSS of one in-process engine's training step, run as a fresh process.

``python -m benchmarks.torch_memory ENGINE LAYER_JSON DATA_NPZ THREADS``
prints the peak in bytes.
"""
import json
import sys

import numpy as np
import torch

from .rss import step_peak_bytes
from .suite import Layer, Mode
from .torch_engines import ENGINES


def _import_what_autograd_imports_lazily():
    """Imports, before the baseline, the modules torch loads on its first ``autograd.grad``.

    The first ``torch.autograd.grad`` with an explicit output gradient imports
    ``torch.fx.experimental.symbolic_shapes`` (with sympy and mpmath): about
    35 MiB of Python modules, once per process, whatever the layer. It is
    not the training step's memory, and TensorFlow's worker has imported its
    own modules before its baseline too; every torch engine gets the same.
    """
    import torch.fx.experimental.symbolic_shapes  # noqa: F401


def main(argv):
    name, layer_json, data_path, threads = argv
    torch.set_num_threads(int(threads))
    _import_what_autograd_imports_lazily()
    layer = Layer(**json.loads(layer_json))
    with np.load(data_path) as data:
        arrays = {k: data[k] for k in data.files}
    engine = {cls.name: cls for cls in ENGINES}[name]()
    engine.setup(layer, Mode("train", arrays["x"].shape[0], True), arrays)
    print(step_peak_bytes(lambda: engine.time(1)))


if __name__ == "__main__":
    main(sys.argv[1:])
