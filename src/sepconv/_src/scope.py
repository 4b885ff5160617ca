"""Variable scopes, ``get_variable`` and ``make_template`` with TF1's semantics.

The scope stack is per thread and per graph (see :mod:`graph`). Names are full
``scope/name`` strings; the scope counters that make default names unique
(``SeparableConv2d``, ``SeparableConv2d_1``) follow TF's rules, including the
reset of a scope's sub-scope counters when it is left, which is what makes
re-entering ``outer`` with ``reuse=True`` find ``outer/SeparableConv2d`` again.
"""
import contextlib
import functools
import inspect
import numbers
import re
import threading

import torch

from . import graph as graph_lib
from .graph import AUTO_REUSE, GraphKeys, Variable
from . import initializers as init_lib
from .utils import as_dtype as _as_dtype
from .utils import _is_flag
from .utils import check_callable as _check_callable
from .utils import check_collection_names as _check_collection_names
from .utils import check_device as _check_device

__all__ = ["Template", "VariableScope", "get_variable", "get_variable_scope",
           "make_template", "model_variable", "variable", "variable_scope"]


class VariableScope:
    """The settings a ``variable_scope`` block applies to ``get_variable``.

    Attributes:
        name: full scope name, ``''`` at the root.
        reuse: ``True``, ``False`` (create) or :data:`AUTO_REUSE`, as TF reports it.
    """

    def __init__(self, reuse, name="", initializer=None, regularizer=None,
                 custom_getter=None, dtype=None):
        self.name = name
        self.reuse = False if reuse is None else reuse
        self.initializer = initializer
        self.regularizer = regularizer
        self.custom_getter = custom_getter
        self.dtype = dtype

    @property
    def original_name_scope(self):
        """``name + '/'`` (empty at the root).

        TF's is the name scope opened when the scope was entered, made unique
        in the graph (``'net_1/'`` for a second ``variable_scope('net')``);
        sepconv opens no name scopes, so two entries of one scope share it.
        """
        return self.name + "/" if self.name else ""

    def reuse_variables(self):
        """Makes later ``get_variable`` calls in this scope reuse variables."""
        self.reuse = True

    def _child(self, name, reuse, initializer, regularizer, custom_getter, dtype):
        scope = VariableScope(reuse, name, self.initializer, self.regularizer,
                              self.custom_getter, self.dtype)
        scope._override(initializer, regularizer, custom_getter, dtype)
        return scope

    def _override(self, initializer, regularizer, custom_getter, dtype):
        if initializer is not None:
            self.initializer = initializer
        if regularizer is not None:
            self.regularizer = regularizer
        if dtype is not None:
            self.dtype = dtype
        if custom_getter is not None:
            self.custom_getter = _chain_getters(custom_getter, self.custom_getter)

    def get_variable(self, name, **kwargs):
        """``get_variable`` in this scope; see :func:`get_variable`."""
        with _entered(self):
            return get_variable(name, **kwargs)

    def __repr__(self):
        return f"VariableScope(name={self.name!r}, reuse={self.reuse!r})"


def _chain_getters(outer, inner):
    """Composes custom getters: ``outer`` wraps ``inner``, which wraps the true getter."""
    if inner is None:
        return outer

    def chained(getter, *args, **kwargs):
        return outer(functools.partial(inner, getter), *args, **kwargs)

    return chained


def _state(graph=None):
    state = (graph or graph_lib.get_default_graph())._thread
    if state.var_scope is None:
        state.var_scope = VariableScope(None)
    return state


def get_variable_scope():
    """Returns the calling thread's current :class:`VariableScope`."""
    return _state().var_scope


@contextlib.contextmanager
def _entered(scope):
    state = _state()
    previous = state.var_scope
    state.var_scope = scope
    try:
        yield scope
    finally:
        state.var_scope = previous


def _normalize_reuse(reuse):
    if reuse is False:
        return None
    if reuse is True or reuse is None or reuse is AUTO_REUSE:
        return reuse
    raise ValueError(f"The reuse parameter must be True or False or None or AUTO_REUSE, got {reuse!r}.")


