"""Graphs, collections and the thread-local default-graph stack.

A :class:`Graph` owns the variable store (full TF names to variables) and the
named collections. Scope state (the current variable scope and the scope-name
counters) is kept per thread, as TF 2's ``compat.v1`` does, so threads that
build into one graph do not see each other's scopes.
"""
import contextlib
import re
import threading

import torch

__all__ = ["AUTO_REUSE", "Graph", "GraphKeys", "Variable", "add_to_collection",
           "add_to_collections", "get_collection", "get_collection_ref",
           "get_default_graph", "global_variables", "model_variables",
           "reset_default_graph", "trainable_variables"]


class GraphKeys:
    """Standard collection names, with TF's string values."""

    GLOBAL_VARIABLES = "variables"
    LOCAL_VARIABLES = "local_variables"
    MODEL_VARIABLES = "model_variables"
    TRAINABLE_VARIABLES = "trainable_variables"
    MOVING_AVERAGE_VARIABLES = "moving_average_variables"
    REGULARIZATION_LOSSES = "regularization_losses"
    UPDATE_OPS = "update_ops"
    LOSSES = "losses"
    ACTIVATIONS = "activations"
    WEIGHTS = "weights"
    BIASES = "biases"


class _ReuseMode:
    """Type of :data:`AUTO_REUSE`: create a variable if missing, else reuse it."""

    def __repr__(self):
        return "AUTO_REUSE"


AUTO_REUSE = _ReuseMode()


class Variable(torch.nn.Parameter):
    """A ``torch.nn.Parameter`` that carries its TF name, e.g. ``'conv/biases:0'``.

    Non-trainable TF variables (batch-norm moving statistics) are variables with
    ``requires_grad=False``.
    """

    def __new__(cls, data, requires_grad=True, name=None):
        self = super().__new__(cls, data, requires_grad)
        self._tf_name = name
        return self

    @property
    def name(self):
        """TF's tensor name of the variable, ``'scope/name:0'``."""
        return self._tf_name

    @property
    def op_name(self):
        """TF's op name of the variable, ``'scope/name'``."""
        return self._tf_name[:-2]

    def __deepcopy__(self, memo):
        if id(self) in memo:
            return memo[id(self)]
        result = Variable(self.data.clone(), self.requires_grad, self._tf_name)
        memo[id(self)] = result
        return result

    def __reduce_ex__(self, protocol):
        return (_rebuild_variable, (self.data, self.requires_grad, self._tf_name))

    def __repr__(self):
        return f"<sepconv.Variable {self.op_name!r} shape={tuple(self.shape)} dtype={self.dtype}>"


def _rebuild_variable(data, requires_grad, name):
    return Variable(data, requires_grad, name)


class _ThreadScopeState(threading.local):
    """Per-thread scope state of one graph."""

    def __init__(self):
        self.var_scope = None  # set lazily to the root VariableScope
        self.scope_counts = {}
        self.transaction_depth = 0
        self.undo_log = []
        # A list while a template's reuse call runs in this thread: the trainable
        # variables that call created. Per thread, so other threads may create
        # variables in the same graph meanwhile without failing the template.
        self.new_trainable = None


