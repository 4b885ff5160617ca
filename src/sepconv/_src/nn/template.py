"""``Template``: a TF1-style model function run as an ``nn.Module``."""
import functools
import inspect

import torch
from torch import nn

from .. import utils
from ..graph import Graph, Variable
from ..scope import get_variable_scope, variable_scope
from .layer_utils import _Swappable, _callable_name
from .tf_checkpoint import _load_tf_checkpoint


def _takes_is_training(fn):
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    parameter = parameters.get("is_training")
    return parameter is not None and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD,
                                                        parameter.KEYWORD_ONLY)


class _NewOutputsDropped:
    """Removes the output tensors a call added to the graph's collections.

    ``outputs_collections`` append every call's activations; kept, they would
    hold each step's autograd graph alive. Variables and regularization losses
    (which are not plain tensors) stay.
    """

    def __init__(self, graph):
        self.graph = graph

    def __enter__(self):
        self.sizes = {key: len(self.graph.get_collection_ref(key))
                      for key in self.graph.get_all_collection_keys()}

    def __exit__(self, *exc):
        for key in self.graph.get_all_collection_keys():
            items = self.graph.get_collection_ref(key)
            start = self.sizes.get(key, 0)
            items[start:] = [item for item in items[start:]
                             if not isinstance(item, torch.Tensor) or isinstance(item, Variable)]


