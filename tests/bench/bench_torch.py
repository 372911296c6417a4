#!/usr/bin/python3
"""bench_torch.py — the PyTorch anchor of `make bench` (docs/guide.md, Benchmarks): a nanoGPT-style GPT with the
same shapes as kiln's (tied head, GELU tanh, explicit causal softmax attention, biases,
LayerNorm eps 1e-5), AdamW(3e-4, betas 0.9/0.95, wd 0.1 on 2-D tensors), clip 1.0, random
tokens.

    bench_torch.py CFG THREADS [STEPS [WARMUP]]
        CFG: S, M, L, LC, V, M256 ... M4096 (as tests/bench/bench.c) or layers,d,heads,T,B[,V]

Run it the way PyTorch is fastest here (tests/bench/run does):
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
    OMP_WAIT_POLICY=PASSIVE OPENBLAS_THREAD_TIMEOUT=4 OPENBLAS_CORETYPE=Haswell
Prints one key=value line like tests/bench/bench.c.
"""
import math
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# layers, d, heads, T, B, V
CONFIGS = {"S": (4, 128, 4, 256, 16, 256), "M": (6, 256, 8, 256, 16, 256),
           "L": (8, 512, 8, 512, 8, 256), "LC": (6, 256, 8, 2048, 2, 256),
           "V": (4, 256, 8, 256, 16, 50257)}
for _t in (256, 512, 1024, 2048, 4096):
    CONFIGS["M%d" % _t] = (6, 256, 8, _t, 4096 // _t, 256)


class Attention(nn.Module):
    def __init__(self, d, nh, T):
        super().__init__()
        self.nh = nh
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.register_buffer("mask", torch.tril(torch.ones(T, T, dtype=torch.bool)).view(1, 1, T, T))

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.nh, C // self.nh).transpose(1, 2)
        k = k.view(B, T, self.nh, C // self.nh).transpose(1, 2)
        v = v.view(B, T, self.nh, C // self.nh).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // self.nh))
        att = F.softmax(att.masked_fill(~self.mask[:, :, :T, :T], float("-inf")), dim=-1)
        return self.c_proj((att @ v).transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    def __init__(self, d, nh, T):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = Attention(d, nh, T)
        self.ln_2 = nn.LayerNorm(d)
        self.c_fc = nn.Linear(d, 4 * d)
        self.c_proj = nn.Linear(4 * d, d)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, V, L, d, nh, T):
        super().__init__()
        self.wte = nn.Embedding(V, d)
        self.wpe = nn.Embedding(T, d)
        self.h = nn.ModuleList([Block(d, nh, T) for _ in range(L)])
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, V, bias=False)
        self.lm_head.weight = self.wte.weight
        for n, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * L) if n.endswith("c_proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)
            elif "ln" in n and n.endswith("weight"):
                nn.init.ones_(p)
            else:
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for b in self.h:
            x = b(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: bench_torch.py S|M|L|LC|V|M256..M4096|layers,d,heads,T,B[,V] THREADS [STEPS [WARMUP]]")
    name = sys.argv[1]
    if name in CONFIGS:
        L, d, nh, T, B, V = CONFIGS[name]
    else:
        dims = [int(x) for x in name.split(",")]
        L, d, nh, T, B = dims[:5]
        V = dims[5] if len(dims) > 5 else 256
    threads = int(sys.argv[2])
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    warmup = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    model = GPT(V, L, d, nh, T)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    nodecay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": nodecay, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95), eps=1e-8)
    times = []
    loss = torch.tensor(0.0)
    for s in range(warmup + steps):
        idx = torch.randint(0, V, (B, T))
        tgt = torch.randint(0, V, (B, T))
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(idx, tgt)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(1e3 * (time.perf_counter() - t0))
        print("bench_torch %s t%d step %d: %.1f ms, loss %.4f, grad norm %.3f"
              % (name, threads, s, times[-1], loss.item(), norm.item()), file=sys.stderr)
    meas = sorted(times[warmup:])
    k = len(meas)
    med = meas[k // 2] if k % 2 else 0.5 * (meas[k // 2 - 1] + meas[k // 2])
    tok_s = B * T / (med * 1e-3)
    N = sum(p.numel() for p in model.parameters()) - model.wpe.weight.numel()
    flops = 6 * N + 12 * L * d * T
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print("cfg=%s threads=%d steps=%d tok_s=%.1f step_ms=%.2f gflops=%.2f rss_mib=%.1f loss=%.4f params=%d"
          % (name, threads, steps, tok_s, med, tok_s * flops * 1e-9, rss, loss.item(), N))


if __name__ == "__main__":
    main()
