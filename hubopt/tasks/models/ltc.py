r"""A Liquid Time-Constant (LTC) cell (Hasani et al., AAAI 2021) that reproduces `ncps`'s LTC.

The reference is `ncps` 1.0.1's `LTCCell` (the Keras-3 and PyTorch versions compute the
same thing); given the same weights and wiring masks this cell matches it to float32
rounding (checked against golden outputs of `ncps.keras.LTC` in `tests/test_ltc.py`).

The model. Each of the U neurons has a potential v_i that follows

    C_i dv_i/dt = g_i (v_leak,i - v_i)
                  + Σ_j  w_ji  |A_ji| σ(s_ji (v_j - μ_ji))        (E_ji  - v_i)
                  + Σ_k  w'_ki |S_ki| σ(s'_ki (x̃_k - μ'_ki))      (E'_ki - v_i),

σ the logistic sigmoid, A (U×U, [source, target]) the wiring's adjacency and S (I×U) its
sensory adjacency, both signed (±1 synapse, 0 none) and used through |·| as sparsity masks;
E, E' are the reversal potentials (initialised to the sign of A, S). The input is mapped
affinely first, x̃ = x ⊙ input_w + input_b.

The solver (ncps's "fused" semi-implicit Euler). One call to the cell advances the state
by `elapsed_time` in `ode_unfolds` sub-steps of length Δ = elapsed_time / ode_unfolds. The
sensory terms are computed once per call, from x̃:

    s_ki = w'_ki |S_ki| σ(s'_ki (x̃_k - μ'_ki)),   N'_i = Σ_k s_ki E'_ki,   D'_i = Σ_k s_ki,

and then, ode_unfolds times, with the synaptic activations taken at the current v,

    a_ji = w_ji |A_ji| σ(s_ji (v_j - μ_ji))
    v_i ← (C_i/Δ · v_i + g_i v_leak,i + Σ_j a_ji E_ji + N'_i)
          / (C_i/Δ + g_i + Σ_j a_ji + D'_i + ε).

The output is read from the motor neurons, which in ncps are the *first* `motor` units:
y = v[:motor] ⊙ output_w + output_b.

Non-negativity. The solver needs C, g, w, w' >= 0 (a capacitance and conductances; with
them non-negative each update is a weighted average of v, v_leak and the reversal
potentials, so v stays bounded). ncps's Keras and TF cells keep them so by clipping after
every optimizer step (`NonNeg` weight constraints; its PyTorch cell by default asks the
user to call `apply_weight_constraints()`); hubopt is pure optax, which has no such hook. So this
cell stores those four as *unconstrained raw* values (`gleak_raw`, `cm_raw`, `w_raw`,
`sensory_w_raw`) and uses softplus(raw): any optimizer update keeps them positive and
gradients stay smooth. This is ncps's own `implicit_param_constraints=True` mode of the
PyTorch `LTCCell` (softplus applied to exactly these four at run time). One difference:
ncps's implicit mode draws the *raw* values from the initialisation ranges, so its initial
conductances are softplus(U[0.001, 1]) ∈ [0.69, 1.31]; `init_ltc` instead stores
inverse_softplus of the drawn values, so the constrained values follow the declared
ranges exactly as in ncps's default (clipping) mode.

Converting reference weights (`constrained_from_reference`) applies a numerically careful
inverse softplus, x = y + log(-expm1(-y)) (no overflow for large y, full relative accuracy
for tiny y), after flooring y at `min_value` (default 1e-6): ncps's clipping can leave a
weight at exactly 0, whose inverse softplus is -inf; a floor keeps the raw value finite,
and the change (at most `min_value` per synapse, against C/Δ ≈ 3 in the denominator) is
at the level of float32 rounding. The floor is not far out either (raw ≈ -13.8), so an
optimizer like Adam can still move such a weight.

The public surface is pure functions over a parameter dict (15 entries; the wiring masks
are fixed arrays, not parameters, passed separately as `LTCMasks`):

    adjacency, sensory_adjacency = ncp_wiring(units, motor, input_dim, seed)
    masks = LTCMasks(adjacency, sensory_adjacency, motor)
    params = init_ltc(key, adjacency, sensory_adjacency, motor)
    y_BM, h_BU = ltc_step(params, masks, h_BU, x_BI)
    y_BTM, h_seq_BTU = ltc_sequence(params, masks, x_BTI)

Array names carry their shapes: B batch, T time, I inputs, U units (neurons), M motor
neurons (outputs).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Params = dict[str, jax.Array]

POSITIVE_PARAMS = ("gleak", "cm", "w", "sensory_w")
"""The four quantities kept non-negative; the params dict stores them as `<name>_raw`."""

REFERENCE_NAMES = (
    "gleak",
    "vleak",
    "cm",
    "sigma",
    "mu",
    "w",
    "erev",
    "sensory_sigma",
    "sensory_mu",
    "sensory_w",
    "sensory_erev",
    "input_w",
    "input_b",
    "output_w",
    "output_b",
)
"""ncps's names of the cell's 15 weights (its `LTCCell._params`, less the two masks)."""

PARAM_NAMES = tuple(f"{n}_raw" if n in POSITIVE_PARAMS else n for n in REFERENCE_NAMES)
"""The keys of this module's params dict."""

