"""Forward time of one ReciprocalAttention block through rajit vs plain PyTorch vs the SDPA
baseline (CUDA events, bf16 autocast): a quick check that the op is worth calling."""
import sys

import torch

import rajit.nn


def time_ms(fn, iters=50):
    for _ in range(5):
        fn()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(iters):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / iters


B, T = (int(x) for x in (sys.argv[1:3] if len(sys.argv) > 2 else (16, 512)))
x = torch.randn(B, T, 384, device="cuda")
torch.manual_seed(0)
blocks = {"ra_rajit": rajit.nn.ReciprocalAttention(384, 6, T, d_std=56, r=8).cuda()}
torch.manual_seed(0)
blocks["ra_torch"] = rajit.nn.ReciprocalAttention(384, 6, T, d_std=56, r=8, backend="torch").cuda()
blocks["baseline_sdpa"] = rajit.nn.ReciprocalAttention(384, 6, T, r=0, disc_bias=False, gates=False,
                                                       backend="sdpa").cuda()
with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
    ya, yb = blocks["ra_rajit"](x), blocks["ra_torch"](x)
    print(f"rajit vs torch block output rel err {((ya - yb).float().norm() / yb.float().norm()).item():.2e}")
    for name, m in blocks.items():
        print(f"{name:14s} forward (B={B}, T={T}): {time_ms(lambda: m(x)):.3f} ms")
