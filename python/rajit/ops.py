"""rajit.attention and friends: torch.library custom ops over the C ABI, with a fake (meta)
implementation and autograd, so torch.compile(fullgraph=True) can trace through them.

Two op pairs are registered:
  rajit::ra_fwd / rajit::ra_bwd          the four operands as separate tensors (any views)
  rajit::ra_packed_fwd / ra_packed_bwd   the paired or folded layout: two packed tensors whose
                                         gradients are written straight into two packed buffers
Both accept CUDA fp16/bf16 tensors (the generated kernels) or CPU float64 tensors (the float64
reference of the C library: "reference mode", for gradcheck).

Eager calls on plain tensors skip the dispatcher: the same implementation and the same autograd
formulas run through a torch.autograd.Function, because a custom op's dispatch costs 20-40 us
of host time per call, as much as the kernel at small shapes (docs/perf-notes.md, "Python op
host time"). Under torch.compile, fake tensors, dispatch modes or functorch transforms the
custom ops run."""

from __future__ import annotations

import ctypes
import math
from typing import Optional

import torch

from . import _lib

_GPU_DTYPES = {torch.float16: 0, torch.bfloat16: 1}


# ---- conversions to the C structs ----------------------------------------------------------

_Int64x4 = ctypes.c_int64 * 4

try:
    from torch.utils._python_dispatch import _get_current_dispatch_mode
except ImportError:  # pragma: no cover - very old torch: always take the custom ops
    def _get_current_dispatch_mode():
        return True


def _eager_fast_path(*tensors) -> bool:
    """True when nothing can observe the difference between the custom op and calling its
    implementation directly: not tracing or compiling, no dispatch mode (FakeTensorMode,
    FlopCounterMode, ...) or functorch transform active, and every tensor a plain torch.Tensor
    (no subclass such as FakeTensor or DTensor)."""
    if torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None:
        return False
    transforms_active = getattr(torch._C, "_are_functorch_transforms_active", None)
    if transforms_active is None or transforms_active():
        return False
    return all(t is None or type(t) is torch.Tensor for t in tensors)


def _c_tensor(t: Optional[torch.Tensor]) -> _lib.Tensor:
    """A 4-d tensor as the C struct, built in one constructor call: every Python-level step here
    is paid on each call of the op."""
    if t is None:
        return _lib.Tensor()
    return _lib.Tensor(t.data_ptr(), _Int64x4(*t.shape), _Int64x4(*t.stride()))


def _ptr(t: Optional[torch.Tensor]) -> Optional[int]:
    return None if t is None else t.data_ptr()


def _bias_struct(bias: Optional[torch.Tensor]) -> _lib.Bias:
    b = _lib.Bias()
    if bias is None:
        return b
    b.ptr = bias.data_ptr()
    if bias.dim() == 2:  # (H, Tk): shared over the batch
        b.batch_stride, b.head_stride = 0, bias.stride(0)
    else:  # (B, H, Tk)
        b.batch_stride, b.head_stride = bias.stride(0), bias.stride(1)
    return b


def _spec(d_std: int, r: int, head_dim: int, causal: bool, has_bias: bool, dtype) -> _lib.Spec:
    return _lib.Spec(d_std, r, head_dim, 1 if causal else 0, 1 if has_bias else 0,
                     _GPU_DTYPES.get(dtype, 0))


def _reference_mode(t: torch.Tensor) -> bool:
    return t.device.type == "cpu"


def _output_like_rows(batch, heads, rows, width, dtype, device) -> torch.Tensor:
    """(B, H, rows, width) whose memory is (B, rows, H, width): the layout a GPT block's
    projections read and write, so `o.transpose(1, 2).reshape(B, T, H * D)` is free."""
    return torch.empty((batch, rows, heads, width), dtype=dtype, device=device).transpose(1, 2)


def _lse_dtype(t: torch.Tensor):
    return torch.float64 if _reference_mode(t) else torch.float32


def _kernel_ready(t: torch.Tensor) -> torch.Tensor:
    """Upstream gradients come in whatever layout autograd made (expanded, transposed); the kernel
    needs a unit last stride and 16-byte-aligned rows. Copy only when those fail."""
    if t.stride(-1) != 1 or any(s % 8 for s in t.stride()[:-1]):
        return t.contiguous()
    return t


