"""The optimizer spec language: parsed once into typed values, errors pointing at the bad part."""

import jax
import jax.numpy as jnp
import pytest

from hubopt.bench import optimizers, spec_language
from hubopt.bench.spec_language import (
    CombinedSpec,
    HandSpec,
    LearnedSpec,
    SpecSyntaxError,
    describe,
    parse,
)
from hubopt.tasks import get_task


@pytest.fixture(scope="module")
def lane():
    return get_task("carracing_lstm", "tiny")  # a preset with a step schedule


def test_bare_hand_names_take_the_tasks_preset(lane):
    assert parse("preset", lane).to_dict() == dict(lane.hand)
    adamax = parse("adamax", lane)
    assert adamax == HandSpec("adamax", 3e-3, "step", 0, 300, 0.3, None)
    assert parse("adam,lr=3e-4", lane).to_dict() == {**lane.hand, "learning_rate": 3e-4}
    # without a task a bare name is the constant lr 1e-3
    assert parse("adam").to_dict() == {"name": "adam", "learning_rate": 1e-3}
    cosine = parse("adamw,lr=1e-4,schedule=cosine,warmup=10,wd=0.05").to_dict()
    assert cosine == {
        "name": "adamw",
        "learning_rate": 1e-4,
        "schedule": "warmup_cosine",
        "warmup_steps": 10,
        "weight_decay": 0.05,
    }
    constant = parse("adam,schedule=constant", lane).to_dict()
    assert constant == {"name": "adam", "learning_rate": 3e-3}


def test_learned_and_combined_specs():
    assert parse("small") == LearnedSpec("small")
    assert parse("velo").to_dict() == {"name": "velo"}
    assert parse("small").to_dict() == {"name": "small"}
    hub = parse("hub:adamw(lr=1e-4,wd=0.05)+small,mode=inverted,clip=0.05:0.5")
    assert isinstance(hub, CombinedSpec) and hub.kind == "hub"
    assert hub.hand == HandSpec("adamw", 1e-4, weight_decay=0.05)
    assert hub.mode == "inverted" and hub.clip == (0.05, 0.5)
    assert hub.to_dict() == {
        "name": "hub",
        "hand": {"name": "adamw", "learning_rate": 1e-4, "weight_decay": 0.05},
        "learned": {"name": "small"},
        "mode": "inverted",
        "clip": [0.05, 0.5],
    }
    assert parse("blend:adam+velo,lam=0.25").to_dict()["lam"] == 0.25
    assert parse("lgl2o:adamax+small").to_dict()["name"] == "lgl2o"
    stand_in = parse("hub:adam+stand-in(opt=adamax,lr=0.01)").to_dict()["learned"]
    assert stand_in == {"name": "stand-in", "optimizer": {"name": "adamax", "learning_rate": 0.01}}
    default_lr = parse("hub:adam+stand-in(opt=adamax)").to_dict()["learned"]["optimizer"]
    assert default_lr["learning_rate"] == spec_language.STAND_IN_LR
    assert parse("hub:adam+small,blocks=finetune").to_dict()["blocks"] == "finetune"
    assert parse("hub:adam+small,sigma=rank").to_dict()["sigma"] == "rank"
    assert "sigma" not in parse("hub:adam+small,sigma=softmax").to_dict()  # the default
    theta = {"name": "theta", "path": "runs/v4/theta.msgpack"}
    assert parse("theta,path=runs/v4/theta.msgpack").to_dict() == theta
    assert parse("lgl2o:adam+theta(path=runs/v4/theta.msgpack)").to_dict()["learned"] == theta


@pytest.mark.parametrize(
    "text",
    [
        "adam",
        "adam,lr=0.0003,schedule=cosine,warmup=10",
        "adamw,lr=0.0001,wd=0.05",
        "adamax,lr=0.01,schedule=step,decay_every=300,decay_factor=0.3",
        "small",
        "velo",
        "hub:adam(lr=0.001)+small",
        "hub:adamw(lr=0.0001,wd=0.05)+small,mode=inverted,clip=0.05:0.5",
        "hub:adam(lr=0.001)+velo,blocks=finetune",
        "hub:adam(lr=0.001)+small,mode=inverted,sigma=hyper,clip=0.1:0.9",
        "lgl2o:adamax(lr=0.002)+small",
        "blend:adam(lr=0.001)+small,lam=0.5",
        "hub:adam(lr=0.001)+stand-in(opt=adamax,lr=0.002)",
        "theta,path=runs/v4/theta.msgpack",
        "hub:adam(lr=0.001)+theta(path=C:/runs/theta.msgpack),mode=inverted",
    ],
)
def test_describe_inverts_parse(text):
    spec = parse(text).to_dict()
    assert parse(describe(spec)).to_dict() == spec


