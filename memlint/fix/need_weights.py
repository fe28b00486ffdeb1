"""MEM202 fix (safe): pass `need_weights=False` to an nn.MultiheadAttention call whose weights are unused."""

from __future__ import annotations

import ast

from memlint.findings import Edit, Fix
from memlint.fix import fixer
from memlint.fix.locate import function_of, name_loads, node_at
from memlint.fix.text import Lines

MHA = "torch.nn.MultiheadAttention"
NEED_WEIGHTS_POSITION = 4  # forward(query, key, value, key_padding_mask, need_weights, ...)


@fixer("MEM202")
def need_weights_false(finding, module, text: str) -> Fix | None:
    call = node_at(module.tree, finding.span)
    if call is None or not _calls_mha(module, call):
        return None
    if len(call.args) > NEED_WEIGHTS_POSITION or any(kw.arg is None for kw in call.keywords):
        finding.notes.append("no fix: need_weights is passed positionally or through **kwargs")
        return None
    given = next((kw for kw in call.keywords if kw.arg == "need_weights"), None)
    if given is not None and isinstance(given.value, ast.Constant) and given.value.value is False:
        return None
    why = weights_used(module, call)
    if why:
        finding.notes.append(f"no fix: the returned weights are used ({why})")
        return None
    lines = Lines(text)
    if given is not None:
        v = given.value
        start = lines.index(v.lineno, v.col_offset + 1)
        end = lines.index(v.end_lineno, v.end_col_offset + 1)
        edit = Edit(lines.span(start, end), "False")
    else:
        last = max(
            [*call.args, *(kw.value for kw in call.keywords)], key=lambda n: (n.end_lineno, n.end_col_offset)
        )
        at = lines.index(last.end_lineno, last.end_col_offset + 1)
        edit = Edit(lines.span(at, at), ", need_weights=False")
    return Fix("safe", "pass need_weights=False: the weights are unused and the fused path is taken", (edit,))


def _calls_mha(module, call: ast.Call) -> bool:
    func = call.func
    if not call.args and not call.keywords:
        return False
    if module.qualname(func) == MHA:  # the constructor, not the forward
        return False
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self":
        for info in module.classes.values():
            sub = info.submodules.get(func.attr)
            if sub is not None and sub.qualname == MHA and _inside(info.node, call):
                return True
        return False
    return True  # a local name the check resolved to a MultiheadAttention; the finding says so


def _inside(outer: ast.AST, node: ast.AST) -> bool:
    return outer.lineno <= node.lineno <= (outer.end_lineno or outer.lineno)


def weights_used(module, call: ast.Call) -> str:
    """'' when the second output of the call is certainly unused, else why it may be used."""
    parent = module.parent(call)
    if isinstance(parent, ast.Subscript) and parent.value is call:
        index = parent.slice
        if isinstance(index, ast.Constant) and index.value == 0:
            return ""
        return f"line {parent.lineno} takes another element than [0]"
    if (
        isinstance(parent, ast.Assign)
        and len(parent.targets) == 1
        and isinstance(parent.targets[0], ast.Tuple)
    ):
        elts = parent.targets[0].elts
        if len(elts) != 2 or not isinstance(elts[1], ast.Name):
            return f"line {parent.lineno} unpacks the result in another way"
        name = elts[1].id
        if _loaded(module, call, name):
            return f"{name} is read"
        return ""
    return f"line {call.lineno} keeps the whole result"


def _loaded(module, call: ast.Call, name: str) -> bool:
    scope = function_of(module, call) or module.tree
    return bool(name_loads(scope, name))
