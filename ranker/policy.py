"""Surface policies: how each product surface retrieves, scores and re-ranks.

A *surface* is a place in a product that shows recommendations (``home``,
``search_results``, ``pro_jobs``). Its policy is data, declared in a TOML file
given to ``matchlight serve --config FILE`` and kept apart from the engine::

    [surfaces.home]
    k = 10                      # items per response unless the request says
    candidates = 1000           # retrieved from the index, then scored
    retrieval = { all = [ { term = ["kind", "pro"] },
                          { term = ["city", "$context.city"] } ] }
    allow_repeats = false       # may seen items come back? (never if dismissed last)

    [surfaces.home.blend]       # score = sum of weight * standardised part;
                                # weights left out of a blend table are 0.
    model = 1.0                 # Without this table the surface uses the blend
    popularity = 0.2            # `matchlight train` learned from the log (or a
    recency = 0.0               # default mix before any was learned).
    affinity = 0.3
    cooccurrence = 1.0
    trending = 0.0

    [[surfaces.home.rules]]     # filter | boost | bury, by query
    action = "boost"
    query = { range = ["like", 50, inf] }
    weight = 0.5

    [surfaces.home.diversity]
    field = "category"          # at most max_per_value items per category ...
    max_per_value = 3
    mmr = 0.3                   # ... and/or MMR over model embeddings (0 = off)

    [surfaces.home.exploration]
    share = 0.1                 # share of the k slots for Thompson sampling
    seed = 7

    [surfaces.feed.stochastic]  # serve a Plackett-Luce draw, exact probabilities logged
    temperature = 0.5           # in standard deviations of the candidates' scores
    pool = 12                   # the best this many (after diversity) take part
    seed = 3                    # (not with exploration: see Stochastic)

    [surfaces.pro_match.reciprocal]   # two-sided: the pro must want the job too
    job = "job"                 # the context key naming the job item
    prior = 0.5                 # willingness of a pro with no history
    fit = 1.0                   # how much the job's own terms lead (0 = not at all)

Queries (retrieval and rules) use the ``search`` language; TOML has no null,
so ``inf``/``-inf`` stand for an open range bound. Strings ``$context.NAME``
and ``$user.top.FIELD`` are placeholders filled per request (see
:mod:`ranker.template`). A surface named ``default`` exists without any
config (all active items, model score); unknown surfaces use it.
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

import attrs

from ranker.errors import ConfigError

DEFAULT_SURFACE: Final = "default"
MAX_K: Final = 1000
MAX_CANDIDATES: Final = 100_000
#: The largest Plackett-Luce pool: its exact per-position probabilities walk the pool's
#: 2 ** pool subsets (see :mod:`ranker.stochastic`: 12 cost 0.13 ms, 14 cost 0.46 ms).
MAX_STOCHASTIC_POOL: Final = 14
#: A stochastic pool holds this many more than the surface's ``k`` unless configured.
STOCHASTIC_POOL_EXTRA: Final = 2

RuleAction = Literal["filter", "boost", "bury"]


#: The parts of a blend, as a surface's ``[blend]`` table and a learned blend name them.
BLEND_PARTS: Final = (
    "model",
    "popularity",
    "recency",
    "affinity",
    "cooccurrence",
    "trending",
)


#: The default soft clip of standardised parts, in standard deviations (see ``Blend.clip_z``).
CLIP_Z: Final = 3.0


@attrs.frozen(kw_only=True)
class Blend:
    """Weights of the score parts; each part is standardised over the candidates first.

    ``model``: the LightFM score with the user folded in from live state;
    ``popularity``: the item's decayed engagement; ``recency``: how recently
    anyone engaged with it; ``affinity``: the user's affinity to its terms;
    ``cooccurrence``: how often users who engaged with the user's recent items
    went on to it (:mod:`actors.cooccurrence`); ``trending``: its popularity
    if it carries the user's favourite terms (trending in their genres,
    categories, cities), weighted by that affinity.
    """

    model: float = 1.0
    popularity: float = 0.0
    recency: float = 0.0
    affinity: float = 0.0
    cooccurrence: float = 0.0
    trending: float = 0.0
    #: Standardised parts are softly clipped at this many deviations (``math.inf``: not at
    #: all). Hand-set weights keep the clip, so a runaway best-seller cannot drown a user's
    #: taste; a learned blend was fitted on unclipped parts and is served unclipped, since
    #: clipping flattens the top of a sparse part (on MovieLens, co-occurrence scores only a
    #: few candidates, whose z-scores reach 10-30: clipped at 3, hit@10 fell from 0.122 to 0.108).
    clip_z: float = CLIP_Z

    def heuristic(self) -> Blend:
        """The blend to use while no model exists: the non-model parts, or a default mix."""
        if self.popularity or self.recency or self.affinity or self.cooccurrence or self.trending:
            return attrs.evolve(self, model=0.0)
        return HEURISTIC_BLEND

    def weights(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in BLEND_PARTS}


#: Without a model and without a pinned or learned blend: live signals only.
HEURISTIC_BLEND: Final = Blend(model=0.0, popularity=1.0, affinity=1.0, cooccurrence=1.0)
#: With a model that carries no learned blend, on a surface that pins none.
DEFAULT_BLEND: Final = Blend(model=1.0, popularity=0.2, cooccurrence=1.0)


@attrs.frozen(kw_only=True)
class Rule:
    """A rule: ``filter`` keeps matches only; ``boost``/``bury`` move them by ``weight``."""

    action: RuleAction
    #: A query template (see :mod:`ranker.template`).
    query: Any
    weight: float = 1.0
    name: str = ""


@attrs.frozen(kw_only=True)
class Diversity:
    #: At most ``max_per_value`` items per value of this term field.
    field: str | None = None
    max_per_value: int | None = None
    #: Maximal marginal relevance trade-off: 0 is off, 1 is diversity only.
    mmr: float = 0.0


@attrs.frozen(kw_only=True)
class Exploration:
    #: Share of the ``k`` slots given to Thompson sampling on item counters.
    share: float = 0.0
    seed: int = 0
    #: Explored items are drawn from this many next-best candidates.
    pool: int = 64


@attrs.frozen(kw_only=True)
class Stochastic:
    """Serve a Plackett-Luce draw from the best candidates instead of their fixed order.

    Diversity chooses the ``pool`` best candidates it allows (in score order);
    the served slots are drawn from them one at a time, each with probability
    proportional to ``exp(z / temperature)``, ``z`` the candidate's score
    standardised over all the request's candidates. Slots beyond the pool
    (a request for more than ``pool`` items) are the next diversity picks, in
    order. Every slot's probability is exact and logged, so any candidate
    policy can be evaluated from the log. Exploration cannot be combined with
    it: Thompson propensities are estimated from draws, not exact (a wider
    pool or a higher temperature explores instead).
    """

    #: In standard deviations of the candidates' scores: small is nearly the fixed order,
    #: large nearly uniform over the pool.
    temperature: float = 1.0
    #: How many of the best candidates take part, at most :data:`MAX_STOCHASTIC_POOL`.
    pool: int = 10 + STOCHASTIC_POOL_EXTRA
    seed: int = 0


@attrs.frozen(kw_only=True)
class Reciprocal:
    """Two-sided matching: candidates are suppliers (pros) who must want the request too."""

    #: The ``context`` key naming the item (a job) the request is about.
    job: str = "job"
    #: Willingness of a supplier without any history.
    prior: float = 0.5
    #: How strongly a supplier's accept/decline history on the job's terms moves willingness.
    strength: float = 1.0
    #: How much the job's own terms lead. Above 0, retrieval keeps the suppliers carrying
    #: the job's terms (while at least ``k`` do), and ``fit`` times how well a supplier's
    #: terms fit the job's (in [0, 1]) adds to the harmonic mean of interest and willingness
    #: (in [0, 1]): at 1 or more, a full fit ranks above no fit. 0: only willingness sees it.
    fit: float = 1.0


@attrs.frozen(kw_only=True)
class Surface:
    name: str
    #: A query template, ``None`` for every active item.
    retrieval: Any = None
    candidates: int = 1000
    k: int = 10
    blend: Blend = attrs.field(factory=Blend)
    #: Whether the config gave ``blend`` (a ``[blend]`` table): then it is used as given.
    #: Otherwise the ranker uses the blend ``matchlight train`` learned, if any.
    blend_pinned: bool = False
    rules: tuple[Rule, ...] = ()
    diversity: Diversity = attrs.field(factory=Diversity)
    exploration: Exploration = attrs.field(factory=Exploration)
    #: Whether items the user already interacted with may be shown again. ``False``
    #: (the default): never, however long ago and however long their history (every
    #: interaction of any type counts, dismissals and views included). ``True``: any
    #: of them may come back except those whose latest interaction is a dismissal.
    allow_repeats: bool = False
    reciprocal: Reciprocal | None = None
    #: A stochastic ranking (``None``: the fixed order, the default).
    stochastic: Stochastic | None = None


def config_digest(source: bytes) -> str:
    """What a surfaces config is known by (decision records, ``DATA/configs/DIGEST.toml``):
    the first 16 hex digits of the SHA-256 of its file's bytes."""
    return hashlib.sha256(source).hexdigest()[:16]