class Template(_Swappable, nn.Module):
    """Runs a TF1-style model function as an ``nn.Module``.

    ``fn(*inputs, **kwargs)`` may use variable scopes, ``arg_scope``,
    :func:`sepconv.separable_conv2d`, :func:`sepconv.batch_norm` and
    :func:`sepconv.get_variable`. It runs in the module's own
    :class:`sepconv.Graph` (see :attr:`graph`). The first call (or
    :meth:`build`) creates the variables and registers them: trainable ones as
    parameters, non-trainable ones (moving statistics) as buffers. Later calls
    reuse them with ``make_template``'s rules: creating a new variable raises.

    Keys are the TF op names (``'MobilenetV1/Conv2d_0/weights'``), in
    ``named_parameters()``, ``named_buffers()`` and ``state_dict()`` (``'/'``
    is a valid attribute name for torch; a TF name containing ``'.'``, torch's
    submodule separator, raises ``ValueError`` when created); the
    registered tensors *are* the graph's variables, and stay so through
    ``.to()``, ``.half()``, ``load_state_dict`` (also with ``assign=True``),
    copying and pickling. Each call looks every variable up in the module,
    so ``torch.func.functional_call``, ``torch.export`` and ONNX export see
    the module's tensors.

    ``is_training``: if ``fn`` has a parameter named ``is_training`` and the
    caller does not pass it, the module passes ``self.training``, so
    ``train()`` / ``eval()`` switch batch norm between batch statistics (which
    update the moving averages) and moving statistics.

    As with lazy modules, build the template before making an optimizer,
    wrapping it in ``DistributedDataParallel`` or loading a state dict: until
    then it has no parameters.

    Args:
        fn: the model function. Output tensors it adds to collections are
            removed after each call (use the return value).
        **kwargs: keyword arguments bound to ``fn``, as ``make_template``'s.

    Raises:
        TypeError: if ``fn`` is not callable.

    Example:
        >>> import sepconv as sc, torch
        >>> def net(images, is_training=True):
        ...     with sc.variable_scope("Net"):
        ...         x = sc.separable_conv2d(images, 8, 3, 1, normalizer_fn=sc.batch_norm,
        ...                                 normalizer_params={"is_training": is_training})
        ...         return sc.separable_conv2d(x, 2, 3, 1, activation_fn=None)
        >>> model = sc.nn.Template(net).build(torch.zeros(1, 8, 8, 3))
        >>> [name for name, _ in model.named_parameters()][:3]
        ['Net/SeparableConv2d/depthwise_weights', 'Net/SeparableConv2d/pointwise_weights', 'Net/SeparableConv2d/BatchNorm/beta']
        >>> [name for name, _ in model.named_buffers()]
        ['Net/SeparableConv2d/BatchNorm/moving_mean', 'Net/SeparableConv2d/BatchNorm/moving_variance']
        >>> model.eval()(torch.zeros(2, 8, 8, 3)).shape
        torch.Size([2, 8, 8, 2])
    """

    def __init__(self, fn, **kwargs):
        super().__init__()
        utils.check_callable(fn, "fn", allow_none=False)
        self._fn = functools.partial(fn, **kwargs) if kwargs else fn
        self._passes_is_training = _takes_is_training(fn) and "is_training" not in kwargs
        self._graph = Graph()
        self._tf_names = {}  # op names of the registered variables (a dict: ordered, O(1) lookup)
        self._built = False

    @property
    def graph(self):
        """The :class:`sepconv.Graph` the function runs in (its variables are this module's)."""
        return self._graph

    @property
    def built(self):
        """Whether the variables exist (after the first call or :meth:`build`)."""
        return self._built

    # -- calling ----------------------------------------------------------------
    def forward(self, *args, **kwargs):
        """Calls ``fn``; the first call creates and registers the variables."""
        if self._passes_is_training and "is_training" not in kwargs:
            kwargs["is_training"] = self.training
        if not self._built:
            return self._first_call(args, kwargs)
        return self._run(self._reusing_getter, True, args, kwargs)

    def build(self, *args, **kwargs):
        """Creates the variables by calling ``fn`` once on example inputs; returns ``self``.

        Unlike a first forward pass, ``build`` computes no gradients and leaves
        the non-trainable variables (moving statistics) at their initial
        values. Does nothing if the template is already built.
        """
        if self._built:
            return self
        self._initial_values = {}
        try:
            with torch.no_grad():
                self.forward(*args, **kwargs)
            with torch.no_grad():
                for name, value in self._initial_values.items():
                    self._tensor(name).copy_(value)
        finally:
            del self._initial_values
        return self

    def _run(self, getter, reuse, args, kwargs):
        graph = self._graph
        with graph.as_default(), graph._atomic():
            with variable_scope(get_variable_scope(), reuse=reuse, custom_getter=getter):
                with _NewOutputsDropped(graph):
                    return self._fn(*args, **kwargs)

    def _first_call(self, args, kwargs):
        try:
            outputs = self._run(self._registering_getter, None, args, kwargs)
        except BaseException:
            self._unregister_all()  # the graph rolled its variables back too
            raise
        self._built = True
        return outputs

    def _registering_getter(self, getter, name, *args, **kwargs):
        variable = getter(name, *args, **kwargs)
        op_name = variable.op_name
        if op_name not in self._tf_names:
            self._register(op_name, variable)
        return variable

    def _reusing_getter(self, getter, name, *args, **kwargs):
        getter(name, *args, **kwargs)  # TF's reuse checks: existence, shape, dtype
        if name not in self._tf_names:
            raise ValueError(f"Template: variable {name} was created by a call after the first; "
                             "every variable must be created by the first call (or build).")
        # The module's tensor, not the graph's object: under functional_call or
        # export tracing the module holds substitutes.
        return self._tensor(name)

    def _register(self, op_name, variable):
        if "." in op_name:
            raise ValueError(f"Template: variable name {op_name!r} contains '.', which "
                             "torch.nn.Module cannot register; rename the scope or variable.")
        if variable.requires_grad:
            self.register_parameter(op_name, variable)
        else:
            self.register_buffer(op_name, variable)
            if hasattr(self, "_initial_values"):
                self._initial_values[op_name] = variable.detach().clone()
        self._tf_names[op_name] = None

    def _unregister_all(self):
        for name in self._tf_names:
            self._parameters.pop(name, None)
            self._buffers.pop(name, None)
        self._tf_names = {}

    def _tensor(self, name):
        tensor = self._parameters.get(name)
        return tensor if tensor is not None else self._buffers[name]

    # -- keeping the graph's variables and the module's tensors the same objects
    def _apply(self, fn, recurse=True):
        # Module._apply swaps a parameter's data in place when the new tensor is of a
        # compatible type (CPU <-> CUDA, any dtype) but replaces buffers, and replaces
        # parameters too across incompatible types (e.g. to the meta device).
        before = {name: self._tensor(name) for name in self._tf_names}
        result = super()._apply(fn, recurse)
        self._restore_identity(before)
        return result

    def _restore_identity(self, before):
        """After a tensor was replaced, makes the graph's variable and the module's tensor one object."""
        for name, variable in before.items():
            table = self._parameters if name in self._parameters else self._buffers
            current = table[name]
            if current is variable:
                continue
            data = current.data if isinstance(current, nn.Parameter) else current
            if torch._has_compatible_shallow_copy_type(variable, data):
                with torch.no_grad():
                    variable.data = data  # the graph's object keeps its identity
                table[name] = variable
            else:
                replacement = Variable(data.detach(), variable.requires_grad, variable.name)
                table[name] = replacement
                self._rebind_graph_variable(variable, replacement)

    def _rebind_graph_variable(self, old, new):
        """Points the graph's store, collections and regularization losses at ``new``."""
        graph = self._graph
        graph._vars[old.op_name] = new
        for key in graph.get_all_collection_keys():
            items = graph.get_collection_ref(key)
            for index, item in enumerate(items):
                if item is old:
                    items[index] = new
                elif getattr(item, "variable", None) is old:  # a RegularizationLoss
                    item.variable = new

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        if not self._built:
            if any(key.startswith(prefix) for key in state_dict):
                error_msgs.append("Template is not built: call build(example_inputs) before "
                                  "load_state_dict, so that its variables exist.")
            return
        before = {name: self._tensor(name) for name in self._tf_names}
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        self._restore_identity(before)  # load_state_dict(assign=True) replaces tensors

    # -- pickling and copying ------------------------------------------------------
    def __getstate__(self):
        # A Graph holds a lock and per-thread scope state, which do not pickle; its
        # variables and collections do, and pickle's memo keeps them the same
        # objects as the module's parameters and buffers.
        state = dict(self.__dict__)
        graph = state.pop("_graph")
        state["_graph_contents"] = (graph._vars, graph._collections)
        return state

    def __setstate__(self, state):
        variables, collections_ = state.pop("_graph_contents")
        super().__setstate__(state)
        self._graph = Graph()
        self._graph._vars = variables
        self._graph._collections = collections_

    # -- checkpoints ---------------------------------------------------------------
    def load_tf_checkpoint(self, path, strict=True):
        """Loads every variable from the TF checkpoint entry of the same name.

        Args:
            path: a checkpoint prefix, or a directory with a ``checkpoint`` file.
            strict: raise if a variable is missing from the checkpoint.

        Returns:
            A :class:`TFCheckpointLoadResult`; ``unexpected_keys`` lists the
            checkpoint's other entries (e.g. ``global_step``).

        Raises:
            RuntimeError: if the template is not built.
            ValueError: a missing variable (when ``strict``) or a shape mismatch.
        """
        if not self._built:
            raise RuntimeError("Template is not built: call build(example_inputs) before "
                               "load_tf_checkpoint, so that its variables exist.")
        return _load_tf_checkpoint(self, path, {name: name for name in self._tf_names}, "", strict)

    def regularization_losses(self):
        """The values of the graph's ``REGULARIZATION_LOSSES`` (regularizers of the variables)."""
        from ..regularizers import get_regularization_losses
        with self._graph.as_default():
            return get_regularization_losses()

    def extra_repr(self):
        """The function's name and the number of variables (``unbuilt`` before the first call)."""
        name = getattr(self._fn, "__name__", None) or _callable_name(getattr(self._fn, "func", self._fn))
        return f"fn={name}, variables={len(self._tf_names) if self._built else 'unbuilt'}"
