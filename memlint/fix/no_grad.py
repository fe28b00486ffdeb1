"""MEM401 fix (unsafe): compute a positional-encoding eigendecomposition under `torch.no_grad()`.

Only when the result is a positional encoding (the function or the assigned name says so: pe, pos,
encoding, laplacian, eig) — gradients then stop at the encoding, which changes training if it was learned
through. The statement must stand alone on its lines; it is re-indented inside the `with` block.
eigh_chunks.py registers the MEM401 fixer and picks this variant or the chunked one (named_as_encoding).
"""

from __future__ import annotations

import ast
import re

from memlint.findings import Edit, Fix
from memlint.fix.locate import alone_on_lines, function_of, node_at, statement_of
from memlint.fix.text import NEWLINE, Lines

ENCODING_WORDS = re.compile(
    r"(^|_)(pe|pos|position|positional|encoding|enc|lap|laplacian|eig|eigvec|spectral)", re.I
)


def named_as_encoding(module, call: ast.AST) -> bool:
    """Does the function holding the call, or a name its statement assigns, say it is a positional encoding?"""
    stmt = statement_of(module, call)
    func = function_of(module, call)
    if not isinstance(stmt, (ast.Assign, ast.AnnAssign)) or func is None:
        return False
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
    names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    return any(ENCODING_WORDS.search(w) for w in [func.name, *names])


def eig_under_no_grad(finding, module, text: str) -> Fix | None:
    call = node_at(module.tree, finding.span)
    stmt = statement_of(module, call) if call is not None else None
    func = function_of(module, call) if call is not None else None
    if not isinstance(stmt, (ast.Assign, ast.AnnAssign)) or func is None:
        return None
    if _under_no_grad(module, stmt, func):
        return None
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
    names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    if not any(ENCODING_WORDS.search(w) for w in [func.name, *names]):
        finding.notes.append("no automatic fix: the eigendecomposition is not named as a positional encoding")
        return None
    if module.imports.get("torch") != "torch" or not alone_on_lines(NEWLINE.split(text), stmt):
        return None
    if any(
        isinstance(n, ast.Constant) and isinstance(n.value, str) and n.lineno != n.end_lineno
        for n in ast.walk(stmt)
    ):
        return None
    lines = Lines(text)
    start = lines.starts[stmt.lineno - 1]
    end = lines.starts[stmt.end_lineno] if stmt.end_lineno < len(lines.starts) else len(text)
    original = text[start:end]
    indent = original[: len(original) - len(original.lstrip(" \t"))]
    body = "".join(
        ("    " + line if line.strip() else line)
        for line in NEWLINE.sub("\n", original).splitlines(keepends=True)
    )
    if not body.endswith("\n"):
        body += "\n"
    content = f"{indent}with torch.no_grad():\n{body}"
    return Fix(
        "unsafe",
        "chosen: torch.no_grad(), because the result is named as a positional encoding; compute it under "
        "torch.no_grad(): nothing is kept for backward, but gradients no longer flow through the "
        "eigendecomposition (changes training if the encoding was learned through). Computing it in chunks "
        "instead keeps training unchanged but divides only the solver workspace",
        (Edit(lines.span(start, end), content),),
    )


def under_no_grad(module, call: ast.AST) -> bool:
    """Is the call's statement already inside `with torch.no_grad()` (or a function decorated with it)?"""
    stmt = statement_of(module, call)
    func = function_of(module, call)
    return stmt is not None and func is not None and _under_no_grad(module, stmt, func)


NO_GRAD = {"torch.no_grad", "torch.inference_mode", "torch.autograd.grad_mode.no_grad"}


def _under_no_grad(module, node: ast.AST, func: ast.AST) -> bool:
    """Inside `with torch.no_grad()` / `torch.inference_mode()` or a function decorated with one."""
    decorators = [d.func if isinstance(d, ast.Call) else d for d in func.decorator_list]
    if any(module.qualname(d) in NO_GRAD for d in decorators):
        return True
    parent = module.parent(node)
    while parent is not None and parent is not func:
        if isinstance(parent, (ast.With, ast.AsyncWith)):
            for item in parent.items:
                expr = item.context_expr
                if module.qualname(expr.func if isinstance(expr, ast.Call) else expr) in NO_GRAD:
                    return True
        parent = module.parent(parent)
    return False
