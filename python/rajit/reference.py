"""Reciprocal attention in plain PyTorch with materialised (B, H, Tq, Tk) scores: the same math
as the kernels (ra-math.md), for tests and for the pure-PyTorch arm of the training comparison.
Differentiable by autograd; O(T^2) memory."""

from __future__ import annotations

import math
from typing import Optional

import torch


def ra_attention_torch(q_std: torch.Tensor, k_low: Optional[torch.Tensor], k_std: torch.Tensor,
                       q_low: Optional[torch.Tensor], v: torch.Tensor, *, causal: bool,
                       bias: Optional[torch.Tensor] = None, w_std=None, w_rec=None, w_disc=None,
                       scale: Optional[float] = None, return_lse: bool = False,
                       compute_dtype: Optional[torch.dtype] = None):
    """Same arguments and result as rajit.attention. Scores, softmax and P @ V are computed in
    `compute_dtype` (default: float32, or float64 for float64 inputs); O is returned in v's dtype,
    LSE in compute_dtype. Rows with no visible key give O = 0 and LSE = -inf, like the kernels."""
    B, H, Tq, d_std = q_std.shape
    Tk = k_std.shape[2]
    r = 0 if k_low is None else k_low.shape[-1]
    ct = compute_dtype or (torch.float64 if v.dtype == torch.float64 else torch.float32)
    scale = 1.0 / math.sqrt(d_std + r) if scale is None else scale

    with torch.autocast(device_type=v.device.type, enabled=False):  # the reference keeps `ct`
        return _ra(q_std, k_low, k_std, q_low, v, causal, bias, w_std, w_rec, w_disc, scale,
                   return_lse, ct, H, Tq, Tk, r)


def _ra(q_std, k_low, k_std, q_low, v, causal, bias, w_std, w_rec, w_disc, scale, return_lse, ct,
        H, Tq, Tk, r):
    def gate(w):
        return None if w is None else w.to(ct).view(1, H, 1, 1)

    s = q_std.to(ct) @ k_std.to(ct).transpose(-1, -2)
    if w_std is not None:
        s = s * gate(w_std)
    if r:
        rec = k_low.to(ct) @ q_low.to(ct).transpose(-1, -2)
        s = s + (rec if w_rec is None else rec * gate(w_rec))
    s = s * scale
    if bias is not None:
        beta = bias.to(ct)
        beta = beta.view(1, H, 1, Tk) if beta.dim() == 2 else beta.reshape(-1, H, 1, Tk)
        s = s + (beta if w_disc is None else beta * gate(w_disc))
    if causal:
        i = torch.arange(Tq, device=s.device).view(Tq, 1)
        j = torch.arange(Tk, device=s.device).view(1, Tk)
        s = s.masked_fill(j > i + (Tk - Tq), float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    # exp(s - lse) is NaN on a fully masked row (-inf - -inf); those rows attend to nothing.
    p = torch.exp(s - lse.unsqueeze(-1).masked_fill(torch.isinf(lse).unsqueeze(-1), 0.0))
    o = (p @ v.to(ct)).to(v.dtype)
    return (o, lse) if return_lse else o
