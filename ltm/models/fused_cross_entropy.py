"""Cross-entropy of a linear output head, computed blockwise: (N, V) logits are never held at once.

`fused_linear_cross_entropy(hidden, weight, targets)` is `F.cross_entropy(hidden @ weight.T,
targets, reduction="none", ignore_index=IGNORE_INDEX)` without materialising the logits: rows are
scored `rows` at a time (`CHUNK_BYTES` of fp32 logits per chunk). Where a gradient will
be needed, each chunk's gradient is formed while its logits are at hand (softmax - onehot, times
the weight for the hidden states, times the hidden states for the weight), as the fused kernels of
the published code and of Liger do; the backward then only scales those rows. The weight's
gradient is precomputed for a loss that weighs every scored row alike (a summed or mean loss); any
other weighting (a masked or importance-weighted sum) recomputes it chunk by chunk in backward,
and so does a backward that builds a graph (`create_graph=True`: an unrolled inner loop).

Where only the hidden states need a gradient (the inner loop: the family's weights are frozen), the
fp32 path on CPU is one call of the flash-attention kernel with q = hidden, k = v = weight and
scale 1: its output is softmax(hidden weight^T) weight, the expected output embedding, and it returns
the rows' log-sum-exp, so NLL = lse - <hidden, weight[target]> and the gradient is output -
weight[target]. The kernel keeps its blocks of logits in cache (measured at N 2048, D 128,
V 50258 on one core: 0.8 s against 1.5 s for the row chunks).

Under `torch.autocast` the matmuls run in the autocast dtype; the log-softmax, the returned NLL
and the accumulated weight gradient are fp32 (fp64 for an fp64 head). Under bf16 autocast the
forward (with its gradients) is `ltm.models.low_precision_head`'s: bf16 GEMMs on a weight packed
once per version, the softmax in place in one bf16 buffer; the fp32 path is unchanged.
"""

from __future__ import annotations

import torch

from ltm.core.sites import IGNORE_INDEX
from ltm.models import low_precision_head