# ---- launches (shared by both op pairs) ----------------------------------------------------

def _forward_impl(q_std, k_low, k_std, q_low, v, bias, w_std, w_rec, w_disc, causal, scale):
    B, H, Tq, d_std = q_std.shape
    r = 0 if k_low is None else k_low.shape[-1]
    head_dim = v.shape[-1]
    if _reference_mode(q_std):
        return _reference_forward(q_std, k_low, k_std, q_low, v, bias, w_std, w_rec, w_disc,
                                  causal, scale)
    o = _output_like_rows(B, H, Tq, head_dim, v.dtype, v.device)
    lse = torch.empty((B, H, Tq), dtype=torch.float32, device=v.device)
    a = _lib.ForwardArgs()
    a.spec = _spec(d_std, r, head_dim, causal, bias is not None, v.dtype)
    a.q_std, a.k_std, a.v, a.o = _c_tensor(q_std), _c_tensor(k_std), _c_tensor(v), _c_tensor(o)
    if r:
        a.k_low, a.q_low = _c_tensor(k_low), _c_tensor(q_low)
    a.lse = lse.data_ptr()
    a.bias = _bias_struct(bias)
    a.w_std, a.w_rec, a.w_disc = _ptr(w_std), _ptr(w_rec), _ptr(w_disc)
    a.scale = scale
    a.stream = torch.cuda.current_stream(v.device).cuda_stream
    _lib.check(_lib.lib().rajit_forward(ctypes.byref(a)))
    return o, lse


def _backward_impl(q_std, k_low, k_std, q_low, v, bias, w_std, w_rec, w_disc, o, lse, d_o,
                   causal, scale, grads):
    """Fills `grads` (dq_std, dk_low, dk_std, dq_low, dv, d_bias, dw_std, dw_rec, dw_disc)."""
    dq_std, dk_low, dk_std, dq_low, dv, d_bias, dw_std, dw_rec, dw_disc = grads
    B, H, Tq, d_std = q_std.shape
    r = 0 if k_low is None else k_low.shape[-1]
    head_dim = v.shape[-1]
    if _reference_mode(q_std):
        _reference_backward(q_std, k_low, k_std, q_low, v, bias, w_std, w_rec, w_disc, d_o,
                            causal, scale, grads)
        return
    a = _lib.BackwardArgs()
    a.spec = _spec(d_std, r, head_dim, causal, bias is not None, v.dtype)
    a.q_std, a.k_std, a.v = _c_tensor(q_std), _c_tensor(k_std), _c_tensor(v)
    a.dq_std, a.dk_std, a.dv = _c_tensor(dq_std), _c_tensor(dk_std), _c_tensor(dv)
    if r:
        a.k_low, a.q_low = _c_tensor(k_low), _c_tensor(q_low)
        a.dk_low, a.dq_low = _c_tensor(dk_low), _c_tensor(dq_low)
    a.o, a.d_o, a.lse = _c_tensor(o), _c_tensor(d_o), lse.data_ptr()
    a.bias = _bias_struct(bias)
    if bias is not None:
        a.d_bias = d_bias.data_ptr()
        a.d_bias_batch_stride = 0 if d_bias.dim() == 2 else d_bias.stride(0)
        a.d_bias_head_stride = d_bias.stride(-2)
    a.w_std, a.w_rec, a.w_disc = _ptr(w_std), _ptr(w_rec), _ptr(w_disc)
    # A gate gradient is asked for only where the gate is an input (and exists: r > 0, a bias);
    # the others are returned as zeros, and autograd drops them.
    for field, gate, out, exists in (("dw_std", w_std, dw_std, True), ("dw_rec", w_rec, dw_rec, r > 0),
                                     ("dw_disc", w_disc, dw_disc, bias is not None)):
        if gate is not None and exists:
            setattr(a, field, out.data_ptr())
        else:
            out.zero_()
    a.scale = scale
    a.deterministic = 1 if torch.are_deterministic_algorithms_enabled() else 0
    a.stream = torch.cuda.current_stream(v.device).cuda_stream
    nbytes = ctypes.c_size_t(0)
    _lib.check(_lib.lib().rajit_backward_workspace_bytes(ctypes.byref(a), ctypes.byref(nbytes)))
    workspace = None
    if nbytes.value:
        # From torch's caching allocator on this stream (blocks are 512-byte aligned), so the
        # memory is ordered with the kernels and freed after them without a sync.
        workspace = torch.empty(nbytes.value, dtype=torch.uint8, device=v.device)
        a.workspace, a.workspace_bytes = workspace.data_ptr(), nbytes.value
    _lib.check(_lib.lib().rajit_backward(ctypes.byref(a)))


