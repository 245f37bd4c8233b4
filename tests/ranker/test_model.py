"""The LightFM facade: feature names, live representations and versioned artifacts on disk."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs
import numpy as np
import pytest
import scipy.sparse as sp

from actors import item, user
from ranker import (
    Model,
    ModelError,
    TrainingConfig,
    TrainingData,
    current_version,
    fit,
    load_model,
    save_model,
)
from ranker.model import (
    ARTIFACT_FORMAT,
    TRAINED_VERSION,
    USER_TERMS,
    WEIGHTED_FORMAT,
    check_current,
    item_feature_names,
    item_feature_weights,
    user_feature_weights,
)
from ranker.train import new_version

# -- features -----------------------------------------------------------------------------


def test_item_feature_names_are_identity_kind_then_terms() -> None:
    names = item_feature_names("i1", "pro", {"city": ("austin", "boston"), "category": ("x",)})

    assert names == ["item:i1", "kind:pro", "t:city=austin", "t:city=boston", "t:category=x"]


def test_item_feature_names_leave_out_what_is_not_given() -> None:
    assert item_feature_names(None, None, {"city": ("austin",)}) == ["t:city=austin"]
    assert item_feature_names(None, None, {}) == []
    assert item_feature_names("i1", None, {}) == ["item:i1"]


def test_user_feature_weights_keep_positive_affinity_relative_to_the_strongest() -> None:
    weights = user_feature_weights(
        "u1", {"city=austin": 2.0, "category=x": 1.0, "city=boston": -3.0, "colour=red": 0.0}
    )

    assert weights == {"user:u1": 1.0, "a:city=austin": 1.0, "a:category=x": 0.5}


def test_user_feature_weights_without_identity_or_positive_affinity_are_empty() -> None:
    assert user_feature_weights(None, {"city=boston": -1.0}) == {}
    assert user_feature_weights("u", {}) == {"user:u": 1.0}


def test_user_feature_weights_keep_only_the_strongest_user_terms() -> None:
    affinity = {f"t=v{n:02}": float(n + 1) for n in range(USER_TERMS + 8)}

    weights = user_feature_weights(None, affinity)

    strongest = sorted(affinity, key=affinity.__getitem__, reverse=True)[:USER_TERMS]
    assert set(weights) == {f"a:{k}" for k in strongest}
    top = max(affinity.values())
    for key in strongest:
        assert weights[f"a:{key}"] == pytest.approx(affinity[key] / top)


def test_item_feature_weights_weigh_terms_relative_to_the_identity() -> None:
    assert item_feature_weights("i1", "pro", {"city": ("a",)}, term_weight=0.25) == {
        "item:i1": 1.0,
        "kind:pro": 0.25,
        "t:city=a": 0.25,
    }
    assert item_feature_weights(None, None, {"city": ("a",)}) == {"t:city=a": 1.0}


def test_user_feature_weights_scale_the_terms_by_the_term_weight() -> None:
    weights = user_feature_weights("u1", {"city=a": 2.0, "category=x": 1.0}, term_weight=0.5)

    assert weights == {"user:u1": 1.0, "a:city=a": 0.5, "a:category=x": 0.25}


# -- representations of a hand-made model -----------------------------------------------------


def small_model(version: str = "v1") -> Model:
    item_names = ["item:i1", "kind:pro", "t:city=austin", "t:category=x"]
    user_names = ["user:u1", "a:city=austin", "a:category=x"]
    return Model(
        version=version,
        trained_seq=42,
        item_vocab={n: i for i, n in enumerate(item_names)},
        item_embeddings=np.array([[1, 0], [0, 1], [2, 2], [4, 0]], dtype=np.float32),
        item_biases=np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32),
        user_vocab={n: i for i, n in enumerate(user_names)},
        user_embeddings=np.array([[1, 1], [3, 0], [0, 3]], dtype=np.float32),
        user_biases=np.array([0.5, 1.0, 2.0], dtype=np.float32),
        facts={"users": 1, "items": 1},
    )


def test_a_trained_item_is_the_mean_of_its_identity_kind_and_term_embeddings() -> None:
    vector, bias = small_model().item_representation("i1", "pro", {"city": ("austin",)})

    np.testing.assert_allclose(vector, [1.0, 1.0])
    assert bias == pytest.approx(0.2)


def test_an_unknown_item_is_represented_by_its_known_features_only() -> None:
    vector, bias = small_model().item_representation(
        "new", "job", {"city": ("austin", "paris"), "category": ("x",)}
    )

    np.testing.assert_allclose(vector, [3.0, 1.0])
    assert bias == pytest.approx(0.35)


def test_users_are_weighted_by_their_relative_affinity() -> None:
    model = small_model()

    vector, bias = model.user_representation("u1", {"city=austin": 2.0, "category=x": 1.0})

    # Weights 1 (identity), 1 and 0.5, normalised by 2.5.
    np.testing.assert_allclose(vector, [(1 + 3) / 2.5, (1 + 1.5) / 2.5], rtol=1e-6)
    assert bias == pytest.approx((0.5 + 1.0 + 1.0) / 2.5)


def test_representations_apply_the_trained_term_weights() -> None:
    model = attrs.evolve(small_model(), item_term_weight=0.25, user_term_weight=0.5)

    item_vector, item_bias = model.item_representation("i1", "pro", {"city": ("austin",)})
    user_vector, user_bias = model.user_representation("u1", {"city=austin": 1.0})

    # Item: identity 1, kind and term 0.25 each, normalised by 1.5.
    np.testing.assert_allclose(item_vector, [(1 + 0.5) / 1.5, (0.25 + 0.5) / 1.5], rtol=1e-6)
    assert item_bias == pytest.approx((0.1 + 0.25 * (0.2 + 0.3)) / 1.5)
    # User: identity 1, affinity term 0.5, normalised by 1.5.
    np.testing.assert_allclose(user_vector, [(1 + 1.5) / 1.5, 1 / 1.5], rtol=1e-6)
    assert user_bias == pytest.approx((0.5 + 0.5) / 1.5)
    # A new item is its terms whatever their weight.
    new_vector, _ = model.item_representation("new", None, {"city": ("austin",)})
    np.testing.assert_allclose(new_vector, [2.0, 2.0])


def test_a_user_with_no_known_features_is_the_zero_vector() -> None:
    model = small_model()

    vector, bias = model.user_representation("stranger", {"city=paris": 1.0, "category=x": -1})

    np.testing.assert_array_equal(vector, np.zeros(2, dtype=np.float32))
    assert vector.dtype == np.float32
    assert bias == 0.0


# -- artifacts --------------------------------------------------------------------------------


def assert_same_model(a: Model, b: Model) -> None:
    assert (a.version, a.trained_seq) == (b.version, b.trained_seq)
    assert dict(a.item_vocab) == dict(b.item_vocab)
    assert dict(a.user_vocab) == dict(b.user_vocab)
    for name in ("item_embeddings", "item_biases", "user_embeddings", "user_biases"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert getattr(b, name).dtype == np.float32
    assert dict(a.facts) == dict(b.facts)
    assert (a.item_term_weight, a.user_term_weight) == (b.item_term_weight, b.user_term_weight)


def test_no_model_means_no_current_version(tmp_path: Path) -> None:
    assert current_version(tmp_path) is None
    with pytest.raises(ModelError, match="no model"):
        load_model(tmp_path)


def test_a_saved_model_loads_back_and_becomes_current(tmp_path: Path) -> None:
    model = small_model("v1")

    where = save_model(tmp_path, model)

    assert where == tmp_path / "models" / "v1"
    assert current_version(tmp_path) == "v1"
    assert_same_model(model, load_model(tmp_path))
    assert_same_model(model, load_model(tmp_path, "v1"))


def test_an_unweighted_model_is_written_in_format_1_as_before(tmp_path: Path) -> None:
    where = save_model(tmp_path, small_model("v1"))

    meta = json.loads((where / "meta.json").read_text())
    assert meta["format"] == ARTIFACT_FORMAT == 1
    assert "feature_weights" not in meta


def test_a_weighted_model_is_written_in_format_2_and_loads_back(tmp_path: Path) -> None:
    model = attrs.evolve(small_model("v1"), item_term_weight=0.25, user_term_weight=0.5)

    where = save_model(tmp_path, model)

    meta = json.loads((where / "meta.json").read_text())
    assert meta["format"] == WEIGHTED_FORMAT == 2
    assert meta["feature_weights"] == {"item_terms": 0.25, "user_terms": 0.5}
    loaded = load_model(tmp_path)
    assert_same_model(model, loaded)
    vector, bias = loaded.item_representation("i1", "pro", {})
    np.testing.assert_allclose(vector, [0.8, 0.2], rtol=1e-6)  # identity 1, kind 0.25
    assert bias == pytest.approx((0.1 + 0.25 * 0.2) / 1.25)


def test_an_artifact_written_before_feature_choice_loads_with_unit_weights(
    tmp_path: Path,
) -> None:
    """meta.json as ``matchlight train`` wrote it before: format 1, no feature weights."""
    where = save_model(tmp_path, small_model("v1"))
    meta = json.loads((where / "meta.json").read_text())
    old = {
        k: meta[k]
        for k in ("format", "version", "trained_seq", "item_features", "user_features", "facts")
    }
    (where / "meta.json").write_text(json.dumps(old))

    loaded = load_model(tmp_path)

    assert (loaded.item_term_weight, loaded.user_term_weight) == (1.0, 1.0)
    vector, bias = loaded.item_representation("i1", "pro", {"city": ("austin",)})
    np.testing.assert_allclose(vector, [1.0, 1.0])  # the plain mean, as before
    assert bias == pytest.approx(0.2)


def test_a_format_2_artifact_without_valid_weights_is_a_model_error(tmp_path: Path) -> None:
    where = save_model(tmp_path, attrs.evolve(small_model("v1"), item_term_weight=0.5))
    meta = json.loads((where / "meta.json").read_text())
    del meta["feature_weights"]
    (where / "meta.json").write_text(json.dumps(meta))

    with pytest.raises(ModelError, match="feature_weights"):
        load_model(tmp_path)
    meta["feature_weights"] = {"item_terms": 0.0, "user_terms": 1.0}
    (where / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="positive"):
        load_model(tmp_path)


def test_a_newer_save_moves_current_and_keeps_the_older_version(tmp_path: Path) -> None:
    save_model(tmp_path, small_model("v1"))
    newer = attrs.evolve(small_model("v2"), trained_seq=99)

    save_model(tmp_path, newer)

    assert current_version(tmp_path) == "v2"
    assert load_model(tmp_path).trained_seq == 99
    assert load_model(tmp_path, "v1").trained_seq == 42


def test_saving_the_same_version_twice_is_a_model_error(tmp_path: Path) -> None:
    save_model(tmp_path, small_model("v1"))
    save_model(tmp_path, small_model("v2"))

    with pytest.raises(ModelError, match="exists already"):
        save_model(tmp_path, small_model("v1"))
    assert current_version(tmp_path) == "v2"


def test_loading_a_missing_version_is_a_model_error(tmp_path: Path) -> None:
    save_model(tmp_path, small_model("v1"))

    with pytest.raises(ModelError, match="v9"):
        load_model(tmp_path, "v9")


def test_current_naming_a_missing_version_is_a_model_error(tmp_path: Path) -> None:
    save_model(tmp_path, small_model("v1"))
    (tmp_path / "models" / "CURRENT").write_text("gone\n")

    with pytest.raises(ModelError, match="gone"):
        load_model(tmp_path)


def test_check_current_loads_the_model_a_trained_version_name_points_to(tmp_path: Path) -> None:
    assert check_current(tmp_path) is None  # nothing trained yet
    version = new_version(tmp_path, 42)
    assert TRAINED_VERSION.fullmatch(version)
    save_model(tmp_path, small_model(version))

    model = check_current(tmp_path)

    assert model is not None
    assert model.version == version


@pytest.mark.parametrize(
    ("pointer", "message"),
    [
        ("../../etc\n", "expected a version name like"),
        ("v1\n", "expected a version name like"),  # loadable, but not a name train writes
        ("\n", "expected a version name like"),
        ("20261128T101500Z-seq7\n", "names a model that cannot be loaded"),
    ],
)
def test_check_current_refuses_a_bad_pointer_naming_the_file(
    tmp_path: Path, pointer: str, message: str
) -> None:
    save_model(tmp_path, small_model("v1"))
    (tmp_path / "models" / "CURRENT").write_text(pointer)

    with pytest.raises(ModelError, match=f"^{tmp_path / 'models' / 'CURRENT'}: {message}"):
        check_current(tmp_path)


@pytest.mark.parametrize("version", ["../v1", "/etc", "..", ".hidden"])
def test_load_model_refuses_a_version_that_is_not_a_plain_name(
    tmp_path: Path, version: str
) -> None:
    with pytest.raises(ModelError, match="not a plain name"):
        load_model(tmp_path, version)


def corrupt_meta(where: Path) -> None:
    (where / "meta.json").write_text("{not json")


def wrong_format(where: Path) -> None:
    meta = json.loads((where / "meta.json").read_text())
    (where / "meta.json").write_text(json.dumps({**meta, "format": 99}))


def missing_key(where: Path) -> None:
    meta = json.loads((where / "meta.json").read_text())
    del meta["trained_seq"]
    (where / "meta.json").write_text(json.dumps(meta))


def vocab_mismatch(where: Path) -> None:
    meta = json.loads((where / "meta.json").read_text())
    meta["item_features"] = meta["item_features"][:-1]
    (where / "meta.json").write_text(json.dumps(meta))


def missing_array(where: Path) -> None:
    with np.load(where / "model.npz") as arrays:
        kept = {name: arrays[name] for name in arrays.files if name != "user_biases"}
    np.savez(where / "model.npz", **kept)


def not_an_npz(where: Path) -> None:
    (where / "model.npz").write_bytes(b"this is not numpy")


def no_npz(where: Path) -> None:
    (where / "model.npz").unlink()


@pytest.mark.parametrize(
    "damage",
    [corrupt_meta, wrong_format, missing_key, vocab_mismatch, missing_array, not_an_npz, no_npz],
)
def test_loading_a_damaged_artifact_is_a_model_error(tmp_path: Path, damage) -> None:  # type: ignore[no-untyped-def]
    where = save_model(tmp_path, small_model("v1"))
    damage(where)

    with pytest.raises(ModelError, match="v1"):
        load_model(tmp_path)


def truncated_npz(where: Path) -> None:
    data = (where / "model.npz").read_bytes()
    (where / "model.npz").write_bytes(data[: len(data) // 2])


def meta_not_an_object(where: Path) -> None:
    (where / "meta.json").write_text("[]")


def trained_seq_not_a_number(where: Path) -> None:
    meta = json.loads((where / "meta.json").read_text())
    (where / "meta.json").write_text(json.dumps({**meta, "trained_seq": "many"}))


@pytest.mark.parametrize("damage", [truncated_npz, meta_not_an_object, trained_seq_not_a_number])
def test_loading_a_corrupt_artifact_is_a_model_error(
    tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    where = save_model(tmp_path, small_model("v1"))
    damage(where)

    with pytest.raises(ModelError):
        load_model(tmp_path)
    gc.collect()  # a leaked file handle would fail the test as a ResourceWarning


# -- against a real LightFM fit -------------------------------------------------------------

CITIES = ("austin", "boston")
CATEGORIES = ("plumbing", "painting", "roofing")


def training_data() -> TrainingData:
    """6 items, 4 users; each user likes the items of one city, plus a dismissal."""
    items = {}
    for n in range(6):
        state = item.initial(f"i{n}")
        state.exists, state.active, state.kind = True, True, "pro"
        state.terms = {"city": (CITIES[n % 2],), "category": (CATEGORIES[n % 3],)}
        items[state.id] = state
    users, pairs = {}, {}
    for u in range(4):
        person = user.initial(f"u{u}")
        city = CITIES[u % 2]
        person.affinity = {f"city={city}": 3.0, f"category={CATEGORIES[u % 3]}": 1.0}
        person.landmark = person.updated = 1000.0
        users[person.id] = person
        for n in range(6):
            if CITIES[n % 2] == city:
                pairs[(person.id, f"i{n}")] = 1.0 + 0.1 * n
        pairs[(person.id, f"i{(u + 1) % 6}")] = -1.0
    return TrainingData(users=users, items=items, pairs=pairs, last_seq=17, events=30)


#: Every feature, as before training chose them (kind:pro is on every item).
ALL_FEATURES = TrainingConfig(components=8, epochs=3, threads=1, seed=1, features="all")


@pytest.fixture(scope="module")
def trained() -> tuple[TrainingData, Model]:
    data = training_data()
    return data, fit(data, ALL_FEATURES, version="t")


def test_fit_learns_every_user_and_item_with_its_features(
    trained: tuple[TrainingData, Model],
) -> None:
    data, model = trained

    assert model.version == "t"
    assert model.trained_seq == 17
    assert model.components == 8
    assert all(model.knows_user(u) for u in data.users)
    assert all(model.knows_item(i) for i in data.items)
    assert {"kind:pro", "t:city=austin", "t:category=roofing"} <= set(model.item_vocab)
    assert {"a:city=austin", "a:category=painting"} <= set(model.user_vocab)
    assert model.item_embeddings.shape == (len(model.item_vocab), 8)
    assert model.user_biases.shape == (len(model.user_vocab),)
    assert model.facts["users"] == 4
    assert model.facts["items"] == 6
    assert model.facts["pairs"] == sum(1 for w in data.pairs.values() if w > 0)


def test_fit_is_reproducible_with_a_seed(trained: tuple[TrainingData, Model]) -> None:
    data, model = trained

    again = fit(data, ALL_FEATURES, version="t")

    np.testing.assert_array_equal(again.item_embeddings, model.item_embeddings)
    np.testing.assert_array_equal(again.user_embeddings, model.user_embeddings)


def feature_rows(rows: list[Mapping[str, float]], vocab: Mapping[str, int]) -> sp.csr_matrix:
    """LightFM feature rows: each row's known features, normalised to sum to 1."""
    matrix = sp.lil_matrix((len(rows), len(vocab)), dtype=np.float32)
    for r, weights in enumerate(rows):
        known = {vocab[name]: w for name, w in weights.items() if name in vocab}
        total = sum(known.values())
        for column, w in known.items():
            matrix[r, column] = w / total
    return matrix.tocsr()


