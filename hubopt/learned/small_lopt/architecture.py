r"""hubopt's own learned optimizer: a per-parameter MLP around an Adam anchor.

For every parameter tensor p with gradient g at step t (1-based) of a run of
T = `num_steps` steps, with Adam statistics m̂ (β = 0.9), v̂ (β₂ = 0.999):

    anchor     a   = m̂ / (sqrt(v̂) + ε)                       (Adam's direction)
    MLP        (d, s) = MLP_θ(features)                        per entry
    direction  u   = a + c_d · r · tanh(d)                     bounded correction
    magnitude  μ   = exp(c↑ tanh(s)) if s ≥ 0 else exp(c↓ tanh(s))
    scale      ρ   = max(rms(p), ρ_min)                        per tensor, like VeLO
    update     Δp  = −η · ρ · μ · u

where r = 1, or with `relative_correction` r = min(1, rms(a)) (the anchor's RMS over
the tensor): the correction then shrinks with the anchor when the gradients vanish, as
they do once a task is memorised. Without it the MLP's features (each normalised to
unit RMS) turn a vanishing gradient into O(1) inputs and the step stays η·ρ·μ per
entry: the parameters random-walk and the training loss spikes back up (the first
bundled optimizers did; `hubopt.bench.scoring.spike_ratio` measures it).

At θ = 0 (and at `init`, whose output layer is zero) the optimizer is exactly
"relative Adam": Δp = −η · max(rms(p), ρ_min) · m̂/(sqrt(v̂)+ε). With η = 1e-2
and ρ_min = 0.1 that is Adam(1e-3) on zero-initialised tensors and on weights of
RMS 0.1, and it grows with the weights like LARS/VeLO steps do (with `anchor_floor`,
the floored normalisation below in place of sqrt(v̂)+ε; with `step_decay`, times the decay).

Features per entry, each normalised over its tensor to unit RMS so that
rescaling the loss or the parameters leaves them unchanged:

    clip(g/(sqrt(v̂)+ε)), m̂_k/(sqrt(v̂)+ε) for β_k ∈ {0.5, 0.9, 0.99},
    Adafactor-normalised g and m̂_0.9, p/rms(p);

plus three features shared by all entries: training progress t/T and (t/T)²,
and the relative change of the loss, tanh((L − L̄)/|L̄|), L̄ an EMA of `value`.
With `factored_features=False` the two Adafactor features (and their state) are left
out. With `step_decay="cosine"` the step is multiplied by ½(1 + cos(π (t−1)/T)), the
decay a user gives Adam, by construction: the last steps of a run are small whatever
the MLP outputs, so a memorised task is not pushed back out of its minimum.
With `anchor_floor` the normalisation gets a floor relative to the tensor's own history,

    a = m̂ / (sqrt(v̂) + ε + κ · peak),   peak = max over steps s ≤ t of sqrt(mean(v̂_s))

(κ = `ANCHOR_FLOOR`, peak per tensor): while the gradients are within a factor 1/κ of
the largest they have been, this is Adam's direction; once a task is memorised and they
vanish below that, the anchor — and with `relative_correction` the whole direction —
shrinks with them, as gradient descent's step does, where Adam's normalised step stays
O(1) and random-walks the parameters out of their minimum (the late loss bumps that
`scoring.spike_ratio` measures).

State: 3 momenta + v̂ (about 4 floats per entry, kept for all tensors in one
`FlatLayout`, or per tensor in its own shape with layout="per_tensor", the one for
parameters sharded over devices) + factored rows/cols per tensor (none without
`factored_features`: exactly 16 bytes per parameter then, up to the layout's padding),
and with `anchor_floor` one float per tensor (the peak).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from hubopt._src.budget import warn_once_past_budget
from hubopt._src.flat_layout import BLOCK, FlatLayout, TensorLayout
from hubopt._src.input_checks import check_gradients, scalar_loss
from hubopt._src.missing_args import missing_argument
from hubopt.learned.small_lopt import _features as F

NUM_GLOBAL_FEATURES = 3

# A θ file's `gen_id` names the architecture variant its θ was meta-trained for, so that
# a θ never runs under another variant's update rule: GEN_ID, then one suffix per
# departure from the first variant, in this order.
GEN_ID = "hubopt_mlp_lopt"  # u = a + c_d·tanh(d)
GEN_ID_RELATIVE = "hubopt_mlp_lopt_relative"  # u = a + c_d·min(1, rms(a))·tanh(d)
_GEN_SUFFIXES = ("_relative", "_nofactored", "_cosine", "_floor", "_m2", "_m1")
# The momentum sets a θ file can name (momentum_decays, anchor_index), by their count:
# three is the first variant's; "_m2" / "_m1" name the leaner ones (fewer features, less
# state, a cheaper step).
MOMENTUM_SETS = {3: ((0.5, 0.9, 0.99), 1), 2: ((0.9, 0.99), 0), 1: ((0.9,), 0)}


def momentum_set(count: int) -> dict:
    """`MLPLOpt`'s momentum_decays and anchor_index for `count` momenta (3, 2 or 1)."""
    if count not in MOMENTUM_SETS:
        raise ValueError(f"momenta must be one of {sorted(MOMENTUM_SETS)}, got {count}")
    decays, anchor_index = MOMENTUM_SETS[count]
    return {"momentum_decays": decays, "anchor_index": anchor_index}


