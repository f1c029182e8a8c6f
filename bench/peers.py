#!/usr/bin/env python3
"""Side-by-side forward benchmark on one GPU: rajit vs PyTorch SDPA (flash, cuDNN, default),
FlexAttention (compiled, causal block mask, score_mod adding the RA bias) and the seeds'
torch.cat folding. Every row is timed in this one run, the same way: CUDA events, warm-up,
median of many runs, inputs rotated over several sets so the working set exceeds the L2.

With --backward it times forward + backward instead (FLOPs: 3.5 x forward, the FlashAttention
convention): rajit (every RA gradient: gates, bias, all four operands), SDPA flash and cuDNN on
plain attention of the same width, and FlexAttention with a learnable bias and gates.

usage: python3 bench/peers.py --rajit PATH/TO/rajit [--out results.json] [--quick] [--backward]
"""
import argparse
import json
import math
import statistics
import subprocess
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

# (label, B, H, T, Ds, R, Dv, causal, dtype)
CASES = [
    ("seeds RA d64", 4, 16, 4096, 56, 8, 64, True, torch.bfloat16),
    ("RA d128", 2, 16, 8192, 120, 8, 128, True, torch.bfloat16),
    ("seeds shape", 8, 12, 1024, 56, 8, 64, True, torch.bfloat16),
    ("RA d64 fp16", 4, 16, 4096, 56, 8, 64, True, torch.float16),
    ("RA d64 non-causal", 4, 16, 4096, 56, 8, 64, False, torch.bfloat16),
]


def flops(B, H, T, Ds, R, Dv, causal):
    f = 2.0 * B * H * T * T * (Ds + R + Dv)
    return f / 2 if causal else f


def time_ms(fn, sets, warmup=10, iters=50):
    for i in range(warmup):
        fn(sets[i % len(sets)])
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for i in range(iters):
        starts[i].record()
        fn(sets[i % len(sets)])
        ends[i].record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def make_sets(B, H, T, Ds, R, Dv, dtype, l2_bytes):
    per_set = 2 * B * H * T * (2 * (Ds + R) + Dv) * 2
    n = max(1, min(8, math.ceil(4 * l2_bytes / per_set)))
    sets = []
    for _ in range(n):
        g = lambda w: torch.randn(B, H, T, w, device="cuda", dtype=dtype)
        s = dict(q_std=g(Ds), k_low=g(R), k_std=g(Ds), q_low=g(R), v=g(Dv),
                 bias=torch.randn(H, T, device="cuda", dtype=torch.float32),
                 w_std=torch.rand(H, device="cuda") + 0.5, w_rec=torch.rand(H, device="cuda") + 0.5,
                 w_disc=torch.rand(H, device="cuda") + 0.5)
        sets.append(s)
    return sets


