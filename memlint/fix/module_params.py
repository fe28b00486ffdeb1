"""Static facts about nn.Module constructors defined in a file, read from their __init__ code without running
it: the number of parameters a constructor call builds (exact, or None when any size or layer is not known),
and the hidden width of a plain Linear-activation-Linear feed-forward. Used by the MEM203 fixes' messages."""

from __future__ import annotations

import ast

NN = "torch.nn"


def hidden_width(module, call: ast.Call) -> int | None:
    """The hidden width of a reused feed-forward whose __init__ builds exactly
    `nn.Sequential(nn.Linear(d, h), <activation>, nn.Linear(h, d)[, nn.Dropout(p)])` and whose forward
    applies it; None for any other structure (GEGLU and the like are not priced)."""
    info = module.classes.get(module.qualname(call.func) or "")
    init = info.init() if info is not None else None
    if init is None:
        return None
    try:
        env = _bind(init, call, {})
        for stmt in init.body:
            if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
                env[stmt.targets[0].id] = _eval(module, stmt.value, env)
    except (_Unknown, TypeError, ValueError, ZeroDivisionError):
        return None
    modules = [v for v, _ in info.attrs.values() if isinstance(v, ast.Call)]
    if len(modules) != 1 or module.qualname(modules[0].func) != "torch.nn.Sequential":
        return None
    layers = [module.qualname(a.func) if isinstance(a, ast.Call) else "" for a in modules[0].args]
    if layers and layers[-1] == "torch.nn.Dropout":
        layers = layers[:-1]
    if len(layers) != 3 or layers[0] != "torch.nn.Linear" or layers[2] != "torch.nn.Linear":
        return None
    if not layers[1].startswith(NN + ".") or layers[1].rsplit(".", 1)[-1] not in PARAMETER_FREE:
        return None
    first = modules[0].args[0]
    try:
        hidden = _eval(module, first.args[1], env) if len(first.args) > 1 else None
    except (_Unknown, TypeError):
        return None
    return hidden if isinstance(hidden, int) else None


# --- parameter counts of constructors defined in this file (static, exact or unresolved) -------------


class _Unknown(Exception):
    pass


def parameter_count(module, call: ast.Call, depth: int = 0) -> int | None:
    """Parameters of the module `call` builds, from this file's __init__ code and torch.nn layers; None
    when any size or layer is not known statically."""
    try:
        return _params_of_call(module, call, {}, depth)
    except (_Unknown, RecursionError, TypeError, ValueError, ZeroDivisionError):
        return None


def _params_of_call(module, call, env, depth) -> int:
    if depth > 8:
        raise _Unknown
    name = module.qualname(call.func) or ""
    if name.startswith(NN + ".") and name.rsplit(".", 1)[-1] in PARAMETER_FREE:
        return 0
    if name in ("torch.nn.Linear", "torch.nn.LayerNorm"):
        args = [_eval(module, a, env) for a in call.args]
        kwargs = {kw.arg: _eval(module, kw.value, env) for kw in call.keywords if kw.arg}
    if name in ("torch.nn.Linear",):
        fin, fout = _pos(args, kwargs, 0, "in_features"), _pos(args, kwargs, 1, "out_features")
        bias = _pos(args, kwargs, 2, "bias", True)
        return fin * fout + (fout if bias else 0)
    if name in ("torch.nn.LayerNorm",):
        shape = _pos(args, kwargs, 0, "normalized_shape")
        affine = kwargs.get("elementwise_affine", True)
        bias = kwargs.get("bias", True)
        return (shape + (shape if bias else 0)) if affine else 0
    if name in ("torch.nn.Sequential",) or name in ("torch.nn.ModuleList",):
        total = 0
        for arg in call.args:
            total += _params_of_expr(module, arg, env, depth)
        return total
    info = module.classes.get(name)
    if info is not None and info.is_module and info.init() is None and info.bases == [NN + ".Module"]:
        return 0  # e.g. GEGLU: a forward only
    if info is None or info.init() is None:
        raise _Unknown
    init = info.init()
    local = _bind(init, call, env)
    return _params_of_body(module, init.body, local, depth + 1)


PARAMETER_FREE = {
    "ReLU",
    "GELU",
    "SiLU",
    "Tanh",
    "Sigmoid",
    "Dropout",
    "Identity",
    "Softmax",
    "LeakyReLU",
    "Mish",
    "ELU",
    "Flatten",
}


def _params_of_expr(module, expr, env, depth) -> int:
    if isinstance(expr, ast.Call):
        return _params_of_call(module, expr, env, depth)
    if isinstance(expr, ast.Constant) and expr.value is None:
        return 0
    if isinstance(expr, ast.IfExp):
        return _params_of_expr(
            module, expr.body if _eval(module, expr.test, env) else expr.orelse, env, depth
        )
    if isinstance(expr, (ast.List, ast.Tuple)):
        return sum(_params_of_expr(module, e, env, depth) for e in expr.elts)
    if isinstance(expr, ast.Starred):
        return _params_of_expr(module, expr.value, env, depth)
    if isinstance(expr, ast.Name) and isinstance(env.get(expr.id), _Module):
        return env[expr.id].params
    raise _Unknown


class _Module:
    """A module passed into a wrapper's __init__ (PreNorm(dim, fn)): its parameters, already counted."""

    def __init__(self, params: int):
        self.params = params


