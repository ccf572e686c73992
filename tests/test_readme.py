"""The README's ```python examples run as written, in order, in one namespace."""

import re
from pathlib import Path

import jax

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_has_an_example_of_each_variant():
    code = "\n".join(python_blocks(README.read_text()))
    for needle in [
        'mode="inverted"',
        "clip=(",
        "blocks=",
        "hub_stats",
        "lgl2o(",
        "blend(",
        "hand_optimizer(",
        "preset(",
    ]:
        assert needle in code, f"README shows no runnable example with {needle}"


def test_readme_examples_run(capsys):
    namespace: dict = {}
    for i, block in enumerate(python_blocks(README.read_text())):
        try:
            # Users run with JAX's default rank promotion (a bias + batch broadcast).
            with jax.numpy_rank_promotion("allow"):
                exec(compile(block, f"README.md[python block {i}]", "exec"), namespace)
        except Exception as e:  # pragma: no cover - the message is the point
            raise AssertionError(f"README python block {i} failed: {e!r}\n{block}") from e
    out = capsys.readouterr().out
    assert "default HUB final loss" in out
    assert "hand_share=" in out
