"""TF1's name-based checkpoint API (``tf.compat.v1.train``) for sepconv graphs: ``sc.train``.

Checkpoints are TF's V2 bundles (``<prefix>.index`` + ``<prefix>.data-00000-of-00001``,
see :mod:`checkpoint`), readable by ``tf.train.load_checkpoint`` and a TF
``Saver``, and vice versa. Names in a checkpoint are variables' op names
(``'conv/weights'``, without ``':0'``).

Differences from TF, all due to sepconv having no sessions and no graph execution:

* ``Saver.save(save_path, global_step=None)`` and ``Saver.restore(save_path)``
  take no session; no ``.meta`` graph file is written.
* ``Saver.restore`` and :func:`init_from_checkpoint` assign values at once
  (TF builds restore ops, and ``init_from_checkpoint`` replaces initializers
  that load when ``global_variables_initializer`` runs). They are
  all-or-nothing: every name, shape and dtype is checked, and every tensor
  read and CRC-checked, before any variable is changed.
* ``Saver.restore`` also accepts a directory (resolved through its
  ``checkpoint`` file, as :func:`load_checkpoint` does).
* Partitioned variables (``'<name>/part_<i>'``, tensor slices) are not supported.
"""
import collections.abc
import glob
import numbers
import os

import numpy as np
import torch

from . import checkpoint as _ckpt
from . import graph as graph_lib
from . import utils
from .checkpoint import (BundleReader, CheckpointError, CheckpointNotFoundError, CheckpointState,
                         TensorNotFoundError, checkpoint_exists, get_checkpoint_state,
                         latest_checkpoint, update_checkpoint_state)
from .graph import GraphKeys, Variable

__all__ = [
    "BundleReader", "CheckpointError", "CheckpointNotFoundError", "CheckpointState", "Saver",
    "TensorNotFoundError", "checkpoint_exists", "get_checkpoint_state", "init_from_checkpoint",
    "latest_checkpoint", "list_variables", "load_checkpoint", "load_variable",
    "NewCheckpointReader", "update_checkpoint_state",
]

_TORCH_TO_NP = {
    torch.float16: np.dtype(np.float16), torch.float32: np.dtype(np.float32),
    torch.float64: np.dtype(np.float64), torch.int8: np.dtype(np.int8),
    torch.uint8: np.dtype(np.uint8), torch.int16: np.dtype(np.int16),
    torch.int32: np.dtype(np.int32), torch.int64: np.dtype(np.int64),
    torch.bool: np.dtype(np.bool_), torch.complex64: np.dtype(np.complex64),
    torch.complex128: np.dtype(np.complex128),
}
for _name, _np in (("uint16", np.uint16), ("uint32", np.uint32), ("uint64", np.uint64)):
    if hasattr(torch, _name):
        _TORCH_TO_NP[getattr(torch, _name)] = np.dtype(_np)


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------

def load_checkpoint(ckpt_dir_or_file):
    """Returns a :class:`BundleReader` for a checkpoint prefix, or a directory's latest checkpoint.

    Raises:
        CheckpointNotFoundError (a ``ValueError``): no checkpoint there; for a
            directory: "Couldn't find 'checkpoint' file or checkpoints in given directory".
        CheckpointError (a ``ValueError``): the index is corrupt.

    Example:
        >>> import sepconv as sc, tempfile, torch
        >>> from sepconv._src import train  # sc.train
        >>> d = tempfile.mkdtemp()
        >>> with sc.Graph().as_default():
        ...     w = sc.get_variable("layer/w", initializer=torch.ones(2, 3))
        ...     path = train.Saver().save(d + "/model.ckpt", global_step=7)
        >>> train.load_checkpoint(d).get_tensor("layer/w").shape
        (2, 3)
        >>> train.list_variables(d)
        [('layer/w', [2, 3])]
    """
    return BundleReader(_ckpt.resolve_checkpoint_path(ckpt_dir_or_file))


def NewCheckpointReader(filepattern):  # noqa: N802  (TF's name)
    """TF's ``NewCheckpointReader``: a :class:`BundleReader` for the prefix ``filepattern``.

    Raises:
        CheckpointNotFoundError, CheckpointError: as :class:`BundleReader`.
    """
    return BundleReader(filepattern)


