"""Config fixes (unsafe: the training changes): edit YAML scalars in place, keeping comments and layout.

`scalar_edit` replaces exactly the characters of one value (its ConfigValue start_index/end_index), so
everything outside the changed scalar stays byte for byte (CRLF, comments, quotes, flow mappings).

MEM501 findings name each knob that makes the run fit in a machine-readable note (memlint/knobs.py):
`<key> <= n fits` (batch size), `<key> >= n fits` (a refresh interval), `<key> = value fits` (checkpointing,
precision). `config_fix` builds the edit of every knob whose key is in the finding's file, applies ONE — the
first in memlint/knobs.py's order of preference (checkpointing on > smaller batch with accumulation raised >
bf16 mixed precision > longer refresh interval > smaller batch without accumulation), the change that keeps
the training closest — and names the others in its message. It never adds a key the config does not have.
"""

from __future__ import annotations

import math
import re

from memlint.findings import Edit, Fix
from memlint.fix.text import Lines
from memlint.knobs import ACCUMULATION_KEYS, CHANGES, NOTE, RANK, kind_of
from memlint.sources.yaml import ConfigFile, ConfigValue, load_config

FITS = re.compile(r"([A-Za-z_][\w.\-]*)\s*<=\s*(\d+)")  # `training.batch_size <= 6` anywhere (older form)
TRUE_FORM = {
    "false": "true",
    "False": "True",
    "FALSE": "TRUE",
    "no": "yes",
    "No": "Yes",
    "off": "on",
    "Off": "On",
}


def scalar_edit(text: str, value: ConfigValue, new: str) -> Edit:
    """Replace one scalar's text (code-point span) by `new`; quotes of a quoted scalar are kept."""
    start, end = value.start_index, value.end_index
    raw = text[start:end]
    if raw[:1] in "'\"" and raw[-1:] == raw[:1]:
        new = raw[0] + new + raw[0]
    return Edit(Lines(text, "chars").span(start, end), new)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def batch_size_fix(config: ConfigFile, text: str, key: str, fitting: int) -> Fix | None:
    """Set `key` to `fitting`; scale an accumulation key so that batch x accumulation stays the same."""
    value = _value(config, key)
    if value is None or not _is_int(value.value) or fitting < 1:
        return None
    old = value.value
    if fitting >= old:
        return None
    edits = [scalar_edit(text, value, str(fitting))]
    message = f"lower {value.key} from {old} to {fitting} (the largest that fits)"
    accumulation = _accumulation(config, value.key)
    if accumulation is not None and _is_int(accumulation.value):
        steps = math.ceil(old * accumulation.value / fitting)
        edits.append(scalar_edit(text, accumulation, str(steps)))
        message += (
            f" and raise {accumulation.key} from {accumulation.value} to {steps} (effective batch kept"
            f"{'' if old * accumulation.value == fitting * steps else f': {old * accumulation.value} -> {fitting * steps}'})"
        )
        message += f": {CHANGES['batch+accumulation']}"
    else:
        message += f"; no gradient-accumulation key in this config: {CHANGES['batch']}"
    edits.sort(key=lambda e: e.span)
    return Fix("unsafe", message + " — changes the training", tuple(edits))


def interval_fix(config: ConfigFile, text: str, key: str, fitting: int) -> Fix | None:
    """Raise a refresh interval to the smallest that fits."""
    value = _value(config, key)
    if value is None or not _is_int(value.value) or fitting <= value.value:
        return None
    message = (
        f"raise {value.key} from {value.value} to {fitting} (the smallest that fits): {CHANGES['interval']}"
        " — changes the training"
    )
    return Fix("unsafe", message, (scalar_edit(text, value, str(fitting)),))


def switch_fix(config: ConfigFile, text: str, key: str, new: str) -> Fix | None:
    """Checkpointing on (a boolean `false` -> `true`, in the file's spelling) or a precision value."""
    value = _value(config, key)
    if value is None:
        return None
    kind = kind_of(value.key)
    raw = text[value.start_index : value.end_index].strip("'\"")
    if new.lower() == "true":
        if value.value is not False or raw not in TRUE_FORM:
            return None
        replacement = TRUE_FORM[raw]
    elif kind == "precision" and not isinstance(value.value, bool) and str(value.value) != new:
        replacement = new
    else:
        return None
    if kind == "checkpointing":
        what = f"turn activation checkpointing on ({value.key}: {raw} -> {replacement}): {CHANGES['checkpointing']}"
    elif kind == "precision":
        fp16 = new in ("16-mixed", "fp16") or value.key.rsplit(".", 1)[-1] == "fp16"
        what = f"mixed precision ({value.key}: {raw} -> {replacement}): {CHANGES['precision-fp16' if fp16 else 'precision']}"
    else:
        return None
    return Fix("unsafe", what + " — changes the training", (scalar_edit(text, value, replacement),))


def config_fix(finding, path: str, text: str) -> Fix | None:
    """The one config fix a MEM501 finding asks for (its knob notes, see the module docstring), if any."""
    config = load_config(path, text)
    candidates: list[tuple[int, int, Fix]] = []
    others: list[str] = []
    seen: set[str] = set()
    for order, line in enumerate([finding.message, *finding.notes]):
        fix, label = None, ""
        m = NOTE.match(line)
        if m and m.group(4) != "fits":
            continue  # MEM502's headroom notes are advice, not a fix
        if m:
            key, op, new = m.group(1), m.group(2), m.group(3)
            label = f"{key} {op} {new}"
            kind = kind_of(key)
            if op == "<=" and kind == "batch" and new.isdigit():
                fix = batch_size_fix(config, text, key, int(new))
                kind = "batch+accumulation" if fix is not None and len(fix.edits) > 1 else "batch"
            elif op == ">=" and kind == "interval" and new.isdigit():
                fix = interval_fix(config, text, key, int(new))
            elif op == "=":
                fix = switch_fix(config, text, key, new)
        elif " fits (" in line and line.split(" fits (", 1)[0].count(" ") <= 3 and not line.startswith("no "):
            label = line.split(" fits (", 1)[0]  # a knob that fits but that the fix does not write
        else:
            for key, n in FITS.findall(line):  # the older `training.batch_size <= 6` anywhere in a line
                if kind_of(key) == "batch" and fix is None:
                    fix = batch_size_fix(config, text, key, int(n))
                    label, kind = f"{key} <= {n}", "batch"
                    if fix is not None and len(fix.edits) > 1:
                        kind = "batch+accumulation"
        if label and label not in seen:
            seen.add(label)
            if fix is not None:
                candidates.append((RANK.get(kind, 9), order, fix, label))
            else:
                others.append(label)
    if not candidates:
        return None
    candidates.sort(key=lambda c: (c[0], c[1]))
    _, _, chosen, _ = candidates[0]
    rest = [c[3] for c in candidates[1:]] + others
    if not rest:
        return chosen
    return Fix(chosen.applicability, chosen.message + f" (also fits: {', '.join(rest)})", chosen.edits)


def _value(config: ConfigFile, key: str) -> ConfigValue | None:
    """The file's value for a run key: the same dotted key, or (Hydra package, group file) a unique suffix."""
    if key in config.values:
        return config.values[key]
    if config.package and key.startswith(config.package + "."):
        inner = key[len(config.package) + 1 :]
        if inner in config.values:
            return config.values[inner]
    tails = [v for k, v in config.values.items() if key.endswith("." + k)]
    return tails[0] if len(tails) == 1 else None


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
