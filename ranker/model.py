"""The LightFM model facade: features, artifacts on disk, and live representations.

A model is a LightFM hybrid model (Kula, 2015): a user and an item are each
the sum of the embeddings of their *features*, and a score is the dot
product plus both biases. Features here are

- items: the item's identity (``item:ID``) if it existed at training time,
  its terms (``t:FIELD=VALUE``) and its kind (``kind:KIND``);
- users: the user's identity (``user:ID``) if they existed at training time,
  and the terms they like most (``a:FIELD=VALUE``, weighted by their
  positive time-decayed affinity).

Training chooses which of these a model uses (:mod:`ranker.train`): its
vocabularies hold only the features it was fitted with, and the artifact
records the weight of a term feature relative to an identity (1 unless
training chose otherwise). Each feature row is weighted so and normalised to
sum to 1, at training and at serving alike (:func:`item_feature_weights`,
:func:`user_feature_weights`); features outside the vocabulary count for
nothing, so serving applies the trained feature set unchanged. An item with
no identity in the vocabulary (added after training, or never engaged with
before it) is represented by its known terms. Live fold-in follows:
at request time a user is represented from their *current* affinity, so an
event from a second ago moves the representation, and a user who arrived
after training is represented by their features alone; an item added after
training is represented by its term features (cold start).

An artifact is a directory ``models/VERSION/`` holding ``model.npz`` (the
feature embeddings and biases) and ``meta.json`` (vocabularies and training
facts, and the term weights); ``models/CURRENT`` names the version to
serve. An artifact is written in the oldest format that describes it exactly
(:func:`artifact_format`), so a reader of format 1 never mistakes weighted
terms for plain ones; both formats load. Writing is atomic
(temporary directory, rename, then replace ``CURRENT``), so a reader sees a
whole artifact or the previous one. No pickles: loading runs no code.
``serve`` refuses to start when ``CURRENT`` is not a version name ``train``
writes or names a model that does not load (:func:`check_current`).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import numpy as np
import numpy.typing as npt

from actors.files import fsync_directory, write_atomically
from ranker.errors import ModelError
from ranker.policy import BLEND_PARTS, CLIP_Z, Blend

#: Format 1: every feature weighs 1 before normalisation. Format 2 adds
#: ``feature_weights`` (term features relative to identities) to ``meta.json``.
ARTIFACT_FORMAT: Final = 1
WEIGHTED_FORMAT: Final = 2
READABLE_FORMATS: Final = frozenset({ARTIFACT_FORMAT, WEIGHTED_FORMAT})
#: ``facts["blend_parts"]`` of a blend learned on plain z-scores (see ``Blend.clip_z``).
UNCLIPPED: Final = "unclipped"
MODELS_DIR: Final = "models"
CURRENT: Final = "CURRENT"
#: A user is described by at most this many of their favourite terms.
USER_TERMS: Final = 16
#: The version names ``matchlight train`` writes (:func:`ranker.train.new_version`):
#: UTC time, the log position trained on, and a counter if that name was taken.
TRAINED_VERSION: Final = re.compile(r"[0-9]{8}T[0-9]{6}Z-seq[0-9]+(?:-[0-9]+)?", re.ASCII)
#: Any version name: one plain path component (never ``..`` or a path).
_PLAIN_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*", re.ASCII)

Vector = npt.NDArray[np.float32]
Matrix = npt.NDArray[np.float32]


def item_feature_names(
    item_id: str | None, kind: str | None, terms: Mapping[str, Iterable[str]]
) -> list[str]:
    """An item's feature names: identity (if given), kind, terms."""
    names = [] if item_id is None else [f"item:{item_id}"]
    if kind is not None:
        names.append(f"kind:{kind}")
    names.extend(f"t:{field}={value}" for field, values in terms.items() for value in values)
    return names


def item_feature_weights(
    item_id: str | None,
    kind: str | None,
    terms: Mapping[str, Iterable[str]],
    *,
    term_weight: float = 1.0,
) -> dict[str, float]:
    """An item's feature names and weights (before normalisation).

    The identity, if given, weighs 1; the kind and each term ``term_weight``.
    """
    weights = dict.fromkeys(item_feature_names(None, kind, terms), term_weight)
    return weights if item_id is None else {f"item:{item_id}": 1.0, **weights}


def user_feature_weights(
    user_id: str | None, affinity: Mapping[str, float], *, term_weight: float = 1.0
) -> dict[str, float]:
    """A user's feature names and weights (before normalisation).

    ``affinity`` maps ``field=value`` to the user's decayed affinity; the
    :data:`USER_TERMS` strongest positive ones count, weighted relative to the
    strongest, times ``term_weight``. The identity, if given, weighs 1.
    """
    weights = {} if user_id is None else {f"user:{user_id}": 1.0}
    positive = sorted(((v, k) for k, v in affinity.items() if v > 0), reverse=True)[:USER_TERMS]
    if positive:
        top = positive[0][0]
        for value, key in positive:
            weights[f"a:{key}"] = term_weight * value / top
    return weights


