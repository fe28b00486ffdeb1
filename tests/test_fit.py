"""`memlint fit`: one row per combination, figures recomputed per row, JSON shape, knob search."""

from __future__ import annotations

import json

from test_budget import BLOCK, EAGER

from memlint.cli import main

CONFIG = "model:\n  d_model: 256\n  n_heads: 8\n  n_layers: 2\ntraining:\n  batch_size: 8\ndata:\n  seq_len: 2048\n"


def _project(tmp_path):
    (tmp_path / "model.py").write_text(BLOCK.replace("{attention}", EAGER))
    (tmp_path / "config.yaml").write_text(CONFIG)
    return [str(tmp_path / "config.yaml"), str(tmp_path / "model.py")]


def test_fit_json_rows_scale_with_batch(tmp_path, capsys):
    paths = _project(tmp_path)
    code = main(
        [
            "fit",
            *paths,
            "--gpu",
            "RTX 4090",
            "--vary",
            "training.batch_size=1,2,4",
            "--no-config",
            "--output-format",
            "json",
        ]
    )
    data = json.loads(capsys.readouterr().out)
    assert data["gpu"] == "RTX 4090" and data["usable_bytes"] > 0
    rows = data["rows"]
    assert [r["values"]["training.batch_size"] for r in rows] == [1, 2, 4]
    attention = [r["terms"]["attention"] for r in rows]
    assert attention[1] == 2 * attention[0] and attention[2] == 4 * attention[0]  # only activations scale
    assert len({r["terms"]["weights"] for r in rows}) == 1
    assert all(r["fits"] == (r["total_bytes"] <= data["usable_bytes"]) for r in rows)
    assert code == (0 if all(r["fits"] for r in rows) else 1)


def test_fit_range_and_table(tmp_path, capsys):
    paths = _project(tmp_path)
    main(["fit", *paths, "--gpu", "RTX 4090", "--vary", "training.batch_size=6..9", "--no-config"])
    out = capsys.readouterr().out
    assert "| training.batch_size |" in out and "fits?" in out
    assert sum(line.startswith("| ") for line in out.splitlines()) == 5  # header + 4 rows


def test_fit_knobs_without_vary(tmp_path, capsys):
    paths = _project(tmp_path)
    main(["fit", *paths, "--gpu", "RTX 4090", "--no-config"])
    out = capsys.readouterr().out
    assert "training.batch_size <= " in out and "data.seq_len <= " in out and "precision" in out


def test_fit_bad_vary_is_a_usage_error(tmp_path, capsys):
    paths = _project(tmp_path)
    assert main(["fit", *paths, "--vary", "training.batch_size"]) == 2
