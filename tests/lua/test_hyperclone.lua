#!/usr/bin/env kiln
-- HyperCloning (kiln.grow.width with method = "hyperclone", docs/warmstart.md): the grown
-- model's log-probabilities over the whole vocabulary equal the small model's at every
-- position, at 2x and 4x width, under SP and μP, with and without the paired noise; the
-- tiling itself (q/k/v thirds, heads, ln_f); training from the clone; the errors.
local t = dofile("tests/lua/tap.lua")
local kiln = require "kiln"
local grow = kiln.grow
kiln.set_threads(1)

local V, T = 256, 16

-- A small model whose every parameter is far from its init: LayerNorm weights away from 1,
-- non-zero biases, so a construction that got any of them wrong shows.
local function small_model(extra)
  local c = { vocab_size = V, block_size = T, n_layer = 2, n_head = 2, n_embd = 32, seed = 4 }
  for k, v in pairs(extra or {}) do c[k] = v end
  local m = kiln.model(c)
  local rng = kiln.rng(17)
  for _, p in ipairs(m:params()) do
    local x = m:param(p.name)
    local noise = x:clone()
    noise:normal(rng, (p.kind == "norm" and 0.3) or (p.kind == "bias" and 0.1) or 0.05)
    x:add(noise)
  end
  return m
end

-- One batch of V rows with the same random inputs; row r's targets are all token r - 1, so
-- losses()[r][t] = -log p(r - 1 | position t): the whole log-probability table.
local probe = kiln.batch(V, T)
do
  local rng = kiln.rng(23)
  local inputs = {}
  for pos = 1, T do inputs[pos] = math.floor(rng:uniform() * V) % V end
  for r = 1, V do
    for pos = 1, T do probe:set(r, pos, inputs[pos], r - 1) end
  end
end

local function logprobs(m)
  m:forward(probe)
  return m:losses()
end

-- max |Δ log p| between two models, and the largest |log p| (the scale)
local function compare(a, b)
  local la, lb = logprobs(a), logprobs(b)
  local scale = la:stats().max
  local d = la:clone():add(lb, -1):stats()
  return math.max(d.max, -d.min), scale
end

for _, par in ipairs { "sp", "mup" } do
  local extra = par == "mup" and { parametrization = "mup", base_width = 32, attn_mult = 4, output_mult = 1.5 } or nil
  local small = small_model(extra)
  for _, n in ipairs { 2, 4 } do
    for _, noise in ipairs { false, 10 } do
      local big, r = grow.width(small, { n_embd = 32 * n, n_head = 2 * n }, { method = "hyperclone", noise = noise, seed = 3 })
      local diff, scale = compare(small, big)
      t.ok(diff < 2e-5 * scale and big:config().n_embd == 32 * n,
        ("%s x%d%s: max |log p(big) - log p(small)| over %d x %d positions and targets = %.3g (log p scale %.3g)"):format(
          par, n, noise and (" with noise at %d dB"):format(noise) or "", V, T, diff, scale))
      if not noise and n == 2 then
        t.ok(r.method == "hyperclone" and r.factor == 2 and math.abs(r.readout_scale - (par == "sp" and 0.5 or 1)) < 1e-15,
          ("%s recipe: factor 2, readout scale %g (%s)"):format(par, r.readout_scale,
            par == "sp" and "ln_f halved" or "the μP readout multiplier already halves"))
      end
    end
  end
  -- controls: the comparison sees a change of function (zero-padding does not preserve it,
  -- nor does the clone with ln_f left unscaled under SP)
  local szp = grow.width(small, { n_embd = 64, n_head = 4 }, { shrink = 1, perturb = "none" })
  local d_szp = compare(small, szp)
  local clone = grow.width(small, { n_embd = 64, n_head = 4 }, { method = "hyperclone" })
  clone:param("ln_f.weight"):scale(1.01)
  local d_ln = compare(small, clone)
  t.ok(d_szp > 1e-2 and d_ln > 1e-3, ("%s controls: zero-padded copy differs by %.3g, clone with ln_f weight x1.01 by %.3g"):format(par, d_szp, d_ln))
  -- μP: a big config with its own base width changes the multipliers; the clone compensates
  if par == "mup" then
    local big, r = grow.width(small, { n_embd = 64, n_head = 4, base_width = 64, attn_mult = 2 }, { method = "hyperclone" })
    local diff, scale = compare(small, big)
    t.ok(diff < 2e-5 * scale and math.abs(r.query_scale - 2) < 1e-12 and math.abs(r.readout_scale - 1 / 2) < 1e-12,
      ("mup x2 with base_width 64 and attn_mult 2: same function (max diff %.3g), query scale %g, readout scale %g"):format(
        diff, r.query_scale, r.readout_scale))
  end
end