@attrs.frozen(kw_only=True, eq=False)
class Model:
    """A trained model's feature embeddings and biases, with their vocabularies."""

    version: str
    #: The last log sequence number the training data included.
    trained_seq: int
    item_vocab: Mapping[str, int]
    item_embeddings: Matrix
    item_biases: Vector
    user_vocab: Mapping[str, int]
    user_embeddings: Matrix
    user_biases: Vector
    facts: Mapping[str, Any] = attrs.field(factory=dict)
    #: The weight of an item's kind and term features relative to its identity.
    item_term_weight: float = 1.0
    #: The weight of a user's affinity terms relative to their identity.
    user_term_weight: float = 1.0

    @property
    def components(self) -> int:
        return int(self.item_embeddings.shape[1])

    def knows_user(self, user_id: str) -> bool:
        return f"user:{user_id}" in self.user_vocab

    def knows_item(self, item_id: str) -> bool:
        return f"item:{item_id}" in self.item_vocab

    def item_representation(
        self, item_id: str, kind: str | None, terms: Mapping[str, Iterable[str]]
    ) -> tuple[Vector, float]:
        """An item's embedding and bias: identity (if trained) plus its known features,
        weighted as in training."""
        trained = item_id if self.knows_item(item_id) else None
        return _represent(
            item_feature_weights(trained, kind, terms, term_weight=self.item_term_weight),
            self.item_vocab,
            self.item_embeddings,
            self.item_biases,
        )

    def user_representation(
        self, user_id: str, affinity: Mapping[str, float]
    ) -> tuple[Vector, float]:
        """A user's embedding and bias from their live affinity (and identity, if trained)."""
        trained = user_id if self.knows_user(user_id) else None
        return _represent(
            user_feature_weights(trained, affinity, term_weight=self.user_term_weight),
            self.user_vocab,
            self.user_embeddings,
            self.user_biases,
        )


def learned_blend(model: Model) -> Blend | None:
    """The blend weights ``matchlight train`` learned with ``model`` (``facts["blend"]``),
    served on the parts they were learned on (``facts["blend_parts"]``).

    ``None`` when it learned none (or they are not usable: a name that is not a
    part, a weight that is not a finite number ≥ 0, or no weight above 0).
    """
    raw = model.facts.get("blend")
    if not isinstance(raw, Mapping) or not raw:
        return None
    weights: dict[str, float] = dict.fromkeys(BLEND_PARTS, 0.0)
    for name, value in raw.items():
        if name not in weights or isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if not (math.isfinite(value) and value >= 0.0):
            return None
        weights[name] = float(value)
    if not any(weights.values()):
        return None
    # Learned on unclipped parts since the blend learner recorded so; earlier artifacts on
    # parts clipped at the default.
    clip = math.inf if model.facts.get("blend_parts") == UNCLIPPED else CLIP_Z
    return Blend(**weights, clip_z=clip)


def _represent(
    weights: Mapping[str, float], vocab: Mapping[str, int], embeddings: Matrix, biases: Vector
) -> tuple[Vector, float]:
    ids, values = [], []
    for name, weight in weights.items():
        index = vocab.get(name)
        if index is not None:
            ids.append(index)
            values.append(weight)
    if not ids:
        return np.zeros(embeddings.shape[1], dtype=np.float32), 0.0
    w = np.asarray(values, dtype=np.float32)
    w /= w.sum()
    return w @ embeddings[ids], float(w @ biases[ids])


# -- artifacts ------------------------------------------------------------------------


def models_dir(data: str | os.PathLike[str]) -> Path:
    return Path(data) / MODELS_DIR


def current_version(data: str | os.PathLike[str]) -> str | None:
    """The version ``models/CURRENT`` names, or ``None`` if no model was written yet."""
    try:
        version = (models_dir(data) / CURRENT).read_text().strip()
    except FileNotFoundError:
        return None
    return version or None


def save_model(data: str | os.PathLike[str], model: Model) -> Path:
    """Write ``model`` as ``models/VERSION`` and make it current. Atomic.

    Raises:
        ModelError: the version exists already or the files cannot be written.
    """
    root = models_dir(data)
    final = root / model.version
    try:
        root.mkdir(parents=True, exist_ok=True)
        if final.exists():
            raise ModelError(f"model version {model.version!r} exists already in {root}")
        staging = Path(tempfile.mkdtemp(prefix=f".{model.version}.", dir=root))
        np.savez(
            staging / "model.npz",
            item_embeddings=model.item_embeddings,
            item_biases=model.item_biases,
            user_embeddings=model.user_embeddings,
            user_biases=model.user_biases,
        )
        meta: dict[str, Any] = {
            "format": artifact_format(model),
            "version": model.version,
            "trained_seq": model.trained_seq,
            "item_features": _by_index(model.item_vocab),
            "user_features": _by_index(model.user_vocab),
            "facts": dict(model.facts),
        }
        if meta["format"] == WEIGHTED_FORMAT:
            meta["feature_weights"] = {
                "item_terms": model.item_term_weight,
                "user_terms": model.user_term_weight,
            }
        (staging / "meta.json").write_text(json.dumps(meta))
        fsync_directory(staging)
        os.rename(staging, final)
        # Also makes the rename durable: both names live in `root`.
        write_atomically(root / CURRENT, model.version + "\n")
    except OSError as exc:
        raise ModelError(f"cannot write model {model.version!r} under {root}: {exc}") from exc
    return final


