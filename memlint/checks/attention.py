"""Family 2: attention over many tokens (MEM201 scores materialised by hand-written attention)."""

from __future__ import annotations

import ast

from memlint import cost as costs
from memlint.checks import FileContext, check, make_cost, missing_note
from memlint.shapes import FunctionFacts
from memlint.symbolic import Q, product

SOFTMAX_FUNCS = {
    "torch.softmax",
    "torch.nn.functional.softmax",
    "torch.Tensor.softmax",
    "torch.special.softmax",
}
SDPA = "torch.nn.functional.scaled_dot_product_attention"
MATMUL_FUNCS = {"torch.matmul", "torch.bmm", "torch.einsum", "einops.einsum", "torch.baddbmm"}
DROPOUT_FUNCS = {"torch.nn.functional.dropout", "torch.dropout"}
SCORE_EDITS = {
    "masked_fill",
    "masked_fill_",
    "float",
    "to",
    "type_as",
    "__add__",
    "mul",
    "div",
    "add",
    "clamp",
    "contiguous",
    "half",
    "bfloat16",
}


def softmax_input(ctx: FileContext, node: ast.AST, facts: FunctionFacts) -> ast.AST | None:
    """The tensor a softmax call normalises, or None if `node` is not a softmax."""
    if not isinstance(node, ast.Call):
        return None
    name = ctx.qualname(node.func)
    if name in SOFTMAX_FUNCS and node.args:
        return node.args[0]
    func = node.func
    is_method = isinstance(func, ast.Attribute) and func.attr == "softmax" and not name.startswith("torch.nn")
    module_call = (
        isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Name)
        and func.value.id in ("torch", "F")
    )
    if is_method and name not in SOFTMAX_FUNCS and not module_call:
        return func.value
    if (
        isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Name)
        and func.value.id == "self"
        and facts.cls is not None
        and func.attr in facts.cls.submodules
        and node.args
        and facts.cls.submodules[func.attr].qualname == "torch.nn.Softmax"
    ):
        return node.args[0]
    return None


def trace_to_matmul(ctx: FileContext, expr: ast.AST, facts: FunctionFacts, depth: int = 0) -> ast.AST | None:
    """Follow a score tensor back through scaling, masking and local names to the matmul that made it."""
    if depth > 8 or expr is None:
        return None
    if isinstance(expr, ast.BinOp):
        if isinstance(expr.op, ast.MatMult):
            return expr
        return trace_to_matmul(ctx, expr.left, facts, depth + 1) or trace_to_matmul(
            ctx, expr.right, facts, depth + 1
        )
    if isinstance(expr, ast.Call):
        name = ctx.qualname(expr.func)
        if name in MATMUL_FUNCS:
            return expr
        func = expr.func
        if isinstance(func, ast.Attribute) and func.attr in ("matmul", "bmm") and not name:
            return expr
        if isinstance(func, ast.Attribute) and func.attr in SCORE_EDITS:
            return trace_to_matmul(ctx, func.value, facts, depth + 1)
        if name in ("torch.masked_fill", "torch.where") and expr.args:
            return trace_to_matmul(ctx, expr.args[-1 if name == "torch.where" else 0], facts, depth + 1)
        helper = _helper_function(ctx, expr, facts)
        if helper is not None:
            for stmt in ast.walk(helper):
                if isinstance(stmt, ast.Return) and stmt.value is not None:
                    inner = ctx.facts(helper)
                    found = trace_to_matmul(ctx, stmt.value, inner, depth + 1)
                    if found is not None:
                        return found
        return None
    if isinstance(expr, ast.Name):
        values = [
            v for v in facts.names.get(expr.id, []) if getattr(v, "lineno", 0) <= getattr(expr, "lineno", 0)
        ]
        for value in reversed(values[-2:]):
            found = trace_to_matmul(ctx, value, facts, depth + 1)
            if found is not None:
                return found
    return None


def _helper_function(ctx: FileContext, call: ast.Call, facts: FunctionFacts) -> ast.FunctionDef | None:
    func = call.func
    if isinstance(func, ast.Name) and func.id in ctx.module.functions:
        return ctx.module.functions[func.id]
    if (
        isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Name)
        and func.value.id == "self"
        and facts.cls is not None
        and func.attr in facts.cls.methods
    ):
        return facts.cls.methods[func.attr]
    return None


def _uses_dropout(ctx: FileContext, softmax: ast.Call, facts: FunctionFacts) -> bool:
    """Is the softmax output passed through dropout (F.dropout or an nn.Dropout submodule)?"""
    parent = ctx.module.parent(softmax)
    target = None
    if (
        isinstance(parent, ast.Assign)
        and len(parent.targets) == 1
        and isinstance(parent.targets[0], ast.Name)
    ):
        target = parent.targets[0].id
    for node in ast.walk(facts.func):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        arg = node.args[0]
        if not (arg is softmax or (target and isinstance(arg, ast.Name) and arg.id == target)):
            continue
        name = ctx.qualname(node.func)
        if name in DROPOUT_FUNCS:
            return True
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id == "self"
            and facts.cls is not None
            and func.attr in facts.cls.submodules
        ):
            sub = facts.cls.submodules[func.attr].qualname
            if sub.startswith("torch.nn.Dropout") or "drop" in func.attr.lower():
                return True
    return False