# ---- reference mode: CPU float64 through the C library's reference -------------------------

def _reference_struct(q_std, k_low, k_std, q_low, v, bias, w_std, w_rec, w_disc, causal, scale):
    d_std, r, head_dim = q_std.shape[-1], 0 if k_low is None else k_low.shape[-1], v.shape[-1]
    a = _lib.ReferenceArgs()
    a.spec = _spec(d_std, r, head_dim, causal, bias is not None, None)
    a.q_std, a.k_std, a.v = _c_tensor(q_std), _c_tensor(k_std), _c_tensor(v)
    if r:
        a.k_low, a.q_low = _c_tensor(k_low), _c_tensor(q_low)
    a.bias = _bias_struct(bias)
    a.w_std, a.w_rec, a.w_disc = _ptr(w_std), _ptr(w_rec), _ptr(w_disc)
    a.scale = scale
    return a


def _reference_forward(q_std, k_low, k_std, q_low, v, bias, w_std, w_rec, w_disc, causal, scale):
    B, H, Tq, _ = q_std.shape
    a = _reference_struct(q_std, k_low, k_std, q_low, v, bias, w_std, w_rec, w_disc, causal, scale)
    o = _output_like_rows(B, H, Tq, v.shape[-1], torch.float64, v.device)
    lse = torch.empty((B, H, Tq), dtype=torch.float64)
    _lib.check(_lib.lib().rajit_reference_forward(ctypes.byref(a), _c_tensor(o), lse.data_ptr()))
    return o, lse


def _reference_backward(q_std, k_low, k_std, q_low, v, bias, w_std, w_rec, w_disc, d_o, causal,
                        scale, grads):
    dq_std, dk_low, dk_std, dq_low, dv, d_bias, dw_std, dw_rec, dw_disc = grads
    a = _reference_struct(q_std, k_low, k_std, q_low, v, bias, w_std, w_rec, w_disc, causal, scale)
    g = _lib.ReferenceGrads()
    g.dq_std, g.dk_std, g.dv = _c_tensor(dq_std), _c_tensor(dk_std), _c_tensor(dv)
    if k_low is not None:
        g.dk_low, g.dq_low = _c_tensor(dk_low), _c_tensor(dq_low)
    if bias is not None:
        g.d_bias = d_bias.data_ptr()
        g.d_bias_batch_stride = 0 if d_bias.dim() == 2 else d_bias.stride(0)
        g.d_bias_head_stride = d_bias.stride(-2)
    g.dw_std, g.dw_rec, g.dw_disc = dw_std.data_ptr(), dw_rec.data_ptr(), dw_disc.data_ptr()
    _lib.check(_lib.lib().rajit_reference_backward(ctypes.byref(a), _c_tensor(d_o), ctypes.byref(g)))


# ---- gradient buffers (one allocation rule for the real and the fake implementations) ------

def _alloc_like(t: torch.Tensor) -> torch.Tensor:
    B, H, T, W = t.shape
    return _output_like_rows(B, H, T, W, t.dtype, t.device)


def _alloc_side_grads(q_std, v, bias):
    """d_bias (layout of bias, contiguous), dw_std, dw_rec, dw_disc: (H,) in the gate dtype."""
    H = q_std.shape[1]
    gate_dtype = torch.float64 if _reference_mode(q_std) else torch.float32
    if bias is None:
        d_bias = torch.empty((0,), dtype=gate_dtype, device=v.device)
    else:
        d_bias = torch.empty(bias.shape, dtype=bias.dtype, device=bias.device)
    gates = [torch.empty((H,), dtype=gate_dtype, device=v.device) for _ in range(3)]
    return [d_bias, *gates]


