#!/usr/bin/python3
"""torch_ref.py — check kiln's whole model against an independent PyTorch implementation.

    /usr/bin/python3 torch_ref.py DIR...      (each DIR written by ref_driver)

A nanoGPT-style GPT is written out below (tied head, the GELU the DIR's metadata names:
"gelu_tanh" or the exact "gelu", causal softmax attention, LayerNorm eps 1e-5, biases
everywhere). kiln's initial parameters are loaded with
load_state_dict; then the weighted loss (plain and normalized), the per-token and
per-position losses, every gradient, the three training steps (torch.optim.AdamW with
clip_grad_norm_) and the parameters and moments after them are compared.

Relative error of a tensor: max|kiln - torch| / max|torch| (absolute error if the torch
tensor is all zeros). Tolerance 1e-4 (float32). The same comparison of a float64 run of this
model against the float32 one is printed as a note: the floor any float32 implementation has.

Output is TAP.
"""
import json
import math
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

TOL = 1e-4

# Keys of this model's state_dict that a kiln checkpoint does not carry, and why:
#   lm_head.weight     tied to transformer.wte.weight (the same Parameter), loaded through it
#   h.N.attn.bias      nanoGPT's causal-mask buffer, not a parameter
IGNORED = ("lm_head.weight", ".attn.bias")


