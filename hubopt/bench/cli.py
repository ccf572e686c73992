"""The `hubopt` command: a thin argparse front over modules that do the work.

Each subcommand lives in a module with `add_arguments(parser)` and
`run(args) -> int`, imported only when that subcommand is used, so
`hubopt --help` stays fast and a subcommand whose module is not installed yet
fails with a clear message instead of a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys

from hubopt._src.extras import install_hint

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "hubopt.bench.demo",
        "optimize the paper's non-convex function with Adam, Adamax, LGL2O and HUB",
    ),
    "run": ("hubopt.bench.runner", "train one optimizer on one task and write run records"),
    "sweep": (
        "hubopt.bench.sweep",
        "run a grid of tasks × optimizers × seeds, resuming from records",
    ),
    "report": ("hubopt.bench.report", "tables and loss-curve figures from run records on disk"),
    "velo": ("hubopt.learned.velo_lopt.cli", "VeLO's official checkpoint (hubopt velo download)"),
    "meta-train": ("hubopt.learned.meta.cli", "meta-train hubopt's own learned optimizer"),
    "meta-select": (
        "hubopt.learned.meta.select",
        "choose a meta-training run's θ snapshot on meta-validation tasks",
    ),
}


class CommandUnavailable(RuntimeError):
    """A subcommand whose module cannot be loaded."""


def load_command(name: str):
    """The module behind subcommand `name`; `CommandUnavailable` says why it cannot load."""
    module_name = COMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise CommandUnavailable(
                f"'hubopt {name}' is not available in this installation: "
                f"its module {module_name} does not exist yet"
            ) from None
        raise CommandUnavailable(
            f"'hubopt {name}' cannot load {module_name}: a module it needs is missing ({e}); "
            f"{install_hint(e.name)}"
        ) from None
    except Exception as e:  # a broken module: say which, without a traceback
        raise CommandUnavailable(
            f"'hubopt {name}' cannot load {module_name}: {type(e).__name__}: {e}"
        ) from None
    for attr in ("add_arguments", "run"):
        if not callable(getattr(module, attr, None)):
            raise CommandUnavailable(
                f"'hubopt {name}': {module_name} has no {attr}() (the subcommand protocol "
                "needs add_arguments(parser) and run(args) -> int)"
            )
    return module


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("hubopt")
    except Exception:
        return "unknown"


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the `selected` subcommand's module is imported."""
    parser = argparse.ArgumentParser(
        prog="hubopt",
        description="HUB: mix hand-designed and learned optimizers. Subcommands:",
    )
    parser.add_argument("--version", action="version", version=f"hubopt {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            module = load_command(name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    try:
        parser = build_parser(selected if selected in COMMANDS else None)
    except CommandUnavailable as e:
        print(f"hubopt: error: {e}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    args.command_line = shlex.join(["hubopt", *argv])
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
