"""Step time of HUB against its two members alone, side by side in one process.

    .venv/bin/python benchmarks/step_time.py [--rounds 15] [--iters 20] [--json out.json]
        [--learned velo|small] [--donate] [--rules hyper_floor,...]

Model: an MLP 784-1024-256-10 (ReLU, 1,068,810 parameters, plain jnp), softmax
cross-entropy on a fixed synthetic batch of 128. Contenders (same params,
same gradients):

    hand     Adam(1e-3)                       (hubopt.baselines.hand_optimizer)
    learned  VeLO with a *random* theta       (hubopt.learned.init_velo_theta; the
             step time does not depend on theta's values, only on its shapes,
             which are the official checkpoint's: LSTM 512, 256 MLP copies)
             — falls back to small, hubopt's bundled learned optimizer
             (`--learned small`), then to a labelled Adamax stand-in, if VeLO is
             not importable
    hub      hubopt.hub(hand, learned), mode="default"
    hub_nostats, hub_<rule>   the same without diagnostics (stats=False), and with
             every other σ rule of hubopt.SIGMA_RULES (or those of --rules)
    lgl2o    hubopt.baselines.lgl2o(hand, learned): evaluates the loss at both members'
             candidate updates (two forward passes) and keeps the better one
    blend_half  hubopt.baselines.blend(hand, learned, lam=0.5): both members and a fixed
             mixture, no σ
    hub_half HUB with stats=False and σ = 0.5, one weight per tensor: HUB's machinery
             without σ's per-entry work (t(hub_nostats) − t(hub_half) is σ's cost)

and, to isolate HUB's own cost from VeLO's run-to-run noise, a cheap pair:

    adamax      Adamax(2e-3)
    hub_cheap   hubopt.hub(Adam, Adamax): HUB's own cost = t(hub_cheap) − t(hand) − t(adamax)

Two timings per contender, each one jitted function:

    update   tx.update(grads, state, params, value=loss) alone, with fixed
             grads and params and the state fed back (the optimizer's own cost);
             also HUB's own work alone on fixed member updates: "mix" (σ and
             the eq. 5 mixture) and "mix+diag" (hubopt's mixing with its
             diagnostics, as `hub` runs it)
    step     value_and_grad(loss) + tx.update + apply_updates (a full train step)

Protocol: compile, warm up, then `--rounds` interleaved rounds; in each round
every contender (in rotating order) runs `--iters` back-to-back calls ended by
`block_until_ready`, and its time per call is recorded. Figures are medians
and minima over rounds (the minimum is the better estimate of the intrinsic
cost on a shared machine; the IQR shows the noise). The headline ratio is
t(HUB) / (t(hand) + t(learned)). HUB's own cost (softmax, mixing,
diagnostics) is t(HUB) − t(hand) − t(learned) for the update alone; for the
full step, where HUB computes the gradient once but the two members alone
compute it once each, it is t(HUB) − t(hand) − t(learned) + t(grad), with
t(grad) the jitted value_and_grad alone, also timed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import hubopt
from hubopt._src import hub as hub_src
from hubopt._src import members
from hubopt._src.sigma_rules import SIGMA_RULES, layer_softmax
from hubopt.baselines import blend, hand_optimizer, lgl2o
from hubopt.bench.runner import metadata

SIZES = (784, 1024, 256, 10)
BATCH = 128
NUM_STEPS = 10_000  # the horizon the learned optimizers are built for


def init_mlp(key, sizes=SIZES):
    params = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        key, k = jax.random.split(key)
        params[f"dense{i}"] = {
            "w": jax.random.normal(k, (n_in, n_out), jnp.float32) * math.sqrt(2.0 / n_in),
            "b": jnp.zeros((n_out,), jnp.float32),
        }
    return params


def loss_fn(params, x_BxD, y_B):
    h = x_BxD
    for i in range(len(params)):
        layer = params[f"dense{i}"]
        h = h @ layer["w"] + layer["b"][None, :]
        if i < len(params) - 1:
            h = jax.nn.relu(h)
    return optax.softmax_cross_entropy_with_integer_labels(h, y_B).mean()


def learned_member(kind: str):
    """(transform, description) of the learned member; falls back as documented."""
    if kind in ("auto", "velo"):
        try:
            # from the module: the package attribute `velo` may be the submodule
            from hubopt.learned.velo_lopt.transform import init_velo_theta, velo

            theta = init_velo_theta(jax.random.key(0))
            return velo(NUM_STEPS, theta=theta), (
                "VeLO with a random theta (init_velo_theta; official shapes, LSTM 512, "
                "256 MLP copies)"
            )
        except Exception as e:
            print(f"note: VeLO unavailable ({type(e).__name__}: {e})", file=sys.stderr)
            if kind == "velo":
                raise
    if kind in ("auto", "small"):
        try:
            from hubopt.learned import small

            return small(num_steps=NUM_STEPS, warn_past_budget=False), (
                "small, hubopt's bundled learned optimizer (MLPLOpt, its meta-trained θ)"
            )
        except Exception as e:
            print(f"note: small unavailable ({type(e).__name__}: {e})", file=sys.stderr)
            if kind == "small":
                raise
    return hand_optimizer("adamax", 2e-3), "STAND-IN Adamax(2e-3), NOT a learned optimizer"


def _half(g):
    """A σ rule of one constant weight per tensor (0.5)."""
    del g
    return jnp.float32(0.5)


def make_fns(tx, params, x, y, donate: bool = False):
    """Jitted (update-alone, full-step) functions of `tx` and their initial state.

    `donate`: the step gives its params and state buffers to XLA for its outputs (and
    the update its state), as a training loop written for speed does; without it
    every call allocates fresh output buffers.
    """

    def value_fn(p):  # the loss closure LGL2O evaluates its candidates with
        return loss_fn(p, x, y)

    def update(grads, state, params, value):
        extra = {"value": value, "value_fn": value_fn}
        return members.call_member("opt", tx, grads, state, params, extra)

    def step(params, state):
        value, grads = jax.value_and_grad(loss_fn)(params, x, y)
        extra = {"value": value, "value_fn": value_fn}
        updates, state = members.call_member("opt", tx, grads, state, params, extra)
        return optax.apply_updates(params, updates), state, value

    update_donates, step_donates = ((1,), (0, 1)) if donate else ((), ())
    return (
        jax.jit(update, donate_argnums=update_donates),
        jax.jit(step, donate_argnums=step_donates),
        tx.init(params),
    )


def markdown(results, learned_desc, n_params, args, meta, sizes=SIZES) -> str:
    """The figures as Markdown tables (what BENCHMARKS.md shows)."""
    names = {
        "hand": "hand: Adam(1e-3)",
        "learned": f"learned: {learned_desc}",
        "hub": "HUB(hand, learned)",
        "adamax": "Adamax(2e-3)",
        "hub_cheap": "HUB(Adam, Adamax)",
        "grad": "value_and_grad alone",
        "mix": "HUB's σ + mixing alone",
        "mix+diag": "HUB's σ + mixing + diagnostics alone",
        "hub_nostats": "HUB(hand, learned), stats=False",
        "blend_half": "blend(hand, learned), λ = 0.5 (no σ)",
        "hub_half": "HUB(hand, learned), stats=False, σ = 0.5 (one weight per tensor)",
        "lgl2o": "LGL2O(hand, learned)",
    }
    for rule in SIGMA_RULES:  # the other σ rules' rows
        names.setdefault(f"hub_{rule}", f"HUB(hand, learned), sigma={rule}")
    out = [
        f"MLP {'-'.join(map(str, sizes))} ({n_params:,} parameters), batch {BATCH}; "
        f"{args.rounds} interleaved rounds × {args.iters} calls; ms per call; "
        + ("params and state donated to each call." if args.donate else "no buffer donation."),
        "",
    ]
    for kind, title in (
        ("update", "Optimizer update alone"),
        ("step", "Full train step (value_and_grad + update + apply)"),
    ):
        res = results[kind]
        out += [
            f"**{title}**",
            "",
            "| contender | median ms | min ms | IQR ms |",
            "|---|---:|---:|---:|",
        ]
        for n in res["median_ms"]:
            out.append(
                f"| {names[n]} | {res['median_ms'][n]:.2f} | {res['min_ms'][n]:.2f} | "
                f"{res['iqr_ms'][n]:.2f} |"
            )
        out += ["", "| ratio | by median | by min |", "|---|---:|---:|"]
        rm, rn = res["median_ratios"], res["min_ratios"]
        labels = [
            ("hub_over_hand", "t(HUB) / t(hand)"),
            ("hub_over_learned", "t(HUB) / t(learned)"),
            ("hub_over_sum", "**t(HUB) / (t(hand) + t(learned))**"),
            ("hub_cheap_over_sum", "t(HUB(Adam, Adamax)) / (t(Adam) + t(Adamax))"),
            (
                "hub_own_ms",
                "HUB's own cost by difference, ms"
                + (" (+ t(grad), shared)" if kind == "step" else ""),
            ),
            ("hub_cheap_own_ms", "same with the cheap pair, ms"),
            ("lgl2o_over_learned", "t(LGL2O) / t(learned)"),
            ("hub_over_lgl2o", "**t(HUB) / t(LGL2O)**"),
        ]
        if kind == "update":
            labels += [
                ("mix_diag_over_sum", "t(σ + mixing + diagnostics) / (t(hand) + t(learned))"),
                ("mix_diag_over_hand", "t(σ + mixing + diagnostics) / t(hand)"),
            ]
        for key, text in labels:
            out.append(f"| {text} | {rm[key]:.3f} | {rn[key]:.3f} |")
        out.append("")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--iters", type=int, default=20, help="calls per contender per round")
    ap.add_argument(
        "--learned",
        choices=("auto", "velo", "small", "adamax"),
        default="auto",
        help="the learned member; adamax: the labelled stand-in (a quick check of the script)",
    )
    ap.add_argument(
        "--donate",
        action="store_true",
        help="donate params and state buffers to each call (jax.jit donate_argnums), as a "
        "training loop written for speed does: no fresh output buffers every step",
    )
    ap.add_argument("--json", help="also write the figures (and metadata) to this JSON file")
    ap.add_argument("--markdown", help="also write the tables for BENCHMARKS.md to this file")
    ap.add_argument(
        "--widths",
        default=",".join(map(str, SIZES)),
        help="the MLP's layer widths, input to output (default: %(default)s)",
    )
    ap.add_argument(
        "--rules",
        help="the σ rules (of hubopt.SIGMA_RULES) timed beside softmax HUB, comma-separated "
        "(default: all; 'none' for none): fewer contenders, more rounds in the same time",
    )
    args = ap.parse_args(argv)
    others = [r for r in hubopt.SIGMA_RULES if r != "softmax"]
    if args.rules is None:
        rules = others
    else:
        rules = [] if args.rules == "none" else args.rules.split(",")
        unknown = [r for r in rules if r not in others]
        if unknown:
            ap.error(f"--rules: unknown {', '.join(unknown)}; σ rules: {', '.join(others)}")
    if args.rounds < 1 or args.iters < 1:
        ap.error("--rounds and --iters must be >= 1")
    try:
        sizes = tuple(int(w) for w in args.widths.split(","))
    except ValueError:
        sizes = ()
    if len(sizes) < 2 or min(sizes) < 1:
        ap.error(f"--widths must be two or more positive integers, got {args.widths!r}")

    key_p, key_x, key_y = jax.random.split(jax.random.key(0), 3)
    params = init_mlp(key_p, sizes)
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
    x = jax.random.normal(key_x, (BATCH, sizes[0]), jnp.float32)
    y = jax.random.randint(key_y, (BATCH,), 0, sizes[-1])
    value, grads = jax.jit(jax.value_and_grad(loss_fn))(params, x, y)

    hand = hand_optimizer("adam", 1e-3)
    learned, learned_desc = learned_member(args.learned)
    adamax = hand_optimizer("adamax", 2e-3)
    contenders = {
        "hand": hand,
        "learned": learned,
        "hub": hubopt.hub(hand, learned),
        "adamax": adamax,
        "hub_cheap": hubopt.hub(hand, adamax),
        "lgl2o": lgl2o(hand, learned),
        "hub_nostats": hubopt.hub(hand, learned, stats=False),
        # what HUB's extra time is made of: the members and a fixed mixture, then HUB with
        # one constant weight (its machinery without σ's per-entry work)
        "blend_half": blend(hand, learned, lam=0.5),
        "hub_half": hubopt.hub(hand, learned, stats=False, sigma=_half),
        **{f"hub_{rule}": hubopt.hub(hand, learned, sigma=rule) for rule in rules},
    }

    fns, t_compile = {}, {}
    for name, tx in contenders.items():
        t0 = time.perf_counter()
        upd, stp, state = make_fns(tx, params, x, y, args.donate)
        # each function gets buffers of its own (a donated buffer is gone after the call)
        step_state, step_params = (
            jax.tree_util.tree_map(jnp.copy, (state, params)) if args.donate else (state, params)
        )
        _, state = upd(grads, state, params, value)
        step_params, step_state, _ = stp(step_params, step_state)
        jax.block_until_ready((state, step_params, step_state))
        t_compile[name] = time.perf_counter() - t0
        fns[name] = {"update": (upd, state), "step": (stp, step_state, step_params)}

    def run_update(name, iters):
        upd, state = fns[name]["update"]
        for _ in range(iters):
            _, state = upd(grads, state, params, value)
        jax.block_until_ready(state)
        fns[name]["update"] = (upd, state)

    def run_step(name, iters):
        stp, state, p = fns[name]["step"]
        for _ in range(iters):
            p, state, _ = stp(p, state)
        jax.block_until_ready((p, state))
        fns[name]["step"] = (stp, state, p)

    grad_fn = jax.jit(jax.value_and_grad(loss_fn))

    # HUB's own work measured directly, on fixed member updates (no subtraction of
    # noisy totals): "mix" = σ = softmax(|g|) per tensor and the eq. 5 mixture;
    # "mix+diag" = hubopt's per-tensor mixing as HUB runs it, diagnostics included.
    u_hand = jax.tree_util.tree_map(lambda g: -1e-3 * jnp.sign(g), grads)
    u_learned = jax.tree_util.tree_map(lambda g: -1e-3 * g, grads)

    def mix_only(g_tree, uh_tree, ul_tree):
        def leaf(g, uh, ul):
            sigma = layer_softmax(g)
            return sigma * uh + (1.0 - sigma) * ul

        return jax.tree_util.tree_map(leaf, g_tree, uh_tree, ul_tree)

    def mix_diag(g_tree, uh_tree, ul_tree):
        return jax.tree_util.tree_map(
            lambda g, uh, ul: hub_src._mix_leaf(
                g, uh, ul, "default", None, SIGMA_RULES["softmax"], None, True
            )[:2],
            g_tree,
            uh_tree,
            ul_tree,
        )

    mix_fns = {"mix": jax.jit(mix_only), "mix+diag": jax.jit(mix_diag)}
    for f in mix_fns.values():
        jax.block_until_ready(f(grads, u_hand, u_learned))

    def run_mix(name, iters):
        out = None
        for _ in range(iters):
            out = mix_fns[name](grads, u_hand, u_learned)
        jax.block_until_ready(out)

    def run_grad(iters):  # the gradient alone: what a full step shares between members
        out = None
        for _ in range(iters):
            out = grad_fn(params, x, y)
        jax.block_until_ready(out)

    names = list(contenders)
    times = {
        "update": {n: [] for n in [*names, *mix_fns]},
        "step": {n: [] for n in [*names, "grad"]},
    }
    for _ in range(2):  # warm-up rounds, not recorded
        run_grad(args.iters)
        for n in names:
            run_update(n, args.iters)
            run_step(n, args.iters)
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for kind, fn in (("update", run_update), ("step", run_step)):
            for n in order:
                t0 = time.perf_counter()
                fn(n, args.iters)
                times[kind][n].append((time.perf_counter() - t0) / args.iters)
        t0 = time.perf_counter()
        run_grad(args.iters)
        times["step"]["grad"].append((time.perf_counter() - t0) / args.iters)
        for n in mix_fns:
            t0 = time.perf_counter()
            run_mix(n, args.iters)
            times["update"][n].append((time.perf_counter() - t0) / args.iters)

    meta = metadata(" ".join(["python", *sys.argv]))
    print(f"HUB step time, MLP {'-'.join(map(str, sizes))} ({n_params:,} params), batch {BATCH}")
    print(f"hand: Adam(1e-3); learned: {learned_desc}; hub: hubopt.hub(hand, learned)")
    print(
        f"{args.rounds} interleaved rounds x {args.iters} calls; per contender the median "
        f"and the minimum over rounds (ms); buffers {'donated' if args.donate else 'not donated'}"
    )
    print(
        f"device {meta['device']}, {os.cpu_count()} cpus, jax {jax.__version__}, "
        f"git {str(meta['git']['commit'])[:10]}"
    )
    results = {}
    for kind in ("update", "step"):
        what = (
            "optimizer update alone: tx.update(grads, state, params, value=loss)"
            if kind == "update"
            else "full train step: value_and_grad + update + apply"
        )
        print(f"\n[{kind}] {what}")
        res = {"median_ms": {}, "min_ms": {}, "iqr_ms": {}}
        for n, v in times[kind].items():
            q = np.percentile(v, [25, 75])
            res["median_ms"][n] = statistics.median(v) * 1e3
            res["min_ms"][n] = min(v) * 1e3
            res["iqr_ms"][n] = float(q[1] - q[0]) * 1e3
            print(
                f"  t({n:<9s}) median {res['median_ms'][n]:8.3f}  min {res['min_ms'][n]:8.3f}"
                f"  (IQR {res['iqr_ms'][n]:.3f})"
            )
        # In a full step the gradient is computed once for HUB but once per member
        # alone, so HUB's own cost there adds t(grad) back.
        shared = "grad" if kind == "step" else None
        for stat in ("median_ms", "min_ms"):
            t = res[stat]
            g = t[shared] if shared else 0.0
            ratios = {
                "hub_over_hand": t["hub"] / t["hand"],
                "hub_over_learned": t["hub"] / t["learned"],
                "hub_over_sum": t["hub"] / (t["hand"] + t["learned"]),
                "hub_own_ms": t["hub"] - t["hand"] - t["learned"] + g,
                "hub_cheap_over_sum": t["hub_cheap"] / (t["hand"] + t["adamax"]),
                "hub_cheap_own_ms": t["hub_cheap"] - t["hand"] - t["adamax"] + g,
                "lgl2o_over_learned": t["lgl2o"] / t["learned"],
                "hub_over_lgl2o": t["hub"] / t["lgl2o"],
            }
            variants = [n for n in t if n.startswith("hub_") and n != "hub_cheap"]
            ratios["variant_over_hub"] = {n: t[n] / t["hub"] for n in variants}
            if kind == "update":
                ratios["mix_diag_over_sum"] = t["mix+diag"] / (t["hand"] + t["learned"])
                ratios["mix_diag_over_hand"] = t["mix+diag"] / t["hand"]
            res[stat.replace("_ms", "_ratios")] = ratios
            own = "t(hub)-t(hand)-t(learned)" + ("+t(grad)" if shared else "")
            print(
                f"  by {stat[:-3]:<6s}: t(hub)/t(hand) = {ratios['hub_over_hand']:.2f}   "
                f"t(hub)/t(learned) = {ratios['hub_over_learned']:.3f}   "
                f"t(hub)/(t(hand)+t(learned)) = {ratios['hub_over_sum']:.3f}"
            )
            print(
                f"           HUB's own cost {own} = {ratios['hub_own_ms']:+.3f} ms;"
                f" cheap pair: t(hub(adam|adamax))/(t(adam)+t(adamax)) = "
                f"{ratios['hub_cheap_over_sum']:.3f}, own cost {ratios['hub_cheap_own_ms']:+.3f}"
                " ms"
            )
            print(
                "           σ rules and diagnostics off, t(variant)/t(hub): "
                + ", ".join(f"{n[4:]} {r:.3f}" for n, r in ratios["variant_over_hub"].items())
            )
            if kind == "update":
                print(
                    f"           HUB's own work timed directly: t(mix+diag)/(t(hand)+t(learned))"
                    f" = {ratios['mix_diag_over_sum']:.3f}, t(mix+diag)/t(hand) = "
                    f"{ratios['mix_diag_over_hand']:.2f}"
                )
        results[kind] = res
    print("\ncompile+first call (s): " + ", ".join(f"{n} {t_compile[n]:.1f}" for n in names))
    if args.markdown:
        text = markdown(results, learned_desc, n_params, args, meta, sizes)
        with open(args.markdown + ".tmp", "w") as f:
            f.write(text)
        os.replace(args.markdown + ".tmp", args.markdown)
        print(f"wrote {args.markdown}")
    if args.json:
        out = {
            "results": results,
            "raw_s": times,
            "learned": learned_desc,
            "n_params": n_params,
            "rounds": args.rounds,
            "iters": args.iters,
            "donate": args.donate,
            "compile_s": t_compile,
            "meta": meta,
        }
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f, indent=1)
        os.replace(tmp, args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
