"""Measure the peak of live tensor storage while a piece of PyTorch code runs (tests only).

The mechanism is the one of PyTorch's own ``torch.distributed._tools.mem_tracker.MemTracker``:

* a ``TorchDispatchMode`` sees every ATen op, including the ones autograd runs during ``backward()``
  and the ones an optimizer runs in ``step()``;
* each distinct ``torch.UntypedStorage`` an op returns is recorded once (views share their base's
  storage, so they cost nothing), with a ``weakref`` whose callback fires when the storage is freed;
* the live total is compared with the running peak after every op, when the op's outputs exist and
  its inputs are still alive — the moment an allocator would see the high-water mark.

Storages that existed before the measured code ran (its inputs, a module's parameters, an optimizer's
state) form the baseline. The ones passed in are registered up front; one met for the first time as an
op *input* was necessarily live since the start, so it is added to the baseline, the current total
and, retroactively, the peak.

It works unchanged under ``FakeTensorMode``: fake tensors have storages with a real ``nbytes()`` and
nothing is allocated, so multi-GB shapes can be "measured" on a laptop. Create the fake inputs (and
modules) inside the fake mode and call the helpers inside it too.

What it does not see: memory a kernel allocates without returning it as a tensor (workspaces,
per-thread buffers; while the mode handles an op it is switched off, so the ops one kernel calls
internally, as in the native nn.MultiheadAttention fast path, are invisible), allocator rounding and
caching, and anything outside PyTorch tensors. Ops that decompose above the dispatcher's Python key
(CompositeImplicit ones, e.g. F.linear, F.cross_entropy) are seen op by op.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

MiB = 2**20


@dataclass(frozen=True)
class Measurement:
    """Bytes of live tensor storage: the peak while the code ran, and what was live before it."""

    peak_bytes: int
    baseline_bytes: int
    end_bytes: int = 0  # live when the code returned (its result, new .grad and optimizer state, …)

    @property
    def added_bytes(self) -> int:
        """Peak above the baseline: what the measured code itself added at its high-water mark."""
        return self.peak_bytes - self.baseline_bytes

    def __str__(self) -> str:
        return (
            f"peak {self.peak_bytes / MiB:.2f} MiB (baseline {self.baseline_bytes / MiB:.2f} MiB, "
            f"end {self.end_bytes / MiB:.2f} MiB)"
        )


def _tensors(obj: Any) -> Iterable[torch.Tensor]:
    """Every tensor reachable from obj: tensors, modules (parameters, grads, buffers), optimizers, containers."""
    if isinstance(obj, torch.Tensor):
        yield obj
        if obj.is_leaf and obj.grad is not None:
            yield obj.grad
    elif isinstance(obj, torch.nn.Module):
        for p in obj.parameters():
            yield from _tensors(p)
        yield from obj.buffers()
    elif isinstance(obj, torch.optim.Optimizer):
        for group in obj.param_groups:
            yield from _tensors(group["params"])
        for state in obj.state.values():
            yield from _tensors(list(state.values()))
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, (list, tuple, set)):
        for value in obj:
            yield from _tensors(value)


class LiveStorageTracker(TorchDispatchMode):
    """Dispatch mode that keeps the live total and the peak of distinct tensor storages, in bytes."""

    def __init__(self) -> None:
        super().__init__()
        # id(storage) -> (weak reference, bytes). A storage's Python object lives exactly as long as the
        # storage (PyTorch preserves it while C++ holds references), so its identity is a key that works
        # for real and fake tensors alike (a fake storage's data_ptr is 0). The weak reference never
        # keeps a storage alive; its callback, run when the storage is deallocated, counts the release.
        self._live: dict[int, tuple[weakref.ref, int]] = {}
        self.current = 0
        self.peak = 0
        self.baseline = 0

    def _freed(self, key: int, ref: weakref.ref) -> None:
        entry = self._live.get(key)
        if entry is not None and entry[0] is ref:
            self.current -= entry[1]
            del self._live[key]

    def _known(self, st: torch.UntypedStorage) -> bool:
        entry = self._live.get(id(st))
        return entry is not None and entry[0]() is st

    def _add(self, t: torch.Tensor, *, preexisting: bool) -> None:
        st = t.untyped_storage()
        nbytes = st.nbytes()
        if self._known(st):
            ref, old = self._live[id(st)]
            if old != nbytes:  # resized in place (resize_, out= ops)
                self._live[id(st)] = (ref, nbytes)
                self.current += nbytes - old
            return
        key = id(st)
        ref = weakref.ref(st, lambda r, k=key: self._freed(k, r))
        self._live[key] = (ref, nbytes)
        self.current += nbytes
        if preexisting:
            # live since before the measured code started: it was part of every past total too
            self.baseline += nbytes
            self.peak += nbytes

    def register(self, *objs: Any) -> None:
        """Count tensors that exist before the measured code runs (inputs, modules, optimizers)."""
        for t in _tensors(objs):
            self._add(t, preexisting=True)
        self.peak = max(self.peak, self.current)

    # -- the dispatch hook ------------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for t in tree_leaves((args, kwargs)):
            if isinstance(t, torch.Tensor) and not self._known(t.untyped_storage()):
                self._add(t, preexisting=True)  # e.g. a parameter captured by a closure
        out = func(*args, **kwargs)
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._add(t, preexisting=False)
        self.peak = max(self.peak, self.current)
        return out


def measure(fn: Callable[..., Any], *args: Any, keep: Any = ()) -> Measurement:
    """Run fn(*args) and return the peak and baseline of live tensor storage, in bytes.

    The baseline is everything reachable from args and keep (tensors, modules, optimizers) before fn
    runs, plus any other pre-existing tensor fn reads. fn's return value is dropped before end_bytes
    is read, so end_bytes is what fn left behind (gradients, optimizer state).
    """
    tracker = LiveStorageTracker()
    tracker.register(args, keep)
    with tracker:
        result = fn(*args)
        del result
    return Measurement(tracker.peak, tracker.baseline, tracker.current)


def _as_loss(out: Any) -> torch.Tensor:
    """A scalar to call backward on. sum()'s backward is an expand of a 0-d tensor: no allocation."""
    out = out[0] if isinstance(out, (tuple, list)) else out
    return out if out.dim() == 0 else out.sum()


def measure_forward(fn: Callable[..., Any], *inputs: Any) -> Measurement:
    """Forward only, with autograd recording if the inputs or parameters require grad (training)."""
    return measure(fn, *inputs)


def measure_forward_backward(fn: Callable[..., Any], *inputs: Any) -> Measurement:
    """Forward, then backward of fn's output (summed if not a scalar); .grad of the inputs is kept."""

    def step(*xs: Any) -> None:
        _as_loss(fn(*xs)).backward()

    return measure(step, *inputs)


def measure_training_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *inputs: Any,
    loss_fn: Callable[[Any], torch.Tensor] = _as_loss,
) -> Measurement:
    """One training step: zero_grad(set_to_none), forward, backward, optimizer.step().

    On a fresh optimizer this is the first step, which creates the optimizer state; its peak equals a
    steady-state step's (state then exists before the step instead of being made during it).
    """

    def step(*xs: Any) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(*xs)).backward()
        optimizer.step()

    return measure(step, *inputs, keep=(model, optimizer))


@contextmanager
def fake_mode():
    """A FakeTensorMode: tensors and modules made inside have shapes and storages, but no memory."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=False) as mode:
        yield mode