def _unique_scope_name(state, prefix):
    parent = state.var_scope.name
    full = f"{parent}/{prefix}" if parent else prefix
    counts = state.scope_counts
    if counts.get(full, 0) == 0:
        return prefix
    index = 1
    while counts.get(f"{full}_{index}", 0) > 0:
        index += 1
    return f"{prefix}_{index}"


def _close_subscopes(counts, name):
    prefix = name + "/"
    for key in counts:
        if key.startswith(prefix):
            counts[key] = 0


@contextlib.contextmanager
def variable_scope(name_or_scope, default_name=None, values=None, initializer=None,
                   regularizer=None, caching_device=None, partitioner=None,
                   custom_getter=None, reuse=None, dtype=None, use_resource=None,
                   constraint=None, auxiliary_name_scope=True):
    """Opens a variable scope, as ``tf.compat.v1.variable_scope``.

    Args:
        name_or_scope: a name (nested under the current scope) or a
            :class:`VariableScope` to re-enter (not nested).
        default_name: name made unique among siblings (``name``, ``name_1``, ...)
            when ``name_or_scope`` is None.
        values: accepted for TF compatibility; unused.
        initializer, regularizer, dtype: defaults for ``get_variable`` inside.
        custom_getter: ``getter(getter, name, *args, **kwargs)`` wrapping
            variable creation; nests around any inherited getter. As TF,
            it is called with every argument by keyword (``getter``,
            ``name``, ``shape``, ... ``aggregation``); ``constraint`` and
            sepconv's ``device`` only if it names them or takes ``**kwargs``.
        reuse: ``True`` (variables must exist), ``None``/``False`` (inherit;
            create at the root) or :data:`AUTO_REUSE`. Reuse is inherited by
            sub-scopes.
        caching_device, partitioner, use_resource, constraint,
        auxiliary_name_scope: accepted for TF compatibility; unused.

    Yields:
        The new :class:`VariableScope`.

    Raises:
        TypeError: if both ``name_or_scope`` and ``default_name`` are None, or
            ``name_or_scope`` is neither a string nor a scope.
        ValueError: if ``reuse`` is invalid, or ``reuse=True`` comes with only a
            ``default_name``.

    Example:
        >>> import sepconv as sc
        >>> with sc.Graph().as_default():
        ...     with sc.variable_scope("outer"):
        ...         with sc.variable_scope(None, default_name="conv") as a: pass
        ...         with sc.variable_scope(None, default_name="conv") as b: pass
        >>> a.name, b.name
        ('outer/conv', 'outer/conv_1')
    """
    del values, caching_device, partitioner, use_resource, constraint, auxiliary_name_scope
    reuse = _normalize_reuse(reuse)
    _check_scope_defaults(default_name, initializer, regularizer, custom_getter)
    dtype = _as_dtype(dtype)
    if name_or_scope is None and default_name is None:
        raise TypeError("If default_name is None then name_or_scope is required")
    if name_or_scope is not None and not isinstance(name_or_scope, (str, VariableScope)):
        raise TypeError(f"VariableScope: name_or_scope must be a string or VariableScope, got {name_or_scope!r}.")
    if isinstance(name_or_scope, str) and not name_or_scope:
        raise ValueError("variable_scope: name_or_scope must be a non-empty string.")
    if name_or_scope is None and (reuse is True or reuse is AUTO_REUSE):
        raise ValueError(f"reuse={reuse!r} cannot be used without a name_or_scope")
    state = _state()
    old = state.var_scope
    if isinstance(name_or_scope, VariableScope):
        scope = VariableScope(reuse if reuse else name_or_scope.reuse, name_or_scope.name,
                              name_or_scope.initializer, name_or_scope.regularizer,
                              name_or_scope.custom_getter, name_or_scope.dtype)
        scope._override(initializer, regularizer, custom_getter, dtype)
        _open(state, scope.name)
        saved_counts = dict(state.scope_counts)
    else:
        name = name_or_scope if name_or_scope is not None else _unique_scope_name(state, default_name)
        full = f"{old.name}/{name}" if old.name else name
        _check_tf_name(full, "variable scope name")
        scope = old._child(full, reuse or old.reuse, initializer, regularizer, custom_getter, dtype)
        _open(state, full)
        saved_counts = None
    state.var_scope = scope
    try:
        yield scope
    finally:
        if saved_counts is not None:
            state.scope_counts = saved_counts
        else:
            _close_subscopes(state.scope_counts, scope.name)
        state.var_scope = old