def peers_for(case, l2_bytes, quick):
    label, B, H, T, Ds, R, Dv, causal, dtype = case
    sets = make_sets(B, H, T, Ds, R, Dv, dtype, l2_bytes)
    scale = 1.0 / math.sqrt(Ds + R)
    iters = 20 if quick else 50
    rows = []

    def fold(s):  # the seeds' torch.cat folding, gates applied to the query side
        qf = torch.cat([s["q_std"] * s["w_std"].view(1, H, 1, 1).to(dtype),
                        s["k_low"] * s["w_rec"].view(1, H, 1, 1).to(dtype)], dim=-1)
        kf = torch.cat([s["k_std"], s["q_low"]], dim=-1)
        return qf, kf

    def plain(s):  # plain attention of the same width: what RA should cost
        q = torch.cat([s["q_std"], s["k_low"]], dim=-1)
        k = torch.cat([s["k_std"], s["q_low"]], dim=-1)
        return q, k

    plain_sets = [dict(zip(("q", "k"), plain(s)), v=s["v"]) for s in sets]
    for name, backend in (("sdpa flash (plain, r=0)", SDPBackend.FLASH_ATTENTION),
                          ("sdpa cudnn (plain, r=0)", SDPBackend.CUDNN_ATTENTION),
                          ("sdpa default (plain, r=0)", None)):
        try:
            def run(s, backend=backend):
                if backend is None:
                    return F.scaled_dot_product_attention(s["q"], s["k"], s["v"], is_causal=causal, scale=scale)
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(s["q"], s["k"], s["v"], is_causal=causal, scale=scale)
            rows.append((name, time_ms(run, plain_sets, iters=iters)))
        except Exception as e:  # a backend may not support a shape/dtype
            rows.append((name, None, str(e).splitlines()[0][:80]))

    def ra_fold_sdpa(s):
        qf, kf = fold(s)
        return F.scaled_dot_product_attention(qf, kf, s["v"], is_causal=causal, scale=scale)
    rows.append(("RA torch.cat fold + SDPA (no bias)", time_ms(ra_fold_sdpa, sets, iters=iters)))

    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        flex = torch.compile(flex_attention, dynamic=False)

        def causal_mod(b, h, q_idx, kv_idx):
            return q_idx >= kv_idx
        mask = create_block_mask(causal_mod, None, None, T, T, device="cuda") if causal else None
        for s in sets:
            s["bias_scaled"] = (s["bias"] * s["w_disc"].view(H, 1)).contiguous()

        def ra_flex(s):
            qf, kf = fold(s)
            bias = s["bias_scaled"]

            def score_mod(score, b, h, q_idx, kv_idx):
                return score + bias[h, kv_idx]
            return flex(qf, kf, s["v"], score_mod=score_mod, block_mask=mask, scale=scale)
        rows.append(("RA FlexAttention + bias (compiled)", time_ms(ra_flex, sets, iters=iters)))
    except Exception as e:
        rows.append(("RA FlexAttention + bias (compiled)", None, str(e).splitlines()[0][:80]))
    return rows


def peers_fwd_bwd_for(case, l2_bytes, quick):
    """Forward + backward of the peers; every input that has a gradient in RA requires one."""
    label, B, H, T, Ds, R, Dv, causal, dtype = case
    sets = make_sets(B, H, T, Ds, R, Dv, dtype, l2_bytes)
    scale = 1.0 / math.sqrt(Ds + R)
    iters = 10 if quick else 30
    rows = []
    for s in sets:
        for k in ("q_std", "k_low", "k_std", "q_low", "v", "bias", "w_std", "w_rec", "w_disc"):
            s[k].requires_grad_(True)
        s["do"] = torch.randn(B, H, T, Dv, device="cuda", dtype=dtype)
        s["q"] = torch.cat([s["q_std"], s["k_low"]], dim=-1).detach().requires_grad_(True)
        s["k"] = torch.cat([s["k_std"], s["q_low"]], dim=-1).detach().requires_grad_(True)

    def clear(s):
        for k in ("q_std", "k_low", "k_std", "q_low", "v", "bias", "w_std", "w_rec", "w_disc", "q", "k"):
            s[k].grad = None

    for name, backend in (("sdpa flash fwd+bwd (plain, r=0)", SDPBackend.FLASH_ATTENTION),
                          ("sdpa cudnn fwd+bwd (plain, r=0)", SDPBackend.CUDNN_ATTENTION)):
        try:
            def run(s, backend=backend):
                clear(s)
                with sdpa_kernel(backend):
                    o = F.scaled_dot_product_attention(s["q"], s["k"], s["v"], is_causal=causal, scale=scale)
                o.backward(s["do"])
            rows.append((name, time_ms(run, sets, iters=iters)))
        except Exception as e:
            rows.append((name, None, str(e).splitlines()[0][:80]))

    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        flex = torch.compile(flex_attention, dynamic=False)

        def causal_mod(b, h, q_idx, kv_idx):
            return q_idx >= kv_idx
        mask = create_block_mask(causal_mod, None, None, T, T, device="cuda") if causal else None

        def ra_flex(s):
            clear(s)
            qf = torch.cat([s["q_std"] * s["w_std"].view(1, H, 1, 1).to(dtype),
                            s["k_low"] * s["w_rec"].view(1, H, 1, 1).to(dtype)], dim=-1)
            kf = torch.cat([s["k_std"], s["q_low"]], dim=-1)
            bias = s["bias"] * s["w_disc"].view(H, 1)  # learnable bias and gate

            def score_mod(score, b, h, q_idx, kv_idx):
                return score + bias[h, kv_idx]
            o = flex(qf, kf, s["v"], score_mod=score_mod, block_mask=mask, scale=scale)
            o.backward(s["do"])
        rows.append(("RA FlexAttention + learnable bias, gates fwd+bwd", time_ms(ra_flex, sets, iters=iters)))
    except Exception as e:
        rows.append(("RA FlexAttention + learnable bias, gates fwd+bwd", None, str(e).splitlines()[0][:80]))
    return rows