class Graph:
    """A TF1-style graph: a variable store plus named collections.

    Example:
        >>> import sepconv as sc
        >>> g = sc.Graph()
        >>> with g.as_default():
        ...     v = sc.get_variable("w", shape=[2], initializer=sc.zeros_initializer())
        >>> [x.name for x in g.get_collection(sc.GraphKeys.GLOBAL_VARIABLES)]
        ['w:0']
    """

    def __init__(self):
        self._lock = threading.RLock()
        self._vars = {}
        self._collections = {}
        self._thread = _ThreadScopeState()
        # Variables created inside a still-open call, by name: the creating thread's id.
        self._uncommitted = {}

    @contextlib.contextmanager
    def as_default(self):
        """Makes this graph the default graph of the calling thread."""
        stack = _default_graph_stack()
        stack.append(self)
        try:
            yield self
        finally:
            stack.pop()

    # -- collections -----------------------------------------------------
    def get_collection_ref(self, key):
        """Returns the list stored under ``key``, creating it if needed."""
        with self._lock:
            return self._collections.setdefault(key, [])

    def get_collection(self, key, scope=None):
        """Returns a copy of collection ``key``, filtered by ``scope`` with ``re.match`` on names.

        An item's name is its ``name``; a layer output, which has none, is
        named by its first alias (the scope of the layer that made it, where
        TF's tensor name starts). Items with neither are left out, as in TF.
        """
        with self._lock:
            items = list(self._collections.get(key, ()))
        if scope is None or not items:
            return items
        pattern = re.compile(scope)
        return [item for item in items
                if (name := _item_name(item)) is not None and pattern.match(name)]

    def get_all_collection_keys(self):
        """Returns the string keys of the non-empty collections (TF lists only string keys)."""
        with self._lock:
            return [key for key, items in self._collections.items()
                    if items and isinstance(key, str)]

    def add_to_collection(self, key, value):
        """Appends ``value`` to collection ``key``."""
        with self._lock:
            items = self._collections.setdefault(key, [])
            items.append(value)
            self._record_undo(lambda: _remove_identity(items, value))

    def add_to_collections(self, keys, value):
        """Appends ``value`` to each collection in ``keys`` (a string or an iterable), once each."""
        keys = [keys] if isinstance(keys, str) else list(dict.fromkeys(keys))
        for key in keys:
            self.add_to_collection(key, value)

    def clear_collection(self, key):
        """Empties collection ``key``."""
        with self._lock:
            self._collections.pop(key, None)

    # -- variable store ------------------------------------------------------
    def _lookup_variable(self, name):
        return self._vars.get(name)

    def _store_variable(self, name, variable):
        self._vars[name] = variable
        self._record_undo(lambda: self._vars.pop(name, None))

    # -- all-or-nothing mutation ------------------------------------------------
    @contextlib.contextmanager
    def _atomic(self):
        """Undoes every mutation made inside the block if the block raises.

        Covers the variable store, the collections and this thread's scope
        counters, so a failed layer call leaves the graph as it found it.
        """
        state = self._thread
        if state.transaction_depth:
            state.transaction_depth += 1
            try:
                yield
            finally:
                state.transaction_depth -= 1
            return
        counts_before = dict(state.scope_counts)
        state.transaction_depth = 1
        state.undo_log = []
        try:
            yield
        except BaseException:
            with self._lock:
                for undo in reversed(state.undo_log):
                    undo()
            state.scope_counts = counts_before
            raise
        finally:
            state.transaction_depth = 0
            state.undo_log = []
            self._forget_uncommitted()

    def _record_undo(self, undo):
        if self._thread.transaction_depth:
            self._thread.undo_log.append(undo)


    # -- variables other threads reuse before their creating call ends ----------
    @contextlib.contextmanager
    def _creating_variable(self, name):
        """Creates variable ``name`` all-or-nothing, inside any enclosing call's transaction.

        If the enclosing call fails later, its rollback removes the variable and
        its collection entries, unless another thread has reused the variable
        meanwhile (AUTO_REUSE): removing it then would leave that thread holding
        a variable that no collection or checkpoint knows, so it stays, as
        everything does in TF, which never rolls back.
        """
        state = self._thread
        with self._atomic():
            start = len(state.undo_log)
            yield
            if state.transaction_depth > 1:
                entries = state.undo_log[start:]
                del state.undo_log[start:]
                self._uncommitted[name] = threading.get_ident()
                state.undo_log.append(lambda: self._undo_unless_reused(name, entries))

    def _undo_unless_reused(self, name, entries):
        if self._uncommitted.pop(name, None) is None:
            return  # another thread reused it: it stays
        for undo in reversed(entries):
            undo()

    def _note_reuse(self, name):
        """Marks ``name`` as relied on: another thread's rollback must keep it now."""
        owner = self._uncommitted.get(name)
        if owner is not None and owner != threading.get_ident():
            del self._uncommitted[name]

    def _forget_uncommitted(self):
        if not self._uncommitted:  # the common case: nothing to take the lock for
            return
        me = threading.get_ident()
        with self._lock:
            for name in [name for name, owner in self._uncommitted.items() if owner == me]:
                del self._uncommitted[name]


