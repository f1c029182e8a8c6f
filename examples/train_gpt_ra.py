#!/usr/bin/env python3
"""Trains a small GPT-2-like model three ways with one seed and one data order, and compares them:

  baseline   plain causal attention (r = 0, no gates, no bias) through F.scaled_dot_product_attention
  ra_rajit   reciprocal attention (d_std 56 + r 8 -> 64, gates, learnable column bias) through rajit
  ra_torch   the same RA model through plain PyTorch (materialised scores): the reference

ra_rajit and ra_torch start from identical weights and see identical batches, so their losses
must track each other (the script reports the largest relative gap over the evaluations); the
step times show what the generated kernels buy. The corpus is generated here (no downloads): a
token language with local Markov structure and long-range copies, so attention has work to do.

  python examples/train_gpt_ra.py --steps 300 --device cuda --out runs/ra
Writes <out>/results.json and <out>/loss_curves.png (if matplotlib is installed)."""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import rajit  # noqa: E402
import rajit.nn  # noqa: E402


# ---- the corpus --------------------------------------------------------------------------

def make_corpus(n_tokens: int, vocab: int, seed: int) -> torch.Tensor:
    """Documents of sentences: each token follows a sparse order-2 Markov table, and with
    probability 0.25 a sentence instead repeats a span of 4-16 tokens from earlier in the same
    document (an induction/copy task: predictable only by attending far back)."""
    rng = random.Random(seed)
    n_ctx = 64  # hashed order-2 contexts
    table = [[rng.randrange(vocab) for _ in range(4)] for _ in range(n_ctx * n_ctx)]
    weights = [8, 4, 2, 1]
    out: list[int] = []
    while len(out) < n_tokens:
        doc = [0]  # token 0 starts a document
        doc_len = rng.randint(200, 1200)
        a, b = 1, 2
        while len(doc) < doc_len:
            if len(doc) > 32 and rng.random() < 0.25:
                n = rng.randint(4, 16)
                start = rng.randrange(1, len(doc) - n)
                doc.extend(doc[start:start + n])
                a, b = doc[-2], doc[-1]
                continue
            for _ in range(rng.randint(6, 20)):
                nxt = rng.choices(table[(a % n_ctx) * n_ctx + (b % n_ctx)], weights)[0]
                doc.append(nxt)
                a, b = b, nxt
        out.extend(doc)
    return torch.tensor(out[:n_tokens], dtype=torch.long)


# ---- the model ---------------------------------------------------------------------------

class Block(nn.Module):
    def __init__(self, cfg, attn_kwargs):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = rajit.nn.ReciprocalAttention(cfg.n_embd, cfg.n_head, cfg.seqlen, **attn_kwargs)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = nn.Sequential(nn.Linear(cfg.n_embd, 4 * cfg.n_embd), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * cfg.n_embd, cfg.n_embd))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg, attn_kwargs):
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.seqlen, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg, attn_kwargs) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as GPT-2
        for name, p in self.named_parameters():
            if name.endswith("weight") and p.dim() == 2:
                std = 0.02 / math.sqrt(2 * cfg.n_layer) if name.endswith("c_proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias") and p.dim() == 1 and "ln" not in name:
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for b in self.blocks:
            x = b(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.view(-1))


ARMS = {
    "baseline": dict(r=0, disc_bias=False, gates=False, backend="sdpa"),
    "ra_rajit": dict(d_std=56, r=8, disc_bias=True, gates=True, backend="rajit"),
    "ra_torch": dict(d_std=56, r=8, disc_bias=True, gates=True, backend="torch"),
}


# ---- training ----------------------------------------------------------------------------

def batches(data: torch.Tensor, cfg, seed: int):
    g = torch.Generator().manual_seed(seed)
    while True:
        ix = torch.randint(len(data) - cfg.seqlen - 1, (cfg.batch,), generator=g)
        x = torch.stack([data[i:i + cfg.seqlen] for i in ix])
        y = torch.stack([data[i + 1:i + 1 + cfg.seqlen] for i in ix])
        yield x, y


