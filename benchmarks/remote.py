"""Engines that live in the peer worker process (TensorFlow, JAX)."""
import json
import os
import subprocess

import numpy as np

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer_worker.py")
DEFAULT_TF_PYTHON = "/work/venvs/tf/bin/python"


def find_tf_python(explicit=None):
    """The Python of the TensorFlow environment: flag, ``SEPCONV_TF_PYTHON``, default path."""
    for candidate in (explicit, os.environ.get("SEPCONV_TF_PYTHON"), DEFAULT_TF_PYTHON):
        if candidate:
            return candidate if os.access(candidate, os.X_OK) else None
    return None


class PeerProcess:
    """One worker process; requests are answered in order."""

    def __init__(self, python, threads, engines):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", OMP_NUM_THREADS=str(threads))
        self._process = subprocess.Popen([python, WORKER], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                         text=True, env=env)
        answer = self.request(cmd="init", threads=threads, engines=list(engines))
        self.versions, self.skipped = answer["versions"], answer["skipped"]

    def request(self, **request):
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"peer worker exited (code {self._process.poll()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"peer worker: {answer['error']}")
        return answer

    def close(self):
        if self._process.poll() is None:
            try:
                self._process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self._process.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            self._process.wait(timeout=30)


class RemoteEngine:
    """An engine proxied to a :class:`PeerProcess`; arrays travel through an ``.npz``."""

    def __init__(self, name, process, scratch):
        self.name, self._process, self._scratch = name, process, scratch

    def supports(self, mode):
        return True

    def setup(self, layer, mode, arrays):
        path = os.path.join(self._scratch, f"{layer.name}-{mode.name}.npz")
        if not os.path.exists(path):
            np.savez(path, **arrays)
        answer = self._process.request(cmd="setup", engine=self.name, layer=layer.as_dict(),
                                       mode={"batch": mode.batch, "training": mode.training},
                                       data=path)
        return None if answer["output"] is None else np.load(answer["output"])

    def time(self, count):
        return self._process.request(cmd="time", engine=self.name, count=count)["times"]

    def close(self):
        pass


def peak_memory(python, threads, engine, layer, mode, data_path):
    """Peak RSS of ``engine``'s training step, in a fresh worker process."""
    process = PeerProcess(python, threads, [engine])
    try:
        if engine in process.skipped:
            return None
        return process.request(cmd="memory", engine=engine, layer=layer.as_dict(),
                               mode={"batch": mode.batch, "training": mode.training},
                               data=data_path)["peak_bytes"]
    finally:
        process.close()
