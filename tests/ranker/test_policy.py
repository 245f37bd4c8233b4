"""Surface policies from TOML: a valid file becomes the dataclasses; any fault is a
:class:`ConfigError` whose message names the offending key."""

from __future__ import annotations

import re
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest

from ranker import (
    DEFAULT_SURFACE,
    Blend,
    ConfigError,
    Diversity,
    Exploration,
    Reciprocal,
    Rule,
    Stochastic,
    Surface,
    Surfaces,
    load_surfaces,
    parse_surfaces,
)
from ranker.policy import HEURISTIC_BLEND

FULL = """
[surfaces.home]
k = 12
candidates = 500
retrieval = { all = [ { term = ["kind", "pro"] },
                      { term = ["city", "$context.city"] } ] }
allow_repeats = true

[surfaces.home.blend]
model = 1.0
popularity = 0.2
recency = 0.0
affinity = 0.3

[[surfaces.home.rules]]
action = "boost"
query = { range = ["like", 50, inf] }
weight = 0.5

[[surfaces.home.rules]]
action = "bury"
name = "cheap"
query = { range = ["price", -inf, 10] }

[[surfaces.home.rules]]
action = "filter"
query = { not = { term = ["category", "$user.top.category"] } }

[surfaces.home.diversity]
field = "category"
max_per_value = 3
mmr = 0.3

[surfaces.home.exploration]
share = 0.1
seed = 7
pool = 64

[surfaces.pro_match]
retrieval = { term = ["kind", "pro"] }

[surfaces.pro_match.reciprocal]
job = "job_id"
prior = 0.25
strength = 2
fit = 2.5
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "surfaces.toml"
    path.write_text(textwrap.dedent(text))
    return path


def parse_toml(text: str) -> Surfaces:
    return parse_surfaces(tomllib.loads(textwrap.dedent(text)))


# -- valid configs ----------------------------------------------------------------------


def test_a_full_config_round_trips_into_the_dataclasses(tmp_path: Path) -> None:
    surfaces = load_surfaces(write(tmp_path, FULL))

    assert set(surfaces.policies) == {"home", "pro_match"}
    assert surfaces.get("home") == Surface(
        name="home",
        retrieval={"all": [{"term": ["kind", "pro"]}, {"term": ["city", "$context.city"]}]},
        candidates=500,
        k=12,
        blend=Blend(model=1.0, popularity=0.2, recency=0.0, affinity=0.3),
        blend_pinned=True,
        rules=(
            Rule(action="boost", query={"range": ["like", 50, None]}, weight=0.5, name="boost[0]"),
            Rule(action="bury", query={"range": ["price", None, 10]}, weight=1.0, name="cheap"),
            Rule(
                action="filter",
                query={"not": {"term": ["category", "$user.top.category"]}},
                weight=1.0,
                name="filter[2]",
            ),
        ),
        diversity=Diversity(field="category", max_per_value=3, mmr=0.3),
        exploration=Exploration(share=0.1, seed=7, pool=64),
        allow_repeats=True,
        reciprocal=None,
    )
    assert surfaces.get("pro_match") == Surface(
        name="pro_match",
        retrieval={"term": ["kind", "pro"]},
        reciprocal=Reciprocal(job="job_id", prior=0.25, strength=2.0, fit=2.5),
    )


def test_inf_range_bounds_become_open_bounds() -> None:
    surfaces = parse_toml(
        """
        [surfaces.s]
        retrieval = { any = [ { range = ["like", 50, inf] }, { range = ["price", -inf, 9.5] } ] }
        """
    )

    assert surfaces.get("s").retrieval == {
        "any": [{"range": ["like", 50, None]}, {"range": ["price", None, 9.5]}]
    }


def test_a_surface_without_settings_gets_the_defaults() -> None:
    surfaces = parse_toml("[surfaces.bare]\n")

    assert surfaces.get("bare") == Surface(name="bare")
    assert surfaces.get("bare").blend == Blend(model=1.0)


def test_an_empty_config_has_no_surfaces_but_the_default() -> None:
    surfaces = parse_surfaces({})

    assert dict(surfaces.policies) == {}
    assert DEFAULT_SURFACE in surfaces
    assert "home" not in surfaces


def test_unknown_surfaces_get_the_built_in_default() -> None:
    default = Surfaces().get("anything")

    assert default == Surface(name=DEFAULT_SURFACE)
    assert default.retrieval is None
    assert default.blend == Blend(model=1.0, popularity=0.0, recency=0.0, affinity=0.0)
    assert Surfaces().get(DEFAULT_SURFACE) == default


def test_a_configured_default_surface_overrides_the_built_in_one() -> None:
    surfaces = parse_toml(
        """
        [surfaces.default]
        k = 5
        [surfaces.default.blend]
        popularity = 1.0

        [surfaces.home]
        k = 20
        """
    )

    fallback = surfaces.get("anything")
    assert fallback.name == DEFAULT_SURFACE
    assert fallback.k == 5
    assert fallback.blend.popularity == 1.0
    assert surfaces.get("home").k == 20


def test_a_stochastic_table_turns_the_plackett_luce_draw_on() -> None:
    surfaces = parse_toml(
        """
        [surfaces.feed.stochastic]
        temperature = 0.5
        pool = 9
        seed = 3
        [surfaces.wide]
        k = 20
        [surfaces.wide.stochastic]
        """
    )

    assert surfaces.get("feed").stochastic == Stochastic(temperature=0.5, pool=9, seed=3)
    # The pool defaults to k plus 2, bounded by MAX_STOCHASTIC_POOL.
    assert surfaces.get("wide").stochastic == Stochastic(temperature=1.0, pool=14, seed=0)
    assert parse_toml("[surfaces.plain]\n").get("plain").stochastic is None


def test_stochastic_ranking_and_exploration_are_refused_together() -> None:
    """Exploration's propensities are estimated, so the slate's would not be exact."""
    with pytest.raises(ConfigError) as caught:
        parse_toml(
            """
            [surfaces.home.stochastic]
            [surfaces.home.exploration]
            share = 0.1
            """
        )

    assert str(caught.value).startswith("surfaces.home.stochastic: cannot be combined")
    assert "surfaces.home.exploration.share" in str(caught.value)


# -- Blend.heuristic --------------------------------------------------------------------


def test_heuristic_blend_keeps_the_non_model_parts() -> None:
    blend = Blend(model=1.0, popularity=0.2, recency=0.1, affinity=0.0)

    assert blend.heuristic() == Blend(model=0.0, popularity=0.2, recency=0.1, affinity=0.0)


def test_heuristic_blend_of_a_model_only_blend_is_a_default_mix() -> None:
    heuristic = Blend(model=3.0).heuristic()

    assert heuristic.model == 0.0
    assert heuristic == HEURISTIC_BLEND
    assert heuristic.cooccurrence > 0  # live co-occurrence serves before any model


# -- invalid configs --------------------------------------------------------------------

BAD: list[tuple[str, str]] = [
    ("colour = 1", "colour"),
    ("surfaces = 3", "surfaces"),
    ("[surfaces]\nhome = 3", "surfaces.home"),
    ("[surfaces.home]\ncolour = 1", "surfaces.home.colour"),
    ('[surfaces.home]\nk = "ten"', "surfaces.home.k"),
    ("[surfaces.home]\nk = 0", "surfaces.home.k"),
    ("[surfaces.home]\nk = 10.0", "surfaces.home.k"),
    ("[surfaces.home]\nk = true", "surfaces.home.k"),
    ("[surfaces.home]\ncandidates = 1000000", "surfaces.home.candidates"),
    ('[surfaces.home]\nallow_repeats = "yes"', "surfaces.home.allow_repeats"),
    ('[surfaces.home]\nretrieval = "everything"', "surfaces.home.retrieval"),
    ('[surfaces.home]\nretrieval = { term = ["kind"] }', "surfaces.home.retrieval.term"),
    (
        '[surfaces.home]\nretrieval = { all = [ { term = ["city", "$ctx.city"] } ] }',
        "surfaces.home.retrieval.all[0].term[1]",
    ),
    ("[surfaces.home]\nrules = 3", "surfaces.home.rules"),
    (
        '[[surfaces.home.rules]]\naction = "promote"\nquery = { term = ["kind", "pro"] }',
        "surfaces.home.rules[0].action",
    ),
    ('[[surfaces.home.rules]]\naction = "boost"', "surfaces.home.rules[0].query"),
    (
        '[[surfaces.home.rules]]\naction = "boost"\nquery = { term = ["kind", "pro"] }\n'
        '[[surfaces.home.rules]]\naction = "bury"\nquery = { range = ["like"] }',
        "surfaces.home.rules[1].query.range",
    ),
    (
        '[[surfaces.home.rules]]\naction = "boost"\nquery = { term = ["kind", "pro"] }\n'
        "weight = -1",
        "surfaces.home.rules[0].weight",
    ),
    (
        '[[surfaces.home.rules]]\naction = "boost"\nquery = { term = ["kind", "pro"] }\n'
        "weight = inf",
        "surfaces.home.rules[0].weight",
    ),
    (
        '[[surfaces.home.rules]]\naction = "boost"\nquery = { term = ["kind", "pro"] }\nwhy = "x"',
        "surfaces.home.rules[0].why",
    ),
    ("[surfaces.home.blend]\nmodel = -1", "surfaces.home.blend.model"),
    ('[surfaces.home.blend]\naffinity = "high"', "surfaces.home.blend.affinity"),
    ("[surfaces.home.blend]\nmodel = 0", "surfaces.home.blend"),
    ("[surfaces.home.blend]\ncolour = 1", "surfaces.home.blend.colour"),
    ('[surfaces.home.diversity]\nfield = "category"', "surfaces.home.diversity"),
    ("[surfaces.home.diversity]\nmax_per_value = 2", "surfaces.home.diversity"),
    ("[surfaces.home.diversity]\nmmr = 1.5", "surfaces.home.diversity.mmr"),
    ("[surfaces.home.exploration]\nshare = 2", "surfaces.home.exploration.share"),
    ("[surfaces.home.exploration]\nseed = -1", "surfaces.home.exploration.seed"),
    ("[surfaces.home.exploration]\npool = 0", "surfaces.home.exploration.pool"),
    ("[surfaces.home.reciprocal]\nprior = 0", "surfaces.home.reciprocal.prior"),
    ("[surfaces.home.reciprocal]\nprior = 1.0", "surfaces.home.reciprocal.prior"),
    ("[surfaces.home.reciprocal]\nprior = 1.5", "surfaces.home.reciprocal.prior"),
    ('[surfaces.home.reciprocal]\njob = ""', "surfaces.home.reciprocal.job"),
    ("[surfaces.home.reciprocal]\nstrength = -1", "surfaces.home.reciprocal.strength"),
    ("[surfaces.home.reciprocal]\nfit = -0.5", "surfaces.home.reciprocal.fit"),
    ('[surfaces.home.reciprocal]\nfit = "high"', "surfaces.home.reciprocal.fit"),
    ("[surfaces.home]\nreciprocal = 1", "surfaces.home.reciprocal"),
    ("[surfaces.home]\nstochastic = 1", "surfaces.home.stochastic"),
    ("[surfaces.home.stochastic]\ntemperature = 0", "surfaces.home.stochastic.temperature"),
    ("[surfaces.home.stochastic]\ntemperature = -1", "surfaces.home.stochastic.temperature"),
    ("[surfaces.home.stochastic]\ntemperature = inf", "surfaces.home.stochastic.temperature"),
    ("[surfaces.home.stochastic]\npool = 1", "surfaces.home.stochastic.pool"),
    ("[surfaces.home.stochastic]\npool = 15", "surfaces.home.stochastic.pool"),
    ("[surfaces.home.stochastic]\nseed = -1", "surfaces.home.stochastic.seed"),
    ("[surfaces.home.stochastic]\nshare = 0.1", "surfaces.home.stochastic.share"),
]


@pytest.mark.parametrize(("text", "path"), BAD)
def test_a_bad_config_names_the_offending_key(text: str, path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_toml(text)

    assert str(caught.value).startswith(f"{path}:")


@pytest.mark.parametrize(("text", "path"), BAD[:8])
def test_load_surfaces_names_the_file_and_the_key(tmp_path: Path, text: str, path: str) -> None:
    file = write(tmp_path, text)

    with pytest.raises(ConfigError, match=re.escape(f"{file}: {path}:")):
        load_surfaces(file)


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    file = write(tmp_path, "[surfaces.home\nk = 1")

    with pytest.raises(ConfigError, match="not valid TOML"):
        load_surfaces(file)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read surfaces config"):
        load_surfaces(tmp_path / "nowhere.toml")


def test_parse_surfaces_does_not_mutate_its_input_queries() -> None:
    raw: dict[str, Any] = {"surfaces": {"s": {"retrieval": {"range": ["like", 1, float("inf")]}}}}

    surfaces = parse_surfaces(raw)

    assert surfaces.get("s").retrieval == {"range": ["like", 1, None]}
    assert raw["surfaces"]["s"]["retrieval"]["range"][2] == float("inf")