# ---- op pair 1: the four operands as separate tensors --------------------------------------

@torch.library.custom_op("rajit::ra_fwd", mutates_args=())
def ra_fwd(q_std: torch.Tensor, k_low: Optional[torch.Tensor], k_std: torch.Tensor,
           q_low: Optional[torch.Tensor], v: torch.Tensor, bias: Optional[torch.Tensor],
           w_std: Optional[torch.Tensor], w_rec: Optional[torch.Tensor],
           w_disc: Optional[torch.Tensor], causal: bool, scale: float
           ) -> tuple[torch.Tensor, torch.Tensor]:
    return _forward_impl(q_std, k_low, k_std, q_low, v, bias, w_std, w_rec, w_disc, causal, scale)


@ra_fwd.register_fake
def _(q_std, k_low, k_std, q_low, v, bias, w_std, w_rec, w_disc, causal, scale):
    B, H, Tq, _ = q_std.shape
    o = _output_like_rows(B, H, Tq, v.shape[-1], v.dtype, v.device)
    return o, q_std.new_empty((B, H, Tq), dtype=_lse_dtype(q_std))


@torch.library.custom_op("rajit::ra_bwd", mutates_args=())
def ra_bwd(q_std: torch.Tensor, k_low: Optional[torch.Tensor], k_std: torch.Tensor,
           q_low: Optional[torch.Tensor], v: torch.Tensor, bias: Optional[torch.Tensor],
           w_std: Optional[torch.Tensor], w_rec: Optional[torch.Tensor],
           w_disc: Optional[torch.Tensor], o: torch.Tensor, lse: torch.Tensor,
           d_o: torch.Tensor, causal: bool, scale: float) -> list[torch.Tensor]:
    return _ra_bwd_impl(q_std, k_low, k_std, q_low, v, bias, w_std, w_rec, w_disc, o, lse, d_o,
                        causal, scale)


def _ra_bwd_impl(q_std, k_low, k_std, q_low, v, bias, w_std, w_rec, w_disc, o, lse, d_o, causal,
                 scale):
    grads = _ra_bwd_buffers(q_std, k_low, k_std, q_low, v, bias)
    _backward_impl(q_std, k_low, k_std, q_low, v, bias, w_std, w_rec, w_disc, o, lse, d_o, causal,
                   scale, _with_empty_low(grads, k_low))
    return grads


def _ra_bwd_buffers(q_std, k_low, k_std, q_low, v, bias):
    # r = 0: two distinct empty tensors (a custom op's outputs must not alias each other).
    lows = ([q_std.new_empty((0,)), q_std.new_empty((0,))] if k_low is None
            else [_alloc_like(k_low), _alloc_like(q_low)])
    return [_alloc_like(q_std), lows[0], _alloc_like(k_std), lows[1], _alloc_like(v),
            *_alloc_side_grads(q_std, v, bias)]


def _with_empty_low(grads, k_low):
    return grads if k_low is not None else [grads[0], None, grads[2], None, *grads[4:]]


@ra_bwd.register_fake
def _(q_std, k_low, k_std, q_low, v, bias, w_std, w_rec, w_disc, o, lse, d_o, causal, scale):
    return _ra_bwd_buffers(q_std, k_low, k_std, q_low, v, bias)


def _setup_ra(ctx, inputs, output):
    q_std, k_low, k_std, q_low, v, bias, w_std, w_rec, w_disc, causal, scale = inputs
    o, lse = output
    ctx.save_for_backward(q_std, k_low, k_std, q_low, v, bias, w_std, w_rec, w_disc, o, lse)
    ctx.causal, ctx.scale = causal, scale
    ctx.mark_non_differentiable(lse)


def _gate_grads(w_std, w_rec, w_disc, dw_std, dw_rec, dw_disc):
    return (dw_std if w_std is not None else None, dw_rec if w_rec is not None else None,
            dw_disc if w_disc is not None else None)


