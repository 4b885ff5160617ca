"""buffers: large outputs come from recycled buffers, never while anything still uses them."""
import threading

import pytest
import torch

from sepconv._src import buffers, ops

import reference


@pytest.fixture(autouse=True)
def small_pool(monkeypatch):
    """Thresholds scaled down so that small tensors exercise the pool; an empty pool each test."""
    monkeypatch.setattr(buffers, "LARGE_BYTES", 1024)
    monkeypatch.setattr(ops, "KERNEL_POOL_BYTES", 1024)
    monkeypatch.setattr(buffers, "POOL_MAX_BYTES", 16 * 1024)
    buffers.release()
    yield
    buffers.release()


LIKE = torch.empty(0)


def test_small_tensors_are_not_pooled():
    out = buffers.large_empty((4, 8), LIKE)  # 128 bytes
    assert out.shape == (4, 8) and buffers.pooled_bytes() == 0


def test_a_buffer_is_reused_only_once_nothing_holds_it():
    first = buffers.large_empty((16, 32), LIKE)
    pointer = first.data_ptr()
    assert not first._is_view() and first.is_contiguous()
    holders = [first[3:], first.numpy(), first.view(-1)]
    del first
    for holder in holders:  # a view, a numpy array, a reshaped view: each keeps it busy
        assert buffers.large_empty((16, 32), LIKE).data_ptr() != pointer
    del holder, holders
    assert buffers.large_empty((16, 32), LIKE).data_ptr() == pointer


def test_a_held_storage_keeps_its_buffer_busy():
    first = buffers.large_empty((16, 32), LIKE).fill_(7.0)
    pointer, storage = first.data_ptr(), first.untyped_storage()
    del first
    buffers.large_empty((16, 32), LIKE).fill_(0.0)
    assert torch.tensor([], dtype=torch.float32).set_(storage).eq(7.0).all()
    del storage
    assert buffers.large_empty((16, 32), LIKE).data_ptr() == pointer


def test_reuse_needs_the_same_dtype_and_size():
    pointer = buffers.large_empty((16, 32), LIKE).data_ptr()
    assert buffers.large_empty((16, 33), LIKE).data_ptr() != pointer
    assert buffers.large_empty((16, 32), torch.empty(0, dtype=torch.int32)).data_ptr() != pointer
    assert buffers.large_empty((32, 16), LIKE).data_ptr() == pointer  # same bytes, new shape


def test_a_storage_resized_by_its_user_is_not_reused():
    out = buffers.large_empty((16, 32), LIKE)
    out.resize_(64, 64)  # reallocates the storage the pool shares
    del out
    # Handed out again, the tensor would sit on the 16 KiB storage.
    assert buffers.large_empty((16, 32), LIKE).untyped_storage().nbytes() == 16 * 32 * 4


def test_the_pool_keeps_at_most_pool_max_bytes():
    kept = [buffers.large_empty((16, 32), LIKE) for _ in range(10)]  # 2 KiB each, all in use
    assert buffers.pooled_bytes() <= buffers.POOL_MAX_BYTES
    assert len({t.data_ptr() for t in kept}) == 10
    buffers.release()
    assert buffers.pooled_bytes() == 0
    kept[0].fill_(1.0)  # released buffers still belong to their users
    assert float(kept[0].sum()) == 512.0


def _layer(x, dw, pw, b):
    return ops.separable_conv2d(x, dw, pw, b, stride=(1, 1), padding="SAME", activation="relu")


def _layer_reference(x, dw, pw, b):
    return torch.relu(reference.separable_conv2d(x, dw, pw, b, stride=(1, 1), rate=(1, 1),
                                                 padding="SAME", data_format="NHWC"))


def _tensors(seed, batch=3):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 6, 5, 4, generator=gen, dtype=torch.float64),
            torch.randn(3, 3, 4, 2, generator=gen, dtype=torch.float64),
            torch.randn(1, 1, 8, 6, generator=gen, dtype=torch.float64),
            torch.randn(6, generator=gen, dtype=torch.float64))


def test_a_recycled_output_holds_the_new_call_s_numbers():
    first = _tensors(0)
    with torch.no_grad():
        pointer = _layer(*first).data_ptr()  # dropped at once: its buffer goes back
        second = _tensors(1)
        out = _layer(*second)
    assert out.data_ptr() == pointer
    torch.testing.assert_close(out, _layer_reference(*second))


def test_training_through_a_recycled_output_gives_the_reference_gradients():
    x, dw, pw, b = (t.requires_grad_(True) for t in _tensors(2))
    pointer = _layer(x, dw, pw, b).data_ptr()  # graph and output dropped: the buffer goes back
    y = _layer(x, dw, pw, b)
    assert y.data_ptr() == pointer and not y._base._is_view()
    grads = torch.autograd.grad(y.square().sum(), (x, dw, pw, b))
    expected = torch.autograd.grad(_layer_reference(x, dw, pw, b).square().sum(), (x, dw, pw, b))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)


def test_threads_never_share_a_live_buffer():
    inputs = [_tensors(seed) for seed in range(8)]
    expected = [_layer_reference(*t) for t in inputs]
    failures = []

    def work(index):
        with torch.no_grad():
            for _ in range(25):
                out = _layer(*inputs[index])
                if not torch.allclose(out, expected[index]):
                    failures.append(index)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


@pytest.mark.parametrize("dtype, pooled_from", [(torch.float32, "KERNEL_POOL_BYTES"),
                                                 (torch.float64, "LARGE_BYTES")])
def test_each_path_pools_its_outputs_from_its_own_size(dtype, pooled_from, monkeypatch):
    """The compiled kernel (float32) pools from KERNEL_POOL_BYTES, the PyTorch path from LARGE_BYTES."""
    gen = torch.Generator().manual_seed(3)
    x, dw, pw, b = (torch.randn(shape, generator=gen, dtype=dtype)
                    for shape in ((3, 6, 5, 4), (3, 3, 4, 1), (1, 1, 4, 6), (6,)))
    nbytes = _layer(x, dw, pw, b).numel() * x.element_size()
    for name in ("LARGE_BYTES", "KERNEL_POOL_BYTES"):
        module = ops if name == "KERNEL_POOL_BYTES" else buffers
        monkeypatch.setattr(module, name, nbytes if name == pooled_from else nbytes + 1)
    buffers.release()
    with torch.no_grad():
        _layer(x, dw, pw, b)
    assert buffers.pooled_bytes() == nbytes
