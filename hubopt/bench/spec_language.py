"""One text language for every optimizer the harness runs, parsed once into a typed value.

    adam | adamax | adamw            a hand-designed optimizer: the task's preset settings
                                     (learning rate, schedule) with this optimizer, unless
                                     options say otherwise:  adam,lr=3e-4,schedule=cosine
    preset                           the task's own hand-designed optimizer, as it is
    small | velo                     a learned optimizer alone (hubopt's bundled "small",
                                     VeLO from `hubopt velo download`)
    theta,path=FILE                  hubopt's learned optimizer with the θ in FILE (a
                                     meta-training run's theta.msgpack); as a member
                                     theta(path=FILE)
    stand-in(opt=adamax,lr=2e-3)     a hand optimizer in the learned slot, labelled a
                                     stand-in everywhere (for machines without a learned one,
                                     and fast smoke runs); as a member only
    hub:HAND+LEARNED[,mode=inverted][,clip=0.05:0.5][,blocks=finetune][,sigma=rank]
    lgl2o:HAND+LEARNED
    blend:HAND+LEARNED,lam=0.5

Inside a combination a member takes its options in parentheses:
`hub:adamw(lr=1e-4,wd=0.05)+small,mode=inverted`. Hand options: `lr`,
`schedule` (`constant`, `cosine` = warm-up + cosine, `step`), `warmup` (steps),
`decay_every`, `decay_factor`, `wd` (AdamW's weight decay). HUB options: `mode`
(`default`, `inverted`), `sigma` (a σ rule of `hubopt.SIGMA_RULES`: `softmax`, the
paper's and the default, `rank`, `sigmoid`, `softmax_n`, `hyper`), `clip=B:A` (σ
clamped into [B, A]), `blocks` (a named
block rule the task provides, e.g. `finetune`: its pretrained backbone inverted,
its new head default). Blend: `lam`, the hand weight λ in [0, 1].

`parse(text, task=None)` returns a `Spec` (`HandSpec`, `LearnedSpec` or
`CombinedSpec`); `.to_dict()` is the plain dict that `hubopt.bench.optimizers.build`
takes and records store; `replace_learned(spec, learned)` puts another learned
optimizer in a spec's learned slot. A bad spec is a `SpecSyntaxError` whose message shows the
text with a caret under the bad part.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "CombinedSpec",
    "HandSpec",
    "LearnedSpec",
    "Spec",
    "SpecSyntaxError",
    "parse",
    "replace_learned",
]

HAND_NAMES = ("adam", "adamax", "adamw")
LEARNED_NAMES = ("small", "velo")
THETA_FILE = "theta"
STAND_IN = "stand-in"
STAND_IN_LR = 2e-3
COMBINED_NAMES = ("hub", "lgl2o", "blend")
PRESET = "preset"
SCHEDULES = {"constant": None, "cosine": "warmup_cosine", "step": "step"}
HUB_MODES = ("default", "inverted")
_HAND_OPTIONS = ("lr", "schedule", "warmup", "decay_every", "decay_factor", "wd")
_COMBINED_OPTIONS = {"hub": ("mode", "sigma", "clip", "blocks"), "lgl2o": (), "blend": ("lam",)}
DEFAULT_SIGMA = "softmax"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


class SpecSyntaxError(ValueError):
    """A spec the language does not accept; the message points at the bad part."""

    def __init__(self, text: str, start: int, end: int, problem: str):
        self.text, self.start, self.end, self.problem = text, start, max(end, start + 1), problem
        caret = " " * start + "^" * (self.end - start)
        super().__init__(f"bad optimizer spec: {problem}\n  {text}\n  {caret}")


@dataclass(frozen=True)
class HandSpec:
    """A hand-designed optimizer (`hubopt.baselines.hand_optimizer`'s arguments)."""

    name: str
    learning_rate: float
    schedule: str | None = None
    warmup_steps: int = 0
    decay_every: int | None = None
    decay_factor: float = 0.1
    weight_decay: float | None = None

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"name": self.name, "learning_rate": self.learning_rate}
        if self.schedule is not None:
            out["schedule"] = self.schedule
        if self.schedule == "warmup_cosine":
            out["warmup_steps"] = self.warmup_steps
        if self.schedule == "step":
            out["decay_every"] = self.decay_every
            out["decay_factor"] = self.decay_factor
        if self.weight_decay is not None:
            out["weight_decay"] = self.weight_decay
        return out


