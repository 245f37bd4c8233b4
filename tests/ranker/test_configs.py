"""The surfaces configs a server served, kept by digest in ``DATA/configs``."""

from __future__ import annotations

from pathlib import Path

import pytest

from ranker import (
    ConfigError,
    Surfaces,
    config_at,
    keep_config,
    keep_copy,
    load_surfaces,
    served_config,
)

HOME = b"[surfaces.home]\nk = 4\n"


def test_a_kept_config_loads_back_by_its_digest_after_the_file_changed(tmp_path: Path) -> None:
    config = tmp_path / "surfaces.toml"
    config.write_bytes(HOME)
    surfaces = load_surfaces(config)
    keep_config(tmp_path / "data", surfaces, config)
    config.write_bytes(b"[surfaces.home]\nk = 5\n")

    again = config_at(tmp_path / "data", surfaces.digest)

    assert again == surfaces
    assert again.get("home").k == 4
    assert load_surfaces(config).digest != surfaces.digest
    served = served_config(tmp_path / "data")
    assert served is not None
    assert (served.digest, served.path) == (surfaces.digest, config.resolve())


def test_no_config_file_is_the_empty_config(tmp_path: Path) -> None:
    keep_config(tmp_path, Surfaces(), None)
    served = served_config(tmp_path)
    assert served is not None
    assert served.path is None
    assert config_at(tmp_path, served.digest) == Surfaces()


def test_an_unknown_or_edited_copy_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "surfaces.toml"
    config.write_bytes(HOME)
    surfaces = load_surfaces(config)
    keep_config(tmp_path, surfaces, config)
    with pytest.raises(ConfigError, match="is not kept"):
        config_at(tmp_path, "0" * 16)
    with pytest.raises(ConfigError, match="not a config digest"):
        config_at(tmp_path, "../surfaces")
    (tmp_path / "configs" / f"{surfaces.digest}.toml").write_bytes(HOME + b"# edited\n")
    with pytest.raises(ConfigError, match="was changed"):
        config_at(tmp_path, surfaces.digest)


def test_a_process_keeps_its_own_copy_without_changing_what_the_node_noted(
    tmp_path: Path,
) -> None:
    config = tmp_path / "surfaces.toml"
    config.write_bytes(HOME)
    first = load_surfaces(config)
    keep_config(tmp_path, first, config)
    config.write_bytes(b"[surfaces.home]\nk = 5\n")  # a reader restarted after an edit
    edited = load_surfaces(config)

    keep_copy(tmp_path, edited)
    keep_copy(tmp_path, edited)

    assert config_at(tmp_path, edited.digest).get("home").k == 5
    served = served_config(tmp_path)
    assert served is not None
    assert served.digest == first.digest
    assert sorted(p.name for p in (tmp_path / "configs").iterdir()) == sorted(
        [f"{first.digest}.toml", f"{edited.digest}.toml", "SERVED"]
    )
