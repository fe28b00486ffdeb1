"""Output formats: one module per format, each a `render(report) -> str` over the same Findings.

Formats register themselves with `@formatter(name)`; the modules of this package are discovered, not listed.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections import Counter
from collections.abc import Callable

_FORMATS: dict[str, Callable] = {}


def formatter(name: str):
    def decorate(fn):
        _FORMATS[name] = fn
        return fn

    return decorate


_DISCOVERED: list[bool] = []


def formats() -> dict[str, Callable]:
    # Not `if not _FORMATS`: a formatter imported first (a test importing report.github) fills it.
    if not _DISCOVERED:
        for info in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{info.name}")
        _DISCOVERED.append(True)
    return dict(_FORMATS)


def render(name: str, report) -> str:
    return formats()[name](report)


def summary_line(report) -> str:
    """'Found 3 problems (1 error, 2 warnings); 1 fixable with --fix.' — the closing line of text formats."""
    shown = report.visible()
    if not shown:
        hidden = len(report.findings)
        extra = f" ({hidden} info hidden; --show-info)" if hidden else ""
        return f"All checks passed!{extra}"
    counts = Counter(f.severity for f in shown)
    parts = [
        f"{counts[s]} {s}{'s' if counts[s] != 1 and s != 'info' else ''}"
        for s in ("error", "warning", "info")
        if counts[s]
    ]
    safe = sum(1 for f in shown if f.fix is not None and f.fix.applicability == "safe")
    unsafe = sum(1 for f in shown if f.fix is not None and f.fix.applicability == "unsafe")
    line = f"Found {len(shown)} problem{'s' if len(shown) != 1 else ''} ({', '.join(parts)})"
    if safe:
        line += f"; {safe} fixable with --fix"
    if unsafe:
        line += f"; {unsafe} more with --unsafe-fixes"
    hidden = len(report.findings) - len(shown)
    if hidden:
        line += f"; {hidden} info hidden (--show-info)"
    return line + "."