def _backward_ra(ctx, d_o, _d_lse):
    q_std, k_low, k_std, q_low, v, bias, w_std, w_rec, w_disc, o, lse = ctx.saved_tensors
    bwd = ra_bwd if getattr(ctx, "through_op", True) else _ra_bwd_impl
    g = bwd(q_std, k_low, k_std, q_low, v, bias, w_std, w_rec, w_disc, o, lse, _kernel_ready(d_o),
            ctx.causal, ctx.scale)
    dq_std, dk_low, dk_std, dq_low, dv, d_bias, dw_std, dw_rec, dw_disc = g
    if k_low is None:
        dk_low = dq_low = None
    return (dq_std, dk_low, dk_std, dq_low, dv, d_bias if bias is not None else None,
            *_gate_grads(w_std, w_rec, w_disc, dw_std, dw_rec, dw_disc), None, None)


ra_fwd.register_autograd(_backward_ra, setup_context=_setup_ra)


class _RaEager(torch.autograd.Function):
    """ra_fwd without the dispatcher (see the module docstring): same implementation, same
    saved tensors, same backward."""

    @staticmethod
    def forward(ctx, *inputs):
        o, lse = _forward_impl(*inputs)
        _setup_ra(ctx, inputs, (o, lse))
        ctx.through_op = False
        return o, lse

    @staticmethod
    def backward(ctx, d_o, d_lse):
        return _backward_ra(ctx, d_o, d_lse)


# ---- op pair 2: paired / folded packed tensors ---------------------------------------------

def _unpack(q, k, d_std: int, folded: bool):
    """(q_std, k_low, k_std, q_low) as views of the packed tensors (ra-math.md's layout table);
    the same rule maps the packed gradient buffers to the per-operand gradients."""
    r = q.shape[-1] - d_std
    if folded:  # Qf = [q_std | k_low], Kf = [k_std | q_low]
        return (q[..., :d_std], q[..., d_std:] if r else None, k[..., :d_std],
                k[..., d_std:] if r else None)
    # paired: Q = [Q_std | Q_low], K = [K_std | K_low]; k_low lives on query rows (K's), q_low
    # on key rows (Q's), so the layout needs Tq == Tk.
    return (q[..., :d_std], k[..., d_std:] if r else None, k[..., :d_std],
            q[..., d_std:] if r else None)


@torch.library.custom_op("rajit::ra_packed_fwd", mutates_args=())
def ra_packed_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Optional[torch.Tensor],
                  w_std: Optional[torch.Tensor], w_rec: Optional[torch.Tensor],
                  w_disc: Optional[torch.Tensor], d_std: int, folded: bool, causal: bool,
                  scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    return _forward_impl(*_unpack(q, k, d_std, folded), v, bias, w_std, w_rec, w_disc, causal,
                         scale)


@ra_packed_fwd.register_fake
def _(q, k, v, bias, w_std, w_rec, w_disc, d_std, folded, causal, scale):
    B, H, Tq, _ = q.shape
    o = _output_like_rows(B, H, Tq, v.shape[-1], v.dtype, v.device)
    return o, q.new_empty((B, H, Tq), dtype=_lse_dtype(q))


def _packed_bwd_buffers(q, k, v, bias):
    return [_alloc_like(q), _alloc_like(k), _alloc_like(v), *_alloc_side_grads(q, v, bias)]


@torch.library.custom_op("rajit::ra_packed_bwd", mutates_args=())
def ra_packed_bwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Optional[torch.Tensor],
                  w_std: Optional[torch.Tensor], w_rec: Optional[torch.Tensor],
                  w_disc: Optional[torch.Tensor], o: torch.Tensor, lse: torch.Tensor,
                  d_o: torch.Tensor, d_std: int, folded: bool, causal: bool, scale: float
                  ) -> list[torch.Tensor]:
    return _ra_packed_bwd_impl(q, k, v, bias, w_std, w_rec, w_disc, o, lse, d_o, d_std, folded,
                               causal, scale)


