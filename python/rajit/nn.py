"""rajit.nn.ReciprocalAttention: a drop-in causal self-attention for a GPT-2 block whose fused
projection emits the folded RA operands directly (the seeds' ra_ultimate_v5 "direct layout").

Per token the projection c_attn writes [Qf | Kf | V] with Qf = [q_std | k_low] and
Kf = [k_std | q_low] per head, so the attention reads strided views of one tensor and its
gradients are written back into one buffer: no torch.cat, no transposes, no copies. Gates
w_std, w_rec, w_disc are learnable per head; the discoverability bias is the seeds' learnable
per-key column bias d_bias[h, j] (shared over the batch; its mean is irrelevant, see
ra-math.md). r = 0 without gates and bias is plain causal attention (the baseline)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .ops import _unpack as unpack
from .ops import attention_folded
from .reference import ra_attention_torch

BACKENDS = ("rajit", "torch", "sdpa")


class ReciprocalAttention(nn.Module):
    """Causal reciprocal self-attention for x of shape (B, T, n_embd).

    d_std + r is the per-head score width (the seeds' same-FLOP choice is 56 + 8 with
    head_dim 64); head_dim defaults to n_embd // n_head. backend: "rajit" (the generated
    kernels; CUDA fp16/bf16, e.g. under autocast, or CPU float64 reference mode), "torch"
    (materialised scores in plain PyTorch, same math) or "sdpa" (F.scaled_dot_product_attention;
    only for r = 0 without bias and gates, i.e. the baseline)."""

    def __init__(self, n_embd: int, n_head: int, block_size: int, *, d_std: Optional[int] = None,
                 r: int = 8, head_dim: Optional[int] = None, disc_bias: bool = True,
                 gates: bool = True, dropout: float = 0.0, backend: str = "rajit",
                 proj_bias: bool = True):
        super().__init__()
        head_dim = head_dim or n_embd // n_head
        d_std = head_dim - r if d_std is None else d_std
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r}: must be one of {', '.join(BACKENDS)}")
        if backend == "sdpa" and (r or disc_bias or gates):
            raise ValueError("backend='sdpa' computes plain attention: it needs r=0, "
                             "disc_bias=False and gates=False")
        if d_std <= 0 or r < 0:
            raise ValueError(f"d_std={d_std}, r={r}: need d_std > 0 and r >= 0")
        self.n_head, self.d_std, self.r, self.head_dim = n_head, d_std, r, head_dim
        self.block_size, self.backend, self.dropout = block_size, backend, dropout
        self.qk_width = d_std + r
        self.c_attn = nn.Linear(n_embd, n_head * (2 * self.qk_width + head_dim), bias=proj_bias)
        self.c_proj = nn.Linear(n_head * head_dim, n_embd, bias=proj_bias)
        self.resid_dropout = nn.Dropout(dropout)
        if gates:
            self.w_std = nn.Parameter(torch.ones(n_head))
            self.w_rec = nn.Parameter(torch.ones(n_head)) if r else None
            self.w_disc = nn.Parameter(torch.ones(n_head)) if disc_bias else None
        else:
            self.w_std = self.w_rec = self.w_disc = None
        self.d_bias = nn.Parameter(torch.zeros(n_head, block_size)) if disc_bias else None

    def operands(self, x: torch.Tensor):
        """(Qf, Kf, V), each (B, H, T, width): strided views of one projection output."""
        B, T, _ = x.shape
        H, W = self.n_head, self.qk_width
        qkv = self.c_attn(x)
        qf, kf, v = qkv.split([H * W, H * W, H * self.head_dim], dim=-1)
        return (qf.view(B, T, H, W).transpose(1, 2), kf.view(B, T, H, W).transpose(1, 2),
                v.view(B, T, H, self.head_dim).transpose(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        if T > self.block_size:
            raise ValueError(f"x: sequence length {T} exceeds block_size={self.block_size}")
        qf, kf, v = self.operands(x)
        bias = None if self.d_bias is None else self.d_bias[:, :T]
        if self.backend == "sdpa":
            y = F.scaled_dot_product_attention(qf, kf, v, is_causal=True,
                                               dropout_p=self.dropout if self.training else 0.0)
        elif self.backend == "rajit":
            y = attention_folded(qf, kf, v, self.d_std, causal=True, bias=bias, w_std=self.w_std,
                                 w_rec=self.w_rec, w_disc=self.w_disc)
        else:
            q_std, k_low, k_std, q_low = unpack(qf, kf, self.d_std, folded=True)
            y = ra_attention_torch(q_std, k_low, k_std, q_low, v, causal=True, bias=bias,
                                   w_std=self.w_std, w_rec=self.w_rec, w_disc=self.w_disc)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)
        return self.resid_dropout(self.c_proj(y))