STEP_DECAYS = ("none", "cosine")
# κ of `anchor_floor`: the anchor's normalisation never falls below κ times the largest
# RMS of sqrt(v̂) the tensor has had (fixed with the variant, so a θ file's gen_id says it).
# Chosen on the meta-validation tasks over 3e-2, 1e-3 having left spikes in a first look
# (benchmarks/meta_runs/gen4_floor/README.md).
ANCHOR_FLOOR = 1e-2


class MLPLOptState(NamedTuple):
    """State of `MLPLOpt.optimizer`.

    count: steps taken (int32). With layout "flat": mom (K, num_blocks, BLOCK), the K
    momenta of all tensors of size > 0 in their `FlatLayout` (in the params' leaf
    order, each padded with zeros to whole blocks), nu (num_blocks, BLOCK) the EMA of
    g², laid out the same; with layout "per_tensor": per tensor, mom a tuple of K
    arrays and nu one array, each in the tensor's shape (so they shard as it does).
    fac_row / fac_col: per tensor, Adafactor rows and columns (for tensors below 2
    dims, fac_row is the EMA of g² and fac_col is empty); empty tuples without
    `factored_features`. loss_ema: EMA of the loss
    `value` (float32 scalar). grad_peak: with `anchor_floor`, per tensor the largest
    sqrt(mean(v̂)) so far — (num_tensors,) for layout "flat", a scalar per tensor for
    "per_tensor"; an empty tuple without it.
    """

    count: jax.Array
    mom: Any
    nu: Any
    fac_row: Any
    fac_col: Any
    loss_ema: jax.Array
    grad_peak: Any = ()


LAYOUTS = ("flat", "per_tensor")


def _check_state_fits(name: str, state, tree_def, grads, flat_layout) -> None:
    """A `ValueError` naming the problem when `state` was made by init for other params
    (`flat_layout`: the gradients' `FlatLayout`, None for layout "per_tensor")."""
    if flat_layout is None:
        try:
            nus = tree_def.flatten_up_to(state.nu)
        except (ValueError, TypeError):
            nus = None
        if nus is None or [jnp.shape(n) for n in nus] != [jnp.shape(g) for g in grads]:
            raise ValueError(
                f"{name}: its per-tensor state does not match these gradients' tree and "
                "shapes: the state was made by init for other params (or for layout='flat')"
            )
        return
    # a per-tensor state holds a tree of arrays here, not one array (no shape to compare)
    held = tuple(state.nu.shape) if hasattr(state.nu, "shape") else None
    if held != (flat_layout.num_blocks, BLOCK):
        what = "per-tensor statistics" if held is None else f"{held} entries in blocks of {BLOCK}"
        raise ValueError(
            f"{name}: its state holds {what}, these gradients need "
            f"({flat_layout.num_blocks}, {BLOCK}): the state was made by init for other params "
            "(or for layout='per_tensor')"
        )


