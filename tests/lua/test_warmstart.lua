#!/usr/bin/env kiln
-- μP and growth (docs/warmstart.md): the μP table's init stds and effective per-group
-- learning rates at two widths, measured on real models and optimizers; grow.width's exact
-- block placement (q/k/v thirds, heads), its perturbation statistics, training and
-- save/load of a grown model; grow.depth's identity blocks.
local t = dofile("tests/lua/tap.lua")
local kiln = require "kiln"
local mup, grow = kiln.mup, kiln.grow
local dir = t.tmpdir()
kiln.set_threads(1)

local function cfg(d, extra)
  local c = { vocab_size = 256, block_size = 32, n_layer = 2, n_head = d // 16, n_embd = d,
              parametrization = "mup", base_width = 32, seed = 5 }
  for k, v in pairs(extra or {}) do c[k] = v end
  return c
end

local function rms(tensor)
  return tensor:norm() / math.sqrt(tensor:numel())
end

-- 1. The μP table at widths 32 (base, width_mult 1) and 128 (width_mult 4) ------------
for _, d in ipairs { 32, 128 } do
  local wm = d / 32
  local model = kiln.model(cfg(d))
  local rows = {}
  for _, r in ipairs(mup.table(model, { lr = 0.01 })) do rows[r.name] = r end
  -- the numbers of the μP table in docs/warmstart.md §1 (multiplier form, base std 0.02, 2 layers)
  local want = {
    { "transformer.wte.weight", role = "readout", std = 0.02, lr = 0.01, wd = 1 },
    { "transformer.wpe.weight", role = "input", std = 0.02, lr = 0.01, wd = 1 },
    { "transformer.h.0.attn.c_attn.weight", role = "hidden", std = 0.02 / math.sqrt(wm), lr = 0.01 / wm, wd = wm },
    { "transformer.h.0.attn.c_proj.weight", role = "hidden", std = 0.01 / math.sqrt(wm), lr = 0.01 / wm, wd = wm },
    { "transformer.h.1.mlp.c_fc.weight", role = "hidden", std = 0.02 / math.sqrt(wm), lr = 0.01 / wm, wd = wm },
    { "transformer.h.1.mlp.c_proj.weight", role = "hidden", std = 0.01 / math.sqrt(wm), lr = 0.01 / wm, wd = wm },
    { "transformer.h.1.mlp.c_fc.bias", role = "bias", std = 0, lr = 0.01, wd = 0 },
    { "transformer.ln_f.weight", role = "norm", std = 0, lr = 0.01, wd = 0 },
  }
  for _, w in ipairs(want) do
    local name = w[1]
    local r = rows[name]
    t.ok(r.role == w.role and math.abs(r.init_std - w.std) < 1e-15 and math.abs(r.lr - w.lr) < 1e-15 and r.wd_scale == w.wd,
      ("d=%d %s: table role %s, init std %.5g, lr %.5g, wd x%g"):format(d, name, r.role, r.init_std, r.lr, r.wd_scale))
    if w.std > 0 then
      local p = model:param(name)
      local tol = 4 / math.sqrt(2 * p:numel())           -- 4 sds of a sample std, relative
      t.near(rms(p) / w.std, 1, tol, ("d=%d %s: the model's init std %.5g matches the table"):format(d, name, rms(p)))
    end
  end
  -- effective per-group lr: Adam's first step moves every weight by lr_eff·sign(g) (wd 0,
  -- no clipping, |g| >> eps), so the largest move in each tensor is its effective lr
  local opt = mup.optimizer(model, { lr = 0.01, weight_decay = 0.1, clip = 0 })
  local ds = kiln.dataset("tests/data/tiny_en.txt")
  local batch = kiln.batch(4, 32)
  ds:sample(batch, kiln.rng(1))
  model:zero_grad(); model:forward(batch); model:backward()
  local before = {}
  for _, w in ipairs(want) do before[w[1]] = model:param(w[1]):clone() end
  opt:step({ weight_decay = 0 })
  for _, w in ipairs(want) do
    local name = w[1]
    local g = opt:group(name)
    local delta = before[name]:add(model:param(name), -1):stats()
    local moved = math.max(-delta.min, delta.max)
    t.ok(math.abs(g.lr_scale * 0.01 - w.lr) < 1e-12 and g.wd_scale == w.wd and math.abs(moved / w.lr - 1) < 1e-3,
      ("d=%d %s: optimizer lr_scale %.4g, wd_scale %g; measured first-step move %.6g (lr %.6g)"):format(
        d, name, g.lr_scale, g.wd_scale, moved, w.lr))
  end