def _ra_packed_bwd_impl(q, k, v, bias, w_std, w_rec, w_disc, o, lse, d_o, d_std, folded, causal,
                        scale):
    out = _packed_bwd_buffers(q, k, v, bias)
    dq, dk, dv = out[:3]
    # Writing each operand's gradient into its slice of dq/dk is the whole point of this op:
    # no per-operand buffers and no torch.cat in the backward.
    _backward_impl(*_unpack(q, k, d_std, folded), v, bias, w_std, w_rec, w_disc, o, lse, d_o,
                   causal, scale, [*_unpack(dq, dk, d_std, folded), dv, *out[3:]])
    return out


@ra_packed_bwd.register_fake
def _(q, k, v, bias, w_std, w_rec, w_disc, o, lse, d_o, d_std, folded, causal, scale):
    return _packed_bwd_buffers(q, k, v, bias)


def _setup_packed(ctx, inputs, output):
    q, k, v, bias, w_std, w_rec, w_disc, d_std, folded, causal, scale = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, bias, w_std, w_rec, w_disc, o, lse)
    ctx.d_std, ctx.folded, ctx.causal, ctx.scale = d_std, folded, causal, scale
    ctx.mark_non_differentiable(lse)


def _backward_packed(ctx, d_o, _d_lse):
    q, k, v, bias, w_std, w_rec, w_disc, o, lse = ctx.saved_tensors
    bwd = ra_packed_bwd if getattr(ctx, "through_op", True) else _ra_packed_bwd_impl
    dq, dk, dv, d_bias, dw_std, dw_rec, dw_disc = bwd(
        q, k, v, bias, w_std, w_rec, w_disc, o, lse, _kernel_ready(d_o), ctx.d_std, ctx.folded,
        ctx.causal, ctx.scale)
    return (dq, dk, dv, d_bias if bias is not None else None,
            *_gate_grads(w_std, w_rec, w_disc, dw_std, dw_rec, dw_disc),
            None, None, None, None)


ra_packed_fwd.register_autograd(_backward_packed, setup_context=_setup_packed)


class _PackedEager(torch.autograd.Function):
    """ra_packed_fwd without the dispatcher (see the module docstring)."""

    @staticmethod
    def forward(ctx, q, k, v, bias, w_std, w_rec, w_disc, d_std, folded, causal, scale):
        o, lse = _forward_impl(*_unpack(q, k, d_std, folded), v, bias, w_std, w_rec, w_disc,
                               causal, scale)
        _setup_packed(ctx, (q, k, v, bias, w_std, w_rec, w_disc, d_std, folded, causal, scale),
                      (o, lse))
        ctx.through_op = False
        return o, lse

    @staticmethod
    def backward(ctx, d_o, d_lse):
        return _backward_packed(ctx, d_o, d_lse)


# ---- the public functions: argument checks, then one op call -------------------------------

def _check_operand(errors: list, name: str, t, want_dims=4):
    if not isinstance(t, torch.Tensor):
        errors.append(f"{name}: must be a torch.Tensor, got {type(t).__name__}")
        return False
    if t.dim() != want_dims:
        errors.append(f"{name}: must have {want_dims} dimensions (batch, heads, rows, width), "
                      f"got shape {tuple(t.shape)}")
        return False
    if t.shape[-1] > 1 and t.stride(-1) != 1:
        errors.append(f"{name}: last stride is {t.stride(-1)}, must be 1 (rajit never copies; "
                      f"pass a view with unit last stride, or call .contiguous() yourself)")
        return False
    return True


def _check_kind(errors: list, tensors: dict):
    """All operands on one device, one dtype: CUDA fp16/bf16, or CPU float64 (reference mode)."""
    first_name, first = next(iter(tensors.items()))
    for name, t in tensors.items():
        if t.device != first.device:
            errors.append(f"{name}: on {t.device}, but {first_name} is on {first.device}")
        if t.dtype != first.dtype:
            errors.append(f"{name}: dtype {t.dtype}, but {first_name} is {first.dtype}")
    if first.device.type == "cuda":
        if first.dtype not in _GPU_DTYPES:
            errors.append(f"{first_name}: dtype {first.dtype} on CUDA; must be torch.float16 or "
                          f"torch.bfloat16")
    elif first.device.type == "cpu":
        if first.dtype != torch.float64:
            errors.append(f"{first_name}: dtype {first.dtype} on CPU; the CPU path is the float64 "
                          f"reference, so it needs torch.float64 (use CUDA for fp16/bf16)")
    else:
        errors.append(f"{first_name}: device {first.device}; must be cuda or cpu (float64 "
                      f"reference)")