def _item_name(item):
    name = getattr(item, "name", None)
    if name is not None:
        return name
    aliases = getattr(item, "aliases", None)
    return aliases[0] if isinstance(aliases, list) and aliases else None


def _remove_identity(items, value):
    for index in range(len(items) - 1, -1, -1):
        if items[index] is value:
            del items[index]
            return


class _DefaultGraphStack(threading.local):
    def __init__(self):
        self.stack = []


_GLOBAL_DEFAULT = [Graph()]
_STACK = _DefaultGraphStack()


def _default_graph_stack():
    return _STACK.stack


def get_default_graph():
    """Returns the calling thread's default graph.

    This is the innermost graph entered with :meth:`Graph.as_default` in this
    thread, else the process-wide global default graph.
    """
    stack = _default_graph_stack()
    return stack[-1] if stack else _GLOBAL_DEFAULT[0]


def reset_default_graph():
    """Replaces the global default graph with a fresh one.

    Raises:
        AssertionError: if called inside a ``Graph.as_default()`` or a
            ``variable_scope`` block (which enters its graph in TF), as TF does.
    """
    state = _GLOBAL_DEFAULT[0]._thread
    if _default_graph_stack() or (state.var_scope is not None and state.var_scope.name):
        raise AssertionError("Do not use reset_default_graph() to clear nested graphs. "
                             "If you need a cleared graph, exit the nesting and create a new graph.")
    _GLOBAL_DEFAULT[0] = Graph()


def get_collection(key, scope=None):
    """Returns collection ``key`` of the default graph; see :meth:`Graph.get_collection`.

    Args:
        key: the collection's name (any hashable).
        scope: optional regex; only items whose name ``re.match``es it.

    Returns:
        A new list of the items, in the order they were added.

    Raises:
        re.error: if ``scope`` is not a valid regex (and the collection not empty).
    """
    return get_default_graph().get_collection(key, scope)


def get_collection_ref(key):
    """Returns the mutable list for collection ``key`` of the default graph.

    Args:
        key: the collection's name; a missing collection is created empty.

    Returns:
        The list itself: changes to it change the collection.
    """
    return get_default_graph().get_collection_ref(key)


def add_to_collection(key, value):
    """Appends ``value`` to collection ``key`` of the default graph.

    Args:
        key: the collection's name.
        value: any object.
    """
    get_default_graph().add_to_collection(key, value)


def add_to_collections(keys, value):
    """Appends ``value`` to each of ``keys`` of the default graph, once per distinct key.

    Args:
        keys: a collection name, or an iterable of them.
        value: any object.
    """
    get_default_graph().add_to_collections(keys, value)


def global_variables(scope=None):
    """Returns the default graph's ``GLOBAL_VARIABLES`` collection.

    Args:
        scope: optional regex on the variables' names (``re.match``).

    Returns:
        A new list of variables, in creation order.
    """
    return get_collection(GraphKeys.GLOBAL_VARIABLES, scope)


def trainable_variables(scope=None):
    """Returns the default graph's ``TRAINABLE_VARIABLES`` collection.

    Args:
        scope: optional regex on the variables' names (``re.match``).

    Returns:
        A new list of variables, in creation order.
    """
    return get_collection(GraphKeys.TRAINABLE_VARIABLES, scope)


def model_variables(scope=None):
    """Returns the default graph's ``MODEL_VARIABLES`` collection.

    Args:
        scope: optional regex on the variables' names (``re.match``).

    Returns:
        A new list of variables, in creation order.
    """
    return get_collection(GraphKeys.MODEL_VARIABLES, scope)
