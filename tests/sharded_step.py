"""Run as a script with 8 host devices (`tests/test_sharding.py` starts it): HUB with
five members (Adamax, the bundled optimizer and VeLO in two layouts each), trained one step
on one device, data-parallel and parameter-sharded; prints one JSON line per member
with the largest difference to the one-device run and the all-gathers in the sharded
optimizer update's compiled HLO."""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import json  # noqa: E402
import re  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import hubopt  # noqa: E402
from hubopt.learned import small  # noqa: E402
from hubopt.learned.velo_lopt.transform import init_velo_theta, velo  # noqa: E402

MEMBERS = {
    "adamax": lambda: optax.adamax(1e-2),
    "small": lambda: small(num_steps=10),
    "small_per_tensor": lambda: small(num_steps=10, layout="per_tensor"),
    "velo": lambda: velo(10, theta=init_velo_theta(jax.random.key(5), 16, 8)),
    "velo_per_tensor": lambda: velo(
        10, theta=init_velo_theta(jax.random.key(5), 16, 8), layout="per_tensor"
    ),
}


def loss_fn(p, x, y):
    h = jnp.tanh(x @ p["l0"]["w"] + p["l0"]["b"])
    logits = h @ p["l1"]["w"] + p["l1"]["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def main():
    assert jax.device_count() == 8, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("x",))
    keys = jax.random.split(jax.random.key(0), 4)
    params = {
        "l0": {"w": jax.random.normal(keys[0], (64, 128)) * 0.1, "b": jnp.zeros(128)},
        "l1": {"w": jax.random.normal(keys[1], (128, 16)) * 0.1, "b": jnp.zeros(16)},
    }
    x = jax.random.normal(keys[2], (64, 64))
    y = jax.random.randint(keys[3], (64,), 0, 16)
    replicated = NamedSharding(mesh, P())

    def split_first_axis(a):  # tensors split over the mesh along their first axis
        divisible = getattr(a, "ndim", 0) >= 1 and a.shape[0] % 8 == 0
        return jax.device_put(a, NamedSharding(mesh, P("x") if divisible else P()))

    for name, member in MEMBERS.items():
        tx = hubopt.hub(optax.adam(1e-2), member())

        def steps(p, s, x, y, tx=tx):  # one training step
            value, grads = jax.value_and_grad(loss_fn)(p, x, y)
            updates, _ = tx.update(grads, s, p, value=value)
            return optax.apply_updates(p, updates)

        state = tx.init(params)
        one = jax.jit(steps)(params, state, x, y)
        by_data = jax.jit(steps)(
            jax.device_put(params, replicated),
            jax.device_put(state, replicated),
            jax.device_put(x, NamedSharding(mesh, P("x"))),
            jax.device_put(y, NamedSharding(mesh, P("x"))),
        )
        sharded_params = jax.tree_util.tree_map(split_first_axis, params)
        # the state split as the params are, except the bundled optimizer's column
        # statistics of a factored second moment (one per column of a matrix: every
        # row's shard needs them all), replicated
        sharded_state = jax.tree_util.tree_map_with_path(
            lambda path, a: (
                jax.device_put(a, replicated)
                if "fac_col" in jax.tree_util.keystr(path)
                else split_first_axis(a)
            ),
            state,
        )
        by_param = jax.jit(steps)(
            sharded_params,
            sharded_state,
            jax.device_put(x, replicated),
            jax.device_put(y, replicated),
        )
        grads = jax.tree_util.tree_map(split_first_axis, jax.grad(loss_fn)(params, x, y))
        update = jax.jit(lambda g, s, p, tx=tx: tx.update(g, s, p, value=jnp.float32(1.0)))
        hlo = update.lower(grads, sharded_state, sharded_params).compile().as_text()

        def diff(tree, one=one):
            pairs = zip(
                jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(one), strict=True
            )
            return max(float(jnp.max(jnp.abs(a - b))) for a, b in pairs)

        print(
            json.dumps(
                {
                    "member": name,
                    "data_parallel": diff(by_data),
                    "param_sharded": diff(by_param),
                    "param_sharded_kept_its_layout": all(
                        not a.sharding.is_fully_replicated
                        for a in jax.tree_util.tree_leaves(by_param)
                        if a.ndim >= 1 and a.shape[0] % 8 == 0
                    ),
                    "all_gathers": re.findall(r"= (\S+) all-gather\(", hlo),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
