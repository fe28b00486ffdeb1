"""The README says what is true: its commands are the ones CI runs, its rule table matches the catalogue."""

from __future__ import annotations

import re
from pathlib import Path

from memlint import catalogue

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_commands_are_the_ones_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert 'python3 -m pip install -e ".[test]" && python3 -m pytest' in README
    assert 'pip install --quiet -e ".[test]"' in ci and "pytest" in ci
    assert "memlint examples/" in README and "memlint examples/" in ci


def test_every_pattern_and_budget_rule_is_in_the_readme_table():
    documented = set(re.findall(r"^\| (MEM\d{3}) \| ([a-z-]+) \|", README, flags=re.MULTILINE))
    for rule in catalogue.rules().values():
        if rule.code.startswith("MEM9"):
            continue
        assert (rule.code, rule.name) in documented, f"{rule.code} {rule.name} missing from the README table"


def test_readme_toml_snippet_is_valid_settings(tmp_path):
    from memlint.settings import settings_from_table, tomllib  # tomli on Python 3.10

    snippet = re.search(r"```toml\n(.*?)```", README, flags=re.DOTALL).group(1)
    table = tomllib.loads(snippet)["tool"]["memlint"]
    settings = settings_from_table(table, tmp_path, "README")
    assert settings.gpu == "RTX 4090" and settings.dims == {"num_nodes": 13}