@pytest.fixture(scope="module")
def weighted() -> tuple[TrainingData, Model]:
    """Terms at a quarter of an identity's weight; common terms (kind:pro) left out."""
    data = training_data()
    config = attrs.evolve(ALL_FEATURES, features="identity+terms", term_weights=(0.25,))
    return data, fit(data, config, version="w")


@pytest.mark.parametrize("fixture", ["trained", "weighted"])
def test_representations_score_like_lightfm_predict(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    from lightfm import LightFM

    data, model = request.getfixturevalue(fixture)
    if fixture == "weighted":
        assert model.item_term_weight == model.user_term_weight == 0.25
        assert "kind:pro" not in model.item_vocab
    users = sorted(data.users)
    items = sorted(data.items)
    affinity = {u: user.affinity_at(data.users[u], data.users[u].updated) for u in users}

    lightfm = LightFM(no_components=model.components)
    lightfm._initialize(model.components, len(model.item_vocab), len(model.user_vocab))
    lightfm.item_embeddings = model.item_embeddings
    lightfm.item_biases = model.item_biases
    lightfm.user_embeddings = model.user_embeddings
    lightfm.user_biases = model.user_biases
    user_features = feature_rows(
        [user_feature_weights(u, affinity[u], term_weight=model.user_term_weight) for u in users],
        model.user_vocab,
    )
    item_features = feature_rows(
        [
            item_feature_weights(
                i, data.items[i].kind, data.items[i].terms, term_weight=model.item_term_weight
            )
            for i in items
        ],
        model.item_vocab,
    )

    for row, u in enumerate(users):
        expected = lightfm.predict(
            row,
            np.arange(len(items), dtype=np.int32),
            item_features=item_features,
            user_features=user_features,
        )
        u_vec, u_bias = model.user_representation(u, affinity[u])
        ours = []
        for i in items:
            i_vec, i_bias = model.item_representation(i, data.items[i].kind, data.items[i].terms)
            ours.append(float(u_vec @ i_vec) + u_bias + i_bias)
        np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)
        assert (
            np.argsort(ours, kind="stable").tolist() == np.argsort(expected, kind="stable").tolist()
        )


