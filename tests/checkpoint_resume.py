"""Run as a script by `tests/test_checkpoint_resume.py`: trains HUB and LGL2O with the
bundled learned optimizer on a small regression whose batches come from a PRNG key in
the state, straight through or with a checkpoint in between, in separate processes.

    python checkpoint_resume.py full N OUT.npz        N steps from the start
    python checkpoint_resume.py part K DIR            K steps, then a checkpoint in DIR
    python checkpoint_resume.py resume N DIR OUT.npz  from DIR's checkpoint to step N
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

import hubopt
import hubopt.checkpoint
from hubopt.baselines import lgl2o
from hubopt.learned import small

OPTIMIZERS = {
    "hub": lambda: hubopt.hub(optax.adam(1e-2), small(num_steps=8), sigma="hyper"),
    "lgl2o": lambda: lgl2o(optax.adam(1e-2), small(num_steps=8)),
}
TRUE_W = jnp.arange(12.0).reshape(4, 3) / 10


def loss_fn(params, batch):
    x, y = batch
    return jnp.mean((jnp.tanh(x @ params["w"] + params["b"][None, :]) - y) ** 2)


def start(tx):
    params = {"w": jnp.zeros((4, 3)), "b": jnp.zeros(3)}
    return {
        "params": params,
        "opt": tx.init(params),
        "step": jnp.int32(0),
        "key": jax.random.key(7),
    }


def make_step(tx):
    @jax.jit
    def step(state):
        key, sub = jax.random.split(state["key"])
        x = jax.random.normal(sub, (16, 4))
        batch = (x, jnp.tanh(x @ TRUE_W))
        value, grads = jax.value_and_grad(loss_fn)(state["params"], batch)
        updates, opt = tx.update(
            grads, state["opt"], state["params"], value=value, value_fn=lambda p: loss_fn(p, batch)
        )
        params = optax.apply_updates(state["params"], updates)
        return {"params": params, "opt": opt, "step": state["step"] + 1, "key": key}

    return step


def train(states, until):
    for name, tx in OPTIMIZERS.items():
        step = make_step(tx())
        while int(states[name]["step"]) < until:
            states[name] = step(states[name])
    return states


def dump(states, path):
    flat = {}
    for name, state in states.items():
        state = dict(state, key=jax.random.key_data(state["key"]))
        for i, leaf in enumerate(jax.tree_util.tree_leaves(state)):
            flat[f"{name}/{i}"] = np.asarray(leaf)
    np.savez(path, **flat)


def main(argv):
    mode = argv[0]
    fresh = {name: start(make()) for name, make in OPTIMIZERS.items()}
    if mode == "full":
        dump(train(fresh, int(argv[1])), argv[2])
    elif mode == "part":
        states = train(fresh, int(argv[1]))
        hubopt.checkpoint.save(argv[2], int(argv[1]), states)
    elif mode == "resume":
        states = hubopt.checkpoint.restore(argv[2], like=fresh)
        dump(train(states, int(argv[1])), argv[3])


if __name__ == "__main__":
    main(sys.argv[1:])