def _side_input(errors, name, t, heads, ref, device, shapes):
    """Gates and bias are small fp32 side inputs (float64 in reference mode); converting their
    dtype is cheap and differentiable, so it is done here, unlike the operands."""
    if t is None:
        return None
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t, device=device)
    want = torch.float64 if ref else torch.float32
    if t.device != device:
        errors.append(f"{name}: on {t.device}, must be on {device} with the operands")
        return None
    if tuple(t.shape) not in shapes:
        errors.append(f"{name}: shape {tuple(t.shape)}, must be one of "
                      + ", ".join(str(s) for s in shapes))
        return None
    return t.to(want)  # a no-op when already right


def _contiguous(t):
    return None if t is None else t.contiguous()  # an (H,) gate: free when already contiguous


def _prepare(B, H, Tk, has_low, v, bias, w_std, w_rec, w_disc, scale):
    """Shared checks of attention/attention_paired/attention_folded; returns the side inputs.
    Takes the sizes rather than the operands, so the packed calls need not slice views of their
    tensors twice (once here, once in the op)."""
    errors = []
    dev = v.device
    ref = dev.type == "cpu"
    gate_shapes = [(H,)]
    w_std = _contiguous(_side_input(errors, "w_std", w_std, H, ref, dev, gate_shapes))
    w_rec = _contiguous(_side_input(errors, "w_rec", w_rec, H, ref, dev, gate_shapes))
    w_disc = _contiguous(_side_input(errors, "w_disc", w_disc, H, ref, dev, gate_shapes))
    if w_disc is not None and bias is None:
        errors.append("w_disc: given without a bias (w_disc scales the bias)")
    if w_rec is not None and not has_low:
        errors.append("w_rec: given but r = 0 (no reciprocal operands)")
    if bias is not None:
        if isinstance(bias, torch.Tensor) and bias.dim() == 4 and bias.shape[2] == 1:
            bias = bias[:, :, 0]  # the seeds' (B|1, H, 1, Tk) column bias
        if isinstance(bias, torch.Tensor) and bias.dim() == 3 and bias.shape[0] == 1:
            bias = bias[0]
        if isinstance(bias, torch.Tensor) and bias.dim() == 3 and bias.stride(0) == 0:
            # Expanded over the batch: every batch reads the same vector, so pass it as shared;
            # autograd of the view sends the batch-summed gradient to the expanded tensor's source.
            bias = bias[0]
        bias = _side_input(errors, "bias", bias, H, ref, dev, [(H, Tk), (B, H, Tk)])
        if bias is not None and Tk > 1 and bias.stride(-1) != 1:
            errors.append(f"bias: last stride is {bias.stride(-1)}, must be 1")
    if scale is None:
        scale = 0.0
    elif not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        errors.append(f"scale={scale}: must be a finite number > 0 (None = 1/sqrt(d_std + r))")
    if errors:
        raise _lib.InvalidArgumentError("\n".join(errors))
    return bias, w_std, w_rec, w_disc, float(scale)


