"""memlint.cost against measured live tensor storage: every formula within 10 % of its component.

The workloads are bench/calibrate.py's (one definition of each, shared with bench/calibration.md);
they run here at sizes small enough for a 2-core CPU, and at the multi-GB seed shapes under
FakeTensorMode. The harness is tests/memtrack.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT / "tests", ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import calibrate  # noqa: E402
from memtrack import fake_mode, measure, measure_forward_backward  # noqa: E402

from memlint import cost  # noqa: E402

TOLERANCE = 0.10
PHASES = calibrate.PHASES


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """OpenMP's spinning threads make small ops far slower on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)


def check(row: calibrate.Row) -> None:
    assert row.measured > 0, row
    assert abs(row.error) <= TOLERANCE, (
        f"{row.component} {row.shape} {row.quantity}: measured {row.measured}, "
        f"formula {row.formula} ({100 * row.error:+.1f} %) from {row.call}"
    )


# --- the harness itself --------------------------------------------------------------------------------


def test_harness_counts_storages_once_and_releases():
    x = torch.randn(1024)  # 4 KiB, the baseline

    def fn(x):
        y = x * 2  # +4 KiB
        view = y[:512]  # a view: no new storage
        z = view + 1  # +2 KiB, peak 10 KiB
        del y, view, z  # released
        return x.sum()

    m = measure(fn, x)
    assert m.baseline_bytes == 4096
    assert m.peak_bytes == 4096 + 4096 + 2048
    assert m.end_bytes == 4096


def test_harness_sees_tensors_captured_by_closure_as_baseline():
    w = torch.randn(256)  # not passed in: found when an op reads it
    m = measure(lambda x: x * w, torch.randn(256))
    assert m.baseline_bytes == 2 * 1024
    assert m.peak_bytes == 3 * 1024


def test_harness_works_under_fake_tensors():
    with fake_mode():
        x = torch.randn(1 << 20, 1024, requires_grad=True)  # 4 GiB, never allocated
        m = measure_forward_backward(lambda x: (x * 2).sum(), x)
    assert m.baseline_bytes == 4 << 30
    # x and x * 2, then x and its .grad; + the 4-byte loss and its gradient
    assert 0 <= m.peak_bytes - 2 * (4 << 30) <= 16


# --- attention ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dropout", [None, "cuda", "cpu"])
@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize(("b", "h", "n", "d"), [(2, 2, 128, 16), (1, 4, 256, 16)])
def test_eager_attention(b, h, n, d, phase, dropout):
    check(calibrate.eager_attention_row(b, h, n, d, phase, dropout))


@pytest.mark.parametrize("dropout", [None, "cuda"])
def test_eager_attention_seed_002_shape(dropout):
    row = calibrate.eager_attention_row(16, 8, 3250, 16, "fwd+bwd", dropout, fake=True)
    check(row)
    assert row.formula == pytest.approx(16.2e9 if dropout is None else 17.6e9, rel=0.005)


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize(("b", "h", "n", "d"), [(2, 4, 256, 32), (1, 8, 512, 64)])
def test_sdpa(b, h, n, d, phase):
    check(calibrate.sdpa_row(b, h, n, d, phase))


@pytest.mark.parametrize(("b", "n", "d", "expected"), [(16, 3250, 16, 0.19e9), (64, 1024, 32, 0.47e9)])
def test_sdpa_seed_shapes(b, n, d, expected):
    row = calibrate.sdpa_row(b, 8, n, d, "fwd+bwd", fake=True)
    check(row)
    assert row.measured == pytest.approx(expected, rel=0.03)


@pytest.mark.parametrize(
    ("phase", "dropout", "keep"),
    [("fwd", False, False), ("fwd+bwd", False, False), ("fwd+bwd", True, False), ("fwd+bwd", False, True)],
)
@pytest.mark.parametrize(("b", "n", "e", "h"), [(2, 64, 64, 4), (2, 128, 64, 2)])
def test_mha_need_weights(b, n, e, h, phase, dropout, keep):
    check(calibrate.mha_extra_row(b, n, e, h, phase, dropout=dropout, keep_weights=keep))


def test_mha_need_weights_costmodel_shape():
    """B 4, N 1024, E 512, 8 heads, forward + backward (fake): 445 MiB against 101 MiB."""
    mib = 2**20
    with fake_mode():
        on = calibrate.mha_peak(4, 1024, 512, 8, "fwd+bwd", True)
        off = calibrate.mha_peak(4, 1024, 512, 8, "fwd+bwd", False)
    assert on.peak_bytes == pytest.approx(445 * mib, rel=0.001)
    assert off.peak_bytes == pytest.approx(101 * mib, rel=0.001)
    # the N² formula: 3·S = 384 MiB; the whole difference (344 MiB) also nets out O(N·E) tensors
    extra = cost.mha_need_weights_extra_bytes(4, 8, 1024, 1024)
    assert extra == 384 * mib
    assert (on.peak_bytes - off.peak_bytes) == pytest.approx(extra - 5 * 4 * 1024 * 512 * 4, abs=mib)


# --- parameters -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", list(calibrate.OPTIMIZERS))
@pytest.mark.parametrize(("fan_in", "fan_out", "batch"), [(256, 512, 4), (512, 1024, 8)])
def test_linear_training_step(fan_in, fan_out, batch, label):
    check(calibrate.linear_step_row(fan_in, fan_out, batch, label))


@pytest.mark.parametrize(
    ("label", "expected"),
    [("Adam fused", 16.8e9), ("Adam foreach", 21.0e9), ("Adam single-tensor", 25.2e9)],
)
def test_linear_seed_004_shape(label, expected):
    row = calibrate.linear_step_row(32768, 32000, 4, label, fake=True)
    check(row)
    assert row.measured == pytest.approx(expected, rel=0.005)


# --- LM head --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize(("b", "t", "d", "v"), [(4, 64, 128, 4000), (2, 128, 64, 8000)])
def test_lm_head(b, t, d, v, phase):
    check(calibrate.lm_head_row(b, t, d, v, phase))


@pytest.mark.parametrize("phase", PHASES)
def test_lm_head_vocab_32000(phase):
    check(calibrate.lm_head_row(8, 1024, 768, 32000, phase, fake=True))


# --- eigendecomposition ----------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize(("count", "n"), [(960, 19), (64, 48)])
def test_eigh(count, n, phase):
    check(calibrate.eigh_row(count, n, phase))


def test_eigh_costmodel_numbers():
    mib = 2**20
    assert calibrate.eigh_row(960, 19, "fwd").measured == pytest.approx(4.04 * mib, rel=0.002)
    assert calibrate.eigh_row(960, 19, "fwd+bwd").measured == pytest.approx(8.0 * mib, rel=0.002)
    row = calibrate.eigh_row(7680, 19, "fwd+bwd", fake=True)
    assert row.measured == pytest.approx(64.0 * mib, rel=0.002)
    check(row)


# --- loops ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", list(calibrate.LOOP_VARIANTS))
@pytest.mark.parametrize("steps", [8, 16])
def test_loop_accumulation(steps, label):
    check(calibrate.loop_row(2, steps, label))  # B 2: x[:, t] is not contiguous (B 1 would be)