# fp32 logits per chunk (rows = CHUNK_BYTES / (4 V)); at V 50258 on one core 16 MiB (83 rows)
# beat 4 and 8 MiB by 10-25 %: each chunk streams the whole (V, D) weight through the matmuls
CHUNK_BYTES = 16 * 2**20
# softmax(q k^T * scale) v and its log-sum-exp, blockwise (absent in some torch builds: row chunks)
_FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def chunk_rows(vocab: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Rows per chunk whose fp32 logits take about `chunk_bytes`."""
    return max(1, chunk_bytes // (4 * vocab))


def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                               rows: int | None = None) -> torch.Tensor:
    """Per-row NLL (N,) in fp32 (fp64 for an fp64 head) of the logits `hidden @ weight.T`.

    Args:
        hidden: Hidden states (N, D).
        weight: Output head (V, D) (the tied embedding).
        targets: Target ids (N,); `IGNORE_INDEX` rows give NLL 0 and no gradient.
        rows: Rows per chunk (default: `chunk_rows(V)`; under bf16 autocast
            `low_precision_head.chunk_rows(V)`).
    """
    if rows is None:
        bf16 = _mm_dtype(hidden.device.type, weight.dtype) == torch.bfloat16
        rows = (low_precision_head.chunk_rows if bf16 else chunk_rows)(weight.shape[0])
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _FusedLinearCrossEntropy.apply(hidden, weight, targets, rows)
    with torch.no_grad():
        return _forward(hidden, weight, targets, rows, False, False)[0]


def _mm_dtype(device_type: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype the head's matmuls run in: autocast's where it is on, else the weight's."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return dtype


def _forward(hidden, weight, targets, rows, need_h, need_w):
    """NLL (N,) and, as asked, the gradients of its sum: hidden (N, D) and weight (V, D), fp32."""
    device_type = hidden.device.type
    mm = _mm_dtype(device_type, weight.dtype)
    if (need_h and not need_w and device_type == "cpu" and _FLASH_CPU is not None
            and mm == hidden.dtype == torch.float32):
        return _flash_forward(hidden, weight, targets)
    if mm == torch.bfloat16:
        return low_precision_head.low_precision_forward(hidden, weight, targets, rows, need_h, need_w)
    N, D = hidden.shape
    acc = torch.promote_types(mm, torch.float32)  # softmax, NLL and gradient sums
    nll = torch.empty(N, device=hidden.device, dtype=acc)  # (N,)
    grad_h = torch.empty(N, D, device=hidden.device, dtype=acc) if need_h else None
    grad_w = torch.zeros_like(weight, dtype=acc) if need_w else None  # (V, D)
    with torch.autocast(device_type, enabled=False):
        w = weight.to(mm)  # (V, D)
        for s in range(0, N, rows):
            h = hidden[s:s + rows].to(mm)  # (n, D)
            valid = targets[s:s + rows] != IGNORE_INDEX  # (n,)
            safe = targets[s:s + rows].clamp_min(0)[:, None]  # (n, 1)
            logits = (h @ w.T).to(acc)  # (n, V)
            picked = logits.gather(1, safe).squeeze(1)  # (n,)
            if not (need_h or need_w):
                nll[s:s + rows] = (torch.logsumexp(logits, -1) - picked) * valid  # (n,)
                continue
            top = logits.amax(-1)  # (n,)
            p = logits.softmax(-1)  # (n, V)
            # log-sum-exp = top - log(p at the top), and that p = 1 / sum exp(logits - top) >= 1/V
            nll[s:s + rows] = (top - p.amax(-1).log() - picked) * valid  # (n,)
            g = p.scatter_add_(1, safe, -valid[:, None].to(acc)).to(mm)  # (n, V): p - onehot
            if need_h:
                grad_h[s:s + rows] = (g @ w) * valid[:, None]  # (n, D): ignored rows zero
            if need_w:
                h = h * valid[:, None]  # (n, D): ignored rows contribute nothing
                if mm == acc:
                    grad_w.addmm_(g.T, h)
                else:
                    grad_w += (g.T @ h).to(acc)  # (V, D)
    return nll, grad_h, grad_w


def _flash_forward(hidden, weight, targets):
    """NLL (N,) and its gradient for the hidden states (N, D) from the flash-attention kernel."""
    valid = targets != IGNORE_INDEX  # (N,)
    picked = weight[targets.clamp_min(0)]  # (N, D): the target rows of the head
    with torch.autocast("cpu", enabled=False):
        w = weight.contiguous()[None, None]  # (1, 1, V, D)
        expected, lse = _FLASH_CPU(hidden.contiguous()[None, None], w, w, 0.0, False, scale=1.0)
    nll = (lse[0, 0] - (hidden * picked).sum(-1)) * valid  # (N,)
    return nll, (expected[0, 0] - picked) * valid[:, None], None  # (N,), (N, D)


def _recomputed_grads(hidden, weight, targets, grad_nll, rows, mm, need_h, need_w):
    """Gradients of `sum(grad_nll * nll)`, chunk by chunk from differentiable ops (any grad_nll,
    and a graph for double backward when grad mode is on)."""
    device_type = hidden.device.type
    acc = torch.promote_types(mm, torch.float32)
    scale = grad_nll.to(acc) * (targets != IGNORE_INDEX)  # (N,)
    parts, grad_w = [], None
    with torch.autocast(device_type, enabled=False):
        w = weight.to(mm)  # (V, D)
        for s in range(0, hidden.shape[0], rows):
            h = hidden[s:s + rows].to(mm)  # (n, D)
            safe = targets[s:s + rows].clamp_min(0)[:, None]  # (n, 1)
            p = (h @ w.T).to(acc).softmax(-1)  # (n, V)
            g = p.scatter_add(1, safe, -torch.ones_like(safe, dtype=p.dtype))  # (n, V): p - onehot
            g = (g * scale[s:s + rows, None]).to(mm)  # (n, V)
            if need_h:
                parts.append(g @ w)  # (n, D)
            if need_w:
                part = (g.T @ h).to(acc)  # (V, D)
                grad_w = part if grad_w is None else grad_w + part
    grad_h = torch.cat(parts).to(hidden.dtype) if need_h else None  # (N, D)
    return grad_h, None if grad_w is None else grad_w.to(weight.dtype)


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """Forward: NLL (N,) plus the gradients of its sum; backward: scale them by grad_output."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, rows):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        nll, grad_h, grad_w = _forward(hidden, weight, targets, rows, need_h, need_w)
        ctx.rows, ctx.mm = rows, _mm_dtype(hidden.device.type, weight.dtype)
        ctx.save_for_backward(hidden, weight, targets, grad_h, grad_w)
        return nll

    @staticmethod
    def backward(ctx, grad_nll):
        hidden, weight, targets, grad_h, grad_w = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if torch.is_grad_enabled():  # create_graph: the precomputed gradients are constants
            return *_recomputed_grads(hidden, weight, targets, grad_nll, ctx.rows, ctx.mm,
                                      need_h, need_w), None, None
        dh = dw = None
        if need_h:
            dh = (grad_h * grad_nll[:, None]).to(hidden.dtype)  # (N, D): exact for any grad_nll
        if need_w:
            scored = grad_nll[targets != IGNORE_INDEX]  # (M,)
            if scored.numel() == 0:
                dw = torch.zeros_like(weight)
            elif bool((scored == scored[0]).all()):  # one weight for every row: a summed loss
                dw = (grad_w * scored[0]).to(weight.dtype)  # (V, D)
            else:
                dw = _recomputed_grads(hidden, weight, targets, grad_nll, ctx.rows, ctx.mm,
                                       False, True)[1]
        return dh, dw, None, None
