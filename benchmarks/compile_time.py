"""First-step compile time of HUB and the learned optimizers against optax.adam.

    .venv/bin/python benchmarks/compile_time.py [--repeats 3] [--models mlp,mobilenet]
        [--contenders adam,small,velo,hub_small,hub_velo,hub_adamax] [--markdown out.md]

One jitted training step per contender (value_and_grad + update + apply_updates), lowered
and compiled from a fresh process each time (`--one`), so nothing is cached between
contenders; reported: the median seconds of lower + compile over the repeats, its ratio
to Adam's on the same model, and the number of fused kernels XLA emitted (on CPU every
kernel is compiled on its own, and compile time follows their count). Besides those six,
`hub_small_nostats` (HUB without its diagnostics) and VeLO's other layouts, `velo_flat`
and `velo_per_tensor` (`velo` is its default, "auto").

Models: `mlp`, the 784-1024-256-10 MLP of VELO_SPEC §10 (1,068,810 parameters, 6
tensors); `cnn`, the setting of issue 15's report (a Flax Linen CNN on Fashion-MNIST-shaped
batches: two 3×3 convolutions of 32 and 64 channels with 2×2 max-pooling, a dense layer of
320 and the 10-way head; 1,025,866 parameters in 8 tensors, batch 128), where the model's
own forward and backward pass is part of the program as in a user's training step;
`mobilenet`, the parameters of the fine-tuning task's MobileNetV2 (158
tensors, 2.2M entries) with a stand-in quadratic loss, so that the optimizers' share of
the program is measured, not the network's. VeLO runs with a random θ in the official
shapes (`init_velo_theta`: compile time depends on the shapes, not the values).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

CONTENDERS = ("adam", "small", "velo", "hub_small", "hub_velo", "hub_adamax")
MODELS = ("mlp", "cnn", "mobilenet")


def _contender(name: str):
    import jax
    import optax

    import hubopt
    from hubopt.learned import small
    from hubopt.learned.velo_lopt.transform import init_velo_theta, velo

    def velo_tx(layout="auto"):
        return velo(1000, theta=init_velo_theta(jax.random.PRNGKey(2), 512, 256), layout=layout)

    return {
        "adam": lambda: optax.adam(1e-3),
        "small": lambda: small(num_steps=1000),
        "velo": velo_tx,
        # VeLO's other layouts (`velo`: the default, "auto")
        "velo_flat": lambda: velo_tx("flat"),
        "velo_per_tensor": lambda: velo_tx("per_tensor"),
        "hub_small": lambda: hubopt.hub(optax.adam(1e-3), small(num_steps=1000)),
        # the same without its per-tensor diagnostics (`hub_stats`)
        "hub_small_nostats": lambda: hubopt.hub(
            optax.adam(1e-3), small(num_steps=1000), stats=False
        ),
        "hub_velo": lambda: hubopt.hub(optax.adam(1e-3), velo_tx()),
        "hub_adamax": lambda: hubopt.hub(optax.adam(1e-3), optax.adamax(1e-3)),
    }[name]()


def _model(name: str):
    """(params, loss_fn) of a model."""
    import jax
    import jax.numpy as jnp

    if name == "mlp":  # the 784-1024-256-10 MLP of benchmarks/memory.py
        sys.path.insert(0, os.path.dirname(__file__))
        from memory import mlp

        return mlp(1024)
    if name == "cnn":
        return _cnn()
    from hubopt.tasks import get_task

    # the whole network (158 tensors): the "cpu" size ("tiny" cuts it after block 4)
    params = get_task("fmnist_mobilenet_finetune", "cpu").init(jax.random.key(0))

    def quadratic(p):
        return sum(jnp.sum(jnp.square(leaf - 0.1)) for leaf in jax.tree_util.tree_leaves(p))

    return params, quadratic


def _cnn():
    """(params, loss_fn) of the Linen CNN of the module docstring, on a fixed random batch
    (compile time depends on shapes, not values)."""
    import flax.linen as nn
    import jax
    import optax

    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            for features in (32, 64):
                x = nn.relu(nn.Conv(features, (3, 3))(x))
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            x = nn.relu(nn.Dense(320)(x.reshape(x.shape[0], -1)))
            return nn.Dense(10)(x)

    model = CNN()
    x = jax.random.normal(jax.random.key(1), (128, 28, 28, 1))
    y = jax.random.randint(jax.random.key(2), (128,), 0, 10)
    params = model.init(jax.random.key(0), x)["params"]

    def loss_fn(p):
        logits = model.apply({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    return params, loss_fn


def measure_one(model: str, contender: str) -> dict:
    """Lower + compile one training step in this process."""
    import jax
    import optax

    params, loss_fn = _model(model)
    tx = _contender(contender)
    state = tx.init(params)

    def step(p, s):
        value, grads = jax.value_and_grad(loss_fn)(p)
        updates, s = tx.update(grads, s, p, value=value)
        return optax.apply_updates(p, updates), s

    start = time.perf_counter()
    compiled = jax.jit(step).lower(params, state).compile()
    seconds = time.perf_counter() - start
    kernels = len(re.findall(r"= \S+ fusion\(", compiled.as_text()))
    return {"model": model, "contender": contender, "seconds": seconds, "kernels": kernels}


def _in_subprocess(model: str, contender: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--one", model, contender],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    ap.add_argument("--markdown", help="also write the table to this file")
    ap.add_argument("--one", nargs=2, metavar=("MODEL", "CONTENDER"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(*args.one)))
        return 0
    contenders = [c for c in args.contenders.split(",") if c]
    if "adam" not in contenders:
        contenders.insert(0, "adam")  # the reference of every ratio
    lines = [
        f"First-step compile (lower + compile, fresh process each), median of {args.repeats}.",
        "",
        "| model | contender | compile s | × Adam | fused kernels |",
        "|---|---|---:|---:|---:|",
    ]
    for model in [m for m in args.models.split(",") if m]:
        runs = {c: [] for c in contenders}
        for _ in range(args.repeats):  # interleaved: a load change hits every contender
            for c in contenders:
                runs[c].append(_in_subprocess(model, c))
        adam = statistics.median(r["seconds"] for r in runs["adam"])
        for c in contenders:
            sec = statistics.median(r["seconds"] for r in runs[c])
            kernels = runs[c][0]["kernels"]
            lines.append(f"| {model} | {c} | {sec:.2f} | {sec / adam:.1f}× | {kernels} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
