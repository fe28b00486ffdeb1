"""Hydra composition: a project with `defaults:` groups, `@package`, overrides and interpolations sizes the
same as the equivalent flat config (memlint/sources/hydra.py)."""

from __future__ import annotations

from pathlib import Path

from seed_models import CFG_ATTENTION

import memlint
from memlint.settings import Settings

MODEL = CFG_ATTENTION

FILES = {
    "conf/config.yaml": "defaults:\n  - model: small\n  - training@training: default\n"
    "  - optional logger: none\n  - _self_\n  - override model: big\n\n"
    "data:\n  seq_len: ${model.max_len}\ngpu: RTX 4090\n",
    "conf/model/small.yaml": "d_model: 128\nn_heads: 4\nmax_len: 256\n",
    "conf/model/big.yaml": "d_model: 512\nn_heads: 8\nmax_len: 2048\nvocab_size: ???\n",
    "conf/training/default.yaml": "# @package _group_\nbatch_size: 16\nlr: 1e-4\n",
    "flat/config.yaml": "model:\n  d_model: 512\n  n_heads: 8\n  max_len: 2048\ntraining:\n  batch_size: 16\n"
    "  lr: 1e-4\ndata:\n  seq_len: 2048\ngpu: RTX 4090\n",
}


def _project(tmp_path: Path) -> Path:
    for name, text in {**FILES, "model.py": MODEL}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def _sized(tmp_path: Path, config: str):
    report = memlint.check([str(tmp_path / "model.py"), str(tmp_path / config)], Settings(root=tmp_path))
    return [(f.code, f.cost.bytes if f.cost else None, f.message) for f in report.findings], report


def test_hydra_defaults_resolve_like_the_flat_config(tmp_path):
    _project(tmp_path)
    hydra, report = _sized(tmp_path, "conf/config.yaml")
    flat, _ = _sized(tmp_path, "flat/config.yaml")
    assert hydra == flat and any(code == "MEM201" for code, _, _ in hydra)
    table = report.table
    assert table.lookup("model.d_model").value == 512  # the override won
    assert table.lookup("training.batch_size").value == 16  # group@package
    assert table.lookup("data.seq_len").value == 2048  # interpolation
    assert table.lookup("model.vocab_size") is None  # ??? is missing, not a value
    assert table.lookup("model.d_model").origin.startswith("conf/model/big.yaml:")


def test_config_directory_does_not_merge_unchosen_options(tmp_path):
    _project(tmp_path)
    report = memlint.check([str(tmp_path / "model.py"), str(tmp_path / "conf")], Settings(root=tmp_path))
    assert not [f for f in report.findings if f.code == "MEM906"]  # small.yaml is not a config on its own
    assert report.table.lookup("model.d_model").value == 512


def test_missing_option_is_reported_not_raised(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("defaults:\n  - model: nope\n  - _self_\nx: 1\n")
    report = memlint.check([str(tmp_path / "conf")], Settings(root=tmp_path))
    assert any(f.code == "MEM901" and "nope" in f.message for f in report.findings)
