"""slim's ``arg_scope``: default keyword arguments for decorated functions.

The stack is per thread. Explicit keyword arguments always win over scoped
ones. As TF, a decorated function's key is ``str()`` of the function it wraps,
which includes its address: two functions never share scoped arguments even
under one name (closures made by one factory), while an alias (the same object
under another name) does.
"""
import contextlib
import functools
import inspect
import threading
import weakref

__all__ = ["add_arg_scope", "arg_scope", "arg_scope_func_key", "arg_scoped_arguments",
           "current_arg_scope", "has_arg_scope"]


class _ArgStack(threading.local):
    def __init__(self):
        self.stack = [{}]


_STACK = _ArgStack()
# Key -> the decorated functions holding it (more than one when a function is
# decorated twice). Weak, so that a key dies with its functions: a later
# function allocated at the same address (the same ``str()``) is not taken for
# a decorated one.
_DECORATED = {}
_KWARG_NAMES = {}  # key -> arg_scoped_arguments


def arg_scope_func_key(op):
    """The key under which ``op``'s scoped arguments are stored, a string as TF's.

    For a function decorated with :func:`add_arg_scope` (or a method bound
    from one) it is ``str()`` of the function it wraps, such as
    ``'<function scaled at 0x7f...>'``; for anything else, ``str(op)``.

    Args:
        op: a function, decorated or not.

    Returns:
        The key; functions that wrap different functions never share one.
    """
    return getattr(op, "_key_op", str(op))


def current_arg_scope():
    """The innermost arg scope of this thread: a dict from function key to kwargs."""
    return _STACK.stack[-1]


def has_arg_scope(func):
    """Whether ``func`` was decorated with :func:`add_arg_scope`."""
    return bool(_DECORATED.get(arg_scope_func_key(func)))


def arg_scoped_arguments(func):
    """The argument names of ``func`` that an arg scope may set, as TF lists them.

    TF's list: the positional parameters from the first one with a default
    (all of them when none has a default), recorded when ``func`` was decorated.

    Raises:
        ValueError: if ``func`` is not decorated with :func:`add_arg_scope`.
    """
    if not has_arg_scope(func):
        raise ValueError(f"{getattr(func, '__name__', func)!r} is not decorated with @add_arg_scope")
    return _KWARG_NAMES[arg_scope_func_key(func)]


def _kwarg_names(func):
    code = func.__code__
    defaults = len(func.__defaults__ or ())
    return code.co_varnames[-defaults:code.co_argcount]  # (TF's slice, [0:n] with no defaults)


def add_arg_scope(func):
    """Decorates ``func`` so that :func:`arg_scope` can supply its keyword arguments."""
    # As TF: the address makes each function its own key, and decorating a decorated
    # function again keeps its key.
    key = arg_scope_func_key(func)

    @functools.wraps(func)
    def func_with_args(*args, **kwargs):
        scoped = current_arg_scope().get(key)
        if scoped:
            kwargs = {**scoped, **kwargs}
        return func(*args, **kwargs)

    func_with_args._key_op = key
    _DECORATED.setdefault(key, weakref.WeakSet()).add(func_with_args)
    _KWARG_NAMES[key] = _kwarg_names(inspect.unwrap(func))
    return func_with_args


@contextlib.contextmanager
def arg_scope(list_ops_or_scope, **kwargs):
    """Sets default keyword arguments for the listed functions inside the block.

    Args:
        list_ops_or_scope: a list or tuple of functions decorated with
            :func:`add_arg_scope`, or a scope dict yielded by an earlier
            ``arg_scope`` to re-enter (then no kwargs may be given).
        **kwargs: the defaults; they merge with those of enclosing scopes.

    Yields:
        The scope dict, which can be re-entered later.

    Raises:
        TypeError: if ``list_ops_or_scope`` is neither a list/tuple nor a dict.
        ValueError: if a function is not decorated, or kwargs come with a dict.

    Example:
        >>> import sepconv as sc
        >>> @sc.add_arg_scope
        ... def f(x, scale=1):
        ...     return x * scale
        >>> with sc.arg_scope([f], scale=10):
        ...     f(2), f(2, scale=3)
        (20, 6)
    """
    if isinstance(list_ops_or_scope, dict):
        if kwargs:
            raise ValueError("When attempting to re-use a scope by suppling a dictionary, "
                             f"kwargs must be empty, got {sorted(kwargs)}.")
        scope = dict(list_ops_or_scope)
    else:
        if not isinstance(list_ops_or_scope, (list, tuple)):
            raise TypeError("list_ops_or_scope must either be a list/tuple or reused scope "
                            f"(i.e. dict), got {list_ops_or_scope!r}")
        scope = dict(current_arg_scope())
        for op in list_ops_or_scope:
            if not has_arg_scope(op):
                raise ValueError(f"{getattr(op, '__name__', op)!r} is not decorated with @add_arg_scope")
            key = arg_scope_func_key(op)
            scope[key] = {**scope.get(key, {}), **kwargs}
    _STACK.stack.append(scope)
    try:
        yield scope
    finally:
        _STACK.stack.pop()
