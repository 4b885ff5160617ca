"""TensorFlow and JAX peers, run in their own virtual environment.

Started by ``benchmarks/remote.py`` as ``python peer_worker.py``; it speaks
JSON lines: a request on stdin, one answer on stdout. It imports nothing from
sepconv, so it runs wherever TensorFlow (and optionally JAX) is installed.

Requests: ``init`` (threads, engines), ``setup`` (engine, layer, mode, data
path: returns the forward output path for inference), ``time`` (engine,
count), ``memory`` (engine, layer, mode, data: peak RSS of a training step),
``quit``.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rss import step_peak_bytes  # noqa: E402
from timing import time_calls  # noqa: E402


class TensorFlowPeer:
    """``tf.nn.separable_conv2d`` + bias + ReLU in a ``tf.function``, NHWC."""

    def __init__(self, threads):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        self.tf = tf
        self.version = tf.__version__

    def build(self, layer, mode, arrays):
        tf = self.tf
        x = tf.constant(arrays["x"])
        dw, pw, b = (tf.Variable(arrays[k]) for k in ("dw", "pw", "b"))
        cot = tf.constant(arrays["cot"])
        strides = [1, layer["stride"], layer["stride"], 1]

        def forward(inputs):
            y = tf.nn.separable_conv2d(inputs, dw, pw, strides=strides, padding="SAME")
            return tf.nn.relu(tf.nn.bias_add(y, b))

        if mode["training"]:
            @tf.function
            def step():
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = forward(x)
                return tape.gradient(y, [x, dw, pw, b], output_gradients=cot)
            return step, None
        infer = tf.function(lambda: forward(x))
        return infer, lambda: infer().numpy()


class JaxPeer:
    """``lax.conv_general_dilated(feature_group_count=C)`` + dot + bias + ReLU under ``jit``."""

    def __init__(self, threads):
        # One host device; its thread pool is sized to the cores _pin_to_cores leaves.
        os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
        import jax

        jax.config.update("jax_platforms", "cpu")
        self.jax = jax
        self.version = jax.__version__
        self.threads = threads

    def build(self, layer, mode, arrays):
        jax = self.jax
        jnp = jax.numpy
        channels, stride = layer["channels"], layer["stride"]
        x = jnp.asarray(arrays["x"])
        # TF's [kh, kw, C, 1] is HWIO [kh, kw, 1, C] for a grouped conv with multiplier 1.
        dw = jnp.asarray(arrays["dw"].reshape(layer["kernel"], layer["kernel"], 1, channels))
        pw = jnp.asarray(arrays["pw"].reshape(channels, layer["outputs"]))
        b, cot = jnp.asarray(arrays["b"]), jnp.asarray(arrays["cot"])

        def forward(x, dw, pw, b):
            y = jax.lax.conv_general_dilated(x, dw, (stride, stride), "SAME",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                             feature_group_count=channels)
            return jax.nn.relu(jnp.dot(y, pw) + b)

        if mode["training"]:
            def grads(x, dw, pw, b, cot):
                _, vjp = jax.vjp(forward, x, dw, pw, b)
                return vjp(cot)
            train = jax.jit(grads)
            return lambda: jax.block_until_ready(train(x, dw, pw, b, cot)), None
        infer = jax.jit(forward)
        step = lambda: infer(x, dw, pw, b).block_until_ready()  # noqa: E731
        return step, lambda: jax.device_get(infer(x, dw, pw, b))


PEERS = {"tensorflow": TensorFlowPeer, "jax": JaxPeer}


def _pin_to_cores(threads):
    """Runs this worker on ``threads`` cores, before any engine makes its thread pool.

    XLA's CPU client sizes its pool to the cores it may use, whatever
    ``OMP_NUM_THREADS`` says: without this, JAX ran on two cores at
    ``--threads 1``. TensorFlow keeps its own settings (intra-op ``threads``).
    """
    cores = sorted(os.sched_getaffinity(0))
    if threads < len(cores):
        os.sched_setaffinity(0, cores[:threads])


class Worker:
    def __init__(self):
        self.peers, self.steps = {}, {}

    def init(self, request):
        versions, skipped = {}, {}
        _pin_to_cores(request["threads"])
        for name in request["engines"]:
            try:
                self.peers[name] = PEERS[name](request["threads"])
                versions[name] = self.peers[name].version
            except Exception as error:  # noqa: BLE001 - any import failure means "skip"
                skipped[name] = f"{type(error).__name__}: {error}"
        return {"versions": versions, "skipped": skipped}

    def _load(self, request):
        import numpy as np
        with np.load(request["data"]) as data:
            arrays = {k: data[k] for k in data.files}
        return self.peers[request["engine"]].build(request["layer"], request["mode"], arrays)

    def setup(self, request):
        import numpy as np
        step, output = self._load(request)
        self.steps[request["engine"]] = step
        step()  # trace / compile outside the timings
        if output is None:
            return {"output": None}
        path = request["data"] + f".{request['engine']}.npy"
        np.save(path, output())
        return {"output": path}

    def time(self, request):
        return {"times": time_calls(self.steps[request["engine"]], request["count"])}

    def memory(self, request):
        step, _ = self._load(request)
        return {"peak_bytes": step_peak_bytes(step)}


def main():
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # library chatter goes to stderr, never into the protocol
    worker = Worker()
    for line in sys.stdin:
        request = json.loads(line)
        if request["cmd"] == "quit":
            break
        try:
            answer = getattr(worker, request["cmd"])(request)
        except Exception as error:  # noqa: BLE001 - reported to the parent
            answer = {"error": f"{type(error).__name__}: {error}"}
        protocol.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
