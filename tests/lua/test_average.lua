#!/usr/bin/env kiln
-- Weight averaging from Lua (docs/lua-api.md, "Weight averaging"): opt:set_average,
-- opt:average, opt:average_of, opt:swap_average, opt:set_average_count. The EMA against a
-- transcription in Lua, evaluation with the averaged weights and exact restore, a resume
-- that writes the average back, the uniform mean's schedule, kiln.train with averaging on,
-- and the errors.
local t = dofile("tests/lua/tap.lua")
local kiln = require "kiln"
kiln.set_threads(1)

local CFG = { vocab_size = 256, block_size = 16, n_layer = 1, n_head = 2, n_embd = 16, seed = 3 }
local ds = kiln.dataset("tests/data/tiny_en.txt")
local NAMES = { "transformer.wte.weight", "transformer.h.0.mlp.c_fc.weight", "transformer.ln_f.bias" }

local function step(model, opt, batch, rng)
  ds:sample(batch, rng)
  model:zero_grad(); model:forward(batch); model:backward()
  opt:step()
end

-- 1. EMA against a transcription; evaluation with the average; swap back is exact ---------
do
  local model = kiln.model(CFG)
  local opt = kiln.adamw(model, { lr = 1e-2 })
  opt:set_average { kind = "ema", decay = 0.9 }
  local a = opt:average()
  t.ok(a.kind == "ema" and math.abs(a.decay - 0.9) < 1e-15 and a.every == 1 and a.start == 1 and not a.warmup and a.count == 0,
    "opt:average() reports the settings, count 0 before any step")
  local batch, rng = kiln.batch(4, 16), kiln.rng(1)
  local ref = {}
  local worst = 0
  for s = 1, 5 do
    step(model, opt, batch, rng)
    for _, name in ipairs(NAMES) do
      local p = model:param(name)
      ref[name] = s == 1 and p:clone() or ref[name]:scale(0.9):add(p, 0.1)
      worst = math.max(worst, ref[name]:clone():add(opt:average_of(name), -1):stats().max,
                              -ref[name]:clone():add(opt:average_of(name), -1):stats().min)
    end
  end
  t.ok(worst < 1e-6 and opt:average().count == 5,
    ("EMA 0.9 over 5 steps: the core's average matches ref = 0.9·ref + 0.1·p within %.2g"):format(worst))

  local eval = kiln.batch(4, 16)
  ds:sample(eval, kiln.rng(9))
  local raw_params = model:flat_params():clone()
  local loss_raw = model:forward(eval)
  opt:swap_average()
  t.ok(opt:average().swapped, "swapped flag set")
  local loss_avg = model:forward(eval)
  t.err("swap them back", function() step(model, opt, batch, rng) end)
  opt:swap_average()
  t.ok(loss_avg ~= loss_raw, ("the averaged weights compute another loss (%.6f vs raw %.6f)"):format(loss_avg, loss_raw))
  t.eq(model:flat_params():clone():add(raw_params, -1):norm(), 0, "swapping twice restores the raw weights exactly")
  t.eq(model:forward(eval), loss_raw, "and the raw loss")
end

-- 2. resume: restoring parameters, moments, t, the average and its count continues exactly --
do
  local function run(steps, from)
    local model = kiln.model(CFG)
    local opt = kiln.adamw(model, { lr = 1e-2 })
    opt:set_average { kind = "ema", decay = 0.8, every = 2, start = 1, warmup = true }
    local rng = kiln.rng(5)
    local batch = kiln.batch(4, 16)
    if from then
      kiln.load(from.path, { model = model, optimizer = opt })
      for name, v in pairs(from.avg) do opt:average_of(name):copy(v) end
      opt:set_average_count(from.count)
      rng = from.rng
    end
    for _ = 1, steps do step(model, opt, batch, rng) end
    return model, opt, rng
  end
  local m6, o6 = run(6)
  local m3, o3, rng3 = run(3)
  local path = t.tmpdir() .. "/mid.safetensors"
  kiln.save(path, { model = m3, optimizer = o3 })
  local avg = {}
  for _, p in ipairs(m3:params()) do avg[p.name] = o3:average_of(p.name):clone() end
  local mr, orr = run(3, { path = path, avg = avg, count = o3:average().count, rng = rng3 })
  local diff = 0
  for _, p in ipairs(m6:params()) do
    diff = diff + o6:average_of(p.name):clone():add(orr:average_of(p.name), -1):norm()
  end
  t.ok(o3:average().count == 2 and o6:average().count == 3 and orr:average().count == 3,
    "every 2 from step 1: steps 1, 3 averaged after 3 steps; 1, 3, 5 after 6")
  t.eq(diff + mr:flat_params():clone():add(m6:flat_params(), -1):norm(), 0,
    "3 steps, restore (parameters, moments, t, average, count), 3 more = 6 steps: same average and weights")
end

-- 3. the uniform mean and kiln.train --------------------------------------------------------
do
  local model = kiln.model(CFG)
  local opt = kiln.adamw(model, { lr = 3e-3 })
  opt:set_average { kind = "mean", every = 3, start = 3 }
  local name = "transformer.h.0.attn.c_attn.weight"
  local snaps = {}
  local s = kiln.train { model = model, optimizer = opt, data = ds, steps = 9, batch = 4, context = 16, quiet = true,
    on_step = function(info)
      if info.step % 3 == 0 then snaps[#snaps + 1] = model:param(name):clone() end
    end }
  local mean = snaps[1]:clone():add(snaps[2]):add(snaps[3]):scale(1 / 3)
  local d = mean:add(opt:average_of(name), -1):norm()
  t.ok(s.status == "complete" and opt:average().count == 3 and d < 1e-5,
    ("kiln.train with the uniform mean every 3 from step 3: count %d, |mean of steps 3, 6, 9 - average| = %.2g"):format(
      opt:average().count, d))
end

-- 4. errors ---------------------------------------------------------------------------------
do
  local model = kiln.model(CFG)
  local opt = kiln.adamw(model)
  t.err("no averaging selected", opt.average_of, opt, "transformer.wte.weight")
  t.err("averaging was never selected", opt.swap_average, opt)
  t.err("'kind' must be", opt.set_average, opt, { kind = "swa" })
  t.err("'kind' must be", opt.set_average, opt, { decay = 0.9 })
  t.err("unknown field 'beta'", opt.set_average, opt, { kind = "ema", beta = 0.9 })
  t.err("decay must be in %[0, 1%)", opt.set_average, opt, { kind = "ema", decay = 1 })
  t.err("every and start must be >= 1", opt.set_average, opt, { kind = "mean", every = 0 })
  opt:set_average { kind = "ema" }
  t.err("no averaging step has run", opt.swap_average, opt)
  t.err("no parameter named", opt.average_of, opt, "nope")
  t.err("count must be >= 0", opt.set_average_count, opt, -2)
end
t.done()