def read_safetensors(path):
    """An independent reader of the safetensors layout (8-byte LE header length, JSON, data)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, info in header.items():
        assert info["dtype"] == "F32", (path, name, info["dtype"])
        a, b = info["data_offsets"]
        arr = np.frombuffer(raw[base + a:base + b], dtype="<f4").reshape(info["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out, meta


class CausalSelfAttention(nn.Module):
    def __init__(self, d, n_head, block_size):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.register_buffer("bias", torch.tril(torch.ones(block_size, block_size))
                             .view(1, 1, block_size, block_size))

    def forward(self, x):
        B, T, C = x.shape
        hs = C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


# kiln's activation names and the torch modules that compute them
ACTIVATIONS = {"gelu_tanh": lambda: nn.GELU(approximate="tanh"), "gelu": lambda: nn.GELU()}


class MLP(nn.Module):
    def __init__(self, d, activation):
        super().__init__()
        self.c_fc = nn.Linear(d, 4 * d)
        self.gelu = ACTIVATIONS[activation]()
        self.c_proj = nn.Linear(4 * d, d)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, d, n_head, block_size, activation):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d, eps=1e-5)
        self.attn = CausalSelfAttention(d, n_head, block_size)
        self.ln_2 = nn.LayerNorm(d, eps=1e-5)
        self.mlp = MLP(d, activation)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, V, block_size, n_layer, n_head, d, activation):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(V, d),
            wpe=nn.Embedding(block_size, d),
            h=nn.ModuleList([Block(d, n_head, block_size, activation) for _ in range(n_layer)]),
            ln_f=nn.LayerNorm(d, eps=1e-5),
        ))
        self.lm_head = nn.Linear(d, V, bias=False)
        self.lm_head.weight = self.transformer.wte.weight

    def forward(self, idx, targets):
        B, T = idx.shape
        pos = torch.arange(T, dtype=torch.long)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        ce = F.cross_entropy(logits.view(B * T, -1), targets.view(-1), reduction="none")
        return ce.view(B, T)


def weighted(ce, w, normalize):
    B, T = ce.shape
    loss = (ce * w[None, :]).sum() / (B * T)
    return loss / w.mean() if normalize else loss


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def check(self, cond, msg):
        self.n += 1
        if not cond:
            self.failed += 1
        print(("ok" if cond else "not ok") + " %d - %s" % (self.n, msg), flush=True)

    def note(self, msg):
        print("# " + msg, flush=True)

    def done(self):
        print("1..%d" % self.n)
        print("%d passed, %d failed" % (self.n - self.failed, self.failed))
        return 1 if self.failed else 0


def relerr(a, b):
    a = a.detach().double()
    b = b.detach().double()
    if a.shape != b.shape:
        return float("inf")
    d = (a - b).abs().max().item()
    s = b.abs().max().item()
    return d / s if s > 0 else d


def build(cfg, dtype, state):
    torch.manual_seed(0)  # the init is overwritten; this only makes the unused init quiet
    m = GPT(cfg["vocab_size"], cfg["block_size"], cfg["n_layer"], cfg["n_head"], cfg["n_embd"], cfg["activation"])
    res = m.load_state_dict(state, strict=False)
    return m.to(dtype), res


def main():
    torch.set_num_threads(1)
    tap = Tap()
    for d in sys.argv[1:]:
        check_dir(tap, d)
    return tap.done()


def check_dir(tap, d):
    params0, meta = read_safetensors(d + "/model.safetensors")
    fwd, _ = read_safetensors(d + "/fwd.safetensors")
    train, hmeta = read_safetensors(d + "/train.safetensors")
    cfg = {k: int(meta[k]) for k in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd")}
    cfg["activation"] = meta["activation"]

    def check(cond, msg):
        tap.check(cond, "%s: %s" % (cfg["activation"], msg))

    def note(msg):
        tap.note("%s: %s" % (cfg["activation"], msg))

    note("config %s, batch %s, T %s" % (cfg, meta["batch"], meta["T"]))

    model, res = build(cfg, torch.float32, params0)
    missing = [k for k in res.missing_keys if not any(k.endswith(s) for s in IGNORED)]
    check(not res.unexpected_keys and not missing,
              "kiln checkpoint loads with load_state_dict: all %d kiln names map "
              "(ignored model keys: %s; unexpected %s, missing %s)"
              % (len(params0), ", ".join(sorted(set(k for k in res.missing_keys if k not in missing))) or "none",
                 res.unexpected_keys, missing))
    check(model.lm_head.weight is model.transformer.wte.weight, "lm_head tied to wte")
    names = list(params0.keys())
    sd = dict(model.named_parameters())
    check(sorted(names) == sorted(sd.keys()),
              "kiln's %d tensors are exactly the model's parameters" % len(names))

    idx = fwd["inputs"].long()
    tgt = fwd["targets"].long()
    w = fwd["weights"]
    # The same model in float64: the floor of float32 disagreement, reported as notes.
    model64, _ = build(cfg, torch.float64, params0)

    def run(m, dtype, normalize):
        m.zero_grad(set_to_none=True)
        ce = m(idx, tgt)
        loss = weighted(ce, w.to(dtype), normalize)
        loss.backward()
        return loss, ce, {n: p.grad.clone() for n, p in m.named_parameters()}

    loss, ce, grads = run(model, torch.float32, False)
    loss64, ce64, grads64 = run(model64, torch.float64, False)
    e = relerr(fwd["loss"], loss.reshape(1))
    check(e < TOL, "weighted loss: kiln %.7f torch %.7f (rel err %.2e)" % (fwd["loss"].item(), loss.item(), e))
    e = relerr(fwd["token_losses"], ce)
    check(e < TOL, "per-token losses [%d,%d] (rel err %.2e)" % (ce.shape[0], ce.shape[1], e))
    e = relerr(fwd["position_losses"], ce.mean(0))
    check(e < TOL, "per-position losses, mean over the batch (rel err %.2e)" % e)
    worst_g, worst_g64 = 0.0, 0.0
    for n in names:
        e = relerr(fwd["grad." + n], grads[n])
        worst_g = max(worst_g, e)
        worst_g64 = max(worst_g64, relerr(grads[n], grads64[n]))
        check(e < TOL, "grad %s %s (rel err %.2e)" % (n, list(grads[n].shape), e))
    note("max gradient rel err kiln vs torch %.2e; torch float32 vs float64 %.2e" % (worst_g, worst_g64))

    lossn, _, gradsn = run(model, torch.float32, True)
    e = relerr(fwd["loss_normalized"], lossn.reshape(1))
    check(e < TOL, "normalized weighted loss: kiln %.7f torch %.7f (rel err %.2e)"
              % (fwd["loss_normalized"].item(), lossn.item(), e))
    worst, wname = 0.0, ""
    for n in names:
        e = relerr(fwd["grad_normalized." + n], gradsn[n])
        if e >= worst:
            worst, wname = e, n
    check(worst < TOL, "all %d gradients of the normalized loss (max rel err %.2e, %s)" % (len(names), worst, wname))

    # Spread parameters: MLP inputs and logits O(1), where the GELU's form shows.
    spread, _ = read_safetensors(d + "/spread.safetensors")
    sparams = {n: spread[n] for n in names}
    model_s, _ = build(cfg, torch.float32, sparams)
    loss_s, ce_s, grads_s = run(model_s, torch.float32, False)
    e = relerr(spread["loss"], loss_s.reshape(1))
    check(e < TOL and relerr(spread["token_losses"], ce_s) < TOL,
          "spread parameters: loss kiln %.7f torch %.7f (rel err %.2e), per-token losses (rel err %.2e)"
          % (spread["loss"].item(), loss_s.item(), e, relerr(spread["token_losses"], ce_s)))
    worst, wname = 0.0, ""
    for n in names:
        e = relerr(spread["grad." + n], grads_s[n])
        if e >= worst:
            worst, wname = e, n
    check(worst < TOL, "spread parameters: all %d gradients (max rel err %.2e, %s)" % (len(names), worst, wname))
    # The other form moves the per-token losses far more than kiln and torch disagree.
    other = dict(cfg, activation="gelu" if cfg["activation"] == "gelu_tanh" else "gelu_tanh")
    model_o, _ = build(other, torch.float32, sparams)
    with torch.no_grad():
        ce_o = model_o(idx, tgt)
    gap = (ce_o - ce_s).abs().max().item()
    agree = (spread["token_losses"] - ce_s).abs().max().item()
    check(gap > 100 * max(agree, 1e-7),
          "spread parameters with %s instead: per-token losses move by up to %.2e, 100x more than kiln and torch "
          "differ (%.2e)" % (other["activation"], gap, agree))

    # Three AdamW steps with clipping, float32-rounded hyperparameters as kiln used them.
    h = {k: float(np.float32(hmeta[k])) for k in ("lr", "beta1", "beta2", "eps", "weight_decay", "clip")}
    steps = int(hmeta["steps"])
    note("AdamW %s, %d steps" % (h, steps))

    def train_steps(m, dtype):
        decay = [p for p in m.parameters() if p.dim() >= 2]
        nodecay = [p for p in m.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": h["weight_decay"]},
                                 {"params": nodecay, "weight_decay": 0.0}],
                                lr=h["lr"], betas=(h["beta1"], h["beta2"]), eps=h["eps"], foreach=False)
        losses, norms = [], []
        for s in range(steps):
            opt.zero_grad(set_to_none=True)
            ce = m(train["step_inputs"][s].long(), train["step_targets"][s].long())
            loss = weighted(ce, w.to(dtype), False)
            loss.backward()
            norms.append(float(torch.nn.utils.clip_grad_norm_(m.parameters(), h["clip"])))
            opt.step()
            losses.append(loss.item())
        state = {}
        for n, p in m.named_parameters():
            st = opt.state[p]
            state[n] = (p.detach().clone(), st["exp_avg"].clone(), st["exp_avg_sq"].clone())
        return losses, norms, state

    model, _ = build(cfg, torch.float32, params0)
    model64, _ = build(cfg, torch.float64, params0)
    losses, norms, after = train_steps(model, torch.float32)
    _, _, after64 = train_steps(model64, torch.float64)
    for s in range(steps):
        kl, kn = train["step_losses"][s].item(), train["grad_norms"][s].item()
        el = abs(kl - losses[s]) / abs(losses[s])
        en = abs(kn - norms[s]) / abs(norms[s])
        check(el < TOL and en < TOL and norms[s] > h["clip"],
                  "step %d: loss %.7f vs %.7f (rel %.1e), grad norm %.6f vs %.6f (rel %.1e) > clip %g"
                  % (s + 1, kl, losses[s], el, kn, norms[s], en, h["clip"]))
    worst_p, worst_p64, worst_m, worst_v, mname, vname = 0.0, 0.0, 0.0, 0.0, "", ""
    for n in names:
        p, m1, v1 = after[n]
        e = relerr(train[n], p)
        worst_p = max(worst_p, e)
        worst_p64 = max(worst_p64, relerr(p, after64[n][0]))
        check(e < TOL, "after %d AdamW steps: %s (rel err %.2e)" % (steps, n, e))
        em, ev = relerr(train["optim.m." + n], m1), relerr(train["optim.v." + n], v1)
        if em >= worst_m:
            worst_m, mname = em, n
        if ev >= worst_v:
            worst_v, vname = ev, n
    check(worst_m < TOL and worst_v < TOL,
              "AdamW moments after %d steps: m max rel err %.2e (%s), v %.2e (%s)"
              % (steps, worst_m, mname, worst_v, vname))
    note("max parameter rel err after training kiln vs torch %.2e; torch float32 vs float64 %.2e"
             % (worst_p, worst_p64))
    check_kernels(tap, d)


def check_kernels(tap, d):
    """The fused attention and the chunked output layer alone, against autograd in float64."""
    k, _ = read_safetensors(d + "/kernels.safetensors")
    for tag in ("32", "24"):
        nh = int(k["att%s.n_head" % tag].item())
        tile = int(k["att%s.tile" % tag].item())
        qkv = k["att%s.qkv" % tag].double().requires_grad_(True)
        B, T, C3 = qkv.shape
        C = C3 // 3
        q, kk, v = qkv.split(C, dim=2)
        heads = lambda t: t.view(B, T, nh, C // nh).transpose(1, 2)
        att = (heads(q) @ heads(kk).transpose(-2, -1)) / math.sqrt(C // nh)
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ heads(v)).transpose(1, 2).reshape(B, T, C)
        y.backward(k["att%s.dy" % tag].double())
        ey, eg = relerr(k["att%s.y" % tag], y), relerr(k["att%s.dqkv" % tag], qkv.grad)
        tap.check(ey < TOL and eg < TOL,
                  "fused attention B=%d T=%d head size %d (%d tiles of %d per side): y rel err %.2e, dqkv %.2e"
                  % (B, T, C // nh, (T + tile - 1) // tile, tile, ey, eg))
    x = k["out.x"].double().requires_grad_(True)
    w = k["out.w"].double().requires_grad_(True)
    tgt = k["out.targets"].long()
    pw = k["out.weights"].double()
    B, T = tgt.shape
    ce = F.cross_entropy(x @ w.t(), tgt.view(-1), reduction="none").view(B, T)
    loss = weighted(ce, pw, True)
    loss.backward()
    el, ec = relerr(k["out.loss"], loss.reshape(1)), relerr(k["out.losses"], ce)
    ex, ew = relerr(k["out.dx"], x.grad), relerr(k["out.dw"], w.grad)
    tap.check(max(el, ec, ex, ew) < TOL,
              "chunked output layer (%d rows, V=%d, chunks of 16, weighted, normalized): loss %.2e, "
              "per-token %.2e, dx %.2e, dw %.2e" % (B * T, w.shape[0], el, ec, ex, ew))


if __name__ == "__main__":
    sys.exit(main())
