"""MEM102 fix (safe): remove `torch.cuda.empty_cache()`; a block it leaves empty gets `pass`."""

from __future__ import annotations

import ast

from memlint.findings import Edit, Fix
from memlint.fix import fixer
from memlint.fix.locate import alone_on_lines, block_of, node_at, statement_of
from memlint.fix.text import NEWLINE, Lines

EMPTY_CACHE = "torch.cuda.empty_cache"


def _is_empty_cache(module, stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Call)
        and module.qualname(stmt.value.func) == EMPTY_CACHE
        and not stmt.value.args
        and not stmt.value.keywords
    )


@fixer("MEM102")
def remove_empty_cache(finding, module, text: str) -> Fix | None:
    node = node_at(module.tree, finding.span, (ast.Call, ast.Expr))
    stmt = statement_of(module, node) if node is not None else None
    if stmt is None or not _is_empty_cache(module, stmt):
        finding.notes.append("no fix: the call is not a statement of its own")
        return None
    block = block_of(module, stmt)
    if block is None:
        return None
    lines = Lines(text)
    start = lines.index(stmt.lineno, stmt.col_offset + 1)
    end = lines.index(stmt.end_lineno, stmt.end_col_offset + 1)
    others = [s for s in block if not _is_empty_cache(module, s)]
    keeper = not others and block[0] is stmt  # the block would be empty: the first such call becomes `pass`
    if keeper:
        edit = Edit(lines.span(start, end), "pass")
    elif alone_on_lines(NEWLINE.split(text), stmt):
        line_start = lines.starts[stmt.lineno - 1]
        line_end = lines.starts[stmt.end_lineno] if stmt.end_lineno < len(lines.starts) else len(text)
        edit = Edit(lines.span(line_start, line_end), "")
    else:
        edit = Edit(lines.span(start, end), "pass")
    return Fix(
        "safe",
        "remove torch.cuda.empty_cache(): it frees nothing at the peak and synchronises the GPU",
        (edit,),
    )
