#!/usr/bin/python3
"""nanogpt_check.py — docs/formats.md's nanoGPT loading code, run on kiln checkpoints.

    /usr/bin/python3 nanogpt_check.py DIR FORMATS_MD

DIR holds what nanogpt_kiln.lua wrote: <activation>.safetensors (a trained kiln model with
its AdamW moments) and <activation>.logprobs (kiln's log p(v) at every position of a fixed
batch) for activation gelu_tanh and gelu. The python block after the test's marker in
FORMATS_MD is executed as it stands, with nanogpt_model.py standing in for nanoGPT's
model.py; its load_kiln() builds the nanoGPT model. Checks, per activation:
  - load_kiln loads the file (strict=False; only the attn.bias mask buffers are missing)
  - nanoGPT's log-softmax of the logits matches kiln's log-probabilities within 1e-5, and
    its mean loss matches kiln's per-token losses
  - the same weights through the other GELU are off by much more than that
Output is TAP.
"""
import os
import re
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nanogpt_model  # noqa: E402

TOL = 1e-5          # log-probabilities, absolute
MARKER = "tests/reference/test_nanogpt.sh runs the code block below"


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def check(self, cond, msg):
        self.n += 1
        self.failed += 0 if cond else 1
        print(("ok" if cond else "not ok") + " %d - %s" % (self.n, msg), flush=True)

    def done(self):
        print("1..%d" % self.n)
        return 1 if self.failed else 0


def snippet(formats_md):
    """The python block following the marker in docs/formats.md."""
    with open(formats_md, encoding="utf-8") as f:
        text = f.read()
    at = text.find(MARKER)
    if at < 0:
        raise SystemExit("%s: no line with %r" % (formats_md, MARKER))
    m = re.compile(r"```python\n(.*?)```", re.S).search(text, at)
    return m.group(1)


def read_logprobs(path):
    tokens, rows = [], []
    with open(path) as f:
        for line in f:
            vals = line.split()
            tokens.append(int(vals[0]))
            rows.append([float(v) for v in vals[1:]])
    return torch.tensor(tokens), torch.tensor(rows, dtype=torch.float64)


def nanogpt_logprobs(model, tokens, rows):
    idx = tokens.view(rows, -1)
    with torch.no_grad():
        logits, loss = model(idx, idx)   # targets only to get logits at every position
    return torch.log_softmax(logits.double(), dim=-1).view(-1, logits.size(-1))


def other_gelu(model, activation):
    swap = torch.nn.GELU() if activation == "gelu_tanh" else torch.nn.GELU(approximate="tanh")
    for block in model.transformer.h:
        block.mlp.gelu = swap
    return model


def main():
    d, formats_md = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    sys.modules["model"] = nanogpt_model      # what `from model import GPT, GPTConfig` finds
    env = {"__name__": "kiln_formats_snippet"}
    exec(compile(snippet(formats_md), formats_md + " (nanoGPT loading code)", "exec"), env)
    load_kiln = env["load_kiln"]
    tap = Tap()
    for act in ("gelu_tanh", "gelu"):
        path = os.path.join(d, act + ".safetensors")
        tokens, kiln_lp = read_logprobs(os.path.join(d, act + ".logprobs"))
        n_rows = 2
        try:
            model = load_kiln(path)
            err = None
        except Exception as e:  # the check below reports it
            model, err = None, e
        tap.check(model is not None, "%s: load_kiln loads the kiln checkpoint into nanoGPT's GPT (%s)"
                  % (act, err or "no missing keys but the attn.bias buffers"))
        if model is None:
            continue
        gelu = type(model.transformer.h[0].mlp.gelu).__name__, model.transformer.h[0].mlp.gelu.approximate
        tap.check(gelu[1] == ("tanh" if act == "gelu_tanh" else "none"),
                  "%s: the MLP runs nn.GELU(approximate=%r)" % (act, gelu[1]))
        lp = nanogpt_logprobs(model, tokens, n_rows)
        diff = (lp - kiln_lp).abs().max().item()
        tap.check(diff < TOL, "%s: log-probabilities over %d positions x %d tokens agree within %g (max diff %.2e)"
                  % (act, lp.size(0), lp.size(1), TOL, diff))
        with torch.no_grad():
            targets = tokens.view(n_rows, -1)
            _, loss = model(targets[:, :-1], targets[:, 1:].contiguous())
        kiln_loss = -kiln_lp.view(n_rows, -1, kiln_lp.size(-1))[:, :-1, :].gather(
            2, targets[:, 1:].unsqueeze(-1)).mean().item()
        tap.check(abs(loss.item() - kiln_loss) < TOL, "%s: nanoGPT's loss %.6f, kiln's %.6f" % (act, loss.item(), kiln_loss))
        off = nanogpt_logprobs(other_gelu(model, act), tokens, n_rows)
        gap = (off - kiln_lp).abs().max().item()
        per_token = (off - kiln_lp).gather(1, torch.roll(tokens, -1).unsqueeze(1)).abs().max().item()
        tap.check(gap > 10 * TOL, "%s: through the other GELU the log-probabilities are off by up to %.2e "
                  "(%.2e on the next token's), > %g" % (act, gap, per_token, 10 * TOL))
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
