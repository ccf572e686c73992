"""Figure helpers of `hubopt.bench.figures`: windowed loss means and palette PNGs."""

import io

import numpy as np
import pytest
from PIL import Image

from hubopt.bench import figures


def test_window_means_average_the_points_of_each_window_by_hand():
    steps = [0, 10, 20, 30, 40, 99]  # 100 steps in 4 windows of 25: [0,25) [25,50) [50,75) [75,100]
    means = [1.0, 3.0, 5.0, 7.0, 9.0, 2.0]
    ends, values = figures.window_means(steps, means, num_steps=100, windows=4)
    assert ends == [25.0, 50.0, 100.0]  # the third window holds no point: left out
    assert values == pytest.approx([3.0, 8.0, 2.0])
    ends, values = figures.window_means([0, 100], [4.0, 6.0], num_steps=100, windows=4)
    assert ends == [25.0, 100.0] and values == [4.0, 6.0]  # the last step: the last window
    with pytest.raises(ValueError):
        figures.window_means(steps, means, 100, 0)


def test_a_palette_png_is_the_same_picture_in_fewer_bytes():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3))
    ax = fig.subplots()
    x = np.linspace(0, 10, 200)
    for k in range(5):
        ax.plot(x, np.sin(x + k), label=f"line {k}")
        ax.fill_between(x, np.sin(x + k) - 0.2, np.sin(x + k) + 0.2, alpha=0.2)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    png = buf.getvalue()
    small = figures.palette_png(png)
    assert len(small) < len(png) / 2
    before = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.int32)
    after = Image.open(io.BytesIO(small))
    assert after.mode == "P" and after.size == (400, 300)
    diff = np.abs(np.asarray(after.convert("RGB"), np.int32) - before)
    assert diff.mean() < 2.0 and np.percentile(diff, 99) < 16  # the same picture


def _hub_records(num_tensors: int, seeds=(0, 1)) -> list[dict]:
    """HUB records whose tensor t has hand share t / num_tensors at every evaluation."""
    paths = [f"layer{t:02d}/w" for t in range(num_tensors)]

    def stats(t):
        return {"hand_share": t / num_tensors, "sigma_min": 0.1, "sigma_max": 0.9}

    curve = [{"step": s, "hub": {p: stats(t) for t, p in enumerate(paths)}} for s in (0, 5, 10)]
    spec = {"name": "hub", "hand": {"name": "adam"}, "learned": {"name": "small"}}
    return [
        {
            "task": {"name": "toy_net"},
            "optimizer": {"label": "hub(adam | small)", "spec": spec},
            "num_steps": 10,
            "seed": seed,
            "diagnostics_curve": curve,
        }
        for seed in seeds
    ]


@pytest.mark.parametrize("num_tensors", [3, 40])
def test_hand_share_draws_a_line_per_tensor_or_a_band_over_many(num_tensors, monkeypatch):
    drawn = {}

    def keep(fig, note, dpi=figures.DPI):
        drawn["fig"] = fig
        return b"png"

    monkeypatch.setattr(figures, "_finish", keep)
    assert figures.hand_share(_hub_records(num_tensors)) == b"png"
    (ax,) = [a for a in drawn["fig"].axes if a.get_title().startswith("toy_net")]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    if num_tensors <= figures.HAND_SHARE_LINES:
        assert len(ax.lines) == num_tensors and labels[0].startswith("layer00/w")
        np.testing.assert_allclose(ax.lines[2].get_ydata(), [2 / 3] * 3)
    else:  # one median line (tensor shares 0, 1/40, …, 39/40: median 19.5/40) and two bands
        assert len(ax.lines) == 1 and labels == [
            "range",
            "middle half",
            "median over its 40 tensors",
        ]
        np.testing.assert_allclose(ax.lines[0].get_ydata(), [19.5 / 40] * 3)
        assert len(ax.collections) == 2