@dataclass(frozen=True)
class LearnedSpec:
    """A learned optimizer: hubopt's bundled one (`small`), VeLO, or hubopt's with
    the θ file `path` (`name` "theta"); or, with `stand_in`, a hand optimizer
    standing in for one (`name` is then "stand-in")."""

    name: str
    stand_in: HandSpec | None = None
    path: str | None = None

    def to_dict(self) -> dict:
        if self.stand_in is not None:
            return {"name": "stand-in", "optimizer": self.stand_in.to_dict()}
        if self.name == "velo":
            return {"name": "velo"}
        if self.name == THETA_FILE:
            return {"name": THETA_FILE, "path": self.path}
        return {"name": self.name}  # "small"


@dataclass(frozen=True)
class CombinedSpec:
    """HUB, LGL2O or a fixed blend of a hand and a learned optimizer."""

    kind: str
    hand: HandSpec
    learned: LearnedSpec
    mode: str = "default"
    clip: tuple[float, float] | None = None
    blocks: str | None = None
    lam: float | None = None
    sigma: str = "softmax"

    def to_dict(self) -> dict:
        out: dict[str, Any] = {
            "name": self.kind,
            "hand": self.hand.to_dict(),
            "learned": self.learned.to_dict(),
        }
        if self.kind == "hub":
            out["mode"] = self.mode
            if self.sigma != DEFAULT_SIGMA:  # absent for the paper's rule, as before rules
                out["sigma"] = self.sigma
            if self.clip is not None:  # absent when unset, as in hand-written specs
                out["clip"] = list(self.clip)
            if self.blocks is not None:
                out["blocks"] = self.blocks
        if self.kind == "blend":
            out["lam"] = self.lam
        return out


Spec = HandSpec | LearnedSpec | CombinedSpec


# ----------------------------------------------------------------------------- scanning


@dataclass(frozen=True)
class _Option:
    key: str
    value: str
    start: int  # of the key
    value_start: int
    end: int


class _Scanner:
    """Reads `text` left to right; every error names the span it is at."""

    def __init__(self, text: str):
        self.text, self.pos = text, 0

    def error(self, problem: str, start: int | None = None, end: int | None = None):
        start = self.pos if start is None else start
        return SpecSyntaxError(self.text, start, self.pos if end is None else end, problem)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def name(self, what: str) -> tuple[str, int]:
        m = _NAME.match(self.text, self.pos)
        if not m:
            raise self.error(f"expected {what}")
        self.pos = m.end()
        return m.group(), m.start()

    def expect(self, char: str, why: str) -> None:
        if self.peek() != char:
            raise self.error(f"expected '{char}' {why}", end=self.pos + 1)
        self.pos += 1

    def options(self, closing: str) -> list[_Option]:
        """`key=value` pairs separated by commas, up to `closing` ("" = end of text)."""
        out: list[_Option] = []
        while True:
            key, start = self.name("an option name (key=value)")
            self.expect("=", f"after option '{key}'")
            value_start = self.pos
            stop = {",", ")"} if closing == ")" else {","}
            while self.pos < len(self.text) and self.text[self.pos] not in stop:
                if self.text[self.pos] in "()+" or (
                    self.text[self.pos] == ":" and key not in ("clip", "path")
                ):
                    raise self.error(f"unexpected '{self.text[self.pos]}' in option '{key}'")
                self.pos += 1
            if self.pos == value_start:
                raise self.error(f"option '{key}' has no value")
            if any(o.key == key for o in out):
                raise self.error(f"option '{key}' given twice", start, self.pos)
            value = self.text[value_start : self.pos]
            out.append(_Option(key, value, start, value_start, self.pos))
            if self.peek() != ",":
                return out
            self.pos += 1


# ----------------------------------------------------------------------------- values


