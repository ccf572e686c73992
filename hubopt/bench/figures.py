"""Figures made only from records (PNG bytes, matplotlib's Agg backend, no display).

    loss_curves      training loss per task: median over seeds, min–max band
    metric_curves    each task's headline metric on the valid split over training
    hand_share       HUB: the hand optimizer's share of the update per tensor over training
    sigma_histograms HUB: the distribution of σ over the entries of every tensor at a few
                     steps (the smallest and the largest tensor, and all pooled)
    lgl2o_choice     LGL2O: the fraction of steps the learned candidate won, over training
    step_times       µs per training step of every optimizer, per task

(`palette_png` makes any of them smaller, for figures committed to the repository.)

Each returns PNG bytes, or None when no record has what it draws. Every figure
carries `note` (the records' provenance) at its foot.
"""

from __future__ import annotations

import io
import warnings
from collections import defaultdict

import numpy as np

__all__ = [
    "hand_share",
    "lgl2o_choice",
    "loss_curves",
    "metric_curves",
    "palette_png",
    "sigma_histograms",
    "step_times",
]


def _groups(recs):
    from hubopt.bench.report import _groups as groups

    return groups(recs)


def _figure(panels: int, height: float = 4.2):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ModuleNotFoundError as e:
        from hubopt._src.extras import require_extra

        raise require_extra("the report's figures", e) from e

    fig = Figure(figsize=(9, height * panels + 1.0))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(panels, 1, squeeze=False)[:, 0]


DPI = 110


