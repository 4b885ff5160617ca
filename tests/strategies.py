"""Hypothesis strategies shared by the tests."""
from hypothesis import strategies as st


@st.composite
def geometries(draw, max_kernel, max_extra):
    """``(kernel, stride, rate, padding, (height, width))`` that TF 1.4 accepts.

    Rate and stride are never both above 1 (TF's rule), and a VALID input is
    at least the dilated kernel; sizes reach ``max_extra`` beyond the minimum.
    """
    kernel = (draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel)))
    if draw(st.booleans()):
        stride, rate = (draw(st.integers(1, 3)), draw(st.integers(1, 3))), (1, 1)
    else:
        stride, rate = (1, 1), (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(st.sampled_from(["SAME", "VALID"]))
    low = [(k - 1) * r + 1 for k, r in zip(kernel, rate)] if padding == "VALID" else (1, 1)
    size = tuple(draw(st.integers(least, least + max_extra)) for least in low)
    return kernel, stride, rate, padding, size