def run_arm(name, cfg, train, val_batches, device, dtype):
    torch.manual_seed(cfg.seed)  # identical init for arms with identical parameter shapes
    attn_kwargs = dict(ARMS[name])
    if cfg.tiny:  # tiny widths: head_dim 32 with 28 + 4
        if attn_kwargs["r"]:
            attn_kwargs.update(d_std=28, r=4)
    model = GPT(cfg, attn_kwargs).to(device)
    if device.type == "cpu":
        model = model.double()  # rajit's CPU path is the float64 reference
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.1)
    fwd = torch.compile(model, fullgraph=True) if cfg.compile else model
    autocast = (torch.autocast("cuda", dtype=dtype) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))

    def lr_at(step):
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    def evaluate():
        model.eval()
        with torch.no_grad(), autocast:
            losses = [fwd(x.to(device), y.to(device)).item() for x, y in val_batches]
        model.train()
        return sum(losses) / len(losses)

    evals, train_losses, step_ms = [], [], []
    data = batches(train, cfg, cfg.seed + 1)
    for step in range(cfg.steps + 1):
        if step % cfg.eval_every == 0 or step == cfg.steps:
            v = evaluate()
            evals.append((step, v))
            med = statistics.median(step_ms[cfg.skip_timing:]) if len(step_ms) > cfg.skip_timing else float("nan")
            print(f"[{name}] step {step:4d}  val {v:.4f}  step {med:.1f} ms (median)", flush=True)
        if step == cfg.steps:
            break
        x, y = next(data)
        x, y = x.to(device), y.to(device)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with autocast:
            loss = fwd(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        step_ms.append((time.perf_counter() - t0) * 1e3)
        train_losses.append(loss.item())
        if not math.isfinite(train_losses[-1]):
            raise FloatingPointError(f"[{name}] loss is {train_losses[-1]} at step {step}")
    timed = step_ms[cfg.skip_timing:] or step_ms
    out = {"evals": evals, "train_loss": train_losses, "step_ms_median": statistics.median(timed),
           "step_ms_mean": statistics.fmean(timed), "params": sum(p.numel() for p in model.parameters())}
    if attn_kwargs.get("gates"):
        out["w_rec_final"] = [[round(x, 4) for x in b.attn.w_rec.tolist()] for b in model.blocks
                              if b.attn.w_rec is not None]
    return out


def plot(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return False
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, r in results.items():
        if "evals" not in r:
            continue
        steps, losses = zip(*r["evals"])
        a.plot(steps, losses, marker="o", label=f"{name} ({r['step_ms_median']:.1f} ms/step)")
        tl = r["train_loss"]
        k = 10
        smooth = [sum(tl[max(0, i - k + 1):i + 1]) / len(tl[max(0, i - k + 1):i + 1]) for i in range(len(tl))]
        b.plot(range(len(tl)), smooth, label=name)
    a.set(title="validation loss", xlabel="step", ylabel="cross-entropy")
    b.set(title="training loss (10-step mean)", xlabel="step")
    a.legend()
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="runs/train_gpt_ra")
    p.add_argument("--arms", default="baseline,ra_rajit,ra_torch")
    p.add_argument("--n-layer", type=int, default=6)
    p.add_argument("--n-embd", type=int, default=384)
    p.add_argument("--n-head", type=int, default=6)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    p.add_argument("--compile", action="store_true", help="torch.compile(fullgraph=True) each model")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--tiny", action="store_true",
                   help="2 layers, 64 wide, T=32: a CPU smoke run (float64 reference mode)")
    cfg = p.parse_args(argv)
    if cfg.tiny:
        cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.seqlen, cfg.batch = 2, 64, 2, 32, 4
        cfg.eval_batches = 2
    cfg.skip_timing = min(10, cfg.steps // 3)  # warm-up steps (kernel compiles, autotune) untimed
    device = torch.device(cfg.device)
    dtype = torch.bfloat16 if cfg.dtype == "bf16" else torch.float16
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    os.makedirs(cfg.out, exist_ok=True)

    t0 = time.perf_counter()
    need = cfg.batch * (cfg.seqlen + 1) * (cfg.steps + 50)
    corpus = make_corpus(min(max(need, 200_000), 2_000_000) + 100_000, cfg.vocab, cfg.seed)
    train, val = corpus[:-100_000], corpus[-100_000:]
    vb = batches(val, cfg, cfg.seed + 2)
    val_batches = [next(vb) for _ in range(cfg.eval_batches)]
    print(f"corpus: {len(train)} train / {len(val)} val tokens, vocab {cfg.vocab} "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {device_name}; model: {cfg.n_layer} layers, {cfg.n_embd} wide, {cfg.n_head} heads, "
          f"T={cfg.seqlen}, batch {cfg.batch}, {cfg.dtype}{', compiled' if cfg.compile else ''}", flush=True)

    results = {}
    for name in cfg.arms.split(","):
        if name not in ARMS:
            p.error(f"--arms: unknown arm {name!r}; choose from {', '.join(ARMS)}")
        t_arm = time.perf_counter()
        try:
            results[name] = run_arm(name, cfg, train, val_batches, device, dtype)
        except (rajit.RajitError, ValueError) as e:
            if "not built yet" not in str(e):
                raise
            print(f"[{name}] skipped: {e}", flush=True)
            results[name] = {"skipped": str(e)}
            continue
        results[name]["wall_s"] = time.perf_counter() - t_arm

    summary = {}
    a, b = results.get("ra_rajit", {}), results.get("ra_torch", {})
    if "evals" in a and "evals" in b:
        gaps = [abs(x[1] - y[1]) / y[1] for x, y in zip(a["evals"], b["evals"])]
        summary["ra_rajit_vs_ra_torch_max_rel_loss_gap"] = max(gaps)
        summary["ra_rajit_speedup_vs_ra_torch"] = b["step_ms_median"] / a["step_ms_median"]
        summary["tracks_within_1pct"] = max(gaps) <= 0.01
    base = results.get("baseline", {})
    if "evals" in base and "evals" in a:
        summary["ra_rajit_minus_baseline_final_val"] = a["evals"][-1][1] - base["evals"][-1][1]
        summary["ra_rajit_step_time_vs_baseline"] = a["step_ms_median"] / base["step_ms_median"]
    out = {"device": device_name, "torch": torch.__version__, "config": {k: v for k, v in vars(cfg).items()},
           "arms": results, "summary": summary, "wall_s": time.perf_counter() - t0}
    with open(os.path.join(cfg.out, "results.json"), "w") as f:
        json.dump(out, f, indent=1)
    plotted = plot(results, os.path.join(cfg.out, "loss_curves.png"))
    print("summary: " + json.dumps(summary), flush=True)
    print(f"wrote {cfg.out}/results.json" + (f" and {cfg.out}/loss_curves.png" if plotted else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