end

-- SP: every scale 1, and mup.optimizer is a plain AdamW
do
  local sp = kiln.model { vocab_size = 256, block_size = 32, n_layer = 1, n_head = 4, n_embd = 64 }
  local all_one = true
  for _, r in ipairs(mup.table(sp)) do
    all_one = all_one and r.lr_scale == 1 and r.wd_scale == ((r.kind == "bias" or r.kind == "norm") and 0 or 1)
  end
  t.ok(all_one and mup.width_mult(sp) == 1, "SP model: every lr scale 1, wd scale 1 (0 for biases and norms)")
  t.eq(mup.optimizer(sp, { lr = 1e-3 }):group("transformer.h.0.mlp.c_fc.weight").lr_scale, 1, "SP optimizer: no lr scaling")
  local w = mup.widen({ n_embd = 64, n_head = 4, n_layer = 2 }, 2)
  t.ok(w.n_embd == 128 and w.n_head == 8 and w.n_layer == 2, "widen x2 keeps the head size")
end

-- 2. grow.width: exact placement with λ = 1 and no perturbation -----------------------
local small = kiln.model(cfg(32, { seed = 7 }))
do
  -- train the small model a little so its weights are not the init's
  kiln.train { model = small, optimizer = mup.optimizer(small, { lr = 3e-3 }), data = kiln.dataset("tests/data/tiny_en.txt"),
               steps = 5, batch = 4, context = 32, quiet = true }
end

local function exact_blocks(big, what)
  local worst, elsewhere = 0, 0
  for _, p in ipairs(big:params()) do
    local sq_small = small:param(p.name):norm() ^ 2
    local sq_big = big:param(p.name):norm() ^ 2
    for _, pair in ipairs(grow.blocks(small, big, p.name)) do
      worst = math.max(worst, pair[2]:clone():add(pair[1], -1):norm())
    end
    elsewhere = math.max(elsewhere, math.abs(sq_big - sq_small))
  end
  t.ok(worst == 0 and elsewhere < 1e-9, ("%s: small weights exactly in their blocks (max diff %g), nothing elsewhere (|Σbig² - Σsmall²| %g)"):format(what, worst, elsewhere))
end

local big, recipe = grow.width(small, { n_embd = 64, n_head = 4 }, { shrink = 1, perturb = "none" })
exact_blocks(big, "width 32 -> 64, head size fixed")
do
  -- explicitly: each q/k/v third of c_attn holds the small third in its top-left corner
  local ws, wb = small:param("h.1.attn.c_attn.weight"), big:param("h.1.attn.c_attn.weight")
  local ok = true
  for j = 0, 2 do
    local third_b = wb:narrow(1, j * 64 + 1, 64)
    ok = ok and third_b:narrow(1, 1, 32):narrow(2, 1, 32):clone():add(ws:narrow(1, j * 32 + 1, 32), -1):norm() == 0
    ok = ok and third_b:narrow(1, 33, 32):norm() == 0 and third_b:narrow(2, 33, 32):norm() == 0
  end
  t.ok(ok, "c_attn: q, k and v each in the top-left corner of their own third, zeros around them")
  local bb, bs = big:param("h.0.attn.c_attn.bias"), small:param("h.0.attn.c_attn.bias")
  t.ok(bb:narrow(1, 65, 32):clone():add(bs:narrow(1, 33, 32), -1):norm() == 0 and bb:narrow(1, 97, 32):norm() == 0,
    "c_attn bias: the k part at the start of the k third")
  t.eq(big:param("ln_f.weight"):narrow(1, 33, 32):norm(), 0, "LayerNorm weight zero-padded (norm = szp, σ = 0)")
  t.ok(recipe.op == "width" and recipe.shrink == 1 and recipe.sigma == 0 and recipe.to_n_embd == 64, "recipe fields")
  t.eq(big:config().base_width, 32, "the grown model keeps the small model's base width")