INIT_RANGES = {
    "gleak": (0.001, 1.0),
    "vleak": (-0.2, 0.2),
    "cm": (0.4, 0.6),
    "w": (0.001, 1.0),
    "sigma": (3.0, 8.0),
    "mu": (0.3, 0.8),
    "sensory_w": (0.001, 1.0),
    "sensory_sigma": (3.0, 8.0),
    "sensory_mu": (0.3, 0.8),
}
"""ncps's uniform initialisation ranges (`LTCCell._init_ranges`), of the constrained values."""


@struct.dataclass
class LTCMasks:
    """The fixed wiring of a cell: not trained, passed beside the params.

    Attributes:
      adjacency: (U, U) signed synapse matrix, [source, target]; |adjacency| is the mask.
      sensory_adjacency: (I, U) signed input-to-neuron synapse matrix.
      motor: the number of output (motor) neurons, the first `motor` units. Static (part
        of the pytree structure, not a leaf), so it survives `jax.jit`.
    """

    adjacency: jax.Array
    sensory_adjacency: jax.Array
    motor: int = struct.field(pytree_node=False)


# ---------------------------------------------------------------- reparametrisation


def inverse_softplus(y: jax.Array | np.ndarray | float, min_value: float = 0.0) -> jax.Array:
    """x with softplus(x) = y, as y + log(-expm1(-y)); stable for tiny and for large y.

    `y` is floored at max(min_value, smallest normal number of its dtype) first, so the
    result is finite for y <= 0 (which has no preimage).
    """
    y = jnp.asarray(y)
    if not jnp.issubdtype(y.dtype, jnp.floating):
        y = y.astype(jnp.float32)
    floor = max(float(min_value), float(jnp.finfo(y.dtype).tiny))
    y = jnp.maximum(y, jnp.asarray(floor, y.dtype))
    return y + jnp.log(-jnp.expm1(-y))