def load_model(data: str | os.PathLike[str], version: str | None = None) -> Model:
    """Read a model artifact (the current one unless ``version`` is given).

    Raises:
        ModelError: no such model, or its files are incomplete or inconsistent.
    """
    version = version or current_version(data)
    if version is None:
        raise ModelError(f"no model in {models_dir(data)} (run `matchlight train`)")
    if not _PLAIN_NAME.fullmatch(version):
        raise ModelError(f"model version {version!r} is not a plain name")
    where = models_dir(data) / version
    try:
        meta = json.loads((where / "meta.json").read_text())
        # Opened here so a corrupt archive's file is closed too (np.load leaks it).
        with open(where / "model.npz", "rb") as f, np.load(f) as arrays:
            loaded = {name: arrays[name] for name in arrays.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise ModelError(f"cannot read model {version!r} in {where}: {exc}") from exc
    if not isinstance(meta, dict):
        raise ModelError(f"model {version!r}: meta.json is not an object")
    form = meta.get("format")
    if form not in READABLE_FORMATS:
        raise ModelError(f"model {version!r} has format {form!r}, not 1 or 2")
    try:
        weights = meta["feature_weights"] if form == WEIGHTED_FORMAT else {}
        model = Model(
            version=meta["version"],
            trained_seq=int(meta["trained_seq"]),
            item_vocab={name: i for i, name in enumerate(meta["item_features"])},
            item_embeddings=loaded["item_embeddings"].astype(np.float32),
            item_biases=loaded["item_biases"].astype(np.float32),
            user_vocab={name: i for i, name in enumerate(meta["user_features"])},
            user_embeddings=loaded["user_embeddings"].astype(np.float32),
            user_biases=loaded["user_biases"].astype(np.float32),
            facts=meta.get("facts", {}),
            item_term_weight=float(weights.get("item_terms", 1.0)),
            user_term_weight=float(weights.get("user_terms", 1.0)),
        )
    except KeyError as exc:
        raise ModelError(f"model {version!r} lacks {exc}") from exc
    except (TypeError, ValueError, AttributeError) as exc:
        raise ModelError(f"model {version!r}: malformed meta.json: {exc}") from exc
    if len(model.item_vocab) != len(model.item_embeddings) or len(model.user_vocab) != len(
        model.user_embeddings
    ):
        raise ModelError(f"model {version!r}: vocabularies and embeddings differ in size")
    if not all(0.0 < w < float("inf") for w in (model.item_term_weight, model.user_term_weight)):
        raise ModelError(f"model {version!r}: feature weights must be positive and finite")
    return model


def artifact_format(model: Model) -> int:
    """The oldest artifact format that describes ``model`` exactly.

    Format 1 when every feature weighs 1 (what a reader of format 1 assumes),
    else 2: a server that reads only format 1 refuses such an artifact (and
    keeps the model it serves) rather than weigh its features wrongly.
    """
    if model.item_term_weight == 1.0 and model.user_term_weight == 1.0:
        return ARTIFACT_FORMAT
    return WEIGHTED_FORMAT


def check_current(data: str | os.PathLike[str], *, load: bool = True) -> Model | None:
    """The model ``models/CURRENT`` names, loaded; ``None`` if there is no ``CURRENT``
    (or, without ``load``, when it is fine).

    ``matchlight verify`` loads it; ``matchlight serve`` checks only the pointer
    before it starts (``load=False``: its artifact files exist) and leaves the
    loading to the ranker, which does it once (a hot reload only logs a bad
    model and keeps the one it serves).

    Raises:
        ModelError: ``CURRENT`` cannot be read, is not a version name of the form
            ``matchlight train`` writes, or names a model that cannot be loaded
            (or, without ``load``, whose files are missing); the message names the file.
    """
    where = models_dir(data) / CURRENT
    try:
        text = where.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{where}: cannot read it: {exc}") from exc
    version = text.strip()
    if not TRAINED_VERSION.fullmatch(version):
        raise ModelError(
            f"{where}: expected a version name like 20261128T101500Z-seq1234 (as "
            f"`matchlight train` writes), got {text[:80]!r}"
        )
    try:
        if not load:
            artifact = models_dir(data) / version
            for name in ("meta.json", "model.npz"):
                if not (artifact / name).is_file():
                    raise ModelError(f"model {version!r} has no {name} in {artifact}")
            return None
        return load_model(data, version)
    except ModelError as exc:
        raise ModelError(f"{where}: names a model that cannot be loaded: {exc}") from exc


def _by_index(vocab: Mapping[str, int]) -> Sequence[str]:
    names = [""] * len(vocab)
    for name, i in vocab.items():
        names[i] = name
    return names
