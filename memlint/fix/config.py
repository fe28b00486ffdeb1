"""Config fixes (unsafe: the training changes): edit a YAML scalar in place, keeping comments and layout.

`scalar_edit` replaces exactly the characters of one value (its ConfigValue start_index/end_index), so
everything outside the changed scalar stays byte for byte. `batch_size_fix` lowers the batch size to the
largest that fits and raises gradient accumulation to keep the effective batch when the config has it.
MEM501 findings name the fitting batch size as `<key> <= <n>` in their message or notes (the check's
contract with this fixer); `config_fix` reads that.
"""

from __future__ import annotations

import math
import re

from memlint.findings import Edit, Fix
from memlint.fix.text import Lines
from memlint.sizes import ALIAS_GROUPS
from memlint.sources.yaml import ConfigFile, ConfigValue, load_config

ACCUMULATION_KEYS = (
    "gradient_accumulation_steps",
    "accumulate_grad_batches",
    "grad_accum",
    "grad_accum_steps",
)
FITS = re.compile(r"([\w.\-]+)\s*<=\s*(\d+)")


def scalar_edit(text: str, value: ConfigValue, new: str) -> Edit:
    """Replace one scalar's text (code-point span) by `new`; quotes of a quoted scalar are kept."""
    start, end = value.start_index, value.end_index
    raw = text[start:end]
    if raw[:1] in "'\"" and raw[-1:] == raw[:1]:
        new = raw[0] + new + raw[0]
    return Edit(Lines(text, "chars").span(start, end), new)


def batch_size_fix(config: ConfigFile, text: str, key: str, fitting: int) -> Fix | None:
    """Set `key` to `fitting`; scale an accumulation key so that batch x accumulation stays the same."""
    value = config.values.get(key)
    if value is None or not isinstance(value.value, int) or isinstance(value.value, bool) or fitting < 1:
        return None
    old = value.value
    if fitting >= old:
        return None
    edits = [scalar_edit(text, value, str(fitting))]
    message = f"lower {key} from {old} to {fitting} (the largest that fits)"
    accumulation = _accumulation(config, key)
    if (
        accumulation is not None
        and isinstance(accumulation.value, int)
        and not isinstance(accumulation.value, bool)
    ):
        steps = math.ceil(old * accumulation.value / fitting)
        edits.append(scalar_edit(text, accumulation, str(steps)))
        message += (
            f" and raise {accumulation.key} from {accumulation.value} to {steps} (effective batch kept)"
        )
    else:
        message += "; the effective batch shrinks (no gradient-accumulation key in this config)"
    edits.sort(key=lambda e: e.span)
    return Fix("unsafe", message + " — changes the training", tuple(edits))


def config_fix(finding, path: str, text: str) -> Fix | None:
    """The batch-size fix a MEM501 finding asks for (`<key> <= n` in its message or notes), if any."""
    config = load_config(path, text)
    for line in [finding.message, *finding.notes]:
        for key, n in FITS.findall(line):
            if key in config.values and _is_batch_key(key):
                return batch_size_fix(config, text, key, int(n))
    return None


def _is_batch_key(key: str) -> bool:
    leaf = key.rsplit(".", 1)[-1]
    return any(leaf in group and "batch_size" in group for group in ALIAS_GROUPS) or "batch" in leaf


def _accumulation(config: ConfigFile, key: str) -> ConfigValue | None:
    prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
    for name in ACCUMULATION_KEYS:
        for candidate in (prefix + name, name):
            if candidate in config.values:
                return config.values[candidate]
    for full, value in config.values.items():
        if full.rsplit(".", 1)[-1] in ACCUMULATION_KEYS:
            return value
    return None
