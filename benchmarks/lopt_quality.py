"""Quality of hubopt's learned optimizer on held-out tasks (issue 4's protocol).

Contenders, each on every task for `--steps` steps and `--seeds` seeds (seeds
vmapped in one compiled program):

    adam_1e-3       Adam at lr 1e-3
    adam_tuned      Adam at the best lr of a grid (best mean final training loss)
    lopt_init       MLPLOpt at its initial θ (= its anchor, "relative Adam")
    lopt            MLPLOpt at the θ under test (bundled "small" or --theta FILE)
    hub_default     hubopt.hub(Adam 1e-3, lopt)
    hub_inverted    hubopt.hub(Adam 1e-3, lopt, mode="inverted")
    hub_clipped     hubopt.hub(Adam 1e-3, lopt, clip=(0.1, 0.9))

Tasks: `task_distribution.HELDOUT_IN_DISTRIBUTION` (other widths, batch
sizes and instances of the training families: MLPs on digits, MNIST and
regression, CNNs on digits and MNIST; needs `hubopt[mnist]`),
`HELDOUT_OUT_OF_DISTRIBUTION` (a deeper MLP, other activations, a wider MLP,
a badly scaled init), `HELDOUT_OTHER_DATA` (MLPs on the breast-cancer table: a
data set meta-training never saw) and a fine-tuning task (an MLP pretrained on
digits 0–4 with Adam, fine-tuned with a new head on digits 5–9). A record
stores its task's kind as it was when it was written (the kinds follow the
bundled recipe's training distribution); a table takes each row's kind from
the last folder that has the task.

Measured per run: final training loss (full training set), held-out loss and
accuracy, and divergence (non-finite, or final training loss above the initial).
One JSON record per (task, contender) in `--out`; `--table DIR` prints the
Markdown table and the goal checks from the records alone.

    python benchmarks/lopt_quality.py --out bench_out/lopt_quality
    python benchmarks/lopt_quality.py --table bench_out/lopt_quality
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import hubopt  # noqa: E402
from hubopt._src.atomic_write import write_atomic
from hubopt._src.git_state import git_commit
from hubopt.learned.checkpoint import read_checkpoint  # noqa: E402
from hubopt.learned.lopt import MLPLOpt  # noqa: E402
from hubopt.learned.meta import task_distribution as td  # noqa: E402

ADAM_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
HUB_CLIP = (0.1, 0.9)


# ---------------------------------------------------------------------- tasks


def all_tasks() -> dict[str, tuple[td.MetaTask, str]]:
    """The held-out tasks and their kinds: those of the harness (`hubopt sweep lopt`,
    which supersedes this script), `hubopt.tasks.lopt_heldout.KINDS`."""
    from hubopt.tasks.lopt_heldout import KINDS

    return dict(KINDS)


# ------------------------------------------------------------------ running


def _train(family, make_opt, steps: int, keys, data):
    """Vmapped over keys: final full-train loss, held-out loss/accuracy, initial loss."""
    task = family.task_on(data, steps)

    def one(key):
        params = task.init(jax.random.fold_in(key, 0))
        opt = make_opt()
        state = opt.init(params)
        loss0 = task.metrics(params, "train")["loss"]

        def body(c, t):
            p, s = c
            batch = task.batch(jax.random.fold_in(key, 1000 + t), t)
            v, g = jax.value_and_grad(task.loss)(p, batch)
            u, s = opt.update(g, s, p, value=v)
            return (optax.apply_updates(p, u), s), v

        (p, _), curve = jax.lax.scan(body, (params, state), jnp.arange(steps))
        held_out = task.metrics(p, "valid")
        return {
            "train_loss": task.metrics(p, "train")["loss"],
            "eval_loss": held_out["loss"],
            "accuracy": held_out.get("accuracy", jnp.float32(jnp.nan)),
            "initial_loss": loss0,
            "curve": curve[:: max(1, steps // 20)],
        }

    return jax.vmap(one)(keys)


def _contenders(theta, theta0, lopt: MLPLOpt, steps: int):
    """name -> (factory of a zero-arg optimizer maker taking traced args, traced args)."""
    adam = lambda lr: optax.with_extra_args_support(optax.adam(lr))  # noqa: E731
    hub = lambda th, **kw: hubopt.hub(  # noqa: E731
        adam(1e-3), lopt.optimizer(th, steps), **kw
    )
    return {
        "lopt_init": (lambda th: lambda: lopt.optimizer(th, steps), theta0),
        "lopt": (lambda th: lambda: lopt.optimizer(th, steps), theta),
        "hub_default": (lambda th: lambda: hub(th), theta),
        "hub_inverted": (lambda th: lambda: hub(th, mode="inverted"), theta),
        "hub_clipped": (lambda th: lambda: hub(th, clip=HUB_CLIP), theta),
        "adam_grid": (lambda lr: lambda: adam(lr), None),
    }


def _compiled(task, factory, steps: int, cname: str, baked=None):
    """The jitted run of one contender: (θ or learning rates, keys, data) -> results.

    With `baked` (a θ), θ is compiled into the program as a constant and the
    first argument is ignored: the same function under other float rounding
    (XLA folds constants), to see how far chaotic dynamics move the results.
    """

    def run(arg, keys, data):
        return _train(task, factory(arg), steps, keys, data)

    if baked is not None:
        return jax.jit(lambda _, keys, data: run(baked, keys, data))

    if cname == "adam_grid":  # vmapped over the learning-rate grid
        return jax.jit(jax.vmap(run, in_axes=(0, None, None)))
    return jax.jit(run)


def _to_list(x):
    return np.asarray(x).tolist()


def run_benchmark(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.theta == "bundled":
        from hubopt.learned.bundled import load

        lopt, theta = load("small")
    else:
        lopt = MLPLOpt(hidden_sizes=tuple(int(h) for h in args.hidden.split(",")))
        theta = jax.tree_util.tree_map(
            lambda a: jnp.asarray(a, jnp.float32), read_checkpoint(args.theta)["params"]
        )
    theta0 = lopt.init(jax.random.PRNGKey(0))
    tasks = all_tasks()
    names = args.tasks.split(",") if args.tasks else list(tasks)
    meta = {
        "command": " ".join([sys.executable.split("/")[-1], *sys.argv]),
        "git_hash": git_commit(),
        "theta": args.theta,
        "steps": args.steps,
        "theta_compiled_in": bool(args.theta_constant),
        "seeds": args.seeds,
        "versions": {
            "python": platform.python_version(),
            "jax": jax.__version__,
            "optax": optax.__version__,
        },
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
    }
    keys = jax.random.split(jax.random.PRNGKey(1234), args.seeds)
    contenders = _contenders(theta, theta0, lopt, args.steps)
    only = set(args.contenders.split(",")) if args.contenders else None
    for name in names:
        task, kind = tasks[name]
        data = jax.tree_util.tree_map(
            jnp.asarray, task.instance_data(jax.random.PRNGKey(99), task.base_data())
        )
        for cname, (factory, targ) in contenders.items():
            if only and cname not in only:
                continue
            path = out / f"{name}__{cname}.json"
            if path.exists() and not args.overwrite:
                print(f"skip {path.name} (exists)")
                continue
            t0 = time.time()
            if cname == "adam_grid":
                targ = jnp.asarray(ADAM_GRID, jnp.float32)
            baked = targ if args.theta_constant and cname != "adam_grid" else None
            res = jax.block_until_ready(
                _compiled(task, factory, args.steps, cname, baked)(targ, keys, data)
            )
            rec = {
                **meta,
                "task": name,
                "kind": kind,
                "contender": cname,
                "theta": args.theta if cname not in ("adam_grid", "lopt_init") else "not used",
                "wall_s": round(time.time() - t0, 1),
                **{k: _to_list(v) for k, v in res.items()},
            }
            if cname == "adam_grid":
                rec["learning_rates"] = list(ADAM_GRID)
            write_atomic(path, json.dumps(rec) + "\n")
            print(
                f"{name:40s} {cname:13s} {rec['wall_s']:6.1f}s "
                f"train={np.nanmean(np.asarray(rec['train_loss'], float), axis=-1)}"
            )


# ------------------------------------------------------------------- scoring


def _diverged(rec_train, rec_init) -> np.ndarray:
    tr, l0 = np.asarray(rec_train, float), np.asarray(rec_init, float)
    return ~np.isfinite(tr) | (tr > l0)


def read_records(folder) -> list[dict]:
    """The run records (`<task>__<contender>.json`) in a folder; other JSON files
    there (a θ's provenance, a meta-training config) are not records."""
    out = []
    for p in sorted(Path(folder).glob("*__*.json")):
        r = json.loads(p.read_text())
        if "task" in r and "contender" in r:
            out.append(r)
    return out


def summarize(records: list[dict]) -> dict[str, dict[str, dict]]:
    """{task: {contender: {train, eval, acc, diverged, lr?}}} (means over seeds);
    expands adam_grid into adam_1e-3 and adam_tuned (best mean final train loss)."""
    by_task: dict[str, dict[str, dict]] = {}
    for r in records:
        row = by_task.setdefault(r["task"], {})
        row["_kind"] = r["kind"]  # a later folder's record relabels the row
        if r["contender"] == "adam_grid":
            tr = np.asarray(r["train_loss"], float)  # (lrs, seeds)
            means = np.where(np.isfinite(tr).all(1), tr.mean(1), np.inf)
            lrs = r["learning_rates"]
            for label, i in (("adam_1e-3", lrs.index(1e-3)), ("adam_tuned", int(np.argmin(means)))):
                row[label] = _cell(r, i) | {"lr": lrs[i]}
        else:
            row[r["contender"]] = _cell(r, None)
    return by_task


def _cell(r, i):
    pick = (
        (lambda k: np.asarray(r[k], float)[i])
        if i is not None
        else (lambda k: np.asarray(r[k], float))
    )
    tr, ev, acc, l0 = pick("train_loss"), pick("eval_loss"), pick("accuracy"), pick("initial_loss")
    return {
        "train": float(np.mean(tr)),
        "eval": float(np.mean(ev)),
        "acc": float(np.mean(acc)),
        "diverged": int(_diverged(tr, l0).sum()),
        "train_seeds": tr.tolist(),
    }


def _format_cell(x: dict) -> str:
    """`train / eval (acc%)`, a `*` after train when a seed diverged."""
    acc = f" ({100 * x['acc']:.1f}%)" if np.isfinite(x["acc"]) else ""
    return f"{x['train']:.3g}{'*' if x['diverged'] else ''} / {x['eval']:.3g}{acc}"


COLUMNS = (
    "adam_1e-3",
    "adam_tuned",
    "lopt_init",
    "lopt",
    "hub_default",
    "hub_inverted",
    "hub_clipped",
)


def table(*records_dirs: str) -> str:
    """The Markdown table and goal checks from the records in one or more folders."""
    records = [r for d in records_dirs for r in read_records(d)]
    if not records:
        raise SystemExit(f"no records in {records_dirs}")
    s = summarize(records)
    cmds = sorted({(r["command"], r["git_hash"][:10], r["theta"]) for r in records})
    m = records[0]
    lines = [
        f"{m['steps']} steps, {m['seeds']} seeds; {m['machine']}; jax {m['versions']['jax']}. "
        "Records written by:",
        "",
        *(f"- `{c}` (git {g}, θ = {t})" for c, g, t in cmds),
        "",
        "Each cell: final training loss (full training set) / held-out loss (held-out "
        "accuracy for digits), means over seeds; `*` = a seed diverged (non-finite, or final "
        "training loss above the initial).",
        "",
        "| task | kind | " + " | ".join(COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for task, row in s.items():
        cells = []
        for c in COLUMNS:
            if c not in row:
                cells.append("–")
                continue
            x = row[c]
            lr = f" (lr {x['lr']:g})" if c == "adam_tuned" else ""
            cells.append(_format_cell(x) + lr)
        lines.append(f"| {task} | {row['_kind']} | " + " | ".join(cells) + " |")
    lines += ["", *goal_checks(s)]
    return "\n".join(lines)


def goal_checks(s) -> list[str]:
    out = []
    ind = {t: r for t, r in s.items() if r["_kind"] == "in_distribution"}
    have = [r for r in ind.values() if all(c in r for c in ("lopt", "adam_1e-3", "adam_tuned"))]
    if have:
        beats = sum(r["lopt"]["train"] < r["adam_1e-3"]["train"] for r in have)
        ratios = [r["lopt"]["train"] / r["adam_tuned"]["train"] for r in have]
        with np.errstate(divide="ignore"):  # a training loss of exactly 0 gives 0
            gm = math.exp(float(np.mean(np.log(ratios))))
        acc_gap = [
            100 * (r["adam_1e-3"]["acc"] - r["lopt"]["acc"])
            for r in have
            if np.isfinite(r["lopt"]["acc"])
        ]
        div = sum(r["lopt"]["diverged"] for r in have)
        ev_ratio = math.exp(
            float(np.mean([np.log(r["lopt"]["eval"] / r["adam_1e-3"]["eval"]) for r in have]))
        )
        out += [
            f"- in distribution: lopt's final training loss < Adam(1e-3)'s on {beats}/{len(have)} "
            "tasks (goal ≥ 80%)",
            f"- in distribution: geometric mean of lopt / tuned-Adam final training loss = "
            f"{gm:.2f} (goal ≤ 1.5)",
            f"- in distribution: held-out accuracy, Adam(1e-3) minus lopt, worst = "
            f"{max(acc_gap) if acc_gap else float('nan'):.1f} points (goal ≤ 1)",
            f"- in distribution: geometric mean of lopt / Adam(1e-3) held-out loss = "
            f"{ev_ratio:.2f}",
            f"- in distribution: diverged lopt runs = {div}",
        ]
    hub_bad = []
    for t, r in s.items():
        if "lopt" not in r or "adam_1e-3" not in r:
            continue
        worse_parent = max(r["lopt"]["train"], r["adam_1e-3"]["train"])
        for c in ("hub_default", "hub_inverted", "hub_clipped"):
            if c in r and not r[c]["train"] <= worse_parent:
                hub_bad.append(f"{c} on {t}")
    out.append(
        "- HUB(Adam, lopt) never worse than the worse parent (final training loss): "
        + ("holds" if not hub_bad else "fails for " + ", ".join(hub_bad))
    )
    return out


def compare(dir_a: str, dir_b: str, contenders: tuple[str, ...]) -> str:
    """Side by side: the same contenders run with two θ (records in two folders).

    Per task and contender, final training loss / held-out loss of A and B, then
    per contender how often B has the lower value (ties count for neither), in
    distribution and over all tasks.
    """
    sa, sb = summarize(read_records(dir_a)), summarize(read_records(dir_b))
    tasks = [t for t in sa if t in sb]
    if not tasks:
        raise SystemExit(f"no task has records in both {dir_a} and {dir_b}")
    lines = [
        f"A = `{dir_a}`, B = `{dir_b}`; cells: final training loss / held-out loss "
        "(held-out accuracy), means over seeds.",
        "",
        "| task | kind | " + " | ".join(f"{c} A | {c} B" for c in contenders) + " |",
        "|---|---|" + "---|---|" * len(contenders),
    ]

    wins = {c: {"all": [0, 0, 0], "in_distribution": [0, 0, 0]} for c in contenders}
    for t in tasks:
        cells = []
        for c in contenders:
            a, b = sa[t].get(c), sb[t].get(c)
            cells += [_format_cell(a) if a else "–", _format_cell(b) if b else "–"]
            if a and b:
                for scope in ("all", sa[t]["_kind"]):
                    if scope in wins[c]:
                        w = wins[c][scope]
                        w[0] += 1
                        w[1] += b["train"] < a["train"]
                        w[2] += b["eval"] < a["eval"]
        lines.append(f"| {t} | {sa[t]['_kind']} | " + " | ".join(cells) + " |")
    lines.append("")
    for c in contenders:
        for scope, (n, tr, ev) in wins[c].items():
            if n:
                lines.append(
                    f"- {c}, {scope.replace('_', ' ')} tasks: B has the lower final training "
                    f"loss on {tr}/{n}, the lower held-out loss on {ev}/{n}"
                )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="bench_out/lopt_quality")
    p.add_argument(
        "--theta",
        default="bundled",
        help="'bundled' or a theta.msgpack written by hubopt meta-train",
    )
    p.add_argument("--hidden", default="32", help="MLPLOpt hidden sizes for --theta FILE")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--tasks", default="", help="comma-separated task names (default: all)")
    p.add_argument("--contenders", default="", help="comma-separated subset (default: all)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument(
        "--theta-constant",
        action="store_true",
        help="compile θ into each program as a constant (other float rounding: a check "
        "of how much chaotic dynamics move the results)",
    )
    p.add_argument(
        "--table",
        metavar="DIR",
        nargs="+",
        help="print the table from the records in DIR... and exit (a later folder's record "
        "replaces an earlier one for the same task and contender)",
    )
    p.add_argument(
        "--compare",
        metavar="DIR",
        nargs=2,
        help="print the contenders of --contenders (default: lopt and the HUB modes) "
        "side by side from two record folders (two θ) and exit",
    )
    args = p.parse_args(argv)
    if args.compare:
        chosen = tuple(args.contenders.split(",")) if args.contenders else COLUMNS[3:]
        print(compare(*args.compare, chosen))
        return 0
    if args.table:
        print(table(*args.table))
        return 0
    run_benchmark(args)
    print(table(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
