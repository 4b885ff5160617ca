"""Determinism: the same seeds give bit-identical initial variables and CPU training runs.

Bit-identical means equal SHA-256 digests of every variable's bytes (and of
every loss), compared between two runs in this process and against a fresh
subprocess, so no state left over in the process can make runs agree. Each
test also checks that another seed gives other bits, so the comparison can
fail.
"""
import hashlib
import json
import subprocess
import sys

import torch

import sepconv as sc

TRAINING_STEPS = 30


def digest(tensors):
    """SHA-256 of the tensors' names and raw bytes."""
    sha = hashlib.sha256()
    for name, tensor in tensors:
        sha.update(name.encode())
        sha.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()


def model(x):
    net = sc.separable_conv2d(x, 8, 3, 2, weights_regularizer=sc.l2_regularizer(1e-3),
                              normalizer_fn=sc.batch_norm,
                              normalizer_params={"is_training": True, "scale": True, "decay": 0.9})
    net = sc.separable_conv2d(net, 8, [3, 3], 1, stride=2, rate=1)
    return sc.separable_conv2d(net, 3, 1, 1, activation_fn=None,
                               weights_initializer=sc.truncated_normal_initializer(stddev=0.1, seed=11))


def initial_variables_digest(seed):
    """Builds the model under ``torch.manual_seed(seed)``; the digest of its fresh variables."""
    with torch.random.fork_rng(), sc.Graph().as_default():
        torch.manual_seed(seed)
        sc.make_template("net", model)(torch.zeros(1, 8, 8, 3))
        return digest((v.name, v) for v in sc.global_variables())


def training_digest(seed):
    """Initial variables from ``seed``, then SGD with momentum; digest of the losses and final variables."""
    gen = torch.Generator().manual_seed(1234)
    batches = [(torch.randn(4, 8, 8, 3, generator=gen), torch.randn(4, 4, 4, 3, generator=gen))
               for _ in range(5)]
    with torch.random.fork_rng(), sc.Graph().as_default():
        torch.manual_seed(seed)
        net = sc.make_template("net", model)
        net(batches[0][0])
        optimizer = torch.optim.SGD(sc.trainable_variables(), lr=0.05, momentum=0.9)
        losses = []
        for step in range(TRAINING_STEPS):
            x, y = batches[step % len(batches)]
            optimizer.zero_grad()
            loss = torch.mean((net(x) - y) ** 2) + sc.get_regularization_loss()
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        return digest([(f"loss{i}", loss) for i, loss in enumerate(losses)]
                      + [(v.name, v) for v in sc.global_variables()])


def in_subprocess(function, seed):
    """The same function's digest, computed by a fresh interpreter."""
    code = (f"import sys; sys.path.insert(0, {str(__file__.rsplit('/', 1)[0])!r})\n"
            "import test_determinism as t, json\n"
            f"print(json.dumps(t.{function}({seed})))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_same_seed_gives_bit_identical_initial_variables():
    first = initial_variables_digest(0)
    torch.rand(100)  # disturbing the global generator in between changes nothing
    assert initial_variables_digest(0) == first
    assert in_subprocess("initial_variables_digest", 0) == first
    assert initial_variables_digest(1) != first


def test_seeded_initializers_ignore_the_global_generator():
    shape = [3, 3, 8, 2]
    for make in (lambda seed: sc.truncated_normal_initializer(stddev=0.3, seed=seed),
                 lambda seed: sc.random_uniform_initializer(-1.0, 1.0, seed=seed),
                 lambda seed: sc.random_normal_initializer(seed=seed),
                 lambda seed: sc.xavier_initializer(seed=seed),
                 lambda seed: sc.variance_scaling_initializer(seed=seed)):
        with torch.random.fork_rng():
            torch.manual_seed(1)
            first = make(5)(shape)
            torch.manual_seed(2)
            again = make(5)(shape)
            other = make(6)(shape)
        assert digest([("w", first)]) == digest([("w", again)])
        assert digest([("w", first)]) != digest([("w", other)])


def test_the_same_seed_gives_a_bit_identical_training_run():
    first = training_digest(0)
    assert training_digest(0) == first
    assert in_subprocess("training_digest", 0) == first
    assert training_digest(3) != first