def _number(scan: _Scanner, opt: _Option, *, low=None, high=None, open_low=False) -> float:
    try:
        value = float(opt.value)
    except ValueError:
        raise scan.error(f"'{opt.key}' must be a number", opt.value_start, opt.end) from None
    bad = not math.isfinite(value)
    bad |= low is not None and (value <= low if open_low else value < low)
    bad |= high is not None and value > high
    if bad:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        interval = ("(" if open_low else "[") + f"{lo}, {hi}]"
        raise scan.error(
            f"'{opt.key}' must lie in {interval}, got {opt.value}", opt.value_start, opt.end
        )
    return value


def _count(scan: _Scanner, opt: _Option, *, minimum: int) -> int:
    if not re.fullmatch(r"\d+", opt.value) or int(opt.value) < minimum:
        problem = f"'{opt.key}' must be an integer >= {minimum}, got {opt.value}"
        raise scan.error(problem, opt.value_start, opt.end)
    return int(opt.value)


def _preset_hand(name: str, task) -> dict:
    """The settings a bare hand name takes: the task's preset, with optimizer `name`."""
    if task is None:
        return {"name": name, "learning_rate": 1e-3}
    preset = dict(task.hand)
    if name != PRESET:
        preset["name"] = name
        if name != "adamw":
            preset.pop("weight_decay", None)
    return preset


def _hand(scan: _Scanner, name: str, options: list[_Option], task) -> HandSpec:
    base = _preset_hand(name, task)
    fields: dict[str, Any] = {
        "name": base["name"],
        "learning_rate": float(base["learning_rate"]),
        "schedule": base.get("schedule"),
        "warmup_steps": int(base.get("warmup_steps", 0)),
        "decay_every": base.get("decay_every"),
        "decay_factor": float(base.get("decay_factor", 0.1)),
        "weight_decay": base.get("weight_decay"),
    }
    for opt in options:
        if opt.key not in _HAND_OPTIONS:
            raise scan.error(
                f"unknown option '{opt.key}' for {name}; options: {', '.join(_HAND_OPTIONS)}",
                opt.start,
                opt.end,
            )
        if opt.key == "lr":
            fields["learning_rate"] = _number(scan, opt, low=0.0, open_low=True)
        elif opt.key == "schedule":
            if opt.value not in SCHEDULES:
                raise scan.error(
                    f"schedule must be one of {', '.join(SCHEDULES)}, got {opt.value}",
                    opt.value_start,
                    opt.end,
                )
            fields["schedule"] = SCHEDULES[opt.value]
        elif opt.key == "warmup":
            fields["warmup_steps"] = _count(scan, opt, minimum=0)
        elif opt.key == "decay_every":
            fields["decay_every"] = _count(scan, opt, minimum=1)
        elif opt.key == "decay_factor":
            fields["decay_factor"] = _number(scan, opt, low=0.0, high=1.0, open_low=True)
        else:  # wd
            if fields["name"] != "adamw":
                raise scan.error("'wd' (weight decay) is for adamw only", opt.start, opt.end)
            fields["weight_decay"] = _number(scan, opt, low=0.0)
    if fields["schedule"] == "step" and fields["decay_every"] is None:
        raise scan.error(f"schedule=step needs decay_every for {name}", 0, len(scan.text))
    return HandSpec(**fields)


def _member(scan: _Scanner, role: str, task):
    name, start = scan.name(f"the {role} optimizer")
    options = []
    if scan.peek() == "(":
        scan.pos += 1
        options = scan.options(")")
        scan.expect(")", f"closing the options of {name}")
    if role == "hand":
        if name not in (*HAND_NAMES, PRESET):
            raise scan.error(
                f"the hand member must be one of {', '.join((*HAND_NAMES, PRESET))}, got {name}",
                start,
            )
        return _hand(scan, name, options, task)
    if name == STAND_IN:
        return _stand_in(scan, options, start)
    if name == THETA_FILE:
        return _theta_file(scan, options, start)
    if name not in LEARNED_NAMES:
        learned = ", ".join((*LEARNED_NAMES, THETA_FILE, STAND_IN))
        raise scan.error(f"the learned member must be one of {learned}, got {name}", start)
    if options:
        raise scan.error(f"{name} takes no options", options[0].start, options[-1].end)
    return LearnedSpec(name)