def _layout(leaves) -> FlatLayout:
    """The `FlatLayout` of the tensors of size > 0 among `leaves` (in their order)."""
    return FlatLayout.of([jnp.shape(x) for x in leaves if jnp.size(x) > 0])


def _mlp_apply(theta: dict, feats_F: list[jax.Array], global_G: jax.Array) -> list[jax.Array]:
    """The per-entry MLP on [features, globals]: ReLU hidden layers, linear outputs.

    `feats_F` are F arrays of one shape (one feature each), `global_G` the G
    features shared by all entries; returns one array of that shape per output.
    Written unit by unit (h_j = Σ_i x_i W_ij + b_j on whole arrays) rather than
    as a matmul of an (N, F) matrix: XLA fuses it into one loop over the
    entries without materialising the (N, hidden) activations, 5-7× faster on
    CPU for a million entries. The globals' share of the first layer,
    global_G @ W₀[F:], is the same for every entry and joins the bias.
    """
    n_layers = len(theta)
    n_feat = len(feats_F)
    w0, b0 = theta["layer0"]["w"], theta["layer0"]["b"]
    bias = b0 + global_G @ w0[n_feat:]
    h = [sum(feats_F[i] * w0[i, j] for i in range(n_feat)) + bias[j] for j in range(w0.shape[1])]
    for layer_index in range(1, n_layers):
        h = [jax.nn.relu(x) for x in h]
        w, b = theta[f"layer{layer_index}"]["w"], theta[f"layer{layer_index}"]["b"]
        h = [sum(h[i] * w[i, j] for i in range(len(h))) + b[j] for j in range(w.shape[1])]
    return h