def list_variables(ckpt_dir_or_file):
    """Sorted ``[(name, shape)]`` of the tensors in a checkpoint, as TF.

    Args:
        ckpt_dir_or_file: a checkpoint prefix, or a directory (its latest checkpoint).

    Returns:
        A list of ``(name, shape)`` pairs, shapes as lists of ints.

    Raises:
        CheckpointNotFoundError, CheckpointError: as :func:`load_checkpoint`.
    """
    shapes = load_checkpoint(ckpt_dir_or_file).get_variable_to_shape_map()
    return [(name, shapes[name]) for name in sorted(shapes)]


def load_variable(ckpt_dir_or_file, name):
    """The value of tensor ``name`` (a trailing ``':0'`` is dropped) as a numpy array.

    Args:
        ckpt_dir_or_file: a checkpoint prefix, or a directory (its latest checkpoint).
        name: the tensor's name in the checkpoint.

    Returns:
        A numpy array.

    Raises:
        TensorNotFoundError: no such tensor; CheckpointNotFoundError,
            CheckpointError: as :func:`load_checkpoint`.
    """
    if name.endswith(":0"):
        name = name[:-2]
    return load_checkpoint(ckpt_dir_or_file).get_tensor(name)


# ---------------------------------------------------------------------------
# All-or-nothing assignment
# ---------------------------------------------------------------------------

def _np_dtype(variable):
    return _TORCH_TO_NP.get(variable.dtype)


def _describe(variable):
    name = getattr(variable, "name", None)
    return name if isinstance(name, str) else "<tensor shape=%s dtype=%s>" % (
        list(variable.shape), variable.dtype)


def _why_unwritable(variable):
    """Why ``variable.copy_`` would fail, found before any variable is written; else None."""
    if variable.is_inference() and not torch.is_inference_mode_enabled():
        return ("it was made under torch.inference_mode (an inference tensor), so it can only be "
                "restored under torch.inference_mode()")
    if any(stride == 0 and size > 1 for stride, size in zip(variable.stride(), variable.shape)):
        return "elements of it share memory (an expanded tensor)"
    return None


def _assign_all(reader, plan, source):
    """Copies ``reader``'s tensors into variables: ``plan`` is ``[(variable, tensor_name)]``.

    Validates every pair (presence, shape, dtype), then reads (and CRC-checks)
    every tensor and moves it to its variable's device, and only then copies
    them all in place. Any problem raises before a variable is touched.
    """
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    problems = []
    for variable, tensor_name in plan:
        var_name = _describe(variable)
        if tensor_name not in shapes:
            problems.append("Key %s not found in checkpoint (for variable %s)"
                            % (tensor_name, var_name))
            continue
        if list(variable.shape) != shapes[tensor_name]:
            problems.append("Shape mismatch for variable %s: the variable has shape %s, "
                            "checkpoint tensor %s has shape %s"
                            % (var_name, list(variable.shape), tensor_name, shapes[tensor_name]))
        unwritable = _why_unwritable(variable)
        if unwritable:
            problems.append("Variable %s cannot be written in place: %s" % (var_name, unwritable))
        want = _np_dtype(variable)
        have = dtypes[tensor_name]
        if want is None or want != have:
            have_name = reader.get_variable_to_tf_dtype_name_map()[tensor_name]
            problems.append("Dtype mismatch for variable %s: the variable has dtype %s, "
                            "checkpoint tensor %s has dtype %s"
                            % (var_name, str(variable.dtype).replace("torch.", ""), tensor_name,
                               have_name))
    if problems:
        shown = problems[:20] + (["... and %d more" % (len(problems) - 20)]
                                 if len(problems) > 20 else [])
        raise ValueError("Cannot restore from checkpoint %s; no variable was changed:\n  %s"
                         % (source, "\n  ".join(shown)))
    values = []
    cache = {}
    for variable, tensor_name in plan:
        if tensor_name not in cache:
            cache[tensor_name] = torch.from_numpy(reader.get_tensor(tensor_name))
        values.append(cache[tensor_name].to(device=variable.device))
    with torch.no_grad():
        for (variable, _), value in zip(plan, values):
            variable.copy_(value)


# ---------------------------------------------------------------------------
# Saver
# ---------------------------------------------------------------------------