def _stand_in(scan: _Scanner, options: list[_Option], start: int) -> LearnedSpec:
    """`stand-in(opt=NAME[,lr=X])`: hand optimizer NAME (constant lr X) in the learned slot."""
    by_key = {o.key: o for o in options}
    for opt in options:
        if opt.key not in ("opt", "lr"):
            raise scan.error(
                f"unknown option '{opt.key}' for stand-in; options: opt, lr", opt.start, opt.end
            )
    if "opt" not in by_key:
        raise scan.error("stand-in needs opt=NAME (e.g. stand-in(opt=adamax))", start)
    name = by_key["opt"]
    if name.value not in HAND_NAMES:
        raise scan.error(
            f"a stand-in is one of {', '.join(HAND_NAMES)}, got {name.value}",
            name.value_start,
            name.end,
        )
    lr = STAND_IN_LR
    if "lr" in by_key:
        lr = _number(scan, by_key["lr"], low=0.0, open_low=True)
    return LearnedSpec(STAND_IN, HandSpec(name.value, lr))


def _theta_file(scan: _Scanner, options: list[_Option], start: int) -> LearnedSpec:
    """`theta(path=FILE)`: hubopt's learned optimizer with the θ in FILE (checked at build)."""
    for opt in options:
        if opt.key != "path":
            raise scan.error(
                f"unknown option '{opt.key}' for theta; options: path", opt.start, opt.end
            )
    if not options:
        raise scan.error("theta needs path=FILE (a θ checkpoint, e.g. runs/x/theta.msgpack)", start)
    return LearnedSpec(THETA_FILE, path=options[0].value)


def parse(text: str, task=None) -> Spec:
    """The typed optimizer spec `text` names (see the module docstring).

    `task` supplies the preset settings a bare hand name takes (and must be
    given for `preset`); without it a bare hand name means lr 1e-3, constant.
    """
    if not isinstance(text, str):
        raise TypeError(f"an optimizer spec is a str, got {type(text).__name__}")
    scan = _Scanner(text.strip())
    if not scan.text:
        raise scan.error("empty spec")
    head, start = scan.name("an optimizer name")
    known = (*HAND_NAMES, PRESET, *LEARNED_NAMES, THETA_FILE, *COMBINED_NAMES)
    if head not in known:
        raise scan.error(f"unknown optimizer {head}; known: {', '.join(known)}", start)
    if head == PRESET and task is None:
        raise scan.error("'preset' means a task's own optimizer: give a task", start)
    if head in COMBINED_NAMES:
        scan.expect(":", f"after {head} (as in {head}:adam+small)")
        hand = _member(scan, "hand", task)
        scan.expect("+", "between the hand and the learned optimizer (HAND+LEARNED)")
        learned = _member(scan, "learned", task)
    options = []
    if scan.peek() == ",":
        scan.pos += 1
        options = scan.options("")
    if scan.pos != len(scan.text):
        raise scan.error(f"unexpected '{scan.text[scan.pos :]}'", end=len(scan.text))
    if head in (*HAND_NAMES, PRESET):
        return _hand(scan, head, options, task)
    if head == THETA_FILE:
        return _theta_file(scan, options, start)
    if head in LEARNED_NAMES:
        if options:
            raise scan.error(f"{head} takes no options", options[0].start, options[-1].end)
        return LearnedSpec(head)
    return _combined(scan, head, hand, learned, options)


def replace_learned(spec: Spec, learned: LearnedSpec) -> Spec:
    """`spec` with `learned` in its learned slot: a learned optimizer alone becomes
    `learned`, a combination (hub, lgl2o, blend) keeps its hand member and options and
    takes `learned` as its learned member, a hand-designed optimizer is returned as it is."""
    if not isinstance(learned, LearnedSpec):
        raise TypeError(f"the learned slot takes a LearnedSpec, got {type(learned).__name__}")
    if isinstance(spec, LearnedSpec):
        return learned
    if isinstance(spec, CombinedSpec):
        return replace(spec, learned=learned)
    if isinstance(spec, HandSpec):
        return spec
    raise TypeError(f"not a spec: {type(spec).__name__}")


