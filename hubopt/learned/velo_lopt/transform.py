r"""VeLO (Metz et al. 2022) as an optax transform, reproducing the released ``HyperV2``.

The reference's golden updates (VELO_SPEC §7) are reproduced within the spec's
tolerances (most state leaves bit-exactly) on CPU with the same JAX version.

    tx = velo(num_steps, theta=...)          # theta: path, loaded tree, or None
    updates, state = tx.update(grads, state, params, value=loss)

VeLO needs the current ``params`` and the loss ``value`` every step; it
returns ``updates = new_params − params`` (as learned_optimization's
``opt_to_optax``). The math is in `hubopt.learned.velo_lopt._math`; the reference
quirks (VELO_SPEC §9) are named there where they happen.

Like the reference ``prefab.LearnedOptimizer``:

* ``weight_decay > 0`` adds ``wd·p`` to the gradients and ``wd·Σ‖p‖²`` to the
  loss before VeLO sees them (learned_optimization's WeightDecayWrapper:
  the decay is applied through VeLO, not added to the update afterwards);
* ``num_steps > max_training_steps`` accumulates gradients (and losses) over
  ``n = ceil(num_steps / max_training_steps)`` calls and applies VeLO to their
  mean on every n-th call, with the horizon ``num_steps // n``; the other calls
  return zero updates.

Theta: ``None`` loads the official checkpoint cached by ``hubopt velo download``
(its SHA-256 is verified on every load).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hubopt._src.budget import check_num_steps, warn_once_past_budget
from hubopt._src.input_checks import check_gradients, scalar_loss
from hubopt._src.missing_args import missing_argument
from hubopt.learned.velo_lopt import _flat
from hubopt.learned.velo_lopt import _math as vm
from hubopt.learned.velo_lopt.checkpoint import (
    GROUP_WIDTHS,
    N_LSTM_FEATURES,
    load_velo_theta,
    rnn_weight_shapes,
    validate_velo_theta,
)

__all__ = ["VeloState", "init_velo_theta", "velo"]


class VeloState(NamedTuple):
    """State of `velo`. Per-tensor trees have the params' structure.

    Layout differs from the reference by putting the decay axis first:
    ``mom`` is a tuple of 3 params-like trees, one per decay (0.9, 0.99, 0.999)
    (reference: S+(3,) per tensor), ``rms`` is S (reference S+(1,)),
    ``fac_row``/``fac_col`` are (3,)+S minus axis d0/d1 for tensors of rank >= 2
    and (3, 0) otherwise, ``fac_diag`` is (3,)+S for rank <= 1 and (3, 0)
    otherwise. ``accum_*`` are used only with gradient accumulation
    (``accum_grads`` is then a tree like params, else ``()``).
    """

    iteration: jax.Array  # int32: VeLO updates applied so far
    num_steps: jax.Array  # int32: the horizon VeLO conditions on
    mom: Any
    rms: Any
    fac_row: Any
    fac_col: Any
    fac_diag: Any
    lstm_hidden: jax.Array  # (n_tensors, H)
    lstm_cell: jax.Array  # (n_tensors, H)
    loss_buffer: vm.LossBuffer
    accum_grads: Any
    accum_loss: jax.Array  # float32
    accum_count: jax.Array  # int32: calls since the last VeLO update


# --------------------------------------------------------------------------- theta


def init_velo_theta(key, lstm_hidden_size: int = 512, param_inits: int = 256) -> dict:
    """Random VeLO meta-parameters in the checkpoint's tree (VELO_SPEC §5).

    Weights ~ truncated normal (±2σ, σ = 1/√fan_in), biases 0, as Haiku
    initialises the reference; every first-layer MLP weight w0__i uses fan_in
    30 (the total input width), w1 and w2 fan_in 4; ``lstm_init_state`` is
    zero. All weights come from one draw (the reference uses a key per copy,
    so the values differ from its init; the distribution is the same). Not the
    trained VeLO: for tests and timing when the official file is absent.
    """
    H, K = int(lstm_hidden_size), int(param_inits)
    if H < 1 or K < 1:
        raise ValueError(f"lstm_hidden_size and param_inits must be >= 1, got {H}, {K}")
    ff_shapes = {f"w0__{i}": ((K, c, 4), N_LSTM_FEATURES) for i, c in enumerate(GROUP_WIDTHS)}
    ff_shapes["w1"] = ((K, 4, 4), 4)
    ff_shapes["w2"] = ((K, 4, 3), 4)
    rnn_shapes = rnn_weight_shapes(H, K)
    weights = [(shape, fan_in) for shape, fan_in in ff_shapes.values()]
    weights += [(shape, shape[0]) for shape in rnn_shapes.values()]
    total = sum(math.prod(shape) for shape, _ in weights)
    draw = np.asarray(jax.random.truncated_normal(key, -2.0, 2.0, (total,), jnp.float32))
    parts, start = [], 0
    for shape, fan_in in weights:
        n = math.prod(shape)
        parts.append((draw[start : start + n] / np.float32(math.sqrt(fan_in))).reshape(shape))
        start += n
    parts = iter(parts)
    zeros = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
    ff = {name: next(parts) for name in ff_shapes}
    ff.update(b0=zeros(K, 4), b1=zeros(K, 4), b2=zeros(K, 3))
    rnn = {name: {"w": next(parts), "b": zeros(shape[1])} for name, shape in rnn_shapes.items()}
    return {
        "ff_mod_stack": {"~": ff},
        "lstm_init_state": {"hidden": zeros(1, H), "cell": zeros(1, H)},
        "rnn_params": rnn,
    }


def _resolve_theta(theta) -> dict:
    if theta is None:
        from hubopt.learned.velo_lopt import fetch as velo_fetch

        path = velo_fetch.velo_cache_path()
        if not path.is_file():
            raise FileNotFoundError(
                f"the official VeLO checkpoint is not cached at {path}. Download it with "
                "`hubopt velo download` (or pass velo(..., theta=<path or tree>))."
            )
        velo_fetch.verify_cached(path)
        return load_velo_theta(path)
    if isinstance(theta, str | os.PathLike):
        return load_velo_theta(theta)
    if isinstance(theta, Mapping):
        return validate_velo_theta(theta, source="velo(theta=...)")[0]
    raise TypeError(
        f"theta must be a checkpoint path, a VeLO meta-parameter dict or None, "
        f"got {type(theta).__name__}"
    )


# --------------------------------------------------------------------------- one update


def init_inner(params, num_steps: int, theta) -> tuple:
    """The VeLO part of the state for ``params`` with horizon ``num_steps``."""
    leaves = jax.tree_util.tree_leaves(params)
    treedef = jax.tree_util.tree_structure(params)
    accs = [vm.init_accum(np.shape(p)) for p in leaves]
    n = len(leaves)
    hidden = jnp.tile(jnp.asarray(theta["lstm_init_state"]["hidden"]), (n, 1))
    cell = jnp.tile(jnp.asarray(theta["lstm_init_state"]["cell"]), (n, 1))
    mom = tuple(treedef.unflatten([a.mom[i] for a in accs]) for i in range(len(vm.MOM_DECAYS)))
    trees = [mom] + [
        treedef.unflatten([getattr(a, f) for a in accs]) for f in vm.TensorAccum._fields[1:]
    ]
    return trees, hidden, cell, vm.loss_buffer_init(num_steps)


LAYOUTS = ("auto", "flat", "per_tensor")
# "auto": tensors of at most this many entries share one `FlatLayout`, larger ones are
# updated in their own shape. Joining a tensor into the layout saves compiling its own
# copy of the update (~0.3–1 s per tensor on CPU) but copies its inputs (g, p, three
# momenta, v and six factor channels) into the joined buffers every step: for large
# tensors that costs more step time (+50% on a 1M-entry MLP) than it saves compile time.
FLAT_MAX_SIZE = 1 << 14


def _check_layout(layout) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"velo: layout must be one of {LAYOUTS}, got {layout!r}")


def _joined(shapes, layout: str) -> list[int]:
    """The tensors (indices) that go into the joined `FlatLayout` under `layout` (never
    an empty one)."""
    if layout == "per_tensor":
        return []
    limit = math.inf if layout == "flat" else FLAT_MAX_SIZE
    return [t for t, s in enumerate(shapes) if 0 < math.prod(s) <= limit]


def _per_tensor_steps(mixed, lr_mult, p32, g32, accs, ids, slot) -> tuple[list, list]:
    """The signed steps and exp arguments of tensors `ids`, each in its own shape
    (`slot[t]`: tensor t's row in `mixed` and `lr_mult`)."""
    steps, exp_args = [], []
    for t in ids:
        p, g, a = p32[t], g32[t], accs[t]
        w = {name: x[slot[t]] for name, x in mixed.items()}
        dims = vm.factored_dims(p.shape)
        if dims is not None:
            step, aux = vm.mlp_step_factored(w, lr_mult[slot[t]], p, g, a, dims)
        else:
            pm = p
            if p.ndim == 0:  # QUIRK (10): the MLP treats a scalar as shape (1,)
                r = lambda x: x.reshape(x.shape + (1,))  # noqa: E731
                pm, g, a = (
                    p.reshape(1),
                    g.reshape(1),
                    vm.TensorAccum(
                        tuple(m.reshape(1) for m in a.mom),
                        a.rms.reshape(1),
                        a.row,
                        a.col,
                        r(a.diag),
                    ),
                )
            f_rsqrt, f_pow = vm.diag_factors(a.diag)
            groups = vm.mlp_groups(pm, g, a, f_rsqrt, f_pow)
            step, aux = vm.mlp_step(w, lr_mult[slot[t]], pm, groups)
        steps.append(step.reshape(p.shape))
        exp_args.append(aux["exp_arg"].reshape(p.shape))
    return steps, exp_args


def velo_apply(theta, state: VeloState, params, grads, loss, *, layout: str = "auto"):
    """One VeLO update: (new params, new state, debug intermediates).

    ``state``'s ``accum_*`` fields are passed through untouched. ``layout``: "flat"
    computes the per-tensor statistics and the per-parameter MLP of all tensors at once
    (`_flat`: one copy of the update in the program, fast to compile), "per_tensor"
    tensor by tensor in each tensor's own shape (for tensors sharded over devices:
    nothing is gathered), "auto" the small tensors (<= `FLAT_MAX_SIZE` entries) flat
    and the others per tensor. All agree to float32 rounding.
    """
    _check_layout(layout)
    p_leaves, treedef = jax.tree_util.tree_flatten(params)
    g_leaves = treedef.flatten_up_to(grads)
    moms = list(zip(*[treedef.flatten_up_to(m) for m in state.mom], strict=True))
    fields = [
        treedef.flatten_up_to(getattr(state, f)) for f in ("rms", "fac_row", "fac_col", "fac_diag")
    ]
    accs = [vm.TensorAccum(m, *a) for m, *a in zip(moms, *fields, strict=True)]
    p_leaves = [jnp.asarray(p) for p in p_leaves]
    p32 = [p.astype(jnp.float32) for p in p_leaves]
    g32 = [
        jnp.clip(jnp.asarray(g).astype(jnp.float32), -vm.GRAD_CLIP, vm.GRAD_CLIP) for g in g_leaves
    ]
    loss = jnp.asarray(loss, jnp.float32)

    buf = vm.loss_buffer_update(state.loss_buffer, loss)
    phi = vm.loss_features(buf)
    # A true division by the traced horizon, as the reference (a division by a
    # compile-time constant may become a multiplication and differ in the last ulp).
    fraction = state.iteration.astype(jnp.float32) / state.num_steps.astype(jnp.float32)
    # An empty tensor has no statistics (its means would be NaN and the LSTM's max-pool
    # over tensors would spread them): it takes no part and gets a zero step.
    live = [t for t, p in enumerate(p32) if p.size > 0]
    slot = {t: k for k, t in enumerate(live)}  # a live tensor's row in the LSTM's batch
    joined = _joined([p.shape for p in p32], layout)
    own = [t for t in live if t not in joined]
    rows = {t: vm.lstm_features(p32[t], accs[t].mom, accs[t].rms, fraction, phi) for t in own}
    if joined:
        flat = _flat.layout_of([p32[t] for t in joined])
        X_joined = _flat.lstm_inputs(
            flat,
            flat.flatten([p32[t] for t in joined]),
            [flat.flatten([accs[t].mom[i] for t in joined]) for i in range(len(vm.MOM_DECAYS))],
            flat.flatten([accs[t].rms for t in joined]),
            fraction,
            phi,
        )
        rows.update({t: X_joined[i] for i, t in enumerate(joined)})
    new_accs = [vm.update_accum(a, g) for a, g in zip(accs, g32, strict=True)]
    steps = {t: jnp.zeros(p32[t].shape, jnp.float32) for t in range(len(p32)) if t not in slot}
    exp_args = dict(steps)
    hidden, cell = state.lstm_hidden, state.lstm_cell
    X = controls = lr_mult = None
    if live:
        X = jnp.stack([rows[t] for t in live])
        all_live = len(live) == len(p32)  # then no gather and scatter of the LSTM's rows
        rows_of_live = np.asarray(live)
        h_in, c_in = (hidden, cell) if all_live else (hidden[rows_of_live], cell[rows_of_live])
        # QUIRK (5): the new LSTM state is carried forward (use_bugged_next_lstm_state=False).
        controls, lr_mult, h_out, c_out = vm.lstm_step(theta["rnn_params"], X, h_in, c_in)
        if all_live:
            hidden, cell = h_out, c_out
        else:
            hidden = hidden.at[rows_of_live].set(h_out)
            cell = cell.at[rows_of_live].set(c_out)
        mixed = vm.mix_mlp_weights(theta["ff_mod_stack"]["~"], controls)
        own_steps = _per_tensor_steps(mixed, lr_mult, p32, g32, new_accs, own, slot)
        steps.update(zip(own, own_steps[0], strict=True))
        exp_args.update(zip(own, own_steps[1], strict=True))
        if joined:  # (joined tensors are live)
            ids = np.asarray([slot[t] for t in joined])
            joined_steps = _flat.mlp_steps(
                flat,
                {name: w[ids] for name, w in mixed.items()},
                lr_mult[ids],
                [p32[t] for t in joined],
                [g32[t] for t in joined],
                [new_accs[t] for t in joined],
            )
            steps.update(zip(joined, joined_steps[0], strict=True))
            exp_args.update(zip(joined, joined_steps[1], strict=True))
    steps = [steps[t] for t in range(len(p32))]
    exp_args = [exp_args[t] for t in range(len(p32))]
    new_p = [p - step for p, step in zip(p32, steps, strict=True)]

    new_params = treedef.unflatten(
        [q.astype(p.dtype) for q, p in zip(new_p, p_leaves, strict=True)]
    )
    unflat = lambda xs: treedef.unflatten(list(xs))  # noqa: E731
    new_state = state._replace(
        iteration=state.iteration + 1,
        mom=tuple(unflat(a.mom[i] for a in new_accs) for i in range(3)),
        rms=unflat(a.rms for a in new_accs),
        fac_row=unflat(a.row for a in new_accs),
        fac_col=unflat(a.col for a in new_accs),
        fac_diag=unflat(a.diag for a in new_accs),
        lstm_hidden=hidden,
        lstm_cell=cell,
        loss_buffer=buf,
    )
    debug = {
        "loss_features": phi,
        "fraction_trained": fraction,
        "lstm_input": X,
        "controls": controls,
        "lr_mult": lr_mult,
        "step": steps,
        "exp_arg": exp_args,
    }
    return new_params, new_state, debug


# --------------------------------------------------------------------------- optax


def velo(
    num_steps: int,
    *,
    theta: str | os.PathLike | Mapping | None = None,
    weight_decay: float = 0.0,
    max_training_steps: int = 150_000,
    warn_past_budget: bool = True,
    layout: str = "auto",
) -> optax.GradientTransformationExtraArgs:
    """VeLO for a training run of ``num_steps`` steps.

    ``update(grads, state, params, *, value)`` needs the current params and the
    loss value (a float scalar); it returns ``new_params − params``. The first step
    past ``num_steps`` warns from the host unless ``warn_past_budget=False`` (for a
    loop that never runs past it: programs without host callbacks can be kept in
    JAX's persistent compilation cache). ``layout``: "auto" (small tensors at once, fast
    to compile, large ones in their own shape), "flat" (all at once) or "per_tensor"
    (for parameters sharded over devices), as in `velo_apply`; the state is the same
    for all three.
    """
    num_steps = check_num_steps(num_steps)
    _check_layout(layout)
    if (
        isinstance(max_training_steps, bool)
        or not isinstance(max_training_steps, int | np.integer)
        or max_training_steps < 1
    ):
        raise ValueError(f"max_training_steps must be a positive int, got {max_training_steps!r}")
    weight_decay = float(weight_decay)
    if not weight_decay >= 0.0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    num_steps, max_training_steps = int(num_steps), int(max_training_steps)
    n_accum = math.ceil(num_steps / max_training_steps) if num_steps > max_training_steps else 1
    inner_steps = num_steps // n_accum
    theta_np = _resolve_theta(theta)
    theta_j = jax.tree_util.tree_map(jnp.asarray, theta_np)

    def init_fn(params):
        trees, hidden, cell, buf = init_inner(params, inner_steps, theta_j)
        accum = (
            jax.tree_util.tree_map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params)
            if n_accum > 1
            else ()
        )
        return VeloState(
            jnp.zeros((), jnp.int32),
            jnp.asarray(inner_steps, jnp.int32),
            *trees,
            hidden,
            cell,
            buf,
            accum,
            jnp.zeros((), jnp.float32),
            jnp.zeros((), jnp.int32),
        )

    def update_fn(updates, state, params=None, *, value=None, **extra):
        del extra  # other extra args (value_fn, ...) are accepted and ignored
        if params is None:
            raise missing_argument("velo", "params")
        if value is None:
            raise missing_argument("velo", "value")
        check_gradients("velo", updates, params)
        loss = scalar_loss("velo", value)
        if warn_past_budget:
            warn_once_past_budget("velo", state.iteration + 1, state.num_steps)
        if weight_decay > 0.0:
            # learned_optimization's WeightDecayWrapper: the decay goes through VeLO.
            l2 = [
                jnp.sum(jnp.square(jnp.asarray(p, jnp.float32))) * weight_decay
                for p in jax.tree_util.tree_leaves(params)
            ]
            loss = loss + sum(l2)
            updates = jax.tree_util.tree_map(
                lambda g, p: jnp.asarray(g) + weight_decay * jnp.asarray(p).astype(g.dtype),
                updates,
                params,
            )

        def apply(state, grads, loss):
            new_params, new_state, _ = velo_apply(
                theta_j, state, params, grads, loss, layout=layout
            )
            deltas = jax.tree_util.tree_map(
                lambda n, p: (n - jnp.asarray(p)).astype(jnp.asarray(p).dtype), new_params, params
            )
            return deltas, new_state

        if n_accum == 1:
            return apply(state, updates, loss)

        acc_g = jax.tree_util.tree_map(
            lambda a, g: a + jnp.asarray(g, jnp.float32), state.accum_grads, updates
        )
        acc_l = state.accum_loss + loss
        count = state.accum_count + 1

        def do_update(_):
            mean_g = jax.tree_util.tree_map(lambda a: a / n_accum, acc_g)
            deltas, s = apply(state, mean_g, acc_l / n_accum)
            return deltas, s._replace(
                accum_grads=jax.tree_util.tree_map(jnp.zeros_like, acc_g),
                accum_loss=jnp.zeros((), jnp.float32),
                accum_count=jnp.zeros((), jnp.int32),
            )

        def skip(_):
            zeros = jax.tree_util.tree_map(
                lambda p: jnp.zeros(jnp.shape(p), jnp.asarray(p).dtype), params
            )
            return zeros, state._replace(accum_grads=acc_g, accum_loss=acc_l, accum_count=count)

        return jax.lax.cond(count >= n_accum, do_update, skip, None)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
