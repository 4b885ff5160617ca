import gc
import threading

import pytest
import torch

import sepconv as sc


@sc.add_arg_scope
def scaled(x, scale=1, shift=0):
    return x * scale + shift


def plain(x):
    return x


def test_scoped_kwargs_apply_and_explicit_kwargs_win():
    with sc.arg_scope([scaled], scale=10, shift=1):
        assert scaled(2) == 21
        assert scaled(2, shift=0) == 20


def test_nested_scopes_merge_and_reentered_scope_restores():
    with sc.arg_scope([scaled], scale=10):
        with sc.arg_scope([scaled], shift=5) as inner:
            assert scaled(1) == 15
        assert scaled(1) == 10
    assert scaled(1) == 1
    with sc.arg_scope(inner):
        assert scaled(1) == 15


def test_alias_shares_the_arg_scope_key():
    assert sc.separable_convolution2d is sc.separable_conv2d
    with sc.Graph().as_default():
        with sc.arg_scope([sc.separable_convolution2d], padding="VALID"):
            out = sc.separable_conv2d(torch.ones(1, 5, 5, 1), 1, 3, 1)
    assert tuple(out.shape) == (1, 3, 3, 1)


def test_has_arg_scope_and_arguments():
    assert sc.has_arg_scope(scaled) and not sc.has_arg_scope(plain)
    # TF's list: positional parameters from the first with a default (all if none has one).
    assert sc.arg_scoped_arguments(scaled) == ("scale", "shift")
    assert sc.arg_scoped_arguments(sc.add_arg_scope(lambda x, y: x)) == ("x", "y")
    assert sc.arg_scoped_arguments(sc.add_arg_scope(lambda x, *args, w=2, **kw: x)) == ("x",)
    with pytest.raises(ValueError, match="'plain' is not decorated with @add_arg_scope"):
        sc.arg_scoped_arguments(plain)
    # TF's key: str() of the decorated function, which names it and gives its address.
    key = sc.arg_scope_func_key(scaled)
    assert isinstance(key, str) and key.startswith("<function scaled at 0x")
    assert sc.arg_scope_func_key(plain) == str(plain)


def _closure(factor):
    @sc.add_arg_scope
    def layer(x, shift=0):
        return x * factor + shift
    return layer


def test_functions_with_one_name_have_their_own_scoped_arguments():
    first, second = _closure(1), _closure(2)
    assert sc.arg_scope_func_key(first) != sc.arg_scope_func_key(second)
    with sc.arg_scope([first], shift=10):
        assert (first(1), second(1)) == (11, 2)


def test_undecorated_function_named_like_a_decorated_one_raises():
    @sc.add_arg_scope
    def twin(x, scale=1):
        return x * scale

    decorated = twin

    def twin(x, scale=1):  # noqa: F811 - redefined under the same name, undecorated
        return x * scale

    assert sc.has_arg_scope(decorated) and not sc.has_arg_scope(twin)
    with pytest.raises(ValueError, match="'twin' is not decorated with @add_arg_scope"):
        with sc.arg_scope([twin], scale=3):
            pass


def test_sepconv_layers_have_distinct_keys_and_aliases_share_theirs():
    layers = [sc.separable_conv2d, sc.batch_norm, sc.conv2d, sc.avg_pool2d, sc.max_pool2d,
              sc.dropout, sc.softmax, sc.flatten]
    keys = [sc.arg_scope_func_key(layer) for layer in layers]
    assert len(set(keys)) == len(keys) and all(sc.has_arg_scope(layer) for layer in layers)
    assert sc.arg_scope_func_key(sc.convolution2d) == sc.arg_scope_func_key(sc.conv2d)
    with sc.arg_scope([sc.conv2d], padding="VALID") as scope:
        pass
    assert list(scope) == [sc.arg_scope_func_key(sc.conv2d)]


def test_decorated_methods_take_scoped_arguments_bound_or_not():
    class Layer:
        @sc.add_arg_scope
        def apply(self, x, scale=1):
            return x * scale

    layer = Layer()
    with sc.arg_scope([Layer.apply], scale=3):
        assert layer.apply(2) == 6
    with sc.arg_scope([layer.apply], scale=4):
        assert layer.apply(2) == 8 and sc.has_arg_scope(layer.apply)


def test_a_dead_decorated_functions_key_is_forgotten():
    # Its key names an address that a later object may reuse; such an object
    # must not pass for decorated.
    dead_key = sc.arg_scope_func_key(_closure(1))
    gc.collect()

    class LooksLikeTheDeadFunction:
        def __str__(self):
            return dead_key

    assert not sc.has_arg_scope(LooksLikeTheDeadFunction())


def test_a_function_decorated_twice_stays_decorated_when_one_wrapper_dies():
    def base(x, scale=1):
        return x * scale

    kept, dropped = sc.add_arg_scope(base), sc.add_arg_scope(base)
    del dropped
    gc.collect()
    with sc.arg_scope([kept], scale=5):
        assert kept(1) == 5


def test_decorating_a_decorated_function_keeps_its_key():
    again = sc.add_arg_scope(scaled)
    assert sc.arg_scope_func_key(again) == sc.arg_scope_func_key(scaled)
    with sc.arg_scope([again], scale=4):
        assert again(1) == scaled(1) == 4


def test_undecorated_function_raises():
    with pytest.raises(ValueError, match="'plain' is not decorated with @add_arg_scope"):
        with sc.arg_scope([plain], x=1):
            pass


def test_bad_list_raises():
    with pytest.raises(TypeError, match="list_ops_or_scope must either be a list/tuple"):
        with sc.arg_scope(scaled, scale=2):
            pass


def test_reused_scope_with_kwargs_raises():
    with pytest.raises(ValueError, match=r"kwargs must be empty, got \['scale'\]"):
        with sc.arg_scope({}, scale=2):
            pass


def test_arg_scope_is_per_thread():
    seen = []
    with sc.arg_scope([scaled], scale=10):
        thread = threading.Thread(target=lambda: seen.append(scaled(1)))
        thread.start()
        thread.join()
    assert seen == [1]