end
-- head size grows instead (n_head fixed): each head's block at the start of its own head
do
  local b2 = grow.width(small, { n_embd = 64, n_head = 2 }, { shrink = 1, perturb = "none" })
  exact_blocks(b2, "width 32 -> 64, n_head fixed")
  local ws, wb = small:param("h.0.attn.c_attn.weight"), b2:param("h.0.attn.c_attn.weight")
  -- small q head 1 = rows 17..32; big q head 1 = rows 33..64, its first 16 rows
  t.ok(wb:narrow(1, 33, 16):narrow(2, 1, 32):clone():add(ws:narrow(1, 17, 16), -1):norm() == 0 and
       wb:narrow(1, 17, 16):norm() == 0, "n_head fixed: query head 1 lands at the start of big head 1")
  local ps, pb = small:param("h.0.attn.c_proj.weight"), b2:param("h.0.attn.c_proj.weight")
  t.ok(pb:narrow(1, 1, 32):narrow(2, 33, 16):clone():add(ps:narrow(2, 17, 16), -1):norm() == 0,
    "n_head fixed: attn.c_proj columns follow the same head mapping")
end
-- norm = "copy": LayerNorm kept, padded with 1
do
  local b3 = grow.width(small, { n_embd = 64, n_head = 4 }, { shrink = 0.4, norm = "copy" })
  local lw = b3:param("h.0.ln_1.weight")
  t.ok(lw:narrow(1, 1, 32):clone():add(small:param("h.0.ln_1.weight"), -1):norm() == 0 and
       lw:narrow(1, 33, 32):stats().min == 1 and lw:narrow(1, 33, 32):stats().max == 1,
    "norm = copy: LayerNorm weight copied unshrunk, new coordinates 1")
end

