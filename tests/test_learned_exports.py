"""hubopt.learned's lazy exports stay the functions/classes, whatever was imported first."""

import importlib
import types

import hubopt.learned as learned


def test_exports_are_never_shadowed_by_submodules():
    for module in set(learned._EXPORTS.values()):
        importlib.import_module(module)  # binds each submodule on the package
    for name in learned.__all__:
        obj = getattr(learned, name)
        assert not isinstance(obj, types.ModuleType), f"hubopt.learned.{name} is a module"
        assert obj is getattr(importlib.import_module(learned._EXPORTS[name]), name)


def test_subpackages_are_reachable_after_a_plain_import_hubopt():
    import subprocess
    import sys

    code = (
        "import sys, hubopt; assert 'hubopt.learned' not in sys.modules; "
        "f = hubopt.learned.small; assert 'hubopt.learned' in sys.modules; "
        "hubopt.tasks.get_task; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
    import hubopt

    try:
        hubopt.nope  # noqa: B018
    except AttributeError as e:
        assert "has no attribute 'nope'" in str(e)
    else:
        raise AssertionError("hubopt.nope did not raise")