@dataclasses.dataclass(frozen=True)
class MLPLOpt:
    """A per-parameter MLP learned optimizer anchored on Adam (see module doc).

    Attributes:
      hidden_sizes: widths of the MLP's hidden layers.
      step_mult: η, the relative step size.
      rms_floor: ρ_min, the floor of the per-tensor RMS scale (for zero-initialised
        tensors such as biases).
      momentum_decays: the momentum decays used as features; `anchor_index` picks
        the anchor's momentum among them.
      second_decay: β₂ of v̂ and the factored statistics.
      eps: ε of the normalisations.
      dir_bound: c_d, the bound of the learned direction correction.
      log_mag_up / log_mag_down: c↑ / c↓, bounds of the learned log step multiplier.
      relative_correction: scale the learned correction by r = min(1, rms(anchor)).
      factored_features: feed the two Adafactor-normalised features (and keep their
        row and column statistics in the state).
      step_decay: "none", or "cosine": the step times ½(1 + cos(π (t−1)/T)) (and 0
        past T steps, like optax's cosine decay to zero).
      anchor_floor: floor the anchor's normalisation at `ANCHOR_FLOOR` times the
        tensor's peak gradient RMS (see module doc).
    """

    hidden_sizes: tuple[int, ...] = (32,)
    step_mult: float = 1e-2
    rms_floor: float = 0.1
    momentum_decays: tuple[float, ...] = (0.5, 0.9, 0.99)
    anchor_index: int = 1
    second_decay: float = 0.999
    eps: float = 1e-8
    dir_bound: float = 1.0
    log_mag_up: float = math.log(4.0)
    log_mag_down: float = 4.0
    relative_correction: bool = False
    factored_features: bool = True
    step_decay: str = "none"
    anchor_floor: bool = False

    def __post_init__(self):
        if self.step_decay not in STEP_DECAYS:
            raise ValueError(f"step_decay must be one of {STEP_DECAYS}, got {self.step_decay!r}")
        if not self.momentum_decays or not all(0.0 <= b < 1.0 for b in self.momentum_decays):
            raise ValueError(f"momentum_decays must be in [0, 1), got {self.momentum_decays}")
        if not 0 <= self.anchor_index < len(self.momentum_decays):
            raise ValueError(f"anchor_index must index momentum_decays, got {self.anchor_index}")
        if any(int(h) <= 0 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive, got {self.hidden_sizes}")
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))

    def _variant_flags(self) -> tuple[bool, ...]:
        """Which of `_GEN_SUFFIXES` this variant departs by."""
        momenta = (tuple(self.momentum_decays), self.anchor_index)
        if momenta not in MOMENTUM_SETS.values():
            raise ValueError(
                f"momentum_decays {self.momentum_decays} with anchor_index {self.anchor_index} "
                "have no gen_id, so a θ file could not say which optimizer it belongs to "
                f"(known: {list(MOMENTUM_SETS.values())})"
            )
        return (
            self.relative_correction,
            not self.factored_features,
            self.step_decay == "cosine",
            self.anchor_floor,
            momenta == MOMENTUM_SETS[2],
            momenta == MOMENTUM_SETS[1],
        )

    @property
    def gen_id(self) -> str:
        """The `gen_id` of this variant's θ files (see `GEN_ID`)."""
        flags = self._variant_flags()
        return GEN_ID + "".join(s for s, on in zip(_GEN_SUFFIXES, flags, strict=True) if on)

    @classmethod
    def for_gen_id(cls, gen_id: str, hidden_sizes, where: str = "theta") -> MLPLOpt:
        """The variant a θ file with this `gen_id` belongs to ("" = the first variant)."""
        rest = gen_id.removeprefix(GEN_ID) if gen_id else ""
        flags = [False] * len(_GEN_SUFFIXES)
        for i, suffix in enumerate(_GEN_SUFFIXES):
            if rest.startswith(suffix):
                flags[i], rest = True, rest.removeprefix(suffix)
        if gen_id and (not gen_id.startswith(GEN_ID) or rest):
            raise ValueError(
                f"{where}: gen_id {gen_id!r} names no MLPLOpt variant (known: {GEN_ID!r} "
                f"followed by any of {', '.join(map(repr, _GEN_SUFFIXES))}, in that order)"
            )
        relative, no_factored, cosine, floor, two, one = flags
        if two and one:
            raise ValueError(
                f"{where}: gen_id {gen_id!r} names no MLPLOpt variant (two momentum sets)"
            )
        return cls(
            hidden_sizes=tuple(hidden_sizes),
            **momentum_set(2 if two else 1 if one else 3),
            relative_correction=relative,
            factored_features=not no_factored,
            step_decay="cosine" if cosine else "none",
            anchor_floor=floor,
        )

    @property
    def num_features(self) -> int:
        # clipped g, K momenta, 2 Adafactor-normalised, p/rms(p); then the globals
        factored = 2 if self.factored_features else 0
        return 1 + len(self.momentum_decays) + factored + 1 + NUM_GLOBAL_FEATURES

    def layer_sizes(self) -> list[int]:
        return [self.num_features, *self.hidden_sizes, 2]

    def init(self, key: jax.Array) -> dict:
        """Meta-parameters θ: He-initialised hidden layers, a zero output layer.

        The zero output layer makes the initial optimizer exactly the anchor.
        """
        sizes = self.layer_sizes()
        keys = jax.random.split(key, len(sizes) - 1)
        theta = {}
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            last = i == len(sizes) - 2
            w = (
                jnp.zeros((n_in, n_out), jnp.float32)
                if last
                else jax.random.normal(keys[i], (n_in, n_out), jnp.float32) * math.sqrt(2.0 / n_in)
            )
            theta[f"layer{i}"] = {"w": w, "b": jnp.zeros((n_out,), jnp.float32)}
        return theta

    def num_meta_params(self) -> int:
        sizes = self.layer_sizes()
        return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))

    def _check_theta(self, theta) -> None:
        sizes = self.layer_sizes()
        if not isinstance(theta, dict) or len(theta) != len(sizes) - 1:
            raise ValueError(
                f"theta must be a dict with {len(sizes) - 1} layers for layer sizes {sizes}"
            )
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layer = theta.get(f"layer{i}")
            if (
                layer is None
                or tuple(jnp.shape(layer["w"])) != (n_in, n_out)
                or tuple(jnp.shape(layer["b"])) != (n_out,)
            ):
                raise ValueError(
                    f"theta['layer{i}'] must have w of shape {(n_in, n_out)} and b of "
                    f"shape {(n_out,)} for layer sizes {sizes}"
                )

    def optimizer(
        self,
        theta: dict,
        num_steps,
        *,
        name: str = "MLPLOpt",
        warn_past_budget: bool = True,
        layout: str = "flat",
    ) -> optax.GradientTransformationExtraArgs:
        """The optimizer with meta-parameters θ for a run of `num_steps` steps.

        `update(grads, state, params, *, value)` needs the params and the loss; errors
        name the optimizer `name`. `num_steps` may be a traced scalar (meta-training
        varies it). Past `num_steps` its schedule features stay at the end of the
        run (t/T = 1); with a Python int `num_steps`, the first step past it warns
        once, from the host (`UserWarning`), as a run longer than its budget is
        usually a wrong `num_steps`. `warn_past_budget=False` leaves that host callback
        out, for a loop that never runs past `num_steps` (JAX's persistent compilation
        cache does not keep programs with host callbacks).

        `layout`: "flat" runs the update on all tensors at once (`FlatLayout`: one
        copy of it in the program, fast to compile); "per_tensor" runs it tensor by
        tensor in each tensor's own shape (`TensorLayout`), for parameters sharded over
        devices: every operation is elementwise or a reduction over a tensor, so no
        tensor is gathered. The same update either way (up to float rounding); the
        states differ (see `MLPLOptState`).
        """
        self._check_theta(theta)
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        per_tensor = layout == "per_tensor"
        if isinstance(num_steps, int | float) and num_steps <= 0:
            raise ValueError(f"num_steps must be positive, got {num_steps}")
        decays = jnp.asarray(self.momentum_decays, jnp.float32)
        cfg = self
        # a Python int budget warns past its end; a traced one (meta-training) does not
        budget_is_known = isinstance(num_steps, int) and not isinstance(num_steps, bool)
        warns = budget_is_known and warn_past_budget

        def init_fn(params):
            leaves = jax.tree_util.tree_leaves(params)
            if not leaves and params is None:
                raise ValueError("MLPLOpt.init needs the params tree")
            if cfg.factored_features:
                fac = jax.tree_util.tree_map(F.factored_init, params)
                is_fac = lambda x: isinstance(x, F.Factored)  # noqa: E731
                fac_row = jax.tree_util.tree_map(lambda f: f.row, fac, is_leaf=is_fac)
                fac_col = jax.tree_util.tree_map(lambda f: f.col, fac, is_leaf=is_fac)
            else:
                fac_row = fac_col = ()
            grad_peak = ()
            if per_tensor:
                zeros = lambda p: jnp.zeros(jnp.shape(p), jnp.float32)  # noqa: E731
                mom = jax.tree_util.tree_map(lambda p: (zeros(p),) * decays.shape[0], params)
                nu = jax.tree_util.tree_map(zeros, params)
                if cfg.anchor_floor:
                    grad_peak = jax.tree_util.tree_map(lambda p: jnp.zeros((), jnp.float32), params)
            else:
                flat_layout = _layout(leaves)
                mom = jnp.zeros((decays.shape[0], flat_layout.num_blocks, BLOCK), jnp.float32)
                nu = jnp.zeros((flat_layout.num_blocks, BLOCK), jnp.float32)
                if cfg.anchor_floor:
                    grad_peak = jnp.zeros((flat_layout.num_tensors,), jnp.float32)
            return MLPLOptState(
                count=jnp.zeros((), jnp.int32),
                mom=mom,
                nu=nu,
                fac_row=fac_row,
                fac_col=fac_col,
                loss_ema=jnp.zeros((), jnp.float32),
                grad_peak=grad_peak,
            )

        def update_fn(updates, state: MLPLOptState, params=None, *, value=None, **extra_args):
            del extra_args
            if params is None:
                raise missing_argument(name, "params")
            if value is None:
                raise missing_argument(name, "value")
            check_gradients(name, updates, params)
            count = state.count + 1
            if warns:
                warn_once_past_budget(name, count, num_steps)
            value = scalar_loss(name, value)
            loss_ema = jnp.where(state.count == 0, value, state.loss_ema)
            loss_feat = jnp.tanh((value - loss_ema) / (jnp.abs(loss_ema) + 1e-8))
            new_loss_ema = 0.9 * loss_ema + 0.1 * value
            budget = jnp.asarray(num_steps, jnp.float32)
            frac = jnp.clip(count.astype(jnp.float32) / budget, 0.0, 1.0)  # t/T
            global_feats = jnp.stack([frac, frac * frac, loss_feat])
            step_scale = None
            if cfg.step_decay == "cosine":  # ½(1 + cos(π (t−1)/T)): 1 at the first step
                done = jnp.clip(state.count.astype(jnp.float32) / budget, 0.0, 1.0)
                step_scale = 0.5 * (1.0 + jnp.cos(jnp.pi * done))

            tree_def = jax.tree_util.tree_structure(updates)
            flat = lambda t: tree_def.flatten_up_to(t)  # noqa: E731
            grads = flat(updates)
            flat_layout = None if per_tensor else _layout(grads)
            _check_state_fits(name, state, tree_def, grads, flat_layout)
            if cfg.factored_features:
                facs = [
                    F.factored_update(F.Factored(row, col), g, cfg.second_decay)
                    for g, row, col in zip(
                        grads, flat(state.fac_row), flat(state.fac_col), strict=True
                    )
                ]
            else:
                facs = [None] * len(grads)
            steps = [jnp.zeros_like(g) for g in grads]
            mom, nu, peak = state.mom, state.nu, state.grad_peak
            live = [i for i, g in enumerate(grads) if g.size > 0]
            args = (theta, global_feats, step_scale, decays, count)
            ps = flat(params)
            unflat = lambda xs: tree_def.unflatten(list(xs))  # noqa: E731
            if per_tensor:  # each tensor on its own, in its shape
                moms, nus = flat(mom), flat(nu)
                peaks = flat(peak) if cfg.anchor_floor else [None] * len(grads)
                for i in live:
                    (step,), m, nus[i], pk = cfg._update_live(
                        TensorLayout(grads[i].shape),
                        *args,
                        [grads[i]],
                        [ps[i]],
                        jnp.stack(moms[i]),
                        nus[i],
                        None if peaks[i] is None else peaks[i].reshape(1),
                        [facs[i]],
                    )
                    moms[i] = tuple(m)
                    if cfg.anchor_floor:
                        peaks[i] = pk.reshape(())
                    steps[i] = step.astype(grads[i].dtype)
                mom, nu = unflat(moms), unflat(nus)
                if cfg.anchor_floor:
                    peak = unflat(peaks)
            elif live:  # all tensors at once
                pick = lambda xs: [xs[i] for i in live]  # noqa: E731
                # without the floor, peak is the state's empty tuple and comes back as is
                live_steps, mom, nu, peak = cfg._update_live(
                    flat_layout, *args, pick(grads), pick(ps), mom, nu, peak, pick(facs)
                )
                for i, step in zip(live, live_steps, strict=True):
                    steps[i] = step.astype(grads[i].dtype)
            new_state = MLPLOptState(
                count=count,
                mom=mom,
                nu=nu,
                fac_row=unflat(f.row for f in facs) if cfg.factored_features else (),
                fac_col=unflat(f.col for f in facs) if cfg.factored_features else (),
                loss_ema=new_loss_ema,
                grad_peak=peak,
            )
            return unflat(steps), new_state

        return optax.GradientTransformationExtraArgs(init_fn, update_fn)

    def _update_live(
        self,
        layout,
        theta,
        global_feats,
        step_scale,
        decays,
        count,
        grads,
        params,
        mom,
        nu,
        peak,
        facs,
    ):
        """The steps of the tensors of size > 0 in `layout`, and the new momenta, second
        moment and per-tensor peak of sqrt(mean(v̂)) (`peak` returned as is without
        `anchor_floor`).

        With a `FlatLayout`, computed on all tensors at once (per-tensor means as block
        sums plus a segment sum): one copy of the update in the program, not one per
        tensor, so compiling costs about the same for 8 tensors or 800. Padding entries
        have g = p = m = v = 0, so every feature, the anchor and the step are 0 there.
        With a `TensorLayout`, the same on one tensor in its own shape.
        """
        g = layout.flatten(grads)
        p = layout.flatten(params)
        mom = F.ema_update(mom, g, decays)
        nu = self.second_decay * nu + (1.0 - self.second_decay) * jnp.square(g)

        m_hat_K = mom / F.bias_correction(decays, count).reshape((-1,) + (1,) * layout.entry_ndim)
        v_bc = F.bias_correction(self.second_decay, count)
        v_hat = nu / v_bc
        denom = jnp.sqrt(v_hat) + self.eps
        if self.anchor_floor:
            peak = jnp.maximum(peak, jnp.sqrt(layout.tensor_mean(v_hat)))
            denom = denom + ANCHOR_FLOOR * layout.per_entry(peak)
        anchor = m_hat_K[self.anchor_index] / denom
        p_rms = jnp.sqrt(layout.tensor_mean(jnp.square(p)))
        tensor_feats = [
            jnp.clip(g / denom, -5.0, 5.0),
            *(m_hat_K[k] / denom for k in range(len(self.momentum_decays))),
        ]
        if self.factored_features:
            fac_v = layout.flatten(
                [F.factored_second_moment(f, x.ndim) for f, x in zip(facs, grads, strict=True)]
            )
            fac_rs = jax.lax.rsqrt(fac_v / v_bc + self.eps**2)
            tensor_feats += [jnp.clip(g * fac_rs, -5.0, 5.0), m_hat_K[self.anchor_index] * fac_rs]
        tensor_feats.append(p / jnp.maximum(layout.per_entry(p_rms), 1e-30))
        # each feature normalised to unit RMS over its tensor: f / sqrt(mean(f²) + 1e-12)
        norms = [
            layout.per_entry(jax.lax.rsqrt(layout.tensor_mean(jnp.square(f)) + 1e-12))
            for f in tensor_feats
        ]
        correction_scale = 1.0
        if self.relative_correction:
            anchor_rms = jnp.sqrt(layout.tensor_mean(jnp.square(anchor)))
            correction_scale = layout.per_entry(jnp.minimum(1.0, anchor_rms))
        scale = layout.per_entry(jnp.maximum(p_rms, self.rms_floor))
        step_mult = self.step_mult if step_scale is None else self.step_mult * step_scale

        def mlp_step():
            feats = [f * n for f, n in zip(tensor_feats, norms, strict=True)]
            d, s = _mlp_apply(theta, feats, global_feats)
            direction = anchor + self.dir_bound * jnp.tanh(d) * correction_scale
            ts = jnp.tanh(s)
            log_mag = jnp.where(ts >= 0, self.log_mag_up * ts, self.log_mag_down * ts)
            return -step_mult * scale * jnp.exp(log_mag) * direction

        if isinstance(layout, FlatLayout):
            # The MLP behind a conditional: its two outputs d and s feed every tensor's
            # slice of the joined step, and without the boundary XLA computes the hidden
            # layer twice over all entries (once for tanh(d), once for exp(·s)); inside
            # a branch whose one result is the step, it is computed once (1.2-1.3x
            # faster). The other branch is taken only for a NaN loss feature, where
            # every step is NaN anyway (the MLP's bias is).
            step = jax.lax.cond(
                jnp.all(jnp.isfinite(global_feats)), mlp_step, lambda: jnp.full_like(g, jnp.nan)
            )
        else:
            step = mlp_step()
        return layout.unflatten(step), mom, nu, peak