@pytest.mark.parametrize(
    "text,problem,marked",
    [
        ("adm", "unknown optimizer adm", "adm"),
        ("hub:adam+smal", "learned member must be one of small, velo, theta, stand-in", "smal"),
        ("theta", "theta needs path=FILE", "theta"),
        ("hub:adam+theta(size=2)", "unknown option 'size' for theta", "size=2"),
        ("hub:adam+theta(path=a+b)", "unexpected '+' in option 'path'", "+"),
        ("hub:adam small", "expected '+'", " "),
        ("hub:adam+small,mode=weird", "mode must be one of default, inverted", "weird"),
        ("hub:adam+small,clip=0.6:0.5", "clip needs 0 <= B <= A <= 1", "0.6:0.5"),
        ("hub:adam+small,clip=0.5", "clip is B:A", "0.5"),
        ("hub:adam+small,lam=0.5", "unknown option 'lam' for hub", "lam=0.5"),
        ("hub:adam+small,sigma=mean", "sigma must be one of softmax, rank", "mean"),
        ("blend:adam+small", "blend needs lam", "blend:adam+small"),
        ("blend:adam+small,lam=2", "'lam' must lie in [0, 1]", "2"),
        ("adam,lr=-1", "'lr' must lie in (0, inf]", "-1"),
        ("adam,lr=fast", "'lr' must be a number", "fast"),
        ("adam,wd=0.1", "'wd' (weight decay) is for adamw only", "wd=0.1"),
        ("adam,warmup=1.5", "'warmup' must be an integer >= 0", "1.5"),
        ("adam,schedule=step", "schedule=step needs decay_every", "adam,schedule=step"),
        ("adam,lr=1,lr=2", "option 'lr' given twice", "lr=2"),
        ("adam,lr", "expected '=' after option 'lr'", ""),
        ("small,lr=1", "small takes no options", "lr=1"),
        ("hub:velo+small", "hand member must be one of", "velo"),
        ("hub:adam+stand-in", "stand-in needs opt=NAME", "stand-in"),
        ("hub:adam+stand-in(opt=sgd)", "a stand-in is one of", "sgd"),
        ("hub:adam(lr=1e-3+small", "unexpected '+' in option 'lr'", "+"),
        ("stand-in", "unknown optimizer stand-in", "stand-in"),
        ("  ", "empty spec", ""),
        ("preset", "'preset' means a task's own optimizer", "preset"),
    ],
)
def test_bad_specs_point_at_the_bad_part(text, problem, marked):
    with pytest.raises(SpecSyntaxError) as info:
        parse(text)
    err = info.value
    assert problem in str(err)
    text_line, caret_line = str(err).splitlines()[1:3]
    assert text_line.strip() == text.strip()
    if marked.strip():
        start = caret_line.index("^")
        assert text.strip()[start - 2 : start - 2 + len(marked)] == marked
    assert isinstance(err, ValueError)


def test_parse_rejects_non_text():
    with pytest.raises(TypeError, match="a str"):
        parse({"name": "adam"})


def test_every_parsed_spec_builds():
    for text in [
        "adam",
        "adamw,lr=1e-4,schedule=cosine,warmup=2",
        "hub:adam+stand-in(opt=adamax),clip=0.1:0.9",
        "lgl2o:adam+stand-in(opt=adamax)",
        "blend:adam+stand-in(opt=adamax),lam=0.5",
    ]:
        built = optimizers.build(parse(text).to_dict(), num_steps=10)
        params = {"w": jnp.ones(3)}
        state = built.tx.init(params)
        updates, _ = built.tx.update(
            {"w": jnp.ones(3)}, state, params, value=jnp.float32(1.0), value_fn=lambda p: 1.0
        )
        assert jnp.all(jnp.isfinite(updates["w"]))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("small", "velo"),
        ("hub:adamw(lr=1e-4,wd=0.05)+small,mode=inverted,clip=0.05:0.5,sigma=rank",
         "hub:adamw(lr=1e-4,wd=0.05)+velo,mode=inverted,clip=0.05:0.5,sigma=rank"),
        ("lgl2o:adamax+stand-in(opt=adam)", "lgl2o:adamax+velo"),
        ("blend:adam+small,lam=0.25", "blend:adam+velo,lam=0.25"),
        ("adamw,lr=3e-4", "adamw,lr=3e-4"),
    ],
)  # fmt: skip
def test_replace_learned_changes_the_learned_slot_only(text, expected):
    replaced = spec_language.replace_learned(parse(text), LearnedSpec("velo"))
    assert replaced == parse(expected)


def test_replace_learned_takes_a_learned_spec():
    with pytest.raises(TypeError, match="LearnedSpec"):
        spec_language.replace_learned(parse("small"), parse("adam"))


def test_finetune_blocks_give_the_head_default_and_the_backbone_inverted():
    params = {"backbone": {"conv": jnp.ones((3, 3))}, "head": {"w": jnp.ones(2), "b": jnp.ones(1)}}
    modes = optimizers.finetune_blocks(params)
    assert modes == {"backbone": {"conv": "inverted"}, "head": {"w": "default", "b": "default"}}
    spec = parse("hub:adam+stand-in(opt=adamax),blocks=finetune").to_dict()
    built = optimizers.build(spec, num_steps=10)
    assert "blocks=finetune" in built.label
    state = built.tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = built.tx.update(grads, state, params)
    assert jax.tree.structure(updates) == jax.tree.structure(params)
    with pytest.raises(optimizers.OptimizerSpecError, match="top-level 'head'"):
        optimizers.finetune_blocks({"w": jnp.ones(2)})
    with pytest.raises(optimizers.OptimizerSpecError, match="unknown block rule"):
        optimizers.build({**spec, "blocks": "nope"}, num_steps=10)