def attention(q_std, k_low, k_std, q_low, v, *, causal: bool, bias=None, w_std=None, w_rec=None,
              w_disc=None, scale=None, return_lse: bool = False):
    """Reciprocal attention (ra-math.md) of four (B, H, rows, width) operands and V.

    q_std (B,H,Tq,Ds), k_low (B,H,Tq,R), k_std (B,H,Tk,Ds), q_low (B,H,Tk,R) and v (B,H,Tk,Dv):
    any strides with a unit last stride (views of one projection are the intended use; nothing
    is copied). k_low and q_low are None for r = 0. bias: (H, Tk) shared over the batch or
    (B, H, Tk), fp32. w_std, w_rec, w_disc: (H,) gates, None = ones. scale: None =
    1/sqrt(Ds + R). Runs on torch.cuda.current_stream(). Returns O (B,H,Tq,Dv) in v's dtype (its
    memory is (B,Tq,H,Dv)) and, with return_lse, also LSE (B,H,Tq) fp32.

    CUDA tensors must be fp16 or bf16; CPU tensors must be float64 and run the C library's
    float64 reference (for gradcheck). Differentiable in every tensor argument.
    Raises: ValueError (rajit.InvalidArgumentError) naming every bad field; rajit.CompileError,
    rajit.DriverError, rajit.NoGpuError from the library."""
    errors = []
    named = {"q_std": q_std, "k_std": k_std, "v": v}
    if k_low is not None or q_low is not None:
        named.update(k_low=k_low, q_low=q_low)
    ok = all([_check_operand(errors, n, t) for n, t in named.items()])
    if ok:
        _check_kind(errors, named)
    if errors:
        raise _lib.InvalidArgumentError("\n".join(errors))
    bias, w_std, w_rec, w_disc, scale = _prepare(q_std.shape[0], q_std.shape[1], k_std.shape[2],
                                                 k_low is not None, v, bias, w_std, w_rec, w_disc,
                                                 scale)
    args = (q_std, k_low, k_std, q_low, v, bias, w_std, w_rec, w_disc, bool(causal), scale)
    fast = _eager_fast_path(q_std, k_low, k_std, q_low, v, bias, w_std, w_rec, w_disc)
    o, lse = _RaEager.apply(*args) if fast else ra_fwd(*args)
    return (o, lse) if return_lse else o


def _packed(q, k, v, d_std, folded, causal, bias, w_std, w_rec, w_disc, scale, return_lse):
    errors = []
    ok = all([_check_operand(errors, n, t) for n, t in (("q", q), ("k", k), ("v", v))])
    if ok:
        _check_kind(errors, {"q": q, "k": k, "v": v})
        if q.shape[-1] != k.shape[-1]:
            errors.append(f"k: width {k.shape[-1]} must equal q's width {q.shape[-1]} (d_std + r)")
        if not 0 < d_std <= q.shape[-1]:
            errors.append(f"d_std={d_std}: must be in [1, {q.shape[-1]}] (q's width is d_std + r)")
        if not folded and q.shape[2] != k.shape[2] and q.shape[-1] > d_std:
            errors.append(f"q: {q.shape[2]} rows but k has {k.shape[2]}; the paired layout needs "
                          f"Tq == Tk (use attention_folded or attention)")
    if errors:
        raise _lib.InvalidArgumentError("\n".join(errors))
    bias, w_std, w_rec, w_disc, scale = _prepare(q.shape[0], q.shape[1], k.shape[2],
                                                 q.shape[-1] > d_std, v, bias, w_std, w_rec,
                                                 w_disc, scale)
    args = (q, k, v, bias, w_std, w_rec, w_disc, int(d_std), folded, bool(causal), scale)
    fast = _eager_fast_path(q, k, v, bias, w_std, w_rec, w_disc)
    o, lse = _PackedEager.apply(*args) if fast else ra_packed_fwd(*args)
    return (o, lse) if return_lse else o


def attention_paired(Q, K, V, d_std: int, *, causal: bool, bias=None, w_std=None, w_rec=None,
                     w_disc=None, scale=None, return_lse: bool = False):
    """The seeds' paired layout (ra_ultimate_v4): Q = [Q_std | Q_low], K = [K_std | K_low], both
    (B, H, T, d_std + r); q_std = Q[..., :d_std], k_low = K[..., d_std:], k_std = K[..., :d_std],
    q_low = Q[..., d_std:]. Gradients land in one buffer per packed tensor. Else as attention()."""
    return _packed(Q, K, V, d_std, False, causal, bias, w_std, w_rec, w_disc, scale, return_lse)


def attention_folded(Qf, Kf, V, d_std: int, *, causal: bool, bias=None, w_std=None, w_rec=None,
                     w_disc=None, scale=None, return_lse: bool = False):
    """The folded layout (ra_ultimate_v5): the projection emits Qf = [q_std | k_low] (query rows)
    and Kf = [k_std | q_low] (key rows), both width d_std + r. Else as attention()."""
    return _packed(Qf, Kf, V, d_std, True, causal, bias, w_std, w_rec, w_disc, scale, return_lse)