-- the construction, looked at directly (x2, SP)
do
  local small = small_model()
  local big = grow.width(small, { n_embd = 64, n_head = 4 }, { method = "hyperclone" })
  local function eq(a, b) return a:clone():add(b, -1):norm() == 0 end
  local ws, wb = small:param("h.1.attn.c_attn.weight"), big:param("h.1.attn.c_attn.weight")
  local ok = true
  for j = 0, 2 do
    local want = ws:narrow(1, j * 32 + 1, 32):clone():scale(0.5)
    for a = 0, 1 do
      for b = 0, 1 do ok = ok and eq(wb:narrow(1, j * 64 + a * 32 + 1, 32):narrow(2, b * 32 + 1, 32), want) end
    end
  end
  t.ok(ok, "c_attn: each q/k/v third is its small third tiled 2 x 2 and halved (heads cloned)")
  local bs, bb = small:param("h.0.attn.c_attn.bias"), big:param("h.0.attn.c_attn.bias")
  t.ok(eq(bb:narrow(1, 65 + 32, 32), bs:narrow(1, 33, 32)) and eq(bb:narrow(1, 129, 32), bs:narrow(1, 65, 32)),
    "c_attn bias: the k third tiled, the v third starting at row 2·64 + 1")
  local es, eb = small:param("wte.weight"), big:param("wte.weight")
  t.ok(eq(eb:narrow(2, 1, 32), es) and eq(eb:narrow(2, 33, 32), es), "wte tiled along d, not scaled")
  local fs, fb = small:param("ln_f.weight"), big:param("ln_f.weight")
  t.ok(eq(fb:narrow(1, 33, 32), fs:clone():scale(0.5)), "SP: ln_f weight tiled and halved")
  local ls, lb = small:param("h.0.ln_2.bias"), big:param("h.0.ln_2.bias")
  t.ok(eq(lb:narrow(1, 1, 32), ls) and eq(lb:narrow(1, 33, 32), ls), "block LayerNorm bias tiled, unscaled")
  local noisy = grow.width(small, { n_embd = 64, n_head = 4 }, { method = "hyperclone", noise = 10, seed = 1 })
  local cb = noisy:param("h.0.mlp.c_fc.weight")
  local left, right = cb:narrow(1, 1, 128):narrow(2, 1, 32), cb:narrow(1, 1, 128):narrow(2, 33, 32)
  local want = small:param("h.0.mlp.c_fc.weight"):clone():scale(0.5)
  local sum = left:clone():add(right):add(want, -2):norm()
  local nz = left:clone():add(want, -1)
  local snr = 10 * math.log(want:norm() ^ 2 / nz:norm() ^ 2, 10)
  t.ok(sum < 1e-5 and math.abs(snr - 10) < 0.5,
    ("noise = 10 dB: column blocks get +N and -N (|sum - 2W/2| = %.2g), measured SNR %.2f dB"):format(sum, snr))
end

-- training from the clone. Without noise every copy gets the same gradient, so the clone
-- stays exactly tiled (a small model in a big one's clothes); the paired noise changes the
-- backward pass (Wᵀδ differs between paired column blocks) and the copies drift apart.
do
  local small = small_model()
  for _, noise in ipairs { false, 20 } do
    local big = grow.width(small, { n_embd = 64, n_head = 4 }, { method = "hyperclone", noise = noise })
    local losses = {}
    local s = kiln.train { model = big, optimizer = kiln.adamw(big, { lr = 3e-3, weight_decay = 0 }),
                           data = kiln.dataset("tests/data/tiny_en.txt"), steps = 30, batch = 4, context = T, quiet = true,
                           on_step = function(info) losses[#losses + 1] = info.loss end }
    local first, last = 0, 0
    for i = 1, 5 do first = first + losses[i] / 5; last = last + losses[#losses - 5 + i] / 5 end
    local w = big:param("h.0.mlp.c_fc.weight")
    local rows = w:narrow(1, 1, 128):clone():add(w:narrow(1, 129, 128), -1):norm()
    local cols = w:narrow(2, 1, 32):clone():add(w:narrow(2, 33, 32), -1):norm()
    t.ok(s.status == "complete" and last < first - 0.2,
      ("noise %s: the clone trains: loss %.3f (first 5 steps) -> %.3f (last 5)"):format(tostring(noise), first, last))
    if noise then
      t.ok(rows > 1e-3 and cols > 1e-3, ("noise 20 dB: after 30 steps the copies differ (|Δ rows| %.3g, |Δ columns| %.3g)"):format(rows, cols))
    else
      -- (0 here; the bound only allows a BLAS whose edge tiles round differently)
      t.ok(rows < 1e-6 * w:norm() and cols < 1e-6 * w:norm(),
        ("no noise: after 30 steps c_fc is still tiled (|Δ rows| %g, |Δ columns| %g)"):format(rows, cols))
    end
  end
end

-- errors
do
  local small = small_model()
  local H = { method = "hyperclone" }
  t.err("n_head must be 2 x 2 = 4", grow.width, small, { n_embd = 64, n_head = 2 }, H)
  t.err("multiple of the small model's 32", grow.width, small, { n_embd = 48, n_head = 3 }, H)
  t.err("keeps block_size", grow.width, small, { n_embd = 64, n_head = 4, block_size = 32 }, H)
  t.err("does not apply to method \"hyperclone\"", grow.width, small, { n_embd = 64, n_head = 4 }, { method = "hyperclone", shrink = 1 })
  t.err("noise must be", grow.width, small, { n_embd = 64, n_head = 4 }, { method = "hyperclone", noise = "lots" })
  t.err("argument 'opts.method' must be", grow.width, small, { n_embd = 64, n_head = 4 }, { method = "clone" })
end
t.done()
