"""Compose Hydra configs statically: a primary config's `defaults:` list resolved within its config directory.

Hydra 1.3 semantics (FORMATS.md): a config group is a folder, an option a file in it; entries
`- group: option`, `- group@pkg: option`, `- override /group: option`, `- optional group: option`,
`- group: null`, `- _self_` (without it the file's own body merges last). Composition is depth-first and
later wins; a group file's keys go under its package (the group path, or `# @package`). Every value keeps
the file and line it came from. Missing options become MEM901 problems on the primary, never exceptions.
"""

from __future__ import annotations

from pathlib import Path

from memlint.files import relative
from memlint.sources.yaml import ConfigFile, Problem, load_config

MAX_FILES = 200  # a defaults graph larger than this is not followed further


def _entries(defaults: list) -> list[tuple[str, str | None, str | None, bool, bool]]:
    """(group, package, option, optional, override) per entry; ("_self_", ...) for _self_; plain names as files."""
    out = []
    for item in defaults:
        if isinstance(item, str):
            out.append(
                ("_self_", None, None, False, False) if item == "_self_" else ("", None, item, False, False)
            )
            continue
        if not isinstance(item, dict) or len(item) != 1:
            continue
        ((key, option),) = item.items()
        words = str(key).split()
        override = "override" in words
        optional = "optional" in words
        target = words[-1]
        group, _, package = target.partition("@")
        out.append((group, package or None, None if option is None else str(option), optional, override))
    return out


def compose(primary: ConfigFile, root: Path, path: Path) -> tuple[ConfigFile, set[Path]]:
    """The primary with its defaults merged in (keys re-prefixed, positions kept) and the files it used."""
    result = ConfigFile(path=primary.path, problems=list(primary.problems))
    used: set[Path] = set()
    _merge_into(result, primary, path.parent, "", root, used, primary, depth=0)
    return result, used


def _merge_into(result, config: ConfigFile, config_dir: Path, prefix: str, root, used, primary, depth: int):
    entries = _entries(config.defaults)
    chosen: dict[str, tuple] = {}
    order: list[str] = []
    for entry in entries:  # overrides replace the option of an earlier (or nested) group
        group = entry[0].lstrip("/")
        if entry[1]:  # the same group may be chosen twice under different packages (`- model@other: b`)
            group = f"{group}@{entry[1]}"
        if entry[4] and group in chosen:
            chosen[group] = (*chosen[group][:2], entry[2], chosen[group][3], False)
            continue
        name = group if group != "" else f"file:{entry[2]}"
        if name not in chosen:
            order.append(name)
        chosen[name] = entry
    if "_self_" not in chosen:
        order.append("_self_")
    for name in order:
        if name == "_self_":
            for key, value in config.values.items():
                result.values[prefix + key] = value
            continue
        group, package, option, optional, _ = chosen[name]
        if option is None:
            continue  # `- group: null`: a placeholder
        group = group.lstrip("/")
        # `/group` is absolute: under the primary config's directory (Hydra's config root)
        base = root / Path(primary.path).parent if chosen[name][0].startswith("/") else config_dir
        file = (
            _option_file(base, group, option)
            or _option_file(config_dir, group, option)
            or _option_file(root, group, option)
        )
        if file is None:
            # hydra/sweeper, hydra/launcher, hydra/job_logging, ...: Hydra's own groups, provided by Hydra and its
            # plugins, not by the project (and never sizes)
            if not optional and group.split("/", 1)[0] != "hydra":
                result.problems.append(
                    Problem(
                        "MEM901",
                        f"Hydra defaults: no config '{group + '/' if group else ''}{option}' "
                        f"under {relative(config_dir, root)}",
                        1,
                        1,
                    )
                )
            continue
        if file in used or len(used) >= MAX_FILES or depth > 20:
            continue
        used.add(file)
        try:
            text = file.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            result.problems.append(Problem("MEM901", f"Hydra defaults: cannot read {file.name}: {exc}"))
            continue
        child = load_config(relative(file, root), text)
        result.problems.extend(child.problems)
        pkg = _package(group, package, child.package, prefix)
        _merge_into(result, child, file.parent, pkg, root, used, primary, depth + 1)


def _option_file(base: Path, group: str, option: str) -> Path | None:
    for suffix in (".yaml", ".yml", ""):
        candidate = base / group / f"{option}{suffix}" if group else base / f"{option}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _package(group: str, explicit: str | None, header: str | None, prefix: str) -> str:
    """The dotted prefix a group option's keys get: `@pkg`, else `# @package`, else the group path."""
    package = explicit or header
    if package in ("_global_",):
        return ""
    if package in (None, "_group_"):
        package = group.replace("/", ".")
    elif package.startswith("_global_."):
        return package.removeprefix("_global_.") + "."
    return (prefix + package + ".") if package else prefix


def compose_all(configs: list[ConfigFile], sources: dict[str, Path], root: Path) -> list[ConfigFile]:
    """Compose every config that has a `defaults:` list; drop the group files they consumed."""
    composed, consumed = [], set()
    for config in configs:
        path = sources.get(config.path)
        if config.defaults and path is not None:
            config, used = compose(config, root, path)
            consumed |= {p.resolve().parent for p in used if p.resolve().parent != path.resolve().parent}
        composed.append(config)
    # options of a group the primaries compose (the chosen and the others) are not configs on their own
    return [
        c
        for c in composed
        if c.defaults or sources.get(c.path) is None or sources[c.path].resolve().parent not in consumed
    ]