def _var_list_to_dict(var_list):
    """TF's ``op_list_to_dict``: ``{checkpoint name: variable}``, sorted by name."""
    if isinstance(var_list, collections.abc.Mapping):
        result = {}
        for name, variable in var_list.items():
            if not isinstance(name, str) or not name:
                raise TypeError("Saver: var_list keys must be non-empty strings, got %r" % (name,))
            if not isinstance(variable, torch.Tensor):
                raise TypeError("Saver: the value for %r is not a variable: %r" % (name, variable))
            result[name] = variable
        return dict(sorted(result.items()))
    if isinstance(var_list, (str, bytes)) or not isinstance(var_list, collections.abc.Iterable):
        raise TypeError("Saver: var_list must be a dict or a list of variables, got %r"
                        % (var_list,))
    items = list(var_list)
    for variable in items:
        if not isinstance(variable, Variable):
            raise TypeError("Saver: can only save sepconv Variables (or a dict of tensors), got %r"
                            % (variable,))
    result = {}
    for variable in sorted(items, key=lambda v: v.name):
        name = variable.op_name
        if name in result:
            raise ValueError("At least two variables have the same name: %s" % name)
        result[name] = variable
    return result


def _checkpoint_files(prefix):
    escaped = glob.escape(prefix)
    return glob.glob(escaped + ".index") + glob.glob(escaped + ".data-?????-of-?????")


class Saver:
    """Saves and restores variables in TF's V2 checkpoint format, as ``tf.compat.v1.train.Saver``.

    Args:
        var_list: ``None`` (the default graph's ``GLOBAL_VARIABLES`` when the
            Saver is made), a list of :class:`Variable` (saved under their op
            names, ``'scope/w'``), or a dict ``{checkpoint name: variable}``.
        max_to_keep: how many recent checkpoints to keep (older ones written by
            this Saver are deleted); ``None`` or 0 keeps all, and the
            ``checkpoint`` file then lists only the latest, as TF. A negative
            value raises ``ValueError`` (TF deletes every checkpoint it saves).
        allow_empty: with no variables, ``save`` and ``restore`` do nothing
            instead of the constructor raising ``ValueError("No variables to save")``.
        pad_step_number: write ``<path>-00000042`` instead of ``<path>-42``.
        save_relative_paths: write paths relative to the directory into ``checkpoint``.

    Example:
        >>> import sepconv as sc, tempfile, torch
        >>> from sepconv._src import train  # sc.train
        >>> d = tempfile.mkdtemp()
        >>> with sc.Graph().as_default():
        ...     w = sc.get_variable("w", initializer=torch.arange(3.0))
        ...     saver = train.Saver()
        ...     prefix = saver.save(d + "/model.ckpt", global_step=1)
        ...     with torch.no_grad():
        ...         _ = w.zero_()
        ...     saver.restore(prefix)
        >>> w.tolist(), train.latest_checkpoint(d) == prefix
        ([0.0, 1.0, 2.0], True)
    """

    def __init__(self, var_list=None, max_to_keep=5, allow_empty=False, pad_step_number=False,
                 save_relative_paths=False):
        if var_list is None:
            var_list = graph_lib.get_default_graph().get_collection(GraphKeys.GLOBAL_VARIABLES)
        self._vars = _var_list_to_dict(var_list)
        if not self._vars and not allow_empty:
            raise ValueError("No variables to save")
        for name, variable in self._vars.items():
            if variable.dtype not in _TORCH_TO_NP:
                raise TypeError("Saver: variable %s has dtype %s, which TF checkpoints (as sepconv "
                                "writes them) cannot hold" % (name, variable.dtype))
        # TF accepts a negative max_to_keep and then deletes each checkpoint as soon as it is saved.
        self._max_to_keep = None if max_to_keep is None else utils.positive_int(
            max_to_keep, "max_to_keep", minimum=0)
        self._pad_step_number = pad_step_number
        self._save_relative_paths = save_relative_paths
        self._last_checkpoints = []
        self._to_delete = []

    @property
    def var_list(self):
        """``{checkpoint name: variable}`` this Saver saves and restores."""
        return dict(self._vars)

    @property
    def last_checkpoints(self):
        """Prefixes of the not-yet-deleted checkpoints of this Saver, oldest first."""
        return list(self._last_checkpoints)

    def save(self, save_path, global_step=None, latest_filename=None, write_state=True):
        """Writes the variables to ``save_path`` (or ``save_path-<global_step>``); returns the prefix.

        The bundle is written atomically (to temporary files, then renamed);
        then, with ``write_state``, ``<dir>/<latest_filename or 'checkpoint'>``
        is updated and checkpoints beyond ``max_to_keep`` are deleted, as TF.

        Raises:
            ValueError: the parent directory of ``save_path`` does not exist.
            TypeError: ``global_step`` is not a number or a scalar tensor.
        """
        if not self._vars:
            return None
        save_path = os.fspath(save_path)
        if global_step is not None:
            step = global_step.item() if isinstance(global_step, torch.Tensor) else global_step
            if isinstance(step, bool) or not isinstance(step, numbers.Real):
                raise TypeError(f"Invalid global_step {global_step!r}: expected an int or a "
                                "scalar tensor.")
            step = int(step)  # TF formats it with %d, which truncates a float
            prefix = ("%s-%08d" if self._pad_step_number else "%s-%d") % (save_path, step)
        else:
            prefix = save_path
        save_dir = os.path.dirname(prefix)
        if not os.path.isdir(save_dir or "."):
            raise ValueError("Parent directory of {} doesn't exist, can't save.".format(save_path))
        with torch.no_grad():
            arrays = {name: variable.detach().cpu().numpy()
                      for name, variable in self._vars.items()}
        _ckpt.write_bundle(prefix, arrays)
        if write_state:
            self._record_last_checkpoint(prefix)
            update_checkpoint_state(save_dir, prefix, self._last_checkpoints, latest_filename,
                                    save_relative_paths=self._save_relative_paths)
            self._delete_old_checkpoints()
        return prefix

    def restore(self, save_path):
        """Loads every variable of this Saver from ``save_path`` (a prefix or a directory).

        All-or-nothing: missing tensors, shape and dtype mismatches and corrupt
        data raise ``ValueError`` (naming the variables and both shapes/dtypes)
        before any variable is changed. Values are copied in place onto each
        variable's device.
        """
        if save_path is None:
            raise ValueError("Can't load save_path when it is None.")
        if not self._vars:
            return
        save_path = os.fspath(save_path)
        prefix = _ckpt.resolve_checkpoint_path(save_path)
        if not checkpoint_exists(prefix):
            raise CheckpointNotFoundError("The passed save_path is not a valid checkpoint: "
                                          + save_path)
        reader = BundleReader(prefix)
        _assign_all(reader, [(v, name) for name, v in self._vars.items()], prefix)

    def _record_last_checkpoint(self, prefix):
        if not self._max_to_keep:
            return
        self._last_checkpoints = [p for p in self._last_checkpoints if p != prefix]
        self._last_checkpoints.append(prefix)
        while len(self._last_checkpoints) > self._max_to_keep:
            self._to_delete.append(self._last_checkpoints.pop(0))

    def _delete_old_checkpoints(self):
        while self._to_delete:
            prefix = self._to_delete.pop(0)
            for path in _checkpoint_files(prefix):
                try:
                    os.remove(path)
                except OSError:
                    pass