def _params_of_body(module, body, env, depth) -> int:
    total = 0
    for stmt in body:
        if isinstance(stmt, ast.Expr):
            continue  # super().__init__(), docstrings
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target = stmt.targets[0]
            if isinstance(target, ast.Name):
                env[target.id] = _eval(module, stmt.value, env)
                continue
            if (
                isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name)
                and target.value.id == "self"
            ):
                held = env.get(stmt.value.id) if isinstance(stmt.value, ast.Name) else None
                if isinstance(held, _Module):
                    total += held.params
                elif isinstance(held, _Deferred):
                    total += _params_of_call(module, held.call, held.env, depth)
                elif _builds_module(module, stmt.value):
                    total += _params_of_expr(module, stmt.value, env, depth)
                else:
                    try:
                        env[f"self.{target.attr}"] = _eval(module, stmt.value, env)
                    except _Unknown:
                        env[f"self.{target.attr}"] = _UNKNOWN
                continue
        if isinstance(stmt, ast.Pass):
            continue
        raise _Unknown
    return total


def _builds_module(module, expr) -> bool:
    if isinstance(expr, ast.IfExp):
        return _builds_module(module, expr.body) or _builds_module(module, expr.orelse)
    if not isinstance(expr, ast.Call):
        return False
    name = module.qualname(expr.func) or ""
    return name.startswith(NN + ".") or (name in module.classes and module.classes[name].is_module)


def _bind(init: ast.FunctionDef, call: ast.Call, env) -> dict:
    positional = init.args.posonlyargs + init.args.args
    names = [a.arg for a in positional][1:]
    defaults = dict(
        zip(
            [a.arg for a in positional][len(positional) - len(init.args.defaults) :],
            init.args.defaults,
            strict=True,
        )
    )
    defaults.update(
        {a.arg: d for a, d in zip(init.args.kwonlyargs, init.args.kw_defaults, strict=True) if d is not None}
    )
    local: dict = {}
    for name, value in defaults.items():
        local[name] = _literal(value)
    for index, arg in enumerate(call.args):
        if isinstance(arg, ast.Starred) or index >= len(names):
            raise _Unknown
        local[names[index]] = _value_or_module(arg, env)
    for kw in call.keywords:
        if kw.arg is None:
            raise _Unknown
        local[kw.arg] = _value_or_module(kw.value, env)
    return local


def _value_or_module(expr, env):
    if isinstance(expr, ast.Call):
        return _Deferred(expr, dict(env))
    return _literal(expr, env)


class _Deferred:
    """A constructor passed as an argument: counted when the wrapper stores it."""

    def __init__(self, call, env):
        self.call, self.env = call, env


def _literal(expr, env=None):
    try:
        return _eval(None, expr, env or {})
    except _Unknown:
        return _UNKNOWN


_UNKNOWN = object()


def _eval(module, expr, env):
    """Integers, None and booleans of an __init__: literals, names bound so far, arithmetic, `default(a, b)`,
    `a or b`, `exists(a)`; anything else is unknown (and counting stops if it is needed)."""
    if isinstance(expr, ast.Constant) and (expr.value is None or isinstance(expr.value, (int, float, bool))):
        return expr.value
    if isinstance(expr, ast.Name):
        value = env.get(expr.id, _UNKNOWN)
        if isinstance(value, _Deferred) and module is not None:
            return _Module(_params_of_call(module, value.call, value.env, 1))
        if value is _UNKNOWN:
            raise _Unknown
        return value
    if isinstance(expr, ast.BinOp):
        left, right = _eval(module, expr.left, env), _eval(module, expr.right, env)
        if not all(isinstance(v, (int, float)) for v in (left, right)):
            raise _Unknown
        ops = {
            ast.Add: int.__add__,
            ast.Sub: int.__sub__,
            ast.Mult: int.__mul__,
            ast.FloorDiv: int.__floordiv__,
        }
        op = type(expr.op)
        if isinstance(left, int) and isinstance(right, int) and op in ops:
            return ops[op](left, right)
        if op is ast.Pow:
            return left**right
        if op is ast.Div:
            return left / right
        if op is ast.Mult:
            return left * right
        raise _Unknown
    if isinstance(expr, ast.BoolOp) and isinstance(expr.op, ast.Or):
        for value in expr.values:
            got = _eval(module, value, env)
            if got:
                return got
        return got
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name):
        if expr.func.id == "default" and len(expr.args) == 2:
            first = _eval(module, expr.args[0], env)
            return first if first is not None else _eval(module, expr.args[1], env)
        if expr.func.id == "exists" and len(expr.args) == 1:
            return _eval(module, expr.args[0], env) is not None
    if isinstance(expr, ast.IfExp):
        return _eval(module, expr.body if _eval(module, expr.test, env) else expr.orelse, env)
    if isinstance(expr, ast.Compare) and len(expr.ops) == 1 and isinstance(expr.ops[0], (ast.Is, ast.IsNot)):
        left, right = _eval(module, expr.left, env), _eval(module, expr.comparators[0], env)
        return (left is right) if isinstance(expr.ops[0], ast.Is) else (left is not right)
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.USub):
        value = _eval(module, expr.operand, env)
        if isinstance(value, (int, float)):
            return -value
    raise _Unknown


def _pos(args, kwargs, index, name, default=_UNKNOWN):
    value = kwargs.get(name, args[index] if index < len(args) else default)
    if value is _UNKNOWN or isinstance(value, (_Deferred, _Module)):
        raise _Unknown
    return value
