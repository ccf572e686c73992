"""Divergence suite: the learned optimizer at its initial θ and at the bundled θ,
alone and inside HUB(Adam, ·), must not diverge on tasks outside its meta-training
distribution (deep GELU, wide, badly scaled init, CNN)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hubopt
from hubopt.learned.meta.task_distribution import MetaTask
from hubopt.learned.small_lopt import bundled as pre
from hubopt.learned.small_lopt.architecture import MLPLOpt

STEPS = 100

OOD = [
    MetaTask(
        "synreg_mlp32x32x32x32gelu",
        "regression",
        hidden=(32, 32, 32, 32),
        activation="gelu",
        batch_size=32,
    ),
    MetaTask("synreg_mlp128x128relu", "regression", hidden=(128, 128), batch_size=64),
    MetaTask(
        "synreg_mlp64elu_scale3",
        "regression",
        hidden=(64,),
        activation="elu",
        batch_size=16,
        init_scale_range=(3.0, 3.0),
    ),
    MetaTask("digits_cnn8x16relu", "digits", model="cnn", hidden=(8, 16), batch_size=32),
]


def _thetas():
    lo = MLPLOpt()
    names = ["init"]
    thetas = [lo.init(jax.random.PRNGKey(0))]
    if "small" in pre.available():
        lo_b, th_b = pre.load("small")
        assert lo_b == lo, "the suite assumes the bundled optimizer has the default architecture"
        names.append("bundled")
        thetas.append(th_b)
    return lo, names, jax.tree_util.tree_map(lambda *x: jnp.stack(x), *thetas)


def _final_and_initial(family, make_opt, theta_S):
    task = family.to_task(jax.random.PRNGKey(5), STEPS)

    @jax.jit
    def run(theta):
        params = task.init(jax.random.PRNGKey(1))
        opt = make_opt(theta)

        def body(c, t):
            p, s = c
            v, g = jax.value_and_grad(task.loss)(p, task.batch(jax.random.PRNGKey(t), t))
            u, s = opt.update(g, s, p, value=v)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(body, (params, opt.init(params)), jnp.arange(STEPS))
        return task.metrics(params, "train")["loss"], task.metrics(p, "train")["loss"]

    return jax.vmap(run)(theta_S)


@pytest.mark.parametrize("task", OOD, ids=lambda t: t.name)
@pytest.mark.parametrize("where", ["alone", "hub_default"])
def test_does_not_diverge_out_of_distribution(task, where):
    if task.dataset == "digits":
        pytest.importorskip("sklearn")
    lo, names, theta_S = _thetas()
    if where == "alone":
        make = lambda th: lo.optimizer(th, STEPS)  # noqa: E731
    else:
        make = lambda th: hubopt.hub(  # noqa: E731
            optax.with_extra_args_support(optax.adam(1e-3)), lo.optimizer(th, STEPS)
        )
    l0, l1 = (np.asarray(x) for x in _final_and_initial(task, make, theta_S))
    for name, a, b in zip(names, l0, l1, strict=True):
        assert np.isfinite(b), f"{name} θ diverged ({where}) on {task.name}"
        assert b < a, f"{name} θ ({where}) made {task.name} worse: {a:.4g} -> {b:.4g}"
