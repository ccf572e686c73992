"""Where the bundled optimizer's loss spikes come from (issue 12): its θ under variants of
the update rule, side by side on held-out tasks over a long run.

    shipped      the update as shipped: u = a + c_d·tanh(d)
    anchor_clip  the Adam anchor a clipped to [−1, 1]
    relative     the correction scaled by min(1, rms(a)) (`relative_correction=True`)
    theta_zero   θ = 0: the anchor alone ("relative Adam")
    adam_cosine  Adam(1e-3) with warm-up (1/10) + cosine decay

For each: the final loss on the whole training split and the spike ratio
(`hubopt.bench.scoring.spike_ratio`) of the per-step (minibatch) training losses.
The θ was meta-trained for the shipped rule, so the variants only say where the
spikes come from, not how a θ trained for them would do.

    python benchmarks/spike_variants.py --steps 5000 \\
        --tasks digits_mlp48relub64,cancer_mlp32relub32
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import jax
import jax.numpy as jnp
import optax

from hubopt.bench import optimizers, runner, scoring
from hubopt.learned.small_lopt import bundled
from hubopt.learned.small_lopt.architecture import MLPLOpt
from hubopt.tasks import lopt_heldout

VARIANTS = ("shipped", "anchor_clip", "relative", "theta_zero", "adam_cosine")


@dataclasses.dataclass(frozen=True)
class _AnchorClipped(MLPLOpt):
    """The shipped rule with the anchor m̂/(sqrt(v̂)+ε) clipped to [−1, 1]."""

    def _leaf_statistics(self, decays, count, g, p, mom, nu, row, col):
        leaf = super()._leaf_statistics(decays, count, g, p, mom, nu, row, col)
        if leaf.anchor is None:
            return leaf
        return leaf._replace(anchor=jnp.clip(leaf.anchor, -1.0, 1.0))


def optimizer(variant: str, num_steps: int) -> optax.GradientTransformation:
    lopt, theta = bundled.load("small")
    hidden = lopt.hidden_sizes
    if variant == "adam_cosine":
        schedule = optax.warmup_cosine_decay_schedule(0.0, 1e-3, num_steps // 10, num_steps)
        return optax.adam(schedule)
    if variant == "anchor_clip":
        return _AnchorClipped(hidden_sizes=hidden).optimizer(theta, num_steps)
    if variant == "relative":
        return MLPLOpt(hidden_sizes=hidden, relative_correction=True).optimizer(theta, num_steps)
    if variant == "theta_zero":
        return lopt.optimizer(jax.tree_util.tree_map(jnp.zeros_like, theta), num_steps)
    return lopt.optimizer(theta, num_steps)


def run(task_name: str, variant: str, num_steps: int, seed: int = 0) -> dict:
    """One variant on one task through the harness's training loop (`runner.train`),
    every step's training loss kept."""
    task = lopt_heldout.make_task(task_name, "paper").with_budget(num_steps)
    spec = {"name": "adam"} if variant == "adam_cosine" else {"name": "small"}
    built = optimizers.Built(tx=optimizer(variant, num_steps), label=variant, spec=spec)
    out = runner.train(
        task, built, num_steps=num_steps, seed=seed, max_points=num_steps, progress=False
    )
    losses = out["curve"]["loss"]
    spike = scoring.spike_ratio(out["curve"]["step"], losses, losses[0], num_steps)
    final = out["metrics"]["train"]["loss"]
    return {"task": task_name, "variant": variant, "final_train_loss": final, "spike": spike}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--tasks", default="digits_mlp48relub64,cancer_mlp32relub32")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    print("| task | variant | final training loss | spike ratio (per-step losses) |")
    print("|---|---|---|---|")
    for task_name in args.tasks.split(","):
        for variant in variants:
            r = run(task_name, variant, args.steps)
            print(f"| {task_name} | {variant} | {r['final_train_loss']:.3g} | {r['spike']:.3g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