def rajit_rows(rajit, case, quick, backward=False):
    label, B, H, T, Ds, R, Dv, causal, dtype = case
    cmd = [rajit, "bench", "--format", "json", "--d-std", str(Ds), "--r", str(R), "--head-dim", str(Dv),
           "--bias", "column", "--dtype", "bf16" if dtype == torch.bfloat16 else "fp16",
           "--shapes", f"{B}x{H}x{T}", "--iters", "20" if quick else "100"]
    if causal:
        cmd.append("--causal")
    if backward:
        cmd += ["--backward", "--deterministic"]
    # Forward: the plain row comes from the folded call, where `rajit bench` launches RA and its
    # baseline in turn on the same buffers (a kernel timed alone swings by ~10% at head_dim 128);
    # the separate call then times RA alone.
    out = subprocess.run(cmd if backward else cmd + ["--no-baseline"], check=True,
                         capture_output=True, text=True)
    rows = []
    for r in json.loads(out.stdout)["rows"]:
        name = "rajit RA + bias" if r["role"] == "ra" else "rajit plain (r=0, no bias)"
        rows.append((f"{name} [{r['tile']}]", r["ms"]))
    # The same call on folded rows Qf=[q_std|k_low], Kf=[k_std|q_low] (what rajit.nn emits).
    out = subprocess.run(cmd + ["--layout", "folded"] + (["--no-baseline"] if backward else []),
                         check=True, capture_output=True, text=True)
    folded = json.loads(out.stdout)["rows"]
    for i, r in enumerate(r for r in folded if r["role"] == "ra"):
        rows.insert(1 + i, (f"rajit RA + bias, folded operands [{r['tile']}]", r["ms"]))
    for r in folded:
        if r["role"] == "baseline":
            rows.append((f"rajit plain (r=0, no bias) [{r['tile']}]", r["ms"]))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rajit", required=True)
    ap.add_argument("--out", default="")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--backward", action="store_true", help="time forward + backward (3.5 x FLOPs)")
    args = ap.parse_args()
    props = torch.cuda.get_device_properties(0)
    l2 = getattr(props, "L2_cache_size", 50 * 2**20)
    print(f"device: {props.name}; torch {torch.__version__}")
    results = []
    for case in CASES[:2] if args.backward else CASES:  # backward: the two issue-5 targets
        label, B, H, T, Ds, R, Dv, causal, dtype = case
        f = flops(B, H, T, Ds, R, Dv, causal) * (3.5 if args.backward else 1.0)
        if args.backward:
            rows = rajit_rows(args.rajit, case, args.quick, True) + peers_fwd_bwd_for(case, l2, args.quick)
        else:
            rows = rajit_rows(args.rajit, case, args.quick) + peers_for(case, l2, args.quick)
        dt = "bf16" if dtype == torch.bfloat16 else "fp16"
        print(f"\n### {label}: (B,H,T)=({B},{H},{T}) d_std={Ds} r={R} head_dim={Dv} "
              f"{'causal' if causal else 'non-causal'} {dt}\n")
        print("| method | ms | TFLOP/s |\n| --- | ---: | ---: |")
        for row in rows:
            name, ms = row[0], row[1]
            if ms is None:
                print(f"| {name} | n/a | {row[2]} |")
            else:
                print(f"| {name} | {ms:.3f} | {f / ms / 1e9:.1f} |")
            results.append(dict(case=label, method=name, ms=ms, tflops=(f / ms / 1e9) if ms else None))
        sys.stdout.flush()
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(dict(device=props.name, torch=torch.__version__, results=results), fh, indent=1)


if __name__ == "__main__":
    main()
