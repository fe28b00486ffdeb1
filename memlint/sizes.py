"""The run's table of named sizes: values from --dim, [tool.memlint.dims] and the YAML configs.

Each value keeps where it came from. A name is looked up as a dotted key (`model.d_model`), then as a
leaf name (`d_model`), then through its alias group (`hidden_size` → `d_model`). Sources rank
--dim > settings dims > configs; a config key declared with two different values is a conflict and is
reported, never resolved silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from memlint.sources.yaml import MISSING, ConfigFile

# Alias groups: the first name is the canonical one (used in messages and `--dim` hints).
ALIAS_GROUPS: list[tuple[str, ...]] = [
    (
        "batch_size",
        "bs",
        "batch",
        "per_device_train_batch_size",
        "train_batch_size",
        "micro_batch_size",
        "train_micro_batch_size_per_gpu",
        "batch_size_per_device",
    ),
    (
        "seq_len",
        "seq_length",
        "max_seq_length",
        "max_seq_len",
        "sequence_length",
        "sequence_len",
        "max_length",
        "num_timesteps",
        "n_timesteps",
        "timesteps",
        "num_steps_per_sample",
        "context_length",
        "block_size",
        "n_ctx",
        "max_len",
        "window_size_t",
    ),
    (
        "d_model",
        "hidden_size",
        "hidden_dim",
        "embedding_dim",
        "embed_dim",
        "n_embd",
        "model_dim",
        "emb_dim",
        "d_hidden",
        "dim_model",
        "width",
    ),
    ("n_heads", "num_heads", "heads", "num_attention_heads", "n_head", "nhead", "attention_heads"),
    ("head_dim", "dim_head", "d_head", "d_kv", "head_size"),
    ("vocab_size", "n_vocab", "vocab", "num_tokens", "ntoken", "vocabulary_size"),
    ("num_nodes", "n_nodes", "num_vertices", "n_channels_graph"),
    ("num_layers", "n_layers", "num_hidden_layers", "n_layer", "depth", "layers"),
    ("intermediate_size", "d_ff", "ffn_dim", "dim_feedforward", "mlp_dim", "ff_dim"),
    ("image_size", "img_size", "resolution", "input_size"),
    ("patch_size", "patch"),
    ("num_queries", "n_queries", "num_query_tokens", "query_tokens", "num_latents", "n_latents"),
    ("gradient_accumulation_steps", "accumulate_grad_batches", "grad_accum_steps", "gradient_accumulation"),
]
# Shape letters that are conventional enough to resolve: `B, T, ... = x.shape`.
LETTER_ALIASES = {"B": "batch_size", "T": "seq_len"}

_GROUP_OF: dict[str, tuple[str, ...]] = {name: group for group in ALIAS_GROUPS for name in group}


def canonical(name: str) -> str:
    group = _GROUP_OF.get(name.lower())
    return group[0] if group else name


@dataclass(frozen=True)
class Size:
    key: str
    value: object
    origin: str  # "configs/train.yaml:12", "--dim", "pyproject.toml [tool.memlint.dims]"
    rank: int  # 0 --dim, 1 settings, 2 config


@dataclass
class Conflict:
    key: str
    kept: Size
    other: Size


@dataclass
class SizeTable:
    by_key: dict[str, Size] = field(default_factory=dict)
    by_leaf: dict[str, list[Size]] = field(default_factory=dict)
    conflicts: list[Conflict] = field(default_factory=list)

    def add(self, key: str, value, origin: str, rank: int) -> None:
        size = Size(key, value, origin, rank)
        old = self.by_key.get(key)
        if old is not None:
            if old.rank < rank:
                return
            if old.rank == rank and old.value != value:
                self.conflicts.append(Conflict(key, old, size))
                return  # first declaration in the order given wins; the conflict is reported
        self.by_key[key] = size
        leaf = key.rsplit(".", 1)[-1]
        self.by_leaf.setdefault(leaf.lower(), []).append(size)

    @classmethod
    def build(
        cls, cli_dims: dict, settings_dims: dict, settings_origin: str, configs: list[ConfigFile], shared=()
    ):
        """Ranks: --dim 0, settings 1, `configs` 2, then `shared` configs 3 (per-file configs override them)."""
        table = cls()
        for name, value in cli_dims.items():
            table.add(name, value, "--dim", 0)
        for name, value in settings_dims.items():
            table.add(name, value, settings_origin, 1)
        for rank, group in ((2, configs), (3, shared)):
            for config in group:
                prefix = ""
                if config.package and config.package not in ("_global_", "_group_"):
                    prefix = config.package + "."
                for key, cv in config.values.items():
                    table.add(prefix + key, cv.value, cv.origin, rank)
        table._resolve_interpolations()
        return table

    def _resolve_interpolations(self) -> None:
        """`${a.b}` that is the whole value takes the target's value (Hydra semantics); others stay text.

        A dim declared as a key name (`--dim N=graph.num_nodes`, `N = "graph.num_nodes"` in the settings) is a
        reference too: it says what a shape letter means.
        """
        for _ in range(8):
            changed = False
            for key, size in list(self.by_key.items()):
                if isinstance(size.value, str):
                    m = re.fullmatch(r"\$\{\s*([A-Za-z_][\w.]*)\s*\}", size.value)
                    if m is None and size.rank <= 1:
                        m = re.fullmatch(r"([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)+)", size.value)
                    if m and m.group(1) in self.by_key and self.by_key[m.group(1)] is not size:
                        target = self.by_key[m.group(1)]
                        if not (isinstance(target.value, str) and target.value.startswith("${")):
                            new = Size(key, target.value, f"{size.origin} → {target.origin}", size.rank)
                            self.by_key[key] = new
                            leaf = key.rsplit(".", 1)[-1].lower()
                            self.by_leaf[leaf] = [new if s is size else s for s in self.by_leaf.get(leaf, [])]
                            changed = True
            if not changed:
                break

    # --- lookups -----------------------------------------------------------------------------

    def lookup(self, name: str, *, aliases: bool = True) -> Size | None:
        """A dotted key, a leaf name, or (with aliases) any name of its alias group."""
        if not name:
            return None
        if "." in name:
            found = self.lookup_dotted(name.split("."))
            if found is not None:
                return found
            name = name.rsplit(".", 1)[-1]
        found = self._leaf(name)
        if found is not None or not aliases:
            return found
        candidates = list(_GROUP_OF.get(name.lower(), ()))
        if name in LETTER_ALIASES:
            candidates = list(_GROUP_OF[LETTER_ALIASES[name]])
        elif candidates:  # `--dim B=8` also declares the batch size: the shape letters of the group
            candidates += [letter for letter, group in LETTER_ALIASES.items() if group == candidates[0]]
        for alias in candidates:
            found = self._leaf(alias)
            if found is not None:
                return found
        return None

    def lookup_dotted(self, parts: list[str]) -> Size | None:
        """`cfg.model.d_model` → key `model.d_model`, or any key that ends with the same path."""
        for start in range(len(parts)):
            dotted = ".".join(parts[start:])
            if dotted in self.by_key:
                return self._usable(self.by_key[dotted])
            if start < len(parts) - 1:
                tails = [s for k, s in self.by_key.items() if k.endswith("." + dotted)]
                if len(tails) >= 1:
                    return self._usable(min(tails, key=lambda s: s.rank))
        return None

    def _leaf(self, name: str) -> Size | None:
        sizes = self.by_leaf.get(name.lower())
        if not sizes:
            return None
        best = min(sizes, key=lambda s: s.rank)
        return self._usable(best)

    @staticmethod
    def _usable(size: Size) -> Size | None:
        if size.value == MISSING:
            return None
        return size

    def numeric(self, name: str) -> Size | None:
        size = self.lookup(name)
        if size is not None and isinstance(size.value, (int, float)) and not isinstance(size.value, bool):
            return size
        return None


def parse_dim(text: str) -> tuple[str, object]:
    """`--dim NAME=VALUE`: the value is an int, a float or a word."""
    if "=" not in text:
        raise ValueError(f"--dim expects NAME=VALUE, got {text!r}")
    name, value = text.split("=", 1)
    name = name.strip()
    if not re.fullmatch(r"[A-Za-z_][\w.]*", name):
        raise ValueError(f"--dim name {name!r} is not a name or dotted key")
    return name, coerce(value.strip())


def coerce(value):
    if isinstance(value, str):
        try:
            return int(value.replace("_", ""))
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value
    return value


# Size names whose value must be a number (ambiguous words such as `width`, `depth`, `layers`, `resolution`,
# `patch`, `batch`, `heads`, `vocab` are left out: configs use them for non-sizes too).
_AMBIGUOUS = {"width", "depth", "layers", "resolution", "patch", "batch", "heads", "vocab", "input_size"}
NUMERIC_SIZES = {
    name
    for group in ALIAS_GROUPS
    if group[0] not in ("image_size", "num_nodes")
    for name in group
    if name not in _AMBIGUOUS
}


def invalid_sizes(config: ConfigFile) -> list[tuple[str, int, int, str]]:
    """MEM907: (key, line, col, message) for each size key whose value is text that is not a number."""
    out = []
    for key, cv in config.values.items():
        value = cv.value
        if key.rsplit(".", 1)[-1].lower() not in NUMERIC_SIZES or not isinstance(value, (str, bool)):
            continue
        if isinstance(value, str) and (
            value == MISSING
            or "${" in value
            or re.match(r"^\s*(choice|range|interval|tag|glob)\(", value)
            or isinstance(coerce(value), (int, float))
        ):
            continue  # a mandatory value, an interpolation, a sweep, or a quoted number
        shown = repr(value) if isinstance(value, str) else str(value).lower()
        out.append(
            (key, cv.line, cv.col, f"'{key}' is {shown}, not a number; memlint cannot use it as a size")
        )
    return out
