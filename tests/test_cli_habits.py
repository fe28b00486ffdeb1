"""Habits users bring from ruff: --statistics, stdin, --show-files/--show-settings, noqa forms, order."""

from __future__ import annotations

import io
import json

import pytest
from seed_models import SPATIO_TEMPORAL_NO_DROPOUT

import memlint
from memlint.cli import build_parser, main
from memlint.settings import load_settings

MODEL = SPATIO_TEMPORAL_NO_DROPOUT
FLAGGED_LINE = next(n for n, line in enumerate(MODEL.splitlines(), 1) if "F.softmax" in line)
CONFIG = "training:\n  batch_size: 16\ndata:\n  seq_len: 250\nmodel:\n  d_model: 128\n  n_heads: 8\n"


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "configs").mkdir()
    (tmp_path / "src" / "a.py").write_text(MODEL)
    (tmp_path / "src" / "b.py").write_text(MODEL)
    (tmp_path / "tests" / "test_a.py").write_text(MODEL)
    (tmp_path / "configs" / "train.yaml").write_text(CONFIG)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.memlint]\ngpu = "RTX 4090"\nconfigs = ["configs/train.yaml"]\n'
        '[tool.memlint.dims]\nN = 13\n[tool.memlint.per-file-ignores]\n"tests/*" = ["MEM2"]\n'
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MEMLINT_OUTPUT_FORMAT", raising=False)
    return tmp_path


def concise(capsys, *args) -> tuple[int, list[str]]:
    code = main(["check", *args, "--output-format", "concise"])
    return code, capsys.readouterr().out.splitlines()


def test_statistics_counts_per_code(project, capsys):
    (project / "src" / "c.py").write_text("import torch\nx = torch.zeros(3)  # noqa: MEM301\n")
    code = main(["check", "src", "--statistics"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    assert [line.split("\t")[:2] for line in lines] == [["    2", "MEM201"], ["    1", "MEM910"]]
    assert "[*] eager-attention-scores" in lines[0] and "[*] unused-noqa" in lines[1]


def test_stdin_with_a_filename_uses_the_projects_settings(project, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(MODEL))
    code, lines = concise(capsys, "-", "--stdin-filename", "src/editor.py")
    assert code == 1
    assert lines[0].startswith(f"src/editor.py:{FLAGGED_LINE}:") and "MEM201" in lines[0]
    assert "[16, 8, 3250, 3250]" in lines[0]  # sizes from configs/train.yaml and dims, found from the name


def test_stdin_without_a_filename(project, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("import torch\nx = 1  # noqa: MEM201\n"))
    code, lines = concise(capsys, "-")
    assert code == 1 and lines[0].startswith("-:2:") and "MEM910" in lines[0]


def test_show_files_lists_files_and_configs(project, capsys, tmp_path):
    assert main(["check", "src", "--show-files"]) == 0
    assert capsys.readouterr().out.splitlines() == ["configs/train.yaml", "src/a.py", "src/b.py"]


def test_show_settings_prints_the_resolved_settings(project, capsys):
    assert main(["check", "src/a.py", "--show-settings", "--ignore", "MEM3"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["gpu"] == "RTX 4090" and shown["dims"] == {"N": 13}
    assert shown["configs"] == ["configs/train.yaml"] and shown["ignore"] == ["MEM3"]
    assert shown["per_file_ignores"] == {"tests/*": ["MEM2"]}


def test_per_file_ignores_by_glob(project, capsys):
    code, lines = concise(capsys, "src", "tests")
    assert code == 1
    flagged = {line.split(":")[0] for line in lines if "MEM201" in line}
    assert flagged == {"src/a.py", "src/b.py"}


def test_file_level_noqa_skips_the_whole_file(project, capsys):
    (project / "src" / "a.py").write_text("# memlint: noqa\n" + MODEL + "y = 1  # noqa: MEM301\n")
    code, lines = concise(capsys, "src")
    assert code == 1
    assert not any(line.startswith("src/a.py") for line in lines)
    assert any(line.startswith("src/b.py") and "MEM201" in line for line in lines)


def test_line_noqa_suppresses_and_unused_noqa_is_reported(project, capsys):
    lines = MODEL.splitlines()
    assert lines[2].startswith("import")
    lines[FLAGGED_LINE - 1] += "  # noqa: MEM201, E501"
    lines[2] += "  # noqa: MEM301, MEM201"  # suppresses nothing on the import line
    lines[3] += "  # noqa: E402"  # another linter's code: not ours to judge
    lines[4] += "  # noqa"  # blanket: other linters may need it
    (project / "src" / "a.py").write_text("\n".join(lines) + "\n")
    code, found = concise(capsys, "src/a.py")
    assert code == 1  # the unused noqa is a warning
    assert not any(line.startswith(f"src/a.py:{FLAGGED_LINE}:") for line in found)
    unused = [line for line in found if "MEM910" in line]
    assert len(unused) == 1 and unused[0].startswith("src/a.py:3:")
    assert "MEM201, MEM301" in unused[0]


def test_unused_noqa_fix_removes_only_the_unused_codes(project, capsys):
    path = project / "src" / "c.py"
    path.write_text("import torch\nx = torch.zeros(3)  # noqa: E501, MEM301\ny = 'ü'  # noqa: MEM201\n")
    (finding_e501, finding_alone) = [
        f for f in memlint.check(["src/c.py"], load_settings(["src/c.py"])).findings
    ]
    assert finding_e501.fix.edits[0].content == "# noqa: E501"
    assert finding_alone.fix.edits[0].content == ""
    if not hasattr(build_parser().parse_args(["check"]), "fix"):
        pytest.skip("--fix is not available in this build")
    assert main(["check", "src/c.py", "--fix", "--output-format", "concise"]) == 0
    assert path.read_text() == "import torch\nx = torch.zeros(3)  # noqa: E501\ny = 'ü'\n"


def test_unused_noqa_respects_selection(project, capsys):
    (project / "src" / "c.py").write_text("import torch\nx = 1  # noqa: MEM201\n")
    code, lines = concise(capsys, "src/c.py", "--ignore", "MEM910")
    assert code == 0 and not any("MEM910" in line for line in lines)
    code, lines = concise(capsys, "src/c.py", "--select", "MEM3,MEM910")  # MEM201 is not run: not judged
    assert not any("MEM910" in line for line in lines)


def test_output_order_is_deterministic(project, capsys):
    for name in ("z.py", "m.py", "b2.py"):
        (project / "src" / name).write_text(MODEL + "x = 1  # noqa: MEM301\n")
    runs = [concise(capsys, "src", "configs")[1] for _ in range(2)]
    assert runs[0] == runs[1]
    keys = []
    for line in runs[0][:-1]:
        path, row, col, rest = line.split(":", 3)
        keys.append((path, int(row), int(col), rest.split()[0]))
    assert keys == sorted(keys) and len(keys) >= 8
    reordered = concise(capsys, "configs", "src/z.py", "src")[1]
    assert reordered == runs[0]


def test_output_file(project, capsys):
    code = main(["check", "src/a.py", "-o", "report.txt", "--output-format", "concise"])
    assert code == 1 and capsys.readouterr().out == ""
    assert "MEM201" in (project / "report.txt").read_text()