# The names TF gives ops and scopes (a variable's name is its op's): TF refuses others.
_TF_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*")


def _check_tf_name(name, what):
    if not _TF_NAME.fullmatch(name):
        raise ValueError(f"Invalid {what} {name!r}: TF names must match the pattern "
                         f"{_TF_NAME.pattern} (checkpoints and TF could not hold it otherwise).")


def _check_scope_defaults(default_name, initializer, regularizer, custom_getter):
    """Checked before the scope counters move, so a bad call leaves them untouched."""
    if default_name is not None and (not isinstance(default_name, str) or not default_name):
        raise TypeError(f"Invalid default_name {default_name!r}: expected a non-empty string or None.")
    if initializer is not None and not _is_array(initializer):
        _check_callable(initializer, "initializer")
    _check_callable(regularizer, "regularizer")
    _check_callable(custom_getter, "custom_getter")


def _check_variable_collections(collections):
    if collections is not None and (isinstance(collections, str)
                                    or not isinstance(collections, (list, tuple, set))):
        raise TypeError(f"Invalid collections {collections!r}: expected a list, tuple or set "
                        "of collection names, or None.")
    _check_collection_names(collections or (), "collections")


def _open(state, name):
    # As TF's open_variable_scope: a count only. Subscope counters are closed
    # when a scope is left, not when it is entered: re-entering an enclosing
    # scope object keeps its children's default names moving on.
    if name:
        state.scope_counts[name] = state.scope_counts.get(name, 0) + 1


def _as_shape(shape, name):
    if shape is None:
        return None
    if isinstance(shape, torch.Size):
        return tuple(shape)
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = [shape]  # TF's TensorShape(3) is [3]
    try:
        dims = list(shape)
    except TypeError:
        raise TypeError(f"Invalid shape {shape!r} for variable {name}: expected a list of non-negative ints.") from None
    for dim in dims:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            if hasattr(dim, "__index__") and not isinstance(dim, bool) and int(dim) >= 0:
                continue
            raise ValueError(f"Invalid shape {shape!r} for variable {name}: dimensions must be "
                             f"non-negative ints, got {dim!r}.")
    return tuple(int(dim) for dim in dims)