# ---------------------------------------------------------------------------
# init_from_checkpoint
# ---------------------------------------------------------------------------

def _collect_partitioned_variable(name, store):
    if name + "/part_0" in store:
        parts = []
        i = 0
        while name + "/part_%d" % i in store:
            parts.append(store[name + "/part_%d" % i])
            i += 1
        return parts
    return None


def _partitioned_error(name):
    return ValueError("init_from_checkpoint: %s is a partitioned variable (list of parts), "
                      "which sepconv does not support" % name)


def init_from_checkpoint(ckpt_dir_or_file, assignment_map):
    """Loads variables from a checkpoint by TF's ``init_from_checkpoint`` mapping rules.

    ``assignment_map`` is a dict, or a list of ``(checkpoint name, current)``
    pairs (to load one checkpoint tensor into several variables), processed in
    order of checkpoint name. Names of current variables are looked up in the
    default graph's variable store (variables made by ``get_variable``), as TF:

    * ``'ckpt_scope/var': 'scope/var'`` or ``'ckpt_scope/var': variable``:
      one tensor into one variable.
    * ``'ckpt_scope/': 'scope/'``: every stored variable under ``scope/`` from
      the tensor of the same relative name under ``ckpt_scope/``. A
      current-side name that is not a variable is taken as a scope: TF's
      "partial" rule loads all variables under ``'scope/sub'``'s parent
      ``'scope/'``; its checkpoint-side key must end in ``'/'``.
    * ``'/': 'scope/'``: variables under ``scope/`` from the checkpoint root;
      ``'ckpt_scope/': '/'`` and ``'/': '/'`` likewise with the graph root.

    Difference from TF: TF replaces the variables' initializers, so values are
    loaded when ``global_variables_initializer()`` runs; sepconv has no
    initializer ops and assigns the values immediately, in place, onto each
    variable's device. The load is all-or-nothing: every mapping is resolved
    and every shape and dtype checked (TF checks only shapes here) and every
    tensor read before any variable is changed.

    Raises:
        ValueError: a checkpoint tensor is missing, a shape or dtype differs,
            a scope-only name maps from a non-scope key, no checkpoint is found,
            or a partitioned variable is named.
        TypeError: a mapped value is neither a name nor a :class:`Variable`.

    Example:
        >>> import sepconv as sc, tempfile, torch
        >>> from sepconv._src import train  # sc.train
        >>> d = tempfile.mkdtemp()
        >>> with sc.Graph().as_default():
        ...     old = sc.get_variable("old/w", initializer=torch.full((2,), 5.0))
        ...     prefix = train.Saver().save(d + "/model.ckpt")
        >>> with sc.Graph().as_default():
        ...     new = sc.get_variable("new/w", initializer=torch.zeros(2))
        ...     train.init_from_checkpoint(d, {"old/": "new/"})
        >>> new.tolist()
        [5.0, 5.0]
    """
    prefix = _ckpt.resolve_checkpoint_path(ckpt_dir_or_file)
    reader = BundleReader(prefix)
    variable_map = reader.get_variable_to_shape_map()
    if isinstance(assignment_map, collections.abc.Mapping):
        assignment_map = list(assignment_map.items())
    else:
        assignment_map = [tuple(pair) for pair in assignment_map]
    graph = graph_lib.get_default_graph()
    with graph._lock:
        store_vars = dict(graph._vars)

    def not_found(tensor_name):
        names = sorted(variable_map)
        listed = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        return ValueError("Tensor %s is not found in %s checkpoint {%s}"
                          % (tensor_name, ckpt_dir_or_file, listed))

    plan = []
    for tensor_name_in_ckpt, current in sorted(assignment_map, key=lambda pair: pair[0]):
        if isinstance(current, Variable):
            var = current
        elif isinstance(current, list) and current and all(isinstance(v, Variable)
                                                            for v in current):
            raise _partitioned_error(",".join(v.name for v in current))
        elif isinstance(current, str):
            var = store_vars.get(current)
            if var is None and _collect_partitioned_variable(current, store_vars) is not None:
                raise _partitioned_error(current)
        else:
            raise TypeError("init_from_checkpoint: the value for %r must be a variable name or a "
                            "sepconv Variable, got %r" % (tensor_name_in_ckpt, current))
        if var is not None:
            if tensor_name_in_ckpt not in variable_map:
                raise not_found(tensor_name_in_ckpt)
            if list(var.shape) != variable_map[tensor_name_in_ckpt]:
                raise ValueError("Shape of variable %s (%s) doesn't match with shape of tensor %s "
                                 "(%s) from checkpoint reader." % (
                                     var.name, list(var.shape), tensor_name_in_ckpt,
                                     variable_map[tensor_name_in_ckpt]))
            plan.append((var, tensor_name_in_ckpt))
            continue
        scopes = ""
        if "/" in current:
            scopes = current[:current.rindex("/")]
        if not tensor_name_in_ckpt.endswith("/"):
            raise ValueError("Assignment map with scope only name {} should map to scope only "
                             "{}. Should be 'scope/': 'other_scope/'.".format(
                                 scopes, tensor_name_in_ckpt))
        scope_variables = set()
        for var_name in store_vars:
            if not scopes or var_name.startswith(scopes + "/"):
                if "/part_" in var_name:
                    var_name = var_name[:var_name.index("/part_")]
                scope_variables.add(var_name)
        for var_name in sorted(scope_variables):
            full_tensor_name = var_name[len(scopes):]
            if current != "/":
                full_tensor_name = full_tensor_name[1:]
            if tensor_name_in_ckpt != "/":
                full_tensor_name = tensor_name_in_ckpt + full_tensor_name
            if full_tensor_name.endswith("/"):
                full_tensor_name = full_tensor_name[:-1]
            if full_tensor_name not in variable_map:
                raise ValueError("Tensor %s (%s in %s) is not found in %s checkpoint" % (
                    full_tensor_name, var_name[len(scopes) + 1:], tensor_name_in_ckpt,
                    ckpt_dir_or_file))
            var = store_vars.get(var_name)
            if var is None:
                raise _partitioned_error(var_name)
            plan.append((var, full_tensor_name))
    _assign_all(reader, plan, prefix)