-- 3. perturbation statistics ----------------------------------------------------------
do
  local d = 128   -- width_mult 4 against base 32: hidden std 0.01, residual 0.005
  local init = kiln.model(cfg(d, { seed = 11 }))
  local init_std = {}
  for _, r in ipairs(mup.table(init)) do init_std[r.name] = r.init_std end
  for _, case in ipairs { { "mup_init", 1 }, { "complement", 0.6 }, { 0.25, 0.25 } } do
    local b = grow.width(small, { n_embd = d, n_head = d // 16 }, { shrink = 0.4, perturb = case[1], seed = 11 })
    for _, name in ipairs { "h.0.mlp.c_fc.weight", "h.1.attn.c_proj.weight", "wte.weight" } do
      local full = b:param(name)
      -- the padded region: rows past the small block (c_fc: rows 129..512; c_proj and wte:
      -- columns 33..128)
      local pad = name:find("c_fc") and full:narrow(1, 4 * 32 + 1, 4 * (d - 32)) or full:narrow(2, 33, d - 32)
      local want = case[2] * init_std["transformer." .. name]
      local n = pad:numel()
      local tol = 4 / math.sqrt(2 * n)
      t.near(rms(pad) / want, 1, tol, ("perturb=%s: %s padded region std %.5g, want σ·init std = %.5g (n=%d, rel. tol %.3f)"):format(
        tostring(case[1]), name, rms(pad), want, n, tol))
    end
    -- the copied block is exactly λ·small + σ·init
    local blk = grow.blocks(small, b, "h.0.mlp.c_fc.weight")[1]
    local expect = init:param("h.0.mlp.c_fc.weight"):narrow(1, 1, 128):narrow(2, 1, 32):clone():scale(case[2]):add(blk[1], 0.4)
    t.ok(expect:add(blk[2], -1):norm() < 1e-6, ("perturb=%s: copied block = 0.4·small + σ·init"):format(tostring(case[1])))
  end
  local cold = grow.width(small, { n_embd = d, n_head = d // 16 }, { shrink = 0, seed = 11 })
  t.eq(cold:flat_params():clone():add(init:flat_params(), -1):norm(), 0, "λ = 0, σ = 1 is exactly the big model's cold μP init")
end

-- 4. the grown model trains, saves and loads with its recipe ---------------------------
do
  local b, r = grow.width(small, { n_embd = 64, n_head = 4 }, { shrink = 0.4, seed = 3, from = "tests:small" })
  local ds = kiln.dataset("tests/data/tiny_en.txt")
  local losses = {}
  local s = kiln.train { model = b, optimizer = mup.optimizer(b, { lr = 3e-3, weight_decay = 0 }), data = ds,
                         steps = 40, batch = 4, context = 32, quiet = true,
                         on_step = function(info) losses[#losses + 1] = info.loss end }
  local first, last = 0, 0
  for i = 1, 5 do first = first + losses[i] / 5; last = last + losses[#losses - 5 + i] / 5 end
  t.ok(last < first - 0.2, ("grown model trains: loss %.3f (first 5 steps) -> %.3f (last 5)"):format(first, last))
  local path = dir .. "/grown.safetensors"
  kiln.save(path, { model = b, meta = grow.meta(r) })
  local m2, meta = kiln.load(path)
  t.eq(m2:flat_params():clone():add(b:flat_params(), -1):norm(), 0, "save/load: identical parameters")
  local c2 = m2:config()
  t.ok(c2.parametrization == "mup" and c2.base_width == 32 and c2.n_embd == 64, "save/load: μP config restored")
  t.eq(meta["kiln.config.parametrization"], "mup", "checkpoint metadata records the parametrization")
  local back = grow.recipe_from_meta(meta)
  t.ok(back.op == "width" and back.shrink == 0.4 and back.sigma == 1 and back.perturb == "mup_init" and back.from == "tests:small",
    "checkpoint metadata carries the growth recipe")
  local m3 = kiln.model(c2)
  kiln.load(path, { model = m3 })
  t.eq(m3:forward((function() local bt = kiln.batch(2, 32); ds:sample(bt, kiln.rng(4)); return bt end)()),
       b:forward((function() local bt = kiln.batch(2, 32); ds:sample(bt, kiln.rng(4)); return bt end)()),
       "a model built from the restored config and loaded computes the same loss")
  t.ok(s.status == "complete", "training run complete")
end

-- 5. grow.depth -------------------------------------------------------------------------
do
  local ds = kiln.dataset("tests/data/tiny_en.txt")
  local batch = kiln.batch(4, 32)
  ds:sample(batch, kiln.rng(9))
  local ls = small:forward(batch)
  for _, mode in ipairs { "stack", "interleave" } do
    local deep, r = grow.depth(small, { factor = 2, mode = mode })
    local ld = deep:forward(batch)
    t.ok(deep:config().n_layer == 4 and math.abs(ld - ls) < 1e-6,
      ("depth x2 (%s, identity blocks): loss %.7f, small model %.7f; layers %s"):format(mode, ld, ls, r.layers))
  end
  local fresh = grow.depth(small, { n_layer = 3, new_blocks = "init", seed = 2 })
  t.near(fresh:forward(batch), ls, 1e-6, "depth 2 -> 3 with a freshly initialised identity block: same loss")
  local plain = grow.depth(small, { factor = 2, identity = false })
  t.ok(math.abs(plain:forward(batch) - ls) > 1e-4, "without identity = true the copies change the function")
  t.eq(select(2, grow.depth(small, { mode = "interleave" })).layers, "0,+0,1,+1", "interleave recipe: layer map")
end

-- 6. errors ----------------------------------------------------------------------------
t.err("n_layer must stay", grow.width, small, { n_embd = 64, n_head = 4, n_layer = 3 })
t.err("smaller than", grow.width, small, { n_embd = 16, n_head = 1 })
t.err("kiln.grow.width: argument 'opts' has an unknown field \"lambda\"", grow.width, small, { n_embd = 64, n_head = 4 }, { lambda = 1 })
t.err("kiln.grow.width: argument 'opts.perturb' must be", grow.width, small, { n_embd = 64, n_head = 4 }, { perturb = "big" })
t.err("kiln.grow.width: argument 'small' must be a kiln.Model, got number", grow.width, 5, { n_embd = 64 })
t.err("kiln.grow.width: argument 'big_config.n_embd' must be a whole number >= 1, got string", grow.width, small, { n_embd = "x" })
t.err("kiln.grow.depth: argument 'opts.factor' must be a whole number in 1..1024, got 2147483648", grow.depth, small, { factor = 2 ^ 31 })
t.err("kiln.grow.blocks: argument 'big' must be a kiln.Model, got nil", grow.blocks, small)
t.err("multiple of", grow.depth, small, { n_layer = 3, mode = "interleave" })
t.err("needs parametrization", kiln.model, { n_embd = 64, n_head = 4, base_width = 32 })
t.done()
