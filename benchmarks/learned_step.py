"""Learned optimizers' step time vs optax.adam, side by side, and their state size.

    .venv/bin/python benchmarks/learned_step.py [--steps 100] [--out record.json]
        [--optimizers velo,small,hub_small,adam] [--theta PATH ...] [--no-hub-theta]

Model: the 784-1024-256-10 MLP of VELO_SPEC §10 (1,068,810 parameters in 6
tensors). Contenders: `velo` (the real architecture, H=512, K=256, with a
random theta from `init_velo_theta`: timing does not depend on the values; its
default layout "auto", and `velo_flat` / `velo_per_tensor` with the other two),
`small` (hubopt's bundled learned optimizer), `hub_small`
(`hubopt.hub(optax.adam(1e-3), small)`, diagnostics included) and `adam`
(`optax.adam(1e-3)`, the reference of every ratio); with `--theta PATH`, also
`theta` and `hub_theta`: the `MLPLOpt` variant and θ of a θ file (e.g. a
meta-training snapshot), alone and inside HUB with Adam (`--no-hub-theta`: alone only);
`--theta` repeated times several θ files side by side, as `theta_<file stem>` and
`hub_theta_<file stem>` (e.g. architecture variants). For each, one jitted
function does the optimizer update and `optax.apply_updates`; all are compiled
and warmed up, then timed in interleaved rounds (one step of each in turn),
every step ended with `block_until_ready`. Reported: median and min ms/step,
the median ratio to Adam, and the optimizer-state bytes per parameter.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import hubopt
from hubopt._src.atomic_write import write_atomic
from hubopt._src.git_state import git_commit
from hubopt.learned.small_lopt.bundled import load_theta_file, small
from hubopt.learned.velo_lopt.transform import init_velo_theta, velo

LAYERS = (784, 1024, 256, 10)


def mlp_params(key):
    params = {}
    for i, (n_in, n_out) in enumerate(zip(LAYERS[:-1], LAYERS[1:], strict=True)):
        key, k = jax.random.split(key)
        params[f"layer{i}"] = {
            "w": jax.random.normal(k, (n_in, n_out), jnp.float32) / np.sqrt(n_in),
            "b": jnp.zeros((n_out,), jnp.float32),
        }
    return params


def _velo(layout: str = "auto"):
    return velo(1000, theta=init_velo_theta(jax.random.PRNGKey(2), 512, 256), layout=layout)


CONTENDERS = {
    "velo": _velo,
    # VeLO's other layouts (the default is "auto"): all tensors joined, or each in its own shape
    "velo_flat": lambda: _velo("flat"),
    "velo_per_tensor": lambda: _velo("per_tensor"),
    "small": lambda: small(num_steps=1000),
    "hub_small": lambda: hubopt.hub(optax.adam(1e-3), small(num_steps=1000)),
    "adam": lambda: optax.adam(1e-3),
}


def make_step(tx):
    @jax.jit
    def step(params, state, grads, loss):
        updates, state = tx.update(grads, state, params, value=loss)
        return optax.apply_updates(params, updates), state

    return step


def state_bytes(state) -> int:
    return sum(int(np.asarray(x).nbytes) for x in jax.tree_util.tree_leaves(state))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100, help="timed steps per optimizer")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", default=None, help="write the record as JSON here")
    ap.add_argument(
        "--optimizers",
        default="velo,small,hub_small,adam",
        help=f"comma-separated, from {','.join(CONTENDERS)} (adam is always timed)",
    )
    ap.add_argument(
        "--theta",
        action="append",
        default=None,
        metavar="PATH",
        help="also time this θ file's optimizer (theta) and HUB(Adam, it) (hub_theta); "
        "repeat for several (theta_<stem>, hub_theta_<stem>)",
    )
    ap.add_argument(
        "--hub-theta",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --theta, also time HUB(Adam, θ's optimizer)",
    )
    args = ap.parse_args(argv)
    names = [n for n in args.optimizers.split(",") if n]
    contender_fns = dict(CONTENDERS)
    for path in args.theta or []:
        suffix = "" if len(args.theta) == 1 else "_" + os.path.basename(path).split(".")[0]
        if "theta" + suffix in contender_fns:
            ap.error(f"two --theta files share the name {suffix[1:]!r}")
        lopt, theta = load_theta_file(path)
        opt = lambda lopt=lopt, theta=theta: lopt.optimizer(theta, 1000)  # noqa: E731
        contender_fns["theta" + suffix] = opt
        names.append("theta" + suffix)
        if args.hub_theta:
            contender_fns["hub_theta" + suffix] = lambda opt=opt: hubopt.hub(
                optax.adam(1e-3), opt()
            )
            names.append("hub_theta" + suffix)
    unknown = sorted(set(names) - set(contender_fns))
    if unknown:
        ap.error(f"unknown optimizers {unknown}; known: {list(contender_fns)}")
    if "adam" not in names:
        names.append("adam")

    key = jax.random.PRNGKey(0)
    params = mlp_params(key)
    n_params = sum(int(np.size(p)) for p in jax.tree_util.tree_leaves(params))
    grads = jax.tree_util.tree_map(
        lambda p: 0.01 * jax.random.normal(jax.random.PRNGKey(1), p.shape, jnp.float32), params
    )
    loss = jnp.float32(2.3)
    contenders = {name: contender_fns[name]() for name in names}

    run = {}
    for name, tx in contenders.items():
        state = tx.init(params)
        step = make_step(tx)
        t0 = time.perf_counter()
        p, s = step(params, state, grads, loss)
        jax.block_until_ready((p, s))
        compile_s = time.perf_counter() - t0
        for _ in range(args.warmup):
            p, s = step(p, s, grads, loss)
        jax.block_until_ready((p, s))
        run[name] = {
            "step": step,
            "p": p,
            "s": s,
            "times": [],
            "compile_s": compile_s,
            "state_bytes": state_bytes(state),
        }

    for _ in range(args.steps):  # interleaved: one step of each per round
        for name in contenders:
            r = run[name]
            t0 = time.perf_counter()
            r["p"], r["s"] = r["step"](r["p"], r["s"], grads, loss)
            jax.block_until_ready((r["p"], r["s"]))
            r["times"].append(1e3 * (time.perf_counter() - t0))

    record = {
        "benchmark": "learned_step",
        "model": "mlp_784_1024_256_10",
        "n_params": n_params,
        "n_tensors": len(jax.tree_util.tree_leaves(params)),
        "velo_theta": "init_velo_theta(PRNGKey(2), 512, 256) (random, real shapes)",
        "n_timed_steps_each": args.steps,
        "platform": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "git": git_commit(short=True),
        **({} if not args.theta else {"theta_file": ",".join(args.theta)}),
    }
    for name, r in run.items():
        record[f"{name}_median_ms"] = statistics.median(r["times"])
        record[f"{name}_min_ms"] = min(r["times"])
        record[f"{name}_compile_s"] = r["compile_s"]
        record[f"{name}_state_bytes_per_param"] = r["state_bytes"] / n_params
    for name in run:
        if name != "adam":
            record[f"{name}_ratio_median"] = record[f"{name}_median_ms"] / record["adam_median_ms"]

    print(f"MLP {LAYERS}: {n_params:,} parameters, {args.steps} interleaved steps each")
    for name in run:
        r = {k[len(name) + 1 :]: v for k, v in record.items() if k.startswith(name + "_")}
        print(
            f"  {name:14s} median {r['median_ms']:8.2f} ms   min {r['min_ms']:8.2f} ms   "
            f"compile {r['compile_s']:.1f} s   state {r['state_bytes_per_param']:.2f} B/param"
        )
    for name in run:
        if name != "adam":
            print(f"  ratio {name}/adam (median): {record[f'{name}_ratio_median']:.1f}x")
    if args.out:
        write_atomic(args.out, json.dumps(record, indent=1))
    return record


if __name__ == "__main__":
    main()
