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
