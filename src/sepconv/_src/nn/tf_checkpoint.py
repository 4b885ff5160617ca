"""Loading TF checkpoints into modules: ``load_tf_checkpoint`` and its result."""
import collections

import numpy as np
import torch
from torch.nn.parameter import is_lazy

from .. import checkpoint as ckpt_lib

TFCheckpointLoadResult = collections.namedtuple(
    "TFCheckpointLoadResult", ["missing_keys", "unexpected_keys"])
TFCheckpointLoadResult.__doc__ = """What ``load_tf_checkpoint`` did not match.

Attributes:
    missing_keys: TF names the module wanted that the checkpoint lacks.
    unexpected_keys: checkpoint names under the module's scope it did not use.
"""


def _load_tf_checkpoint(module, path, names, scope, strict):
    """Copies checkpoint tensors ``names[key]`` into ``module.state_dict()[key]``."""
    reader = ckpt_lib.BundleReader(ckpt_lib.resolve_checkpoint_path(path))
    current = module.state_dict(keep_vars=True)
    loaded, missing = {}, []
    for key, tf_name in names.items():
        if not reader.has_tensor(tf_name):
            missing.append(tf_name)
            continue
        value = torch.from_numpy(np.array(reader.get_tensor(tf_name)))
        target = current[key]
        if not is_lazy(target) and tuple(target.shape) != tuple(value.shape):
            raise ValueError(f"Checkpoint variable {tf_name} has shape {list(value.shape)}, but "
                             f"{type(module).__name__} {key!r} has shape {list(target.shape)}.")
        loaded[key] = value
    if strict and missing:
        raise ValueError(f"Variables {missing} not found in checkpoint {reader.prefix}; it has "
                         f"{sorted(reader.get_variable_to_shape_map())}.")
    mismatches = getattr(module, "_lazy_shape_mismatches", lambda shapes: [])(
        {key: value.shape for key, value in loaded.items()})
    if mismatches:
        raise ValueError(f"Checkpoint {reader.prefix} has {'; '.join(mismatches)}.")
    module.load_state_dict(loaded, strict=False)
    wanted = set(names.values())
    prefix = f"{scope}/" if scope else ""
    unexpected = sorted(name for name in reader.get_variable_to_shape_map()
                        if name.startswith(prefix) and name not in wanted)
    return TFCheckpointLoadResult(missing, unexpected)