@attrs.frozen
class Surfaces:
    """The configured surfaces; :meth:`get` falls back to ``default``."""

    policies: Mapping[str, Surface] = attrs.field(factory=dict)
    #: The TOML file they were read from, as its bytes (empty without a file).
    source: bytes = attrs.field(default=b"", kw_only=True)
    digest: str = attrs.field(
        init=False, default=attrs.Factory(lambda s: config_digest(s.source), takes_self=True)
    )

    def get(self, name: str) -> Surface:
        policy = self.policies.get(name)
        if policy is None:
            policy = self.policies.get(DEFAULT_SURFACE, _DEFAULT)
        return policy

    def __contains__(self, name: object) -> bool:
        return name in self.policies or name == DEFAULT_SURFACE


_DEFAULT: Final = Surface(name=DEFAULT_SURFACE)


# -- loading --------------------------------------------------------------------------


def load_surfaces(path: str | Path) -> Surfaces:
    """Read and check a surfaces TOML file.

    Raises:
        ConfigError: the file cannot be read, is not TOML, or a key or value is wrong
            (the message names it, e.g. ``surfaces.home.rules[0].weight``).
    """
    try:
        source = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read surfaces config {path}: {exc.strerror}") from exc
    try:
        raw = tomllib.loads(source.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return attrs.evolve(parse_surfaces(raw), source=source)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def parse_surfaces(raw: Mapping[str, Any]) -> Surfaces:
    """Check a parsed surfaces config (the TOML document as a map).

    Raises:
        ConfigError: naming the offending key.
    """
    # "migration" belongs to the legacy adapter (legacy_adapter.router), not to the ranker.
    _keys(raw, "", {"surfaces", "migration"})
    surfaces = _table(raw.get("surfaces", {}), "surfaces")
    policies = {name: _surface(name, value) for name, value in surfaces.items()}
    return Surfaces(policies)


def _surface(name: str, raw: Any) -> Surface:
    from ranker.template import check_template  # template imports policy for types

    path = f"surfaces.{name}"
    table = _table(raw, path)
    _keys(
        table,
        path,
        {
            "retrieval",
            "candidates",
            "k",
            "blend",
            "rules",
            "diversity",
            "exploration",
            "allow_repeats",
            "reciprocal",
            "stochastic",
        },
    )
    retrieval = table.get("retrieval")
    if retrieval is not None:
        retrieval = _query(retrieval, f"{path}.retrieval")
        check_template(retrieval, f"{path}.retrieval")
    rules = []
    raw_rules = table.get("rules", [])
    if not isinstance(raw_rules, list):
        raise ConfigError(f"{path}.rules: expected an array of tables")
    for i, raw_rule in enumerate(raw_rules):
        rule_path = f"{path}.rules[{i}]"
        rule = _table(raw_rule, rule_path)
        _keys(rule, rule_path, {"action", "query", "weight", "name"})
        action = rule.get("action")
        if action not in ("filter", "boost", "bury"):
            raise ConfigError(f"{rule_path}.action: expected filter, boost or bury, got {action!r}")
        if "query" not in rule:
            raise ConfigError(f"{rule_path}.query: required")
        query = _query(rule["query"], f"{rule_path}.query")
        check_template(query, f"{rule_path}.query")
        rules.append(
            Rule(
                action=action,
                query=query,
                weight=_number(rule.get("weight", 1.0), f"{rule_path}.weight", low=0.0),
                name=_string(rule.get("name", f"{action}[{i}]"), f"{rule_path}.name"),
            )
        )
    k = _int(table.get("k", 10), f"{path}.k", 1, MAX_K)
    exploration = _exploration(table.get("exploration", {}), f"{path}.exploration")
    stochastic = None
    if "stochastic" in table:
        stochastic = _stochastic(table["stochastic"], f"{path}.stochastic", k)
        if exploration.share:
            raise ConfigError(
                f"{path}.stochastic: cannot be combined with exploration ({path}.exploration."
                f"share is {exploration.share:g}): Thompson propensities are estimated, so the "
                "slate's probabilities would not be exact; widen the pool or raise the "
                "temperature to explore"
            )
    return Surface(
        name=name,
        retrieval=retrieval,
        candidates=_int(table.get("candidates", 1000), f"{path}.candidates", 1, MAX_CANDIDATES),
        k=k,
        blend=_blend(table.get("blend", {}), f"{path}.blend"),
        blend_pinned="blend" in table,
        rules=tuple(rules),
        diversity=_diversity(table.get("diversity", {}), f"{path}.diversity"),
        exploration=exploration,
        allow_repeats=_bool(table.get("allow_repeats", False), f"{path}.allow_repeats"),
        reciprocal=None
        if "reciprocal" not in table
        else _reciprocal(table["reciprocal"], f"{path}.reciprocal"),
        stochastic=stochastic,
    )


def _blend(raw: Any, path: str) -> Blend:
    table = _table(raw, path)
    names = set(BLEND_PARTS)
    _keys(table, path, names)
    weights = {n: _number(table[n], f"{path}.{n}", low=0.0) for n in names if n in table}
    if not table:
        return Blend()
    blend = Blend(**dict.fromkeys(names, 0.0) | weights)
    if not any(weights.values()):
        raise ConfigError(f"{path}: at least one weight must be above 0")
    return blend


def _diversity(raw: Any, path: str) -> Diversity:
    table = _table(raw, path)
    _keys(table, path, {"field", "max_per_value", "mmr"})
    field = table.get("field")
    if field is not None:
        field = _string(field, f"{path}.field")
    cap = table.get("max_per_value")
    if cap is not None:
        cap = _int(cap, f"{path}.max_per_value", 1, MAX_K)
    if (field is None) != (cap is None):
        raise ConfigError(f"{path}: field and max_per_value go together")
    mmr = _number(table.get("mmr", 0.0), f"{path}.mmr", low=0.0, high=1.0)
    return Diversity(field=field, max_per_value=cap, mmr=mmr)


def _exploration(raw: Any, path: str) -> Exploration:
    table = _table(raw, path)
    _keys(table, path, {"share", "seed", "pool"})
    return Exploration(
        share=_number(table.get("share", 0.0), f"{path}.share", low=0.0, high=1.0),
        seed=_int(table.get("seed", 0), f"{path}.seed", 0, 2**63 - 1),
        pool=_int(table.get("pool", 64), f"{path}.pool", 1, 10_000),
    )


def _stochastic(raw: Any, path: str, k: int) -> Stochastic:
    """The ``stochastic`` table; its pool defaults to ``k`` plus :data:`STOCHASTIC_POOL_EXTRA`."""
    table = _table(raw, path)
    _keys(table, path, {"temperature", "pool", "seed"})
    temperature = _number(table.get("temperature", 1.0), f"{path}.temperature", low=0.0)
    if not temperature > 0.0:
        raise ConfigError(f"{path}.temperature: must be above 0, got {temperature}")
    pool = min(k + STOCHASTIC_POOL_EXTRA, MAX_STOCHASTIC_POOL)
    return Stochastic(
        temperature=temperature,
        pool=_int(table.get("pool", pool), f"{path}.pool", 2, MAX_STOCHASTIC_POOL),
        seed=_int(table.get("seed", 0), f"{path}.seed", 0, 2**63 - 1),
    )


def _reciprocal(raw: Any, path: str) -> Reciprocal:
    table = _table(raw, path)
    _keys(table, path, {"job", "prior", "strength", "fit"})
    prior = _number(table.get("prior", 0.5), f"{path}.prior", low=0.0, high=1.0)
    if not 0.0 < prior < 1.0:
        raise ConfigError(f"{path}.prior: must lie strictly between 0 and 1, got {prior}")
    return Reciprocal(
        job=_string(table.get("job", "job"), f"{path}.job"),
        prior=prior,
        strength=_number(table.get("strength", 1.0), f"{path}.strength", low=0.0),
        fit=_number(table.get("fit", 1.0), f"{path}.fit", low=0.0),
    )


# -- value checks ---------------------------------------------------------------------


def _table(raw: Any, path: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a table, got {type(raw).__name__}")
    return raw


def _keys(table: Mapping[str, Any], path: str, allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ConfigError(f"{where}: unknown key (expected one of {', '.join(sorted(allowed))})")


def _number(raw: Any, path: str, *, low: float | None = None, high: float | None = None) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise ConfigError(f"{path}: expected a finite number, got {raw!r}")
    if (low is not None and raw < low) or (high is not None and raw > high):
        raise ConfigError(f"{path}: must lie in [{low}, {high}], got {raw}")
    return float(raw)


def _int(raw: Any, path: str, low: int, high: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
        raise ConfigError(f"{path}: expected an integer in [{low}, {high}], got {raw!r}")
    return raw


def _string(raw: Any, path: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise ConfigError(f"{path}: expected a non-empty string, got {raw!r}")
    return raw


def _bool(raw: Any, path: str) -> bool:
    if not isinstance(raw, bool):
        raise ConfigError(f"{path}: expected true or false, got {raw!r}")
    return raw


def _query(raw: Any, path: str) -> Any:
    """A query from TOML: ``inf``/``-inf`` range bounds become open (null) bounds."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a query table, got {type(raw).__name__}")
    return _open_bounds(raw)


def _open_bounds(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _open_bounds(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_open_bounds(value) for value in node]
    if isinstance(node, float) and math.isinf(node):
        return None
    return node
