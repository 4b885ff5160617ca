"""ONNX Runtime on an ONNX graph of the same layer (inference only).

The graph is written with ``onnx.helper`` rather than exported from a torch
module, so it is exactly Conv(group=C, TF's asymmetric pads) -> Conv 1x1 with
bias -> Relu, in ONNX's NCHW, and every ORT graph optimisation is enabled.
"""
import numpy as np

from .data import tf_same_pads
from .timing import time_calls


def _model(layer, arrays):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    before, after = tf_same_pads(layer.size, layer.kernel, layer.stride)
    dw = numpy_helper.from_array(np.ascontiguousarray(arrays["dw"].transpose(2, 3, 0, 1)), "dw")
    pw = numpy_helper.from_array(np.ascontiguousarray(arrays["pw"].transpose(3, 2, 0, 1)), "pw")
    bias = numpy_helper.from_array(arrays["b"], "b")
    nodes = [
        helper.make_node("Conv", ["x", "dw"], ["d"], group=layer.channels,
                         kernel_shape=[layer.kernel] * 2, strides=[layer.stride] * 2,
                         pads=[before, before, after, after]),
        helper.make_node("Conv", ["d", "pw", "b"], ["p"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["p"], ["y"]),
    ]
    n, out = arrays["x"].shape[0], layer.out_size()
    graph = helper.make_graph(
        nodes, "separable",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, layer.channels, layer.size, layer.size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, layer.outputs, out, out])],
        initializer=[dw, pw, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


class OnnxRuntimeEngine:
    name = "onnxruntime"

    def __init__(self, threads):
        import onnxruntime as ort

        self._ort = ort
        self._threads = threads

    @staticmethod
    def available():
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as error:
            return f"not installed ({error})"
        return None

    @staticmethod
    def version():
        import onnxruntime
        return onnxruntime.__version__

    def supports(self, mode):
        return not mode.training

    def setup(self, layer, mode, arrays):
        options = self._ort.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        options.execution_mode = self._ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = self._ort.InferenceSession(_model(layer, arrays), options,
                                             providers=["CPUExecutionProvider"])
        feed = {"x": np.ascontiguousarray(arrays["x"].transpose(0, 3, 1, 2))}
        self._step = lambda: session.run(None, feed)
        return self._step()[0].transpose(0, 2, 3, 1)

    def time(self, count):
        return time_calls(self._step, count)

    def close(self):
        self._step = None