def _finish(fig, note: str | None, dpi: int = DPI) -> bytes:
    if note:
        fig.text(0.01, 0.005, note, fontsize=6, family="monospace", va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.03 + 0.012 * (note or "").count("\n"), 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def palette_png(png: bytes, colors: int = 256) -> bytes:
    """`png` re-encoded with a palette of at most `colors` colours (Pillow's median cut):
    a plot has few colours, so it looks the same at about a third of the bytes."""
    from PIL import Image

    out = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").quantize(colors).save(out, "PNG", optimize=True)
    return out.getvalue()


def _band(ax, steps, series, label):
    values = np.asarray(series, np.float64)
    (line,) = ax.plot(steps, np.median(values, axis=0), lw=1.2, label=label)
    if len(values) > 1:
        ax.fill_between(
            steps, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.2, lw=0
        )


def _seeds(rs) -> str:
    return ",".join(str(r["seed"]) for r in rs)


def window_means(steps, loss_means, num_steps: int, windows: int) -> tuple[list, list]:
    """(window ends, means): the run [0, num_steps] cut into `windows` equal windows, the
    point at step s in window min(⌊s · windows / num_steps⌋, windows − 1), and the mean of
    the points' `loss_means` (each the training loss averaged since the point before) in
    every window that holds a point."""
    if windows < 1:
        raise ValueError(f"windows must be >= 1, got {windows}")
    sums: dict[int, list[float]] = defaultdict(list)
    for s, v in zip(steps, loss_means, strict=True):
        sums[min(int(s * windows // num_steps), windows - 1)].append(float(v))
    ends = sorted(sums)
    return [num_steps * (w + 1) / windows for w in ends], [float(np.mean(sums[w])) for w in ends]


def loss_curves(
    recs, note: str | None = None, *, windows: int | None = None, dpi: int = DPI
) -> bytes | None:
    """Training loss per task (median over seeds, min–max band), log scale where positive;
    with `windows`, each run's loss averaged over that many equal windows of the run
    (`window_means`), which smooths minibatch noise (and keeps the PNG small)."""
    groups = _groups(recs)
    tasks = sorted({k[0] for k in groups})
    if not tasks:
        return None

    def series(rec):
        curve = rec["curve"]
        if windows is None:
            return curve["step"], curve["loss"]
        return window_means(curve["step"], curve["loss_mean"], rec["num_steps"], windows)

    fig, axes = _figure(len(tasks), 5.2)
    for ax, task in zip(axes, tasks, strict=True):
        positive = True
        for (t, label, _n), rs in groups.items():
            if t != task:
                continue
            curves = [series(r) for r in rs]
            steps = curves[0][0]
            same = [(r, c[1]) for r, c in zip(rs, curves, strict=True) if c[0] == steps]
            loss = np.asarray([c for _, c in same], np.float64)
            positive &= bool(np.all(loss[np.isfinite(loss)] > 0))
            _band(ax, steps, loss, f"{label}  (seeds {_seeds([r for r, _ in same])})")
        ax.set_yscale("log" if positive else "symlog")
        what = "training loss" + ("" if windows is None else f", mean per 1/{windows} of the run")
        ax.set(title=task, xlabel="step", ylabel=f"{what} (median; band: min to max)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return _finish(fig, note, dpi)


def metric_curves(recs, note: str | None = None) -> bytes | None:
    """Each task's headline metric on the valid split at every evaluation."""
    groups = {
        k: rs
        for k, rs in _groups(recs).items()
        if all(rs[0]["task"].get("metric") in r["eval"].get("valid", {}) for r in rs)
    }
    tasks = sorted({k[0] for k in groups})
    if not tasks:
        return None
    fig, axes = _figure(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        metric = "?"
        for (t, label, _n), rs in groups.items():
            if t != task:
                continue
            metric = rs[0]["task"]["metric"]
            steps = rs[0]["eval"]["step"]
            same = [r for r in rs if r["eval"]["step"] == steps]
            _band(ax, steps, [r["eval"]["valid"][metric] for r in same], label)
        ax.set(title=task, xlabel="step", ylabel=f"valid {metric} (median; band: min to max)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return _finish(fig, note)


HAND_SHARE_LINES = 16  # at most this many tensors get a line each (LTC, SIREN: 14); more: a band


def hand_share(recs, note: str | None = None) -> bytes | None:
    """HUB runs: the hand optimizer's share of the update (‖w ⊙ U_hand‖₁ / total) of every
    tensor over training, median over seeds; the σ range of the last step in the legend.
    A network of more than `HAND_SHARE_LINES` tensors (the ResNet's 53) gets its tensors'
    median, middle half and range instead of a line each, which could not be read."""
    groups = {
        k: rs
        for k, rs in _groups(recs).items()
        if all(d.get("hub") for r in rs for d in r.get("diagnostics_curve", [])[:1])
        and all(r.get("diagnostics_curve") for r in rs)
    }
    if not groups:
        return None
    fig, axes = _figure(len(groups))
    for ax, ((task, label, _n), rs) in zip(axes, groups.items(), strict=True):
        curve = rs[0]["diagnostics_curve"]
        steps = [d["step"] for d in curve]
        paths = sorted(curve[-1]["hub"])
        title = f"{task}: {label}"
        # (tensor, step): each tensor's hand share, median over seeds
        shares = np.asarray(
            [
                np.median(
                    [[d["hub"][path]["hand_share"] for d in r["diagnostics_curve"]] for r in rs],
                    axis=0,
                )
                for path in paths
            ],
            np.float64,
        )
        if len(paths) <= HAND_SHARE_LINES:
            for path, series in zip(paths, shares, strict=True):
                last = curve[-1]["hub"][path]
                ax.plot(
                    steps,
                    series,
                    lw=1,
                    label=f"{path}  σ ∈ [{last['sigma_min']:.2g}, {last['sigma_max']:.2g}]",
                )
        else:
            with warnings.catch_warnings():  # a step where every tensor's share is NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                low, q1, mid, q3, high = np.nanpercentile(shares, [0, 25, 50, 75, 100], axis=0)
            ax.fill_between(steps, low, high, color="C0", alpha=0.15, lw=0, label="range")
            ax.fill_between(steps, q1, q3, color="C0", alpha=0.35, lw=0, label="middle half")
            ax.plot(steps, mid, color="C0", lw=1.2, label=f"median over its {len(paths)} tensors")
            sig_lo = min(curve[-1]["hub"][p]["sigma_min"] for p in paths)
            sig_hi = max(curve[-1]["hub"][p]["sigma_max"] for p in paths)
            title += f"\nσ at the last step ∈ [{sig_lo:.2g}, {sig_hi:.2g}] over all tensors"
        ax.set(
            title=title,
            xlabel="step",
            ylabel="hand share of the update",
            ylim=(-0.02, 1.02),
        )
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    return _finish(fig, note)


def sigma_histograms(recs, note: str | None = None) -> bytes | None:
    """HUB runs: the fraction of entries with σ in each bin at the recorded steps, summed
    over seeds, for the largest tensor, the smallest one (σ ≈ 1/n marked for both) and
    all tensors pooled; one panel per task and HUB variant."""
    groups = {
        k: rs for k, rs in _groups(recs).items() if all(r.get("sigma_histograms") for r in rs)
    }
    if not groups:
        return None
    fig, axes = _figure(len(groups), 3.6)
    for ax, ((task, label, _n), rs) in zip(axes, groups.items(), strict=True):
        hist = rs[0]["sigma_histograms"]
        edges = np.asarray(hist["edges"], np.float64)
        # counts summed over seeds: (tensor, step, bin)
        paths = sorted(hist["counts"])
        counts = sum(
            np.asarray([r["sigma_histograms"]["counts"][p] for p in paths], np.float64) for r in rs
        )
        sizes = counts[:, 0].sum(axis=-1) / len(rs)
        x = np.arange(len(edges) - 1)
        big, small = int(np.argmax(sizes)), int(np.argmin(sizes))
        tensors = [("all tensors", counts.sum(axis=0), None, "-")]
        tensors.append((f"largest ({paths[big]}, n={sizes[big]:.0f})", counts[big], big, "--"))
        if small != big:
            tensors.append(
                (f"smallest ({paths[small]}, n={sizes[small]:.0f})", counts[small], small, ":")
            )
        for i, step in enumerate(hist["steps"]):
            color = f"C{i}"
            for name, c, _k, style in tensors:
                frac = c[i] / max(c[i].sum(), 1)
                ax.step(
                    x, frac, where="mid", color=color, ls=style, lw=1, label=f"step {step}: {name}"
                )
        for _name, _c, k, _style in tensors[1:]:  # where σ = 1/n falls, in bin units
            inv = 1.0 / max(sizes[k], 1)
            ax.axvline(np.searchsorted(edges, inv, side="right") - 1, color="gray", lw=0.6, ls=":")
        ticks = x[1::2]  # the decades 1e-9 … 1
        ax.set_xticks(ticks, [f"{edges[t]:.0e}" if edges[t] else "0" for t in ticks], fontsize=6)
        ax.set(
            title=f"{task}: {label}", xlabel="σ (bin's lower edge)", ylabel="fraction of entries"
        )
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=5, ncol=2)
    return _finish(fig, note)


def lgl2o_choice(recs, note: str | None = None) -> bytes | None:
    """LGL2O runs: the fraction of steps so far on which the learned candidate won."""
    groups = {
        k: rs
        for k, rs in _groups(recs).items()
        if all(any("lgl2o" in d for d in r.get("diagnostics_curve", [])) for r in rs)
    }
    if not groups:
        return None
    fig, axes = _figure(1)
    ax = axes[0]
    for (task, label, _n), rs in groups.items():
        steps = [d["step"] for d in rs[0]["diagnostics_curve"]]
        series = [
            [d["lgl2o"].get("learned_win_fraction", np.nan) for d in r["diagnostics_curve"]]
            for r in rs
        ]
        _band(ax, steps, series, f"{task}: {label}")
    ax.set(xlabel="step", ylabel="learned candidate's win fraction so far", ylim=(-0.02, 1.02))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _finish(fig, note)


def step_times(recs, note: str | None = None) -> bytes | None:
    """µs per training step of each optimizer (median over seeds), one panel per task."""
    per_task: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for (task, label, _n), rs in _groups(recs).items():
        per_task[task].append((label, float(np.median([r["timing"]["step_time_s"] for r in rs]))))
    if not per_task:
        return None
    fig, axes = _figure(len(per_task), 0.5 + 0.35 * max(len(v) for v in per_task.values()))
    for ax, (task, rows) in zip(axes, sorted(per_task.items()), strict=True):
        labels = [label for label, _ in rows]
        ax.barh(range(len(rows)), [t * 1e6 for _, t in rows], color="#4c72b0")
        ax.set_yticks(range(len(rows)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set(title=task, xlabel="µs per training step (median over seeds)")
        ax.grid(True, axis="x", alpha=0.3)
    return _finish(fig, note)