def score_roles(shape: list[Q]) -> list[tuple[str, Q]]:
    """Name the dimensions of a score tensor: [B, H, Nq, Nk], [B·H, Nq, Nk] or [B, Nq, Nk]."""
    *batch, nq, nk = shape
    if len(batch) == 2:
        roles = [("B", batch[0]), ("H", batch[1])]
    elif len(batch) == 1:
        roles = [("B·H" if "·" in batch[0].text or "h" in batch[0].text.lower() else "B", batch[0])]
    else:
        roles = [(f"d{i}", q) for i, q in enumerate(batch)]
    return [*roles, ("Nq", nq), ("Nk", nk)]


def small(q: Q, limit: int) -> bool:
    return q.value is not None and q.value <= limit


@check("MEM201")
def hand_written_attention(ctx: FileContext):
    if "softmax" not in ctx.module.text and "Softmax" not in ctx.module.text:
        return
    for func, info in ctx.module.iter_functions():
        facts = ctx.facts(func, info)
        if any(ctx.qualname(n.func) == SDPA for n in ast.walk(func) if isinstance(n, ast.Call)):
            continue  # the eager path is a fallback beside the fused kernel
        for node in ast.walk(func):
            scores = softmax_input(ctx, node, facts)
            if scores is None:
                continue
            matmul = trace_to_matmul(ctx, scores, facts)
            if matmul is None:
                continue
            yield from _price_attention(ctx, node, matmul, facts)


def _price_attention(ctx: FileContext, softmax: ast.Call, matmul: ast.AST, facts: FunctionFacts):
    shape = facts.shape(softmax) or facts.shape(matmul)
    dropout = _uses_dropout(ctx, softmax, facts)
    opts = ctx.options
    factor = costs.eager_attention_factor(opts.training, dropout)
    what = "at the training peak" if opts.training else "at the forward peak"
    drop_note = " with dropout on the weights" if dropout else ""
    if shape is None or len(shape) < 3:
        cost = make_cost(
            factor,
            [("B", Q.unknown("B")), ("H", Q.unknown("H")), ("Nq", Q.unknown("Nq")), ("Nk", Q.unknown("Nk"))],
            opts.dtype_bytes,
            what,
        )
        cost.missing = ["scores shape"]
        note = (
            "could not follow the shapes of the attention inputs to this softmax; declare the sizes they are "
            "built from with --dim (e.g. --dim B=16 --dim T=250) or a config key"
        )
        yield ctx.finding(
            softmax,
            "MEM201",
            "softmax attention materialises its score matrix (shape unresolved)",
            cost,
            notes=[note],
        )
        return
    roles = score_roles(shape)
    nq, nk = shape[-2], shape[-1]
    if small(nk, opts.min_tokens) or (
        nq.value is not None and nk.value is not None and nq.value * nk.value <= opts.min_tokens**2
    ):
        return
    cost = make_cost(factor, roles, opts.dtype_bytes, what)
    dims = ", ".join(q.text if q.value is None else f"{q.value:g}" for q in shape)
    message = f"attention materialises a [{dims}] score matrix{drop_note}"
    notes = []
    if cost.bytes is not None:
        one = costs.score_tensor_bytes(1, 1, 1, 1, opts.dtype_bytes) * product(q for q in shape).value
        notes.append(
            f"one score tensor is {costs.human_bytes(one)}; the peak keeps {factor:g} of them "
            f"(scores, softmax{', dropout mask' if dropout else ''} and the gradient)"
        )
        head_dim = _head_dim(ctx, matmul, facts)
        if head_dim is not None and head_dim.value is not None:
            batch = product(shape[:-2]).value
            sdpa = costs.sdpa_bytes(
                batch, 1, nq.value, head_dim.value, opts.dtype_bytes, training=opts.training
            )
            cost.alternatives.append(
                f"F.scaled_dot_product_attention keeps O(B·H·N·d): {costs.human_bytes(sdpa)} (same outputs)"
            )
        else:
            cost.alternatives.append("F.scaled_dot_product_attention keeps O(B·H·N·d) (same outputs)")
    else:
        notes.append(missing_note(cost))
    yield ctx.finding(
        softmax,
        "MEM201",
        message,
        cost,
        notes=notes,
        drivers=[u.key for _, q in roles for u in q.uses if u.key],
    )


def _head_dim(ctx: FileContext, matmul: ast.AST, facts: FunctionFacts) -> Q | None:
    operand = None
    if isinstance(matmul, ast.BinOp):
        operand = matmul.left
    elif isinstance(matmul, ast.Call) and matmul.args:
        operand = (
            matmul.args[1]
            if ctx.qualname(matmul.func) in ("torch.einsum", "einops.einsum")
            else matmul.args[0]
        )
    if operand is None:
        return None
    shape = facts.shape(operand)
    return shape[-1] if shape else None
