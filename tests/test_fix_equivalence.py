"""Every safe fix computes the same function: before/after modules give equal outputs and gradients (CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

FIXTURES = Path(__file__).parent / "fixtures" / "fix"


def _load(name: str, side: str) -> dict:
    namespace: dict = {"__name__": f"fixture_{name}_{side}"}
    source = (FIXTURES / f"{name}.{side}.py").read_text()
    exec(compile(source, f"{name}.{side}.py", "exec"), namespace)  # our own fixtures
    return namespace


def _pair(name: str, cls: str, *args):
    before, after = _load(name, "in")[cls](*args), _load(name, "out")[cls](*args)
    after.load_state_dict(before.state_dict())
    return before.eval(), after.eval()


def _compare(before, after, inputs):
    a_in = [t.clone().requires_grad_(t.is_floating_point()) for t in inputs]
    b_in = [t.clone().requires_grad_(t.is_floating_point()) for t in inputs]
    out_a, out_b = before(*a_in), after(*b_in)
    torch.testing.assert_close(out_b, out_a)
    grad = torch.randn_like(out_a)
    out_a.backward(grad)
    out_b.backward(grad)
    for x, y in zip(a_in, b_in, strict=True):
        if x.grad is not None:
            torch.testing.assert_close(y.grad, x.grad)
    for (name, p), (_, q) in zip(before.named_parameters(), after.named_parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, msg=name)


def test_sdpa_with_dropout_module_eval():
    torch.manual_seed(0)
    before, after = _pair("sdpa_dropout", "Attention", 32, 4, 0.1)
    _compare(before, after, [torch.randn(2, 70, 32)])


def test_sdpa_dropout_zero_in_training():
    torch.manual_seed(0)
    before, after = _pair("sdpa_dropout", "Attention", 32, 4, 0.0)
    _compare(before.train(), after.train(), [torch.randn(2, 70, 32)])


def test_sdpa_with_additive_mask_and_scale():
    torch.manual_seed(0)
    before, after = _pair("sdpa_mask", "MaskedAttention", 4, 8)
    q, k, v = (torch.randn(2, 4, 66, 8) for _ in range(3))
    mask = torch.randn(2, 1, 66, 66)
    _compare(before, after, [q, k, v, mask])


def test_need_weights_false():
    torch.manual_seed(0)
    before, after = _pair("need_weights", "Block", 32, 4)
    _compare(before, after, [torch.randn(2, 10, 32), torch.randn(2, 7, 32)])


def test_empty_cache_removed():
    torch.manual_seed(0)
    before, after = _pair("empty_cache", "Chunked", 16)
    _compare(before, after, [torch.randn(2, 12, 16)])