def test_a_user_unknown_to_the_model_without_known_affinity_is_zero(
    trained: tuple[TrainingData, Model],
) -> None:
    _, model = trained

    vector, bias = model.user_representation("newcomer", {"city=paris": 2.0})

    assert not vector.any()
    assert bias == 0.0


def test_a_new_user_is_folded_in_from_affinity_alone(trained: tuple[TrainingData, Model]) -> None:
    _, model = trained

    vector, bias = model.user_representation("newcomer", {"city=austin": 1.0})

    np.testing.assert_allclose(vector, model.user_embeddings[model.user_vocab["a:city=austin"]])
    assert bias == pytest.approx(float(model.user_biases[model.user_vocab["a:city=austin"]]))


def test_an_item_added_after_training_is_the_mean_of_its_term_embeddings(
    trained: tuple[TrainingData, Model],
) -> None:
    _, model = trained
    columns = [model.item_vocab["t:city=austin"], model.item_vocab["t:category=roofing"]]

    vector, bias = model.item_representation(
        "brand-new", None, {"city": ("austin",), "category": ("roofing", "gardening")}
    )

    assert not model.knows_item("brand-new")
    assert vector.any()
    np.testing.assert_allclose(vector, model.item_embeddings[columns].mean(axis=0), rtol=1e-6)
    assert bias == pytest.approx(float(model.item_biases[columns].mean()))


def test_a_fitted_model_survives_a_save_and_load(
    tmp_path: Path, trained: tuple[TrainingData, Model]
) -> None:
    _, model = trained

    save_model(tmp_path, model)

    assert_same_model(model, load_model(tmp_path))
