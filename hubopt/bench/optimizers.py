"""Optimizers by name, for the runner, the demo and the CLI.

An optimizer is described by a plain dict (a "spec") so that a record can say
exactly what ran, and `build(spec, num_steps)` makes the optax transform:

    {"name": "adam", "learning_rate": 1e-3}            # also "adamax", "adamw", with the
                                                       # keyword args of
                                                       # hubopt.baselines.hand_optimizer
    {"name": "velo"}                                   # VeLO, from `hubopt velo download`
    {"name": "small"}                                  # hubopt's bundled learned optimizer
    {"name": "theta", "path": "runs/x/theta.msgpack"}  # hubopt's, with the θ in that file
    {"name": "hub",   "hand": H, "learned": L, "mode": "default", "clip": None,
     "blocks": "finetune", "sigma": "rank"}            # blocks optional: a `BLOCK_RULES`
                                                       # name; sigma optional (softmax)
    {"name": "lgl2o", "hand": H, "learned": L}
    {"name": "blend", "hand": H, "learned": L, "lam": 0.5}

where H is a hand spec and L a learned spec: {"name": "velo"}, {"name":
"small"}, {"name": "theta", ...}, or {"name": "stand-in", "optimizer":
H} — a hand-designed optimizer put in the learned slot when no learned optimizer is available,
labelled as such everywhere ("stand-in adamax@0.002"). `resolve_learned()`
says which learned optimizer this machine has: VeLO if its checkpoint is
cached, else the bundled hubopt one if it is present, else none (with the
reasons and how to get one).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any

import optax

from hubopt import learned as learned_optimizers

HAND = ("adam", "adamax", "adamw")
LEARNED = ("velo", "small", "theta")
COMBINED = ("hub", "lgl2o", "blend")
NAMES = HAND + LEARNED + COMBINED


HOW_TO_GET_LEARNED = (
    "run `hubopt velo download` (needs network, once) to cache VeLO's official checkpoint; "
    "hubopt's own bundled learned optimizer is used when the package ships it "
    "(`hubopt.learned.small`)"
)


def finetune_blocks(params) -> Any:
    """Block-wise HUB for fine-tuning: the new head (the params' top-level sub-tree "head")
    "default", the pretrained backbone (everything else) "inverted"."""
    if not isinstance(params, dict) or "head" not in params:
        keys = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise OptimizerSpecError(
            f"blocks=finetune needs params with a top-level 'head' sub-tree (the new head), "
            f"got {keys}"
        )
    import jax

    return {
        key: jax.tree.map(lambda _, mode=("default" if key == "head" else "inverted"): mode, sub)
        for key, sub in params.items()
    }


# name -> params -> a tree of HUB modes (`hubopt.hub(..., blocks=...)`)
BLOCK_RULES = {"finetune": finetune_blocks}


class OptimizerSpecError(ValueError):
    """An optimizer spec that names an unknown optimizer or has bad fields."""


@dataclass(frozen=True)
class Built:
    """An optimizer ready to run, with what a record needs to describe it."""

    tx: optax.GradientTransformationExtraArgs
    label: str
    spec: dict
    learned: dict | None = None  # {"kind", "is_learned", "label"} of the learned slot


@dataclass(frozen=True)
class LearnedChoice:
    """Which learned optimizer is available: `spec` is None when none is."""

    spec: dict | None
    reason: str
    notes: list[str] = field(default_factory=list)

    @property
    def available(self) -> bool:
        return self.spec is not None


# --------------------------------------------------------------------------- labels


def _fmt(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def label(spec: dict) -> str:
    """Short legend text for `spec`: "adam@0.001", "hub(adam@0.001 | velo)", ..."""
    name = spec.get("name")
    if name in HAND:
        text = f"{name}@{_fmt(spec.get('learning_rate', 1e-3))}"
        if spec.get("schedule"):
            text += f"+{spec['schedule']}"
        return text
    if name == "velo":
        return "velo"
    if name == "small":
        return "small"
    if name == "theta":
        return f"theta({spec.get('path')})"
    if name == "stand-in":
        return f"stand-in {label(spec['optimizer'])}"
    if name in COMBINED:
        extra = []
        if name == "hub" and spec.get("mode", "default") != "default":
            extra.append(spec["mode"])
        if name == "hub" and spec.get("sigma", "softmax") != "softmax":
            extra.append(f"sigma={spec['sigma']}")
        if name == "hub" and spec.get("clip") is not None:
            extra.append("clip=" + ",".join(_fmt(float(c)) for c in spec["clip"]))
        if name == "hub" and spec.get("blocks") is not None:
            extra.append(f"blocks={spec['blocks']}")
        if name == "blend":
            extra.append(f"λ={_fmt(float(spec['lam']))}")
        head = name + (f"[{'; '.join(extra)}]" if extra else "")
        return f"{head}({label(spec['hand'])} | {label(spec['learned'])})"
    raise OptimizerSpecError(
        f"unknown optimizer name {name!r}{_renamed(name)}; known: {', '.join(NAMES)}"
    )


def _renamed(name) -> str:
    """Where `name` is the bundled optimizer's old name, what to write now."""
    if name == "pretrained":
        return ' (the bundled learned optimizer is now {"name": "small"}, spec text small)'
    return ""


def learned_slot(spec: dict) -> dict | None:
    """What fills the learned slot of `spec`: kind, whether it is learned, label."""
    name = spec.get("name")
    if name in LEARNED:
        return {"kind": name, "is_learned": True, "label": label(spec)}
    if name in COMBINED:
        inner = spec["learned"]
        return {
            "kind": inner["name"],
            "is_learned": inner["name"] != "stand-in",
            "label": label(inner),
        }
    return None


# --------------------------------------------------------------------------- building


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptimizerSpecError(f"{name} must be a positive int, got {value!r}")
    return value


def _build_hand(spec: dict, num_steps: int):
    from hubopt.baselines.presets import HAND_SPEC_KEYS, from_spec

    unknown = set(spec) - {"name", *HAND_SPEC_KEYS}
    if unknown:
        raise OptimizerSpecError(
            f"hand optimizer {spec['name']!r}: unknown field(s) {sorted(unknown)}; "
            f"allowed: {list(HAND_SPEC_KEYS)}"
        )
    return from_spec(spec, num_steps)


def _build_learned(spec: dict, num_steps: int, warn: bool = True):
    name = spec["name"]
    if name == "velo":
        return learned_optimizers.velo(num_steps, warn_past_budget=warn)
    if name == "small":
        return learned_optimizers.small(num_steps=num_steps, warn_past_budget=warn)
    if name == "theta":
        path = spec.get("path")
        if not isinstance(path, str) or not path:
            raise OptimizerSpecError(f"a theta spec needs a 'path' (a θ file), got {spec!r}")
        try:
            return learned_optimizers.from_theta_file(
                path, num_steps=num_steps, warn_past_budget=warn
            )
        except (OSError, ValueError) as e:
            raise OptimizerSpecError(f"theta(path={path}): {e}") from e
    raise OptimizerSpecError(
        f"{name!r} is not a learned optimizer{_renamed(name)}; known: {LEARNED}"
    )


def _build_member(role: str, spec: dict, num_steps: int, warn: bool = True):
    if not isinstance(spec, dict) or "name" not in spec:
        raise OptimizerSpecError(f"{role} must be a spec dict with a 'name', got {spec!r}")
    name = spec["name"]
    if role == "hand":
        if name not in HAND:
            raise OptimizerSpecError(f"hand must be one of {HAND}, got {name!r}")
        return _build_hand(spec, num_steps)
    if name == "stand-in":
        inner = spec.get("optimizer")
        if not isinstance(inner, dict) or inner.get("name") not in HAND:
            raise OptimizerSpecError(
                f"a stand-in must name a hand-designed optimizer {HAND}, got {inner!r}"
            )
        return _build_hand(inner, num_steps)
    if name not in LEARNED:
        raise OptimizerSpecError(f"learned must be one of {LEARNED} or 'stand-in', got {name!r}")
    return _build_learned(spec, num_steps, warn)


def build(spec: dict, num_steps: int, *, warn_past_budget: bool = True) -> Built:
    """The optax transform for `spec` over a run of `num_steps` steps.

    `warn_past_budget=False`: its learned optimizers leave out their warning past
    `num_steps` (a host callback), for a loop that runs exactly `num_steps` steps, as
    the benchmark runner does: JAX's persistent compilation cache keeps no program
    with a host callback."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise OptimizerSpecError(f"an optimizer spec must be a dict with a 'name', got {spec!r}")
    _check_positive_int("num_steps", num_steps)
    spec = copy.deepcopy(spec)
    name = spec["name"]
    if name in HAND:
        tx = _build_hand(spec, num_steps)
    elif name in LEARNED:
        tx = _build_learned(spec, num_steps, warn_past_budget)
    elif name in COMBINED:
        for role in ("hand", "learned"):
            if role not in spec:
                raise OptimizerSpecError(f"{name} needs a {role!r} spec")
        hand = _build_member("hand", spec["hand"], num_steps)
        learned = _build_member("learned", spec["learned"], num_steps, warn_past_budget)
        if name == "hub":
            from hubopt import SIGMA_RULES, hub

            unknown = set(spec) - {"name", "hand", "learned", "mode", "sigma", "clip", "blocks"}
            if unknown:
                raise OptimizerSpecError(f"hub: unknown field(s) {sorted(unknown)}")
            sigma = spec.get("sigma", "softmax")
            if sigma not in SIGMA_RULES:
                raise OptimizerSpecError(
                    f"hub: unknown sigma rule {sigma!r}; known: {', '.join(SIGMA_RULES)}"
                )
            clip = spec.get("clip")
            blocks = spec.get("blocks")
            if blocks is not None and blocks not in BLOCK_RULES:
                raise OptimizerSpecError(
                    f"hub: unknown block rule {blocks!r}; known: {', '.join(BLOCK_RULES)}"
                )
            tx = hub(
                hand,
                learned,
                mode=spec.get("mode", "default"),
                sigma=sigma,
                clip=None if clip is None else tuple(clip),
                blocks=None if blocks is None else BLOCK_RULES[blocks],
            )
        elif name == "lgl2o":
            from hubopt.baselines import lgl2o

            tx = lgl2o(hand, learned)
        else:
            from hubopt.baselines import blend

            if "lam" not in spec:
                raise OptimizerSpecError("blend needs 'lam' (the hand weight λ in [0, 1])")
            tx = blend(hand, learned, spec["lam"])
    else:
        raise OptimizerSpecError(
            f"unknown optimizer {name!r}{_renamed(name)}; known: {', '.join(NAMES)}"
        )
    slot = learned_slot(spec)
    if slot is not None and slot["kind"] == "velo":
        slot.update(_velo_provenance())
    if slot is not None and slot["kind"] == "small":
        from hubopt.learned.small_lopt.bundled import theta_sha256

        slot["theta_sha256"] = theta_sha256()
    if slot is not None and slot["kind"] == "theta":
        from hubopt._src.file_hash import file_sha256

        path = _learned_spec(spec)["path"]
        slot.update(theta_path=os.path.abspath(path), theta_sha256=file_sha256(path))
    return Built(tx=tx, label=label(spec), spec=spec, learned=slot)


def _learned_spec(spec: dict) -> dict:
    """The spec of whatever fills `spec`'s learned slot (itself, alone)."""
    return spec["learned"] if spec.get("name") in COMBINED else spec


def _velo_provenance() -> dict:
    """The cached VeLO checkpoint's path and recorded SHA-256, for the record."""
    try:
        from hubopt.learned.velo_lopt.fetch import velo_cache_path

        path = velo_cache_path()
        sha_file = path.with_name(path.name + ".sha256")
        sha = sha_file.read_text().split()[0] if sha_file.is_file() else None
        return {"checkpoint": str(path), "sha256": sha}
    except Exception as e:  # provenance is best effort; the build itself succeeded
        return {"checkpoint": None, "sha256": None, "provenance_error": str(e)}


def hyperparameters(spec: dict) -> dict[str, Any]:
    """A flat summary of `spec` ("hand.learning_rate": 1e-3, "mode": ...) for records."""
    flat: dict[str, Any] = {}

    def visit(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                visit(value, f"{prefix}{key}.")
            else:
                flat[prefix + key] = list(value) if isinstance(value, tuple) else value

    visit(spec, "")
    return flat


# --------------------------------------------------------------------------- diagnostics


def diagnostics(spec: dict, state) -> dict:
    """End-of-run statistics of the combined optimizers (HUB σ and hand share, LGL2O wins)."""
    name = spec.get("name")
    if name == "hub":
        from hubopt import hub_stats

        return {"hub": hub_stats(state)}
    if name == "lgl2o":
        from hubopt.baselines import lgl2o_stats

        return {"lgl2o": lgl2o_stats(state)}
    return {}


# --------------------------------------------------------------------------- learned choice


def _velo_status() -> tuple[bool, str]:
    try:
        from hubopt.learned.velo_lopt.fetch import velo_cache_path

        path = velo_cache_path()
    except Exception as e:  # the VeLO module may not exist yet in this checkout
        return False, f"VeLO is not importable ({type(e).__name__}: {e})"
    if not path.exists():
        return False, f"VeLO checkpoint not cached at {path}"
    try:
        learned_optimizers.velo  # noqa: B018  (imports the VeLO module)
    except Exception as e:
        return False, f"VeLO checkpoint cached at {path} but hubopt.learned.velo fails: {e}"
    return True, f"VeLO, with the checkpoint cached by `hubopt velo download` at {path}"


def _small_status() -> tuple[bool, str]:
    try:
        learned_optimizers.small(num_steps=10)
    except Exception as e:  # absent from a checkout without the bundled θ
        return False, f"the bundled small not available ({type(e).__name__}: {e})"
    return True, "hubopt's bundled learned optimizer small"


def resolve_learned(prefer: str = "auto") -> LearnedChoice:
    """The learned optimizer to use: `prefer` is "auto", "velo", "small" or "none".

    "auto" takes VeLO if its checkpoint is cached, else the bundled hubopt
    optimizer if present, else none. Naming one that is unavailable gives
    none, with the reason (callers decide whether that is an error).
    """
    if prefer not in ("auto", "velo", "small", "none"):
        raise OptimizerSpecError(
            f"learned must be 'auto', 'velo', 'small' or 'none', got {prefer!r}"
        )
    if prefer == "none":
        return LearnedChoice(None, "no learned optimizer requested (--learned none)")
    notes = []
    if prefer in ("auto", "velo"):
        ok, why = _velo_status()
        if ok:
            return LearnedChoice({"name": "velo"}, why)
        notes.append(why)
    if prefer in ("auto", "small"):
        ok, why = _small_status()
        if ok:
            return LearnedChoice({"name": "small"}, why, notes)
        notes.append(why)
    return LearnedChoice(None, "no learned optimizer is available: " + "; ".join(notes), notes)
