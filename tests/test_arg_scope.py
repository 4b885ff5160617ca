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
    assert sc.arg_scoped_arguments(scaled) == ["x", "scale", "shift"]
    assert sc.arg_scope_func_key(scaled) == (__name__, "scaled")


def test_undecorated_function_raises():
    with pytest.raises(ValueError, match="'plain' is not decorated with @add_arg_scope"):
        with sc.arg_scope([plain], x=1):
            pass


def test_bad_list_raises():
    with pytest.raises(TypeError, match="list_ops_or_scope must either be a list/tuple"):
        with sc.arg_scope(scaled, scale=2):
            pass


def test_reused_scope_with_kwargs_raises():
    with pytest.raises(ValueError, match="kwargs must be empty"):
        with sc.arg_scope({}, scale=2):
            pass


def test_arg_scope_is_per_thread():
    seen = []
    with sc.arg_scope([scaled], scale=10):
        thread = threading.Thread(target=lambda: seen.append(scaled(1)))
        thread.start()
        thread.join()
    assert seen == [1]
