"""The memory arithmetic: pure functions from sizes to bytes (sources and measurements in COSTMODEL.md).

Every function returns bytes as an int. Nothing here knows about syntax trees or output formats.
"""

from __future__ import annotations

import math

DTYPE_BYTES = {
    "fp32": 4,
    "float32": 4,
    "float": 4,
    "32": 4,
    "32-true": 4,
    "tf32": 4,
    "fp16": 2,
    "float16": 2,
    "half": 2,
    "16": 2,
    "16-mixed": 2,
    "16-true": 2,
    "bf16": 2,
    "bfloat16": 2,
    "bf16-mixed": 2,
    "bf16-true": 2,
    "fp8": 1,
    "int8": 1,
    "float8": 1,
    "fp64": 8,
    "float64": 8,
    "double": 8,
    "64": 8,
}

# Bytes per parameter kept across a training step: (weight, gradient, optimizer state).
# Mixed precision with fp32 master weights stores 2 + 2 + (4 master + 8 moments): also 16 B.
OPTIMIZER_STATE_BYTES = {
    "adam": 8,
    "adamw": 8,
    "adam_fused": 8,
    "adamw_fused": 8,
    "lamb": 8,
    "lion": 4,
    "sgd": 0,
    "sgd_momentum": 4,
    "rmsprop": 4,
    "adagrad": 4,
    "adam8bit": 2,
    "adamw_8bit": 2,
    "adafactor": 0,
}
# Extra bytes per parameter during optimizer.step() (COSTMODEL: foreach keeps one fp32 copy).
OPTIMIZER_STEP_TEMP_BYTES = {"adam": 4, "adamw": 4, "sgd_momentum": 0, "sgd": 0}

HF_OPTIM_NAMES = {
    "adamw_torch": "adamw",
    "adamw_torch_fused": "adamw_fused",
    "adamw_hf": "adamw",
    "adamw_apex_fused": "adamw",
    "adamw_8bit": "adam8bit",
    "paged_adamw_8bit": "adam8bit",
    "adamw_bnb_8bit": "adam8bit",
    "paged_adamw_32bit": "adamw",
    "adafactor": "adafactor",
    "sgd": "sgd",
    "adagrad": "adagrad",
    "lion_32bit": "lion",
    "paged_lion_32bit": "lion",
    "rmsprop": "rmsprop",
}


def normalise_optimizer(name: str) -> str:
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    key = key.removeprefix("torch.optim.").removeprefix("optim.")
    if key in HF_OPTIM_NAMES:
        return HF_OPTIM_NAMES[key]
    if key in ("sgd_nesterov", "nesterov"):
        return "sgd_momentum"
    return key if key in OPTIMIZER_STATE_BYTES else "adam"


def training_bytes_per_param(optimizer: str = "adam", precision: str = "fp32") -> int:
    """Weight + gradient + optimizer state, in bytes per parameter (COSTMODEL 'Per parameter')."""
    opt = normalise_optimizer(optimizer)
    state = OPTIMIZER_STATE_BYTES.get(opt, 8)
    wbytes = DTYPE_BYTES.get(str(precision).lower(), 4)
    if wbytes == 2 and str(precision).endswith("-true"):
        # pure low-precision weights: fp32 master copy kept by the optimizer
        return 2 + 2 + 4 + state
    # fp32 weights (also under autocast / *-mixed): 4 + 4 + state
    return 4 + 4 + state


def param_training_terms(n_params: int, optimizer: str = "adam", precision: str = "fp32") -> dict[str, int]:
    """Per-term bytes for a parameter count: weights, gradients, optimizer state, step temporaries."""
    opt = normalise_optimizer(optimizer)
    low = DTYPE_BYTES.get(str(precision).lower(), 4) == 2 and str(precision).endswith("-true")
    w = 2 if low else 4
    state = OPTIMIZER_STATE_BYTES.get(opt, 8) + (4 if low else 0)
    return {
        "weights": n_params * w,
        "gradients": n_params * w,
        "optimizer state": n_params * state,
        "step temporaries": n_params * OPTIMIZER_STEP_TEMP_BYTES.get(opt.removesuffix("_fused"), 0)
        if not opt.endswith("_fused")
        else 0,
    }


