"""Optimizer-state bytes per parameter and the memory of one training step.

    .venv/bin/python benchmarks/memory.py [--widths 1024,12800] [--markdown out.md]

Model: an MLP 784-W-W/4-10 (W = 1024: 1,068,810 parameters; W = 12800: 51,043,210),
batch 128. For each contender, one jitted step (value_and_grad + update +
apply_updates) is compiled, not run, and XLA's own accounting of the compiled program
is read (`compiled.memory_analysis()`): arguments (params, state, batch), outputs and
the temporary buffers the step needs at its peak. The state is measured by summing
the bytes of `tx.init(params)`'s arrays. HUB's state should be its members' states plus
O(number of tensors) (its diagnostics: four floats per tensor).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

import hubopt
from hubopt.baselines import lgl2o
from hubopt.learned import small
from hubopt.learned.velo_lopt.transform import init_velo_theta, velo


def contenders():
    def velo_tx():
        return velo(1000, theta=init_velo_theta(jax.random.PRNGKey(2), 512, 256))

    return {
        "adam": lambda: optax.adam(1e-3),
        "velo": velo_tx,
        "small": lambda: small(num_steps=1000),
        "hub_velo": lambda: hubopt.hub(optax.adam(1e-3), velo_tx()),
        "hub_small": lambda: hubopt.hub(optax.adam(1e-3), small(num_steps=1000)),
        "lgl2o_small": lambda: lgl2o(optax.adam(1e-3), small(num_steps=1000)),
    }


def mlp(width: int):
    sizes = (784, width, width // 4, 10)
    params = {}
    key = jax.random.key(0)
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        key, k = jax.random.split(key)
        params[f"layer{i}"] = {
            "w": jax.random.normal(k, (n_in, n_out)) / np.sqrt(n_in),
            "b": jnp.zeros((n_out,)),
        }
    x = jax.random.normal(jax.random.key(1), (128, 784))
    y = jax.random.randint(jax.random.key(2), (128,), 0, 10)

    def loss_fn(p):
        h = x
        for i in range(3):
            h = h @ p[f"layer{i}"]["w"] + p[f"layer{i}"]["b"][None, :]
            h = jax.nn.relu(h) if i < 2 else h
        return optax.softmax_cross_entropy_with_integer_labels(h, y).mean()

    return params, loss_fn


def tree_bytes(tree) -> int:
    return sum(
        int(np.prod(np.shape(x))) * np.dtype(x.dtype).itemsize
        for x in jax.tree_util.tree_leaves(tree)
    )


def measure(width: int, name: str, make) -> dict:
    params, loss_fn = mlp(width)
    n = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
    tx = make()
    state = jax.eval_shape(tx.init, params)  # shapes only: nothing allocated

    def step(p, s):
        value, grads = jax.value_and_grad(loss_fn)(p)
        updates, s = tx.update(grads, s, p, value=value, value_fn=loss_fn)
        return optax.apply_updates(p, updates), s

    mem = jax.jit(step).lower(params, state).compile().memory_analysis()
    return {
        "width": width,
        "params": n,
        "contender": name,
        "state_bytes_per_param": tree_bytes(state) / n,
        "argument_mb": mem.argument_size_in_bytes / 2**20,
        "temp_mb": mem.temp_size_in_bytes / 2**20,
        "output_mb": mem.output_size_in_bytes / 2**20,
    }


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="1024,12800")
    ap.add_argument("--contenders", default=",".join(contenders()))
    ap.add_argument("--markdown")
    args = ap.parse_args(argv)
    table = contenders()
    rows = []
    lines = [
        "| params | contender | state B/param | step temporaries MB | arguments MB | outputs MB |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for width in (int(w) for w in args.widths.split(",")):
        for name in args.contenders.split(","):
            r = measure(width, name, table[name])
            rows.append(r)
            lines.append(
                f"| {r['params']:,} | {name} | {r['state_bytes_per_param']:.2f} | "
                f"{r['temp_mb']:.1f} | {r['argument_mb']:.1f} | {r['output_mb']:.1f} |"
            )
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    return rows


if __name__ == "__main__":
    main()
