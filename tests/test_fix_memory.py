"""A safe fix lowers the measured peak by what memlint's estimate says (issue 4): MEM201 → SDPA, on CPU."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).parent))
from memtrack import measure_forward_backward  # noqa: E402

from memlint.cli import main  # noqa: E402

ATTENTION = textwrap.dedent(
    """
    import math

    import torch.nn.functional as F
    from torch import nn


    class Attention(nn.Module):
        def __init__(self, dim=32, heads=4):
            super().__init__()
            self.heads = heads
            self.head_dim = dim // heads
            self.qkv = nn.Linear(dim, dim * 3)
            self.out = nn.Linear(dim, dim)

        def forward(self, x):
            B, N, C = x.shape
            q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
            attn = F.softmax(scores, dim=-1)
            x = (attn @ v).transpose(1, 2).reshape(B, N, C)
            return self.out(x)
    """
)


def _module(source: str):
    namespace: dict = {"__name__": "fixture"}
    exec(compile(source, "attention.py", "exec"), namespace)  # our own test source, before and after the fix
    return namespace["Attention"]()


@pytest.mark.parametrize("tokens", [512, 1024])
def test_sdpa_fix_lowers_the_peak_by_the_estimate(tmp_path, capsys, tokens):
    path = tmp_path / "attention.py"
    path.write_text(ATTENTION)
    dims = ["--dim", "B=2", "--dim", f"N={tokens}", "--no-config", "--show-info"]
    main(["check", str(path), *dims, "--output-format", "json"])
    (finding,) = [f for f in json.loads(capsys.readouterr().out) if f["code"] == "MEM201"]
    estimate = finding["cost"]["bytes"]  # the N² term at the training peak: 3 x B·H·N²·4 B
    assert estimate == 3 * 2 * 4 * tokens * tokens * 4

    main(["check", str(path), *dims, "--fix"])
    capsys.readouterr()
    fixed = path.read_text()
    assert "scaled_dot_product_attention" in fixed and "softmax" not in fixed

    torch.manual_seed(0)
    before, after = _module(ATTENTION), _module(fixed)
    after.load_state_dict(before.state_dict())
    x = torch.randn(2, tokens, 32, requires_grad=True)
    peak_before = measure_forward_backward(before, x).peak_bytes
    peak_after = measure_forward_backward(after, x).peak_bytes
    saved = peak_before - peak_after
    print(f"N={tokens}: measured saving {saved:,} B, estimate {estimate:,} B ({saved / estimate - 1:+.1%})")
    assert abs(saved - estimate) <= 0.15 * estimate, (saved, estimate)


MHA = textwrap.dedent(
    """
    from torch import nn


    class Block(nn.Module):
        def __init__(self, embed_dim=64, num_heads=4):
            super().__init__()
            self.attn = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)

        def forward(self, x):
            out, _ = self.attn(x, x, x)
            return out
    """
)


@pytest.mark.parametrize("tokens", [512, 1024])
def test_need_weights_fix_lowers_the_peak_by_the_estimate(tmp_path, capsys, tokens):
    path = tmp_path / "block.py"
    path.write_text(MHA)
    dims = ["--dim", "B=2", "--dim", f"N={tokens}", "--no-config", "--show-info"]
    main(["check", str(path), *dims, "--output-format", "json"])
    (finding,) = [f for f in json.loads(capsys.readouterr().out) if f["code"] == "MEM202"]
    estimate = finding["cost"]["bytes"]

    main(["check", str(path), *dims, "--fix"])
    capsys.readouterr()
    fixed = path.read_text()
    assert "need_weights=False" in fixed

    namespace_before: dict = {}
    namespace_after: dict = {}
    exec(compile(MHA, "block.py", "exec"), namespace_before)  # our own test source
    exec(compile(fixed, "block.py", "exec"), namespace_after)
    torch.manual_seed(0)
    before, after = namespace_before["Block"](), namespace_after["Block"]()
    after.load_state_dict(before.state_dict())
    x = torch.randn(2, tokens, 64, requires_grad=True)
    torch.testing.assert_close(after(x), before(x))
    saved = measure_forward_backward(before, x).peak_bytes - measure_forward_backward(after, x).peak_bytes
    print(f"N={tokens}: measured saving {saved:,} B, estimate {estimate:,} B ({saved / estimate - 1:+.1%})")
    assert abs(saved - estimate) <= 0.15 * estimate, (saved, estimate)


def test_empty_cache_fix_saves_what_the_estimate_says_nothing(tmp_path, capsys):
    """MEM102's price is 0 B at the peak (live tensors stay); removing the call changes the measured peak by 0.
    (On CPU the call is a no-op; what the test pins is that memlint claims no saving it cannot show.)"""
    source = (Path(__file__).parent / "fixtures" / "fix" / "empty_cache.in.py").read_text()
    path = tmp_path / "chunked.py"
    path.write_text(source)
    main(["check", str(path), "--no-config", "--output-format", "json"])
    found = [f for f in json.loads(capsys.readouterr().out) if f["code"] == "MEM102"]
    assert found and all(f["fix"]["applicability"] == "safe" for f in found)
    assert all((f["cost"] or {}).get("bytes") in (None, 0) for f in found)  # no saving claimed
    main(["check", str(path), "--no-config", "--fix"])
    capsys.readouterr()
    fixed = path.read_text()
    assert "empty_cache" not in fixed
    before, after = {}, {}
    exec(compile(source, "chunked.py", "exec"), before)  # our own fixture, before and after the fix
    exec(compile(fixed, "chunked.py", "exec"), after)
    torch.manual_seed(0)
    a, b = before["Chunked"](), after["Chunked"]()
    b.load_state_dict(a.state_dict())
    x = torch.randn(8, 64, 16)
    peak_a = measure_forward_backward(a, x.clone().requires_grad_()).peak_bytes
    peak_b = measure_forward_backward(b, x.clone().requires_grad_()).peak_bytes
    assert peak_a == peak_b > 0