# --- attention -------------------------------------------------------------------------------------

# Multiples of one score tensor S = B·H·Nq·Nk·dtype kept at the peak (COSTMODEL 'Attention', fp32, measured).
EAGER_FACTORS = {
    # (training, dropout): factor
    (True, False): 3.0,
    (True, True): 3.25,
    (False, False): 2.0,
    (False, True): 2.25,
}


def score_tensor_bytes(b: int, h: int, nq: int, nk: int, dtype_bytes: int = 4) -> int:
    return int(b * h * nq * nk * dtype_bytes)


def eager_attention_factor(training: bool = True, dropout: bool = False) -> float:
    return EAGER_FACTORS[(bool(training), bool(dropout))]


def eager_attention_bytes(
    b: int, h: int, nq: int, nk: int, dtype_bytes: int = 4, *, training: bool = True, dropout: bool = False
) -> int:
    """The N² term of eager softmax attention at its peak (scores, softmax output, dropout mask)."""
    return int(eager_attention_factor(training, dropout) * score_tensor_bytes(b, h, nq, nk, dtype_bytes))


def sdpa_bytes(b: int, h: int, nq: int, d: int, dtype_bytes: int = 4, *, training: bool = True) -> int:
    """F.scaled_dot_product_attention with a flash / memory-efficient backend: output + fp32 logsumexp."""
    out = b * h * nq * d * dtype_bytes
    lse = b * h * nq * 4
    return int(out + lse) if training else int(out)


def mha_weights_bytes(b: int, nq: int, nk: int, dtype_bytes: int = 4) -> int:
    """The head-averaged attention weights [B, Nq, Nk] nn.MultiheadAttention returns with need_weights=True."""
    return int(b * nq * nk * dtype_bytes)


# --- LM head ---------------------------------------------------------------------------------------


def lm_logits_bytes(b: int, t: int, v: int, dtype_bytes: int = 4, *, training: bool = True) -> int:
    """Logits + cross-entropy: 2·B·T·V at the forward peak, 3·B·T·V with backward (COSTMODEL)."""
    return int((3 if training else 2) * b * t * v * dtype_bytes)


# --- linear algebra ----------------------------------------------------------------------------------


def eigh_bytes(count: int, n: int, dtype_bytes: int = 4, *, training: bool = True) -> int:
    """Tensors of a batched symmetric eigendecomposition of `count` n x n matrices.

    Forward keeps eigenvalues [count, n] and eigenvectors [count, n, n] plus a working copy of the input;
    backward adds gradients of the same shapes. Workspace (cuSOLVER) is a separate band, not counted.
    """
    per_matrix = n * n + n
    copies = 6 if training else 3
    return int(copies * count * per_matrix * dtype_bytes)


def matrix_bytes(count: int, n: int, m: int | None = None, dtype_bytes: int = 4) -> int:
    return int(count * n * (m if m is not None else n) * dtype_bytes)


# --- loops -------------------------------------------------------------------------------------------


def loop_accumulation_bytes(steps: int, per_step_bytes: int, saved_per_step: int = 1) -> int:
    """A loop that appends one tensor per step and stacks them: steps x (saved per step + the stack copy)."""
    return int(steps * per_step_bytes * (saved_per_step + 1))


# --- formatting --------------------------------------------------------------------------------------


def human_bytes(n: float | None) -> str:
    """Decimal units, as the seed notes and the GPU makers write them (GB = 1e9 bytes)."""
    if n is None:
        return "?"
    n = float(n)
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            value = n / scale
            digits = 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
            return f"{value:.{digits}f} {unit}"
    return f"{int(n)} B"


def human_count(n: float) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.3g}B"
    if n >= 1e6:
        return f"{n / 1e6:.3g}M"
    if n >= 1e3:
        return f"{n / 1e3:.3g}k"
    return f"{int(n)}"


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def product(values) -> float:
    return math.prod(values)
