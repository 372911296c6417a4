#!/usr/bin/python3
"""gen_torch.py — the PyTorch side of tests/bench/gen.sh: nanoGPT's sample.py loop (a full
forward over the context for every new token, the context cropped to block_size, logits of
the last position only, temperature 1, multinomial sampling) under torch.no_grad, on the
model of bench_torch.py (same shapes as kiln's).

    gen_torch.py CFG THREADS NEW_TOKENS [REPEATS]    (CFG: S, M, L or layers,d,heads,T)

Prints one key=value line like tests/bench/gen.lua: the median over REPEATS timed runs
after one untimed warm-up run.
"""
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_torch import CONFIGS, GPT  # noqa: E402


def next_logits(model, idx):
    """nanoGPT's inference forward: every position through the blocks, lm_head on the last."""
    T = idx.size(1)
    x = model.wte(idx) + model.wpe(torch.arange(T))
    for block in model.h:
        x = block(x)
    return model.lm_head(model.ln_f(x)[:, -1, :])


@torch.no_grad()
def generate(model, idx, new_tokens, block_size):
    for _ in range(new_tokens):
        idx_cond = idx if idx.size(1) <= block_size else idx[:, -block_size:]
        probs = F.softmax(next_logits(model, idx_cond), dim=-1)
        idx = torch.cat((idx, torch.multinomial(probs, num_samples=1)), dim=1)
    return idx


def main():
    if len(sys.argv) < 4:
        sys.exit("usage: gen_torch.py S|M|L|layers,d,heads,T THREADS NEW_TOKENS [REPEATS]")
    name = sys.argv[1]
    L, d, nh, T = CONFIGS[name][:4] if name in CONFIGS else map(int, name.split(","))
    threads, new = int(sys.argv[2]), int(sys.argv[3])
    repeats = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    model = GPT(256, L, d, nh, T).eval()
    prompt = torch.full((1, 1), 10, dtype=torch.long)
    generate(model, prompt, new, T)
    times = []
    for r in range(repeats):
        torch.manual_seed(r + 1)
        t0 = time.perf_counter()
        out = generate(model, prompt, new, T)
        times.append(time.perf_counter() - t0)
        assert out.size(1) == new + 1
        print("gen torch %s t%d run %d: %.3f s, %.1f tok/s" % (name, threads, r + 1, times[-1], new / times[-1]),
              file=sys.stderr)
    times.sort()
    k = len(times)
    med = times[k // 2] if k % 2 else 0.5 * (times[k // 2 - 1] + times[k // 2])
    print("cfg=%s threads=%d new=%d tok_s=%.1f seconds=%.4f" % (name, threads, new, new / med, med))


if __name__ == "__main__":
    main()
