"""The core install: `pip install hubopt` pulls only what HUB, the baselines and the
learned optimizers need, and they work with every optional library absent; what needs
an extra says which."""

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from hubopt._src.extras import EXTRA_OF_MODULE, install_hint

ROOT = Path(__file__).resolve().parents[1]
# plotting, tabular data, checkpoint servers, models, simulators, clusters: never core
NOT_CORE = ("matplotlib", "scikit-learn", "pandas", "orbax", "tensorstore", "flax", "ray")
NOT_CORE += ("ncps", "gymnasium", "pillow", "nibabel", "mlxtend", "torch", "tensorflow")
# the modules of every optional package, hidden from the core's subprocess below
HIDDEN = sorted({*EXTRA_OF_MODULE, "orbax", "tensorstore", "pandas", "skimage", "torch"})


def _project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    for sep in "<>=[;! ":
        requirement = requirement.split(sep)[0]
    return requirement.lower()


def test_core_dependencies_exclude_every_optional_library():
    core = {_name(r) for r in _project()["dependencies"]}
    assert core == {"jax", "optax", "numpy", "msgpack", "tqdm"}
    assert not core & set(NOT_CORE)


def test_every_extra_named_in_errors_exists():
    extras = set(_project()["optional-dependencies"])
    assert set(EXTRA_OF_MODULE.values()) <= extras
    assert {"flax", "tasks", "bench", "ray", "dev"} <= extras


_CORE_ONLY = """
import importlib.abc, sys

class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Hide())

import jax, jax.numpy as jnp, optax
import hubopt
from hubopt.learned import small
from hubopt.learned.velo_lopt.transform import init_velo_theta, velo

params = {"w": jnp.ones((4, 3)) * 0.1, "b": jnp.zeros(3)}
loss_fn = lambda p: jnp.sum((p["w"].sum(0) + p["b"] - 1.0) ** 2)
velo_small = velo(5, theta=init_velo_theta(jax.random.key(0), 8, 4))
for tx in (
    hubopt.hub(optax.adam(1e-2), small(num_steps=5)),
    hubopt.hub(optax.adam(1e-2), velo_small, sigma="rank", clip=(0.1, 0.9)),
    hubopt.baselines.lgl2o(optax.adam(1e-2), small(num_steps=5)),
    hubopt.baselines.blend(optax.adam(1e-2), velo_small, lam=0.5),
):
    state, p = tx.init(params), params
    for _ in range(3):
        value, grads = jax.value_and_grad(loss_fn)(p)
        updates, state = tx.update(grads, state, p, value=value, value_fn=loss_fn)
        p = optax.apply_updates(p, updates)
    assert float(loss_fn(p)) < float(loss_fn(params)), tx
def fails(name, use):
    try:
        use()
    except ImportError as e:
        print(name, "->", e)
    else:
        raise AssertionError(f"{name} worked without its extra")

fails("tasks", lambda: hubopt.tasks.get_task("sine_lstm", "tiny"))
fails("flax", lambda: hubopt.flax)
import hubopt.bench.figures as figures
fails("figures", lambda: figures._figure(1))
print("core ok")
"""


@pytest.mark.parametrize("hidden", [HIDDEN])
def test_hub_baselines_and_learned_optimizers_run_without_any_extra(hidden):
    script = f"HIDDEN = {set(hidden)!r}\n" + textwrap.dedent(_CORE_ONLY)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[-1] == "core ok"
    said = dict(line.split(" -> ", 1) for line in lines[:-1])
    assert "hubopt[tasks]" in said["tasks"] and "flax" in said["tasks"]
    assert "hubopt[flax]" in said["flax"]
    assert "hubopt[bench]" in said["figures"] and "matplotlib" in said["figures"]


def test_install_hint_names_the_extra_or_the_package():
    assert install_hint("matplotlib.figure") == "pip install 'hubopt[bench]'"
    assert install_hint("sklearn") == "pip install 'hubopt[tasks]'"
    assert install_hint("somethingelse") == "pip install somethingelse"
    assert install_hint("flax", "flax") == "pip install 'hubopt[flax]'"