def constrained_values(params: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """The cell's weights under ncps's names, softplus applied to the four raw ones.

    `constrained_values(constrained_from_reference(ref))` gives back `ref` to float32
    rounding (for weights at or above the conversion's floor).
    """
    _check_param_keys(params)
    out = {}
    for name in REFERENCE_NAMES:
        if name in POSITIVE_PARAMS:
            out[name] = jax.nn.softplus(params[f"{name}_raw"])
        else:
            out[name] = params[name]
    return out


def constrained_from_reference(ref_weights: Mapping[str, Any], min_value: float = 1e-6) -> Params:
    """Params for this cell from an ncps LTC's weights (keyed by ncps's names, see
    `REFERENCE_NAMES`), as float32.

    ncps stores gleak, cm, w, sensory_w directly (kept >= 0 by clipping); here they
    become `<name>_raw = inverse_softplus(max(value, min_value))`. Everything else is
    copied (erev, which ncps may hold as integers, becomes float32).
    """
    missing = sorted(set(REFERENCE_NAMES) - set(ref_weights))
    extra = sorted(set(ref_weights) - set(REFERENCE_NAMES))
    if missing or extra:
        raise ValueError(
            f"reference weights: missing {missing}, unexpected {extra}; "
            f"expected exactly {list(REFERENCE_NAMES)}"
        )
    params = {}
    for name in REFERENCE_NAMES:
        value = np.asarray(ref_weights[name])
        if name in POSITIVE_PARAMS:
            if np.any(value < 0) or not np.all(np.isfinite(value)):
                raise ValueError(
                    f"reference weight {name!r} must be finite and >= 0 (min {value.min()})"
                )
            # The same formula as `inverse_softplus`, in float64, rounded once to float32.
            y = np.maximum(value.astype(np.float64), max(float(min_value), 1e-300))
            params[f"{name}_raw"] = jnp.asarray(y + np.log(-np.expm1(-y)), jnp.float32)
        else:
            params[name] = jnp.asarray(value, jnp.float32)
    return params


# ---------------------------------------------------------------- wiring and init


def ncp_wiring(units: int, motor: int, input_dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (adjacency (U, U), sensory_adjacency (I, U)) of
    `ncps.wirings.AutoNCP(units, motor, seed=seed).build(input_dim)`, as float32.

    Entries are +1 (excitatory), -1 (inhibitory) or 0 (no synapse). Needs `ncps`.
    """
    try:
        from ncps import wirings
    except ImportError as err:
        raise ImportError(
            "ncp_wiring needs the 'ncps' package for its NCP wirings: pip install ncps"
        ) from err
    wiring = wirings.AutoNCP(units, motor, seed=seed)
    wiring.build(input_dim)
    return (
        np.asarray(wiring.adjacency_matrix, np.float32),
        np.asarray(wiring.sensory_adjacency_matrix, np.float32),
    )


def init_ltc(
    key: jax.Array,
    adjacency: jax.Array | np.ndarray,
    sensory_adjacency: jax.Array | np.ndarray,
    motor: int,
) -> Params:
    """Fresh float32 params, drawn like ncps's `LTCCell` initialisers.

    Uniform on `INIT_RANGES` (of the constrained values; the four positive ones are
    stored as their inverse softplus); erev and sensory_erev = sign of the adjacency
    matrices (ncps copies the matrices, which hold only -1, 0, +1); input_w, output_w
    ones; input_b, output_b zeros. The nine uniform tensors are cut from one draw (the
    same distribution as ncps's nine separate draws, not the same numbers).
    """
    adjacency = jnp.asarray(adjacency, jnp.float32)
    sensory_adjacency = jnp.asarray(sensory_adjacency, jnp.float32)
    _check_wiring(adjacency, sensory_adjacency, motor)
    return _draw_params(key, adjacency, sensory_adjacency, int(motor))


@functools.partial(jax.jit, static_argnames=("motor",))
def _draw_params(key, adjacency, sensory_adjacency, motor):
    units = adjacency.shape[0]
    inputs = sensory_adjacency.shape[0]
    shapes = {
        "gleak": (units,),
        "vleak": (units,),
        "cm": (units,),
        "sigma": (units, units),
        "mu": (units, units),
        "w": (units, units),
        "sensory_sigma": (inputs, units),
        "sensory_mu": (inputs, units),
        "sensory_w": (inputs, units),
    }
    # One draw of U[0, 1) for all nine tensors (one random-bits kernel to compile, not
    # nine), cut into pieces and scaled to each range.
    sizes = [int(np.prod(shapes[name])) for name in INIT_RANGES]
    unit_draws = jax.random.uniform(key, (sum(sizes),), jnp.float32)
    offsets = np.cumsum([0, *sizes])
    params = {}
    for i, (name, (low, high)) in enumerate(INIT_RANGES.items()):
        piece = unit_draws[offsets[i] : offsets[i + 1]].reshape(shapes[name])
        value = low + (high - low) * piece
        if name in POSITIVE_PARAMS:
            params[f"{name}_raw"] = inverse_softplus(value)
        else:
            params[name] = value
    params["erev"] = jnp.sign(adjacency)
    params["sensory_erev"] = jnp.sign(sensory_adjacency)
    params["input_w"] = jnp.ones((inputs,), jnp.float32)
    params["input_b"] = jnp.zeros((inputs,), jnp.float32)
    params["output_w"] = jnp.ones((motor,), jnp.float32)
    params["output_b"] = jnp.zeros((motor,), jnp.float32)
    return {name: params[name] for name in PARAM_NAMES}


# ---------------------------------------------------------------- the cell


def ltc_step(
    params: Params,
    masks: LTCMasks,
    h_BU: jax.Array,
    x_BI: jax.Array,
    elapsed_time: float | jax.Array = 1.0,
    ode_unfolds: int = 6,
    epsilon: float = 1e-8,
) -> tuple[jax.Array, jax.Array]:
    """One LTC step: (y_BM, new h_BU) from state h_BU and input x_BI.

    `elapsed_time` is a scalar or a per-example (B,) array (irregular sampling);
    `ode_unfolds` must be a Python int (static under jit).
    """
    units, inputs = _check_params_and_masks(params, masks)
    _check_solver_settings(ode_unfolds)
    if jnp.ndim(x_BI) != 2 or jnp.shape(x_BI)[1] != inputs:
        raise ValueError(f"x must have shape (batch, {inputs}), got {jnp.shape(x_BI)}")
    batch = jnp.shape(x_BI)[0]
    if jnp.shape(h_BU) != (batch, units):
        raise ValueError(f"h must have shape ({batch}, {units}), got {jnp.shape(h_BU)}")
    dt_B = _elapsed_time_per_example(elapsed_time, (batch,))
    return _jitted_step(params, masks, h_BU, x_BI, dt_B, ode_unfolds, epsilon)


def ltc_sequence(
    params: Params,
    masks: LTCMasks,
    x_BTI: jax.Array,
    h0: jax.Array | None = None,
    elapsed_time: float | jax.Array = 1.0,
    ode_unfolds: int = 6,
    epsilon: float = 1e-8,
) -> tuple[jax.Array, jax.Array]:
    """Runs the cell over a sequence with `jax.lax.scan`: (y_BTM, h_seq_BTU).

    h_seq_BTU[:, t] is the state after step t (so h_seq_BTU[:, -1] is the final state);
    `h0` (B, U) defaults to zeros. `elapsed_time` is a scalar or a (B, T) array.
    """
    units, inputs = _check_params_and_masks(params, masks)
    _check_solver_settings(ode_unfolds)
    if jnp.ndim(x_BTI) != 3:
        raise ValueError(f"x must be 3-D (batch, time, {inputs}), got shape {jnp.shape(x_BTI)}")
    batch, steps, x_inputs = jnp.shape(x_BTI)
    if x_inputs != inputs:
        raise ValueError(f"x has {x_inputs} input features, the params expect {inputs}")
    if h0 is None:
        h0 = jnp.zeros((batch, units), jnp.result_type(x_BTI, jnp.float32))
    elif jnp.shape(h0) != (batch, units):
        raise ValueError(f"h0 must have shape ({batch}, {units}), got {jnp.shape(h0)}")
    dt_BT = _elapsed_time_per_example(elapsed_time, (batch, steps))
    return _scan_sequence(params, masks, x_BTI, h0, dt_BT, ode_unfolds, epsilon)


@functools.partial(jax.jit, static_argnames=("ode_unfolds",))
def _scan_sequence(params, masks, x_BTI, h0_BU, dt_BT, ode_unfolds, epsilon):
    """The unchecked sequence, jitted so that eager calls do not retrace the scan."""

    def body(h_BU, xs):
        x_BI, dt_B = xs
        y_BM, h_BU = _step(params, masks, h_BU, x_BI, dt_B, ode_unfolds, epsilon)
        return h_BU, (y_BM, h_BU)

    _, (y_TBM, h_TBU) = jax.lax.scan(
        body, h0_BU, (jnp.swapaxes(x_BTI, 0, 1), jnp.swapaxes(dt_BT, 0, 1))
    )
    return jnp.swapaxes(y_TBM, 0, 1), jnp.swapaxes(h_TBU, 0, 1)


def _step(params, masks, v_BU, x_BI, dt_B, ode_unfolds, epsilon):
    """The unchecked step; see the module docstring for the formulas."""
    gleak_U = jax.nn.softplus(params["gleak_raw"])
    cm_U = jax.nn.softplus(params["cm_raw"])
    w_UU = jax.nn.softplus(params["w_raw"])
    sensory_w_IU = jax.nn.softplus(params["sensory_w_raw"])
    mask_UU = jnp.abs(masks.adjacency).astype(w_UU.dtype)
    sensory_mask_IU = jnp.abs(masks.sensory_adjacency).astype(sensory_w_IU.dtype)

    x_BI = x_BI * params["input_w"][None, :] + params["input_b"][None, :]

    # Sensory synapses: fixed during the step, computed once. Axis 1 is the source.
    sensory_act_BIU = (sensory_w_IU * sensory_mask_IU)[None] * _synapse_sigmoid(
        x_BI, params["sensory_mu"], params["sensory_sigma"]
    )
    sensory_num_BU = jnp.sum(sensory_act_BIU * params["sensory_erev"][None], axis=1)
    sensory_den_BU = jnp.sum(sensory_act_BIU, axis=1)

    cm_t_BU = cm_U[None, :] / (dt_B[:, None] / ode_unfolds)
    leak_num_U = gleak_U * params["vleak"]
    masked_w_UU = w_UU * mask_UU

    def unfold(_, v_BU):
        act_BUU = masked_w_UU[None] * _synapse_sigmoid(v_BU, params["mu"], params["sigma"])
        numerator_BU = (
            cm_t_BU * v_BU
            + leak_num_U[None, :]
            + (jnp.sum(act_BUU * params["erev"][None], axis=1) + sensory_num_BU)
        )
        denominator_BU = cm_t_BU + gleak_U[None, :] + (jnp.sum(act_BUU, axis=1) + sensory_den_BU)
        return numerator_BU / (denominator_BU + epsilon)

    v_BU = jax.lax.fori_loop(0, ode_unfolds, unfold, v_BU)

    motor = masks.motor
    y_BM = v_BU[:, :motor] * params["output_w"][None, :] + params["output_b"][None, :]
    return y_BM, v_BU


_jitted_step = jax.jit(_step, static_argnames=("ode_unfolds",))


def _synapse_sigmoid(pre_BS, mu_SU, sigma_SU):
    """sigmoid(sigma[s, u] * (pre[b, s] - mu[s, u])) as (B, S, U)."""
    return jax.nn.sigmoid(sigma_SU[None] * (pre_BS[:, :, None] - mu_SU[None]))


# ---------------------------------------------------------------- validation


def _elapsed_time_per_example(elapsed_time, shape):
    dt = jnp.asarray(elapsed_time)
    if not jnp.issubdtype(dt.dtype, jnp.floating):
        dt = dt.astype(jnp.float32)
    if dt.ndim == 0:
        return jnp.broadcast_to(dt, shape)
    if dt.shape != shape:
        raise ValueError(f"elapsed_time must be a scalar or have shape {shape}, got {dt.shape}")
    return dt


def _check_solver_settings(ode_unfolds):
    if isinstance(ode_unfolds, bool) or not isinstance(ode_unfolds, int) or ode_unfolds < 1:
        raise ValueError(f"ode_unfolds must be a positive Python int, got {ode_unfolds!r}")


def _check_param_keys(params):
    if not isinstance(params, Mapping):
        raise ValueError(f"params must be a dict, got {type(params).__name__}")
    missing = sorted(set(PARAM_NAMES) - set(params))
    extra = sorted(set(params) - set(PARAM_NAMES))
    if missing or extra:
        raise ValueError(
            f"params: missing {missing}, unexpected {extra}; expected {list(PARAM_NAMES)}"
        )


def _check_wiring(adjacency, sensory_adjacency, motor):
    if jnp.ndim(adjacency) != 2 or jnp.shape(adjacency)[0] != jnp.shape(adjacency)[1]:
        raise ValueError(f"adjacency must be square (units, units), got {jnp.shape(adjacency)}")
    units = jnp.shape(adjacency)[0]
    if jnp.ndim(sensory_adjacency) != 2 or jnp.shape(sensory_adjacency)[1] != units:
        raise ValueError(
            f"sensory_adjacency must have shape (inputs, {units}), "
            f"got {jnp.shape(sensory_adjacency)}"
        )
    if isinstance(motor, bool) or not isinstance(motor, int | np.integer):
        raise ValueError(f"motor must be an int, got {motor!r}")
    if not 1 <= motor <= units:
        raise ValueError(f"motor must be in [1, units={units}], got {motor}")


def _check_params_and_masks(params, masks):
    """Checks every shape against the masks; returns (units, inputs)."""
    _check_param_keys(params)
    if not isinstance(masks, LTCMasks):
        raise ValueError(f"masks must be an LTCMasks, got {type(masks).__name__}")
    _check_wiring(masks.adjacency, masks.sensory_adjacency, masks.motor)
    units = jnp.shape(masks.adjacency)[0]
    inputs = jnp.shape(masks.sensory_adjacency)[0]
    expected = {
        "gleak_raw": (units,),
        "vleak": (units,),
        "cm_raw": (units,),
        "sigma": (units, units),
        "mu": (units, units),
        "w_raw": (units, units),
        "erev": (units, units),
        "sensory_sigma": (inputs, units),
        "sensory_mu": (inputs, units),
        "sensory_w_raw": (inputs, units),
        "sensory_erev": (inputs, units),
        "input_w": (inputs,),
        "input_b": (inputs,),
        "output_w": (masks.motor,),
        "output_b": (masks.motor,),
    }
    wrong = {
        name: (jnp.shape(params[name]), shape)
        for name, shape in expected.items()
        if jnp.shape(params[name]) != shape
    }
    if wrong:
        details = ", ".join(f"{n} is {got}, expected {want}" for n, (got, want) in wrong.items())
        raise ValueError(
            f"params do not match the masks (units={units}, inputs={inputs}, "
            f"motor={masks.motor}): {details}"
        )
    return units, inputs