def _combined(scan, kind, hand, learned, options) -> CombinedSpec:
    fields: dict[str, Any] = {}
    for opt in options:
        allowed = _COMBINED_OPTIONS[kind]
        if opt.key not in allowed:
            listed = ", ".join(allowed) or "none"
            raise scan.error(
                f"unknown option '{opt.key}' for {kind}; options: {listed}", opt.start, opt.end
            )
        if opt.key == "mode":
            if opt.value not in HUB_MODES:
                raise scan.error(
                    f"mode must be one of {', '.join(HUB_MODES)}, got {opt.value}",
                    opt.value_start,
                    opt.end,
                )
            fields["mode"] = opt.value
        elif opt.key == "clip":
            parts = opt.value.split(":")
            if len(parts) != 2:
                raise scan.error("clip is B:A (e.g. clip=0.05:0.5)", opt.value_start, opt.end)
            try:
                low, high = float(parts[0]), float(parts[1])
            except ValueError:
                raise scan.error("clip is B:A with numbers", opt.value_start, opt.end) from None
            if not 0.0 <= low <= high <= 1.0:
                raise scan.error(
                    f"clip needs 0 <= B <= A <= 1, got {opt.value}", opt.value_start, opt.end
                )
            fields["clip"] = (low, high)
        elif opt.key == "sigma":
            from hubopt import SIGMA_RULES

            if opt.value not in SIGMA_RULES:
                raise scan.error(
                    f"sigma must be one of {', '.join(SIGMA_RULES)}, got {opt.value}",
                    opt.value_start,
                    opt.end,
                )
            fields["sigma"] = opt.value
        elif opt.key == "blocks":
            if not _NAME.fullmatch(opt.value):
                raise scan.error("blocks names a block rule", opt.value_start, opt.end)
            fields["blocks"] = opt.value
        else:  # lam
            fields["lam"] = _number(scan, opt, low=0.0, high=1.0)
    if kind == "blend" and "lam" not in fields:
        raise scan.error("blend needs lam (the hand weight λ in [0, 1])", 0, len(scan.text))
    return CombinedSpec(kind, hand, learned, **fields)


def describe(spec: Mapping[str, Any]) -> str:
    """The spec text for a spec dict (the inverse of `parse(...).to_dict()`)."""
    name = spec["name"]
    if name in HAND_NAMES:
        parts = [name, f"lr={spec['learning_rate']:g}"]
        schedule = spec.get("schedule")
        if schedule is not None:
            parts.append("schedule=" + {v: k for k, v in SCHEDULES.items()}[schedule])
        if schedule == "warmup_cosine":
            parts.append(f"warmup={spec.get('warmup_steps', 0)}")
        if schedule == "step":
            parts.append(f"decay_every={spec['decay_every']}")
            parts.append(f"decay_factor={spec['decay_factor']:g}")
        if spec.get("weight_decay") is not None:
            parts.append(f"wd={spec['weight_decay']:g}")
        return ",".join(parts)
    if name == "velo":
        return "velo"
    if name == "small":
        return "small"
    if name == THETA_FILE:
        return f"theta,path={spec['path']}"
    if name == "stand-in":
        inner = spec["optimizer"]
        return f"stand-in(opt={inner['name']},lr={inner['learning_rate']:g})"
    if name in COMBINED_NAMES:
        text = f"{name}:{_member_text(spec['hand'])}+{_member_text(spec['learned'])}"
        if name == "hub":
            if spec.get("mode", "default") != "default":
                text += f",mode={spec['mode']}"
            if spec.get("sigma", DEFAULT_SIGMA) != DEFAULT_SIGMA:
                text += f",sigma={spec['sigma']}"
            if spec.get("clip") is not None:
                text += f",clip={spec['clip'][0]:g}:{spec['clip'][1]:g}"
            if spec.get("blocks") is not None:
                text += f",blocks={spec['blocks']}"
        if name == "blend":
            text += f",lam={spec['lam']:g}"
        return text
    raise ValueError(f"no spec text for optimizer {name!r}")


def _member_text(spec: Mapping[str, Any]) -> str:
    """A member's spec text: its options in parentheses (`adam(lr=0.001)`)."""
    if spec["name"] == "stand-in":
        return describe(spec)
    head, *options = describe(spec).split(",")
    return head + (f"({','.join(options)})" if options else "")
