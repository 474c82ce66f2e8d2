"""The fused cross-entropy head in bf16: what `fused_linear_cross_entropy` runs under bf16 autocast.

Per chunk of rows, with the head's weight packed into bf16 once per weight version (`packed`):

    logits = h @ W.T        bf16 GEMM (fp32 accumulation inside), into one reused (rows, V) buffer
    p = softmax(logits)     in place: computed in fp32 inside torch's kernel, stored as bf16
    nll = -log p[target]    fp32
    g = p - onehot          bf16, the operand of the gradient GEMMs
    grad_h = g @ W          bf16 GEMM (n, D), returned as fp32
    grad_W += g.T @ h       bf16 GEMM (V, D), accumulated in fp32

The NLL is -log of the target's probability taken in fp32 from its bf16 value: its error is at
most 2^-9 relative in p, under 0.002 nats, an order of magnitude below the rounding of the bf16
logits themselves (about 0.02 nats at |logit| 10), and where that probability is too small for bf16
(a target 80 nats below the log-sum-exp) the row is scored again exactly, in fp32 from its bf16
logits. Scoring without gradients (evaluation) takes the log-sum-exp in fp32 from the bf16 logits.

The inner loop calls the head K times per outer step with the same weight; `packed` converts it
once per weight version (the parameter's `_version`, bumped by every in-place update such as an
optimiser step, and its storage), not per call.
"""

from __future__ import annotations

import weakref

import torch

from ltm.core.sites import IGNORE_INDEX

# bf16 logits per chunk (rows = CHUNK_BYTES / (2 V)): at V 50258 on one core (AVX512-BF16, no AMX)
# 166 rows beat 128 and 200 by 3-10 %
CHUNK_BYTES = 16 * 2**20
# a bf16 probability below this is rescored exactly (bf16 keeps fp32's range, so this is safe)
TINY = 1e-30


def chunk_rows(vocab: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Rows per chunk whose bf16 logits take about `chunk_bytes`."""
    return max(1, chunk_bytes // (2 * vocab))


class _PackedWeight:
    """A one-slot cache: the low-precision copy of one weight, for one version of it."""

    def __init__(self):
        self.ref, self.key, self.value = None, None, None

    def get(self, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        key = (weight._version, weight.data_ptr(), weight.dtype, weight.device, dtype)
        if self.ref is None or self.ref() is not weight or self.key != key:
            with torch.no_grad():
                self.value = weight.detach().to(dtype).contiguous()  # (V, D)
            self.ref, self.key = weakref.ref(weight), key
        return self.value

    def clear(self) -> None:
        self.ref, self.key, self.value = None, None, None


_PACKED = _PackedWeight()


def packed(weight: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """`weight` (V, D) in `dtype`, converted once per version of `weight` (one weight is cached:
    the last one asked for; `clear_packed()` drops it)."""
    return _PACKED.get(weight, dtype)


def clear_packed() -> None:
    """Forget the cached low-precision weight (frees its memory)."""
    _PACKED.clear()


def low_precision_forward(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                          rows: int, need_h: bool, need_w: bool,
                          dtype: torch.dtype = torch.bfloat16):
    """NLL (N,) fp32 and, as asked, the gradients of its sum: hidden (N, D) and weight (V, D), fp32.

    Args:
        hidden: Hidden states (N, D), any float dtype.
        weight: The output head (V, D).
        targets: Target ids (N,); `IGNORE_INDEX` rows give NLL 0 and no gradient.
        rows: Rows per chunk.
        need_h, need_w: Which gradients to form.
        dtype: The GEMMs' operand dtype (bf16).
    """
    N, D = hidden.shape
    V = weight.shape[0]
    device, acc = hidden.device, torch.float32
    nll = torch.empty(N, device=device, dtype=acc)  # (N,)
    grad_h = torch.empty(N, D, device=device, dtype=acc) if need_h else None
    grad_w = torch.zeros(V, D, device=device, dtype=acc) if need_w else None  # (V, D)
    with torch.autocast(device.type, enabled=False):
        w = packed(weight, dtype)  # (V, D)
        buffer = torch.empty(min(rows, N), V, device=device, dtype=dtype)  # (rows, V)
        for s in range(0, N, rows):
            h = hidden[s:s + rows].to(dtype)  # (n, D)
            n = h.shape[0]
            valid = targets[s:s + rows] != IGNORE_INDEX  # (n,)
            safe = targets[s:s + rows].clamp_min(0)[:, None]  # (n, 1)
            logits = torch.mm(h, w.T, out=buffer[:n])  # (n, V)
            if not (need_h or need_w):
                picked = logits.gather(1, safe).squeeze(1).to(acc)  # (n,)
                nll[s:s + n] = (torch.logsumexp(logits.to(acc), -1) - picked) * valid  # (n,)
                continue
            p = torch.softmax(logits, -1, out=logits)  # (n, V): fp32 inside, bf16 out
            at = (torch.arange(n, device=device), safe[:, 0])  # the (row, target) cells
            p_target = p[at]  # (n,)
            picked = p_target.to(acc)  # (n,)
            nll[s:s + n] = -picked.log() * valid  # (n,)
            tiny = (picked < TINY) & valid  # (n,): rescored exactly, rarely
            if bool(tiny.any()):
                exact = (h[tiny] @ w.T).to(acc)  # (m, V)
                nll[s:s + n][tiny] = (torch.logsumexp(exact, -1) - exact.gather(1, safe[tiny])
                                      .squeeze(1)) * valid[tiny]  # (m,)
            # (n, V): p - onehot; by index_put_ (scatter_ copies all of a bf16 p on CPU: 20 ms)
            g = p.index_put_(at, p_target - valid.to(dtype))
            if need_h:
                grad_h[s:s + n] = (g @ w).to(acc) * valid[:, None]  # (n, D): ignored rows zero
            if need_w:
                grad_w.add_(g.T @ (h * valid[:, None].to(dtype)))  # (V, D): bf16 into fp32
    return nll, grad_h, grad_w