def get_variable(name, shape=None, dtype=None, initializer=None, regularizer=None,
                 trainable=None, collections=None, caching_device=None, partitioner=None,
                 validate_shape=True, use_resource=None, custom_getter=None, constraint=None,
                 synchronization=None, aggregation=None, *, device=None):
    """Gets an existing variable or creates a new one, as ``tf.compat.v1.get_variable``.

    Args:
        name: short name; the full name is ``<current scope>/<name>``.
        shape: list of ints (an int is a 1-D shape); may be None when
            ``initializer`` is an array.
        dtype: defaults to a value initializer's dtype, else the scope's,
            else float32; one that differs from a value initializer's raises.
        initializer: a callable ``init(shape, dtype=...)`` (and
            ``partition_info=None`` if it names it), an initializer class, a
            tensor/array value, or None for the scope's initializer, else
            Glorot uniform (zeros for integer and bool dtypes), as TF.
        regularizer: ``fn(variable) -> loss or None``, added lazily to
            ``GraphKeys.REGULARIZATION_LOSSES`` when the variable is created.
        trainable: default True; adds ``TRAINABLE_VARIABLES`` and sets
            ``requires_grad``.
        collections: default ``[GLOBAL_VARIABLES]``.
        custom_getter: replaces the scope's custom getter for this call, as in TF.
        device: sepconv extension: the torch device of a new variable (default CPU).
        caching_device, partitioner, validate_shape, use_resource, constraint,
        synchronization, aggregation: accepted for TF compatibility; unused.

    Returns:
        The :class:`Variable`.

    Raises:
        ValueError: creating a variable that exists without reuse ("already
            exists, disallowed"), reusing one that does not exist ("does not
            exist"), or reusing with another shape or dtype ("Trying to share
            variable").

    Example:
        >>> import sepconv as sc
        >>> with sc.Graph().as_default():
        ...     with sc.variable_scope("layer"):
        ...         w = sc.get_variable("w", [2, 3], initializer=sc.ones_initializer())
        ...     with sc.variable_scope("layer", reuse=True):
        ...         same = sc.get_variable("w", [2, 3])
        >>> w.name, same is w
        ('layer/w:0', True)
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"get_variable: name must be a non-empty string, got {name!r}.")
    _check_callable(custom_getter, "custom_getter")
    _check_variable_collections(collections)
    device = _check_device(device)
    scope = get_variable_scope()
    full_name = f"{scope.name}/{name}" if scope.name else name
    # As TF: a getter given here replaces the scope's, it does not wrap it.
    getter = custom_getter if custom_getter is not None else scope.custom_getter
    from_value = initializer is not None and _is_value(initializer)
    if from_value and dtype is not None and _as_dtype(_value_dtype(initializer)) != _as_dtype(dtype):
        raise ValueError(f"Initializer type '{_value_dtype(initializer)}' and explicit dtype "
                         f"'{dtype}' don't match.")
    # A value initializer gives its own dtype, not the scope's (TF).
    scope_dtype = None if from_value else scope.dtype
    kwargs = dict(shape=shape, dtype=dtype if dtype is not None else scope_dtype,
                  initializer=initializer if initializer is not None else scope.initializer,
                  regularizer=regularizer if regularizer is not None else scope.regularizer,
                  reuse=scope.reuse, trainable=trainable, collections=collections, device=device)
    if getter is None:
        return _true_getter(full_name, **kwargs)
    tf_options = dict(caching_device=caching_device, partitioner=partitioner,
                      validate_shape=validate_shape, use_resource=use_resource,
                      synchronization=synchronization, aggregation=aggregation)
    return _call_custom_getter(getter, functools.partial(_true_getter, device=device), full_name,
                               kwargs, tf_options, constraint)


def _call_custom_getter(custom_getter, getter, name, kwargs, tf_options, constraint):
    """Calls a custom getter as TF does: every argument by keyword, TF's set of them.

    ``constraint`` and sepconv's ``device`` go only to a getter that takes
    them (by name or ``**kwargs``); ``getter`` already carries the device.
    """
    call = dict(kwargs, **tf_options, getter=getter, name=name)
    device = call.pop("device")
    for key, value in (("constraint", constraint), ("device", device)):
        if _takes_keyword(custom_getter, key):
            call[key] = value
    return _getter_result(custom_getter(**call), name)


def _getter_result(variable, name):
    """What a custom getter returned for ``name``, if it is a tensor (TF would hand on anything)."""
    if not isinstance(variable, torch.Tensor):
        raise TypeError(f"The custom_getter returned {variable!r} for variable {name}: expected "
                        "a variable (a torch.Tensor).")
    return variable


def _takes_keyword(function, key):
    keywords, var_keyword = _keyword_parameters(function)
    return var_keyword or key in keywords


def _keyword_parameters(function):
    """``(names it takes by keyword, whether it takes **kwargs)``; (), True if unknown.

    Read from the code object, memoised on it: a Template's getters are asked
    for every variable on every call, where ``inspect.signature`` cost 10 us.
    """
    while True:  # what a partial or a bound method finally calls
        if isinstance(function, functools.partial):
            function = function.func
        elif inspect.ismethod(function):
            function = function.__func__
        elif not inspect.isfunction(function) and inspect.isfunction(getattr(type(function), "__call__", None)):
            function = type(function).__call__  # a callable object: its __call__
        else:
            break
    code = getattr(function, "__code__", None)
    if code is None:  # a builtin or a callable object: assume it takes everything
        return (), True
    return _code_keywords(code)


@functools.lru_cache(maxsize=1024)
def _code_keywords(code):
    named = code.co_varnames[code.co_posonlyargcount:code.co_argcount + code.co_kwonlyargcount]
    return frozenset(named), bool(code.co_flags & inspect.CO_VARKEYWORDS)


def _true_getter(name, shape=None, dtype=None, initializer=None, regularizer=None,
                 reuse=None, trainable=None, collections=None, device=None, **unused):
    del unused  # TF-only keyword arguments that custom getters pass through
    _check_tf_name(name, "variable name")
    graph = graph_lib.get_default_graph()
    shape = _as_shape(shape, name)
    dtype = _as_dtype(dtype)
    if trainable is None:
        trainable = True
    if not _is_flag(trainable):
        raise TypeError(f"get_variable: trainable must be a bool (or a numpy bool, 1 or 0), "
                        f"got {trainable!r}.")
    trainable = bool(trainable)
    with graph._lock:
        found = graph._lookup_variable(name)
        if found is not None:
            found = _check_reuse(found, name, shape, dtype, reuse)
            graph._note_reuse(name)
            return found
        if reuse is True:
            raise ValueError(f"Variable {name} does not exist, or was not created with "
                             "get_variable(). Did you mean to set reuse=AUTO_REUSE in VarScope?")
        value = _initial_value(name, shape, dtype, initializer, device)
        # Integer variables may be "trainable" in TF's collections, but torch cannot differentiate them.
        differentiable = value.dtype.is_floating_point or value.dtype.is_complex
        variable = Variable(value, requires_grad=trainable and differentiable, name=name + ":0")
        with graph._creating_variable(name):
            graph._store_variable(name, variable)
            keys = list(collections) if collections is not None else [GraphKeys.GLOBAL_VARIABLES]
            if trainable and GraphKeys.TRAINABLE_VARIABLES not in keys:
                keys.append(GraphKeys.TRAINABLE_VARIABLES)
            graph.add_to_collections(keys, variable)
            if trainable and graph._thread.new_trainable is not None:
                graph._thread.new_trainable.append(variable)
            if regularizer is not None:
                _add_regularization_loss(graph, name, variable, regularizer)
        return variable


def _check_reuse(found, name, shape, dtype, reuse):
    if reuse is not True and reuse is not AUTO_REUSE:
        raise ValueError(f"Variable {name} already exists, disallowed. Did you mean to set "
                         "reuse=True or reuse=AUTO_REUSE in VarScope?")
    if shape is not None and tuple(found.shape) != shape:
        raise ValueError(f"Trying to share variable {name}, but specified shape {list(shape)} "
                         f"and found shape {list(found.shape)}.")
    if dtype is not None and found.dtype != dtype:
        raise ValueError(f"Trying to share variable {name}, but specified dtype {dtype} "
                         f"and found dtype {found.dtype}.")
    return found


def _initial_value(name, shape, dtype, initializer, device):
    if isinstance(initializer, (torch.Tensor,)) or _is_array(initializer):
        value = torch.as_tensor(initializer)
        if shape is not None and tuple(value.shape) != shape:
            raise ValueError(f"Initializer of variable {name} has shape {list(value.shape)}, "
                             f"but shape {list(shape)} was specified.")
        return value.to(device=device, dtype=dtype or value.dtype).detach().clone()
    if shape is None:
        raise ValueError(f"Shape of a new variable ({name}) must be fully defined, but instead was None.")
    dtype = dtype or torch.float32
    if initializer is None:
        initializer = _default_initializer(name, dtype)
    return call_initializer(initializer, shape, dtype, f"variable {name}").to(device=device, dtype=dtype)


def call_initializer(initializer, shape, dtype, what):
    """``initializer(shape, dtype=dtype)`` as a tensor of ``shape``, as TF calls initializers.

    ``what`` names the tensor in errors (``'variable scope/w'``).

    Raises:
        TypeError: ``initializer`` is not callable or returns no number or array.
        ValueError: it returns another shape.
    """
    if not callable(initializer):
        raise TypeError(f"Invalid initializer {initializer!r} for {what}: expected a callable or an array.")
    if inspect.isclass(initializer):  # TF takes the class itself, e.g. tf.zeros_initializer
        initializer = initializer()
    keywords, _ = _keyword_parameters(initializer)  # named, not just swallowed by **kwargs
    extra = {"partition_info": None} if "partition_info" in keywords else {}
    value = initializer(list(shape), dtype=dtype, **extra)
    if not (isinstance(value, (torch.Tensor, numbers.Number, list, tuple)) or _is_array(value)):
        raise TypeError(f"Initializer of {what} returned {value!r}: expected a tensor, an array "
                        "or a number.")
    value = torch.as_tensor(value)
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"Initializer of {what} returned shape {list(value.shape)}, "
                         f"expected {list(shape)}.")
    return value


def _is_array(value):
    return hasattr(value, "__array__") and not callable(value)


def _is_value(initializer):
    """An initializer that is a value (tensor or array), not a function."""
    return isinstance(initializer, torch.Tensor) or _is_array(initializer)


def _value_dtype(initializer):
    return initializer.dtype if isinstance(initializer, torch.Tensor) else torch.as_tensor(initializer).dtype


def _default_initializer(name, dtype):
    if dtype.is_floating_point:
        return init_lib.glorot_uniform_initializer()
    if dtype.is_complex:
        raise ValueError(f"An initializer for variable {name} of {dtype} is required")
    return init_lib.zeros_initializer()


class _StackedRegularizers:
    """A variable scope's regularizer and a core layer's own, both applied to a new variable.

    TF's core layers (``tf.layers``) create their weights through
    ``get_variable`` without a regularizer, so the scope's applies, then add
    their own penalty for a variable that call created. Passed as one
    regularizer, both losses are added when the variable is created, under
    the graph's lock: no other thread's call can come in between.
    """

    def __init__(self, scope_regularizer, layer_regularizer):
        self.parts = tuple(r for r in (scope_regularizer, layer_regularizer) if r is not None)

    def __call__(self, tensor):
        """The summed penalty, for a custom getter that applies the regularizer itself."""
        values = [value for value in (r(tensor) for r in self.parts) if value is not None]
        return sum(values) if values else None


def _add_regularization_loss(graph, name, variable, regularizer):
    from . import regularizers as reg_lib  # regularizers imports graph only; avoids a cycle
    if isinstance(regularizer, _StackedRegularizers):
        for part in regularizer.parts:
            _add_regularization_loss(graph, name, variable, part)
        return
    if not callable(regularizer):
        raise TypeError(f"Invalid regularizer {regularizer!r} for variable {name}: expected a callable.")
    loss_name = f"{name}/Regularizer"
    taken = {getattr(loss, "name", None) for loss in graph.get_collection(GraphKeys.REGULARIZATION_LOSSES)}
    if loss_name in taken:  # a second penalty on the variable: uniquified, as TF names ops
        loss_name = next(f"{loss_name}_{i}" for i in range(1, len(taken) + 2)
                         if f"{loss_name}_{i}" not in taken)
    loss = reg_lib.RegularizationLoss(loss_name, variable, regularizer)
    if loss.value() is not None:
        graph.add_to_collection(GraphKeys.REGULARIZATION_LOSSES, loss)


def variable(name, shape=None, dtype=None, initializer=None, regularizer=None, trainable=True,
             collections=None, caching_device=None, device=None, partitioner=None,
             custom_getter=None, use_resource=None, synchronization=None, aggregation=None):
    """slim's ``variable``: ``get_variable`` with de-duplicated collections.

    ``device`` is a torch device here (slim's was a device string for placement).
    A ``custom_getter`` is called in ``get_variable``'s place, as slim does:
    ``custom_getter(name, reuse=<scope's reuse>, shape=..., ...)`` with the short
    name and no getter argument (and ``device`` if it takes one).

    Args:
        name, shape, dtype, initializer, regularizer, trainable, device: as
            :func:`get_variable`.
        collections: collection names (default ``[GLOBAL_VARIABLES]``);
            repeats are dropped.
        custom_getter: see above.
        caching_device, partitioner, use_resource, synchronization,
            aggregation: TF's, passed on to ``get_variable``.

    Returns:
        The variable (what ``custom_getter`` returns, if given).

    Raises:
        ValueError: as :func:`get_variable`, e.g. the variable exists and the
            scope does not reuse, or it is missing and the scope reuses.
        TypeError: bad ``collections`` or ``custom_getter``, or a getter that
            returns no tensor.
    """
    _check_variable_collections(collections)
    _check_callable(custom_getter, "custom_getter")
    keys = list(dict.fromkeys(collections if collections is not None else [GraphKeys.GLOBAL_VARIABLES]))
    kwargs = dict(shape=shape, dtype=dtype, initializer=initializer, regularizer=regularizer,
                  trainable=trainable, collections=keys, caching_device=caching_device,
                  partitioner=partitioner, use_resource=use_resource,
                  synchronization=synchronization, aggregation=aggregation)
    if custom_getter is not None:
        # slim calls it in get_variable's place: the short name, no getter argument, and
        # the scope's reuse; sepconv's device only if it takes one.
        if _takes_keyword(custom_getter, "device"):
            kwargs["device"] = device
        return _getter_result(custom_getter(name, reuse=get_variable_scope().reuse, **kwargs), name)
    return get_variable(name, device=device, **kwargs)


def model_variable(name, shape=None, dtype=torch.float32, initializer=None, regularizer=None,
                   trainable=True, collections=None, caching_device=None, device=None,
                   partitioner=None, custom_getter=None, use_resource=None):
    """slim's ``model_variable``: a variable also added to ``MODEL_VARIABLES``.

    Args:
        name, shape, dtype, ...: as :func:`variable`; ``collections`` are
            added to ``[GLOBAL_VARIABLES, MODEL_VARIABLES]``.

    Returns:
        The variable.

    Raises:
        ValueError, TypeError: as :func:`variable`.

    Example:
        >>> import sepconv as sc
        >>> with sc.Graph().as_default():
        ...     _ = sc.model_variable("w", [1], initializer=sc.zeros_initializer())
        ...     [v.name for v in sc.model_variables()]
        ['w:0']
    """
    keys = list(collections or []) + [GraphKeys.GLOBAL_VARIABLES, GraphKeys.MODEL_VARIABLES]
    return variable(name, shape=shape, dtype=dtype, initializer=initializer,
                    regularizer=regularizer, trainable=trainable, collections=keys,
                    caching_device=caching_device, device=device, partitioner=partitioner,
                    custom_getter=custom_getter, use_resource=use_resource)


class Template:
    """A function whose variables are created on the first call and reused after.

    Made by :func:`make_template`. The first call runs under a fresh, unique
    variable scope; later calls re-enter it with ``reuse=True``, so creating a
    new variable after the first call raises. Safe to call from several
    threads: the first call runs under a lock, so variables are created once.
    Every call is all-or-nothing: one that raises leaves no variable,
    collection entry or moving-statistics update behind.
    """

    def __init__(self, name, func, create_scope_now=False, unique_name=None, custom_getter=None):
        if name is None:
            raise ValueError("name cannot be None.")
        if not callable(func):
            raise TypeError(f"make_template: func_ must be callable, got {func!r}.")
        self._name = name
        self._func = func
        self._unique_name = unique_name
        self._custom_getter = custom_getter
        self._variable_scope = None
        self._variables_created = False
        self._first_call_lock = threading.Lock()
        if create_scope_now:
            with variable_scope(unique_name, default_name=name, custom_getter=custom_getter) as scope:
                self._variable_scope = scope

    def __call__(self, *args, **kwargs):
        if self._variables_created:
            return self._call_reusing(args, kwargs)
        with self._first_call_lock:
            if self._variables_created:
                return self._call_reusing(args, kwargs)
            graph = graph_lib.get_default_graph()
            with graph._atomic():
                scope_before = self._variable_scope
                if scope_before is None:
                    with variable_scope(self._unique_name, default_name=self._name,
                                        custom_getter=self._custom_getter) as scope:
                        result = self._func(*args, **kwargs)
                    self._variable_scope = scope
                else:
                    with variable_scope(scope_before):
                        result = self._func(*args, **kwargs)
                self._variables_created = True
                # An enclosing call (another template's first call, a layer) that fails
                # later removes these variables: this template must then create them again.
                graph._record_undo(lambda: self._forget_first_call(scope_before))
            return result

    def _forget_first_call(self, scope_before):
        self._variable_scope = scope_before
        self._variables_created = False

    def _call_reusing(self, args, kwargs):
        # Only this thread's creations count: comparing the length of the shared
        # trainable collection would blame the template for other threads' variables.
        graph = graph_lib.get_default_graph()
        state = graph._thread
        outer, state.new_trainable = state.new_trainable, []
        try:
            # All-or-nothing like the first call: a failure undoes the variables it made,
            # and moving-statistics updates and outputs collected by the layers before it.
            with graph._atomic(), variable_scope(self._variable_scope, reuse=True):
                result = self._func(*args, **kwargs)
                if state.new_trainable:
                    raise ValueError("Trainable variable created when calling a template after "
                                     f"the first time, perhaps you used a new name: "
                                     f"{state.new_trainable}")
        finally:
            state.new_trainable = outer
        return result

    @property
    def name(self):
        """The name the template was made with."""
        return self._name

    @property
    def variable_scope(self):
        """The template's :class:`VariableScope`, None before the first call."""
        return self._variable_scope

    @property
    def variable_scope_name(self):
        """The full name of the template's scope with a trailing ``/`` (so that, as in TF,
        filtering by it does not match a neighbour such as ``t_extra``), None before the
        first call."""
        if self._variable_scope is None:
            return None
        name = self._variable_scope.name
        return name if not name or name.endswith("/") else name + "/"

    def _scoped(self, key):
        if self._variable_scope is None:
            return []
        return graph_lib.get_collection(key, self._variable_scope.name + "/")

    @property
    def global_variables(self):
        """The template's global variables."""
        return self._scoped(GraphKeys.GLOBAL_VARIABLES)

    variables = global_variables

    @property
    def trainable_variables(self):
        """The template's trainable variables."""
        return self._scoped(GraphKeys.TRAINABLE_VARIABLES)


def make_template(name_, func_, create_scope_now_=False, unique_name_=None,
                  custom_getter_=None, **kwargs):
    """Wraps ``func_`` so every call shares the variables of the first call.

    Args:
        name_: default name of the template's variable scope (made unique).
        func_: the function to wrap; ``kwargs`` are bound to it.
        create_scope_now_: open the scope now rather than on the first call.
        unique_name_: exact scope name to use instead of a uniquified ``name_``.
        custom_getter_: custom getter for the template's scope.

    Returns:
        A :class:`Template`.

    Raises:
        ValueError: ``name_`` is None; or, when the template is called, as
            its function raises (a failed call changes nothing: see
            :class:`Template`), and if a call after the first creates a
            trainable variable.
        TypeError: ``func_`` is not callable.

    Example:
        >>> import sepconv as sc, torch
        >>> def layer(x):
        ...     w = sc.get_variable("w", [1], initializer=sc.ones_initializer())
        ...     return x * w
        >>> with sc.Graph().as_default():
        ...     tmpl = sc.make_template("scale", layer)
        ...     _ = tmpl(torch.ones(1)); _ = tmpl(torch.ones(1))
        ...     [v.name for v in sc.global_variables()]
        ['scale/w:0']
    """
    func = functools.partial(func_, **kwargs) if kwargs else func_
    return Template(name_, func, create_scope_now_, unique_name_, custom_getter_)
