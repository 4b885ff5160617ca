"""What a failed call must leave untouched: a graph's store, collections, counters and values.

Shared by the validation, fuzz and concurrency tests. ``snapshot(graph)``
captures everything a layer call can change in the calling thread's view of a
graph; two snapshots compare equal exactly when nothing changed.
"""
import torch


def _value_bytes(variable):
    if variable.device.type == "meta":  # meta tensors have no values to compare
        return None
    return variable.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()


def snapshot(graph):
    """A comparable record of the graph's variables (by identity and bits), collections and counters."""
    state = graph._thread
    return {
        "variables": {name: (id(v), v.dtype, tuple(v.shape), _value_bytes(v))
                      for name, v in graph._vars.items()},
        # An emptied collection and a missing one mean the same to every reader.
        "collections": {key: [id(item) for item in items]
                        for key, items in graph._collections.items() if items},
        # A counter at 0 and a missing counter give the same next name.
        "scope_counts": {name: count for name, count in state.scope_counts.items() if count},
        "var_scope": id(state.var_scope),
    }
