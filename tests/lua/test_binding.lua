#!/usr/bin/env kiln
-- The binding: tensors (1-based indices, views keep owners alive), models, batches,
-- optimizers, datasets and their argument errors.
local t = dofile("tests/lua/tap.lua")
local kiln = require "kiln"

-- Tensors ----------------------------------------------------------------------------------
local a = kiln.tensor(2, 3)
t.eq(a:numel(), 6, "tensor numel")
t.eq(#a, 6, "__len is numel")
t.eq(a:get(2, 3), 0, "new tensors are zero")
a:set(2, 3, 1.5)
t.eq(a:get(2, 3), 1.5, "set/get with 1-based indices")
t.err("index 4 out of range 1..3 for dimension 2", function() return a:get(1, 4) end)
t.err("index 0 out of range", function() return a:get(0, 1) end)
t.err("bad argument #1 to 'get' %(number expected, got string%)", function() return a:get("x", 1) end)

local b = kiln.tensor_from { { 1, 2, 3 }, { 4, 5, 6 } }
t.eq(b:size(1), 2, "tensor_from shape rows")
t.eq(b:size(2), 3, "tensor_from shape cols")
t.eq(b:sum(), 21, "sum")
t.near(b:norm(), math.sqrt(91), 1e-6, "norm")
local row2 = b:narrow(1, 2, 1)
t.eq(row2:get(1, 3), 6, "narrow is 1-based (row 2 holds 4 5 6)")
row2:fill(0)
t.eq(b:sum(), 6, "a view writes through to its owner")
t.ok(row2:is_view() and not b:is_view(), "is_view")
local c = b:clone()
c:add(b, 2)
t.eq(c:get(1, 2), 6, "add with alpha: 2 + 2*2")
t.err("ragged table", kiln.tensor_from, { { 1, 2 }, { 3 } })
t.err("expected a number", kiln.tensor_from, { 1, "x" })

-- A view keeps its owner alive after the owner's last reference is gone.
local view
do
  local owner = kiln.tensor_from { 7, 8, 9 }
  view = owner:narrow(1, 2, 2)
end
collectgarbage(); collectgarbage()
t.eq(view:get(1), 8, "view survives collection of its owner's last reference")

-- Models -----------------------------------------------------------------------------------
local cfg = { vocab_size = 256, block_size = 16, n_layer = 2, n_head = 2, n_embd = 8, seed = 3 }
local m = kiln.model(cfg)
local n, n_nonpos = m:num_params()
-- wte 256*8 + wpe 16*8 + 2 layers * (4*8 [ln] + 24*8+24 + 8*8+8 + 32*8+32 + 8*32+8) + 2*8
local per_layer = 4 * 8 + (24 * 8 + 24) + (8 * 8 + 8) + (32 * 8 + 32) + (8 * 32 + 8)
t.eq(n, 256 * 8 + 16 * 8 + 2 * per_layer + 16, "parameter count matches the GPT-2 layout")
t.eq(n - n_nonpos, 16 * 8, "second count excludes position embeddings")
t.eq(m:params()[1].name, "transformer.wte.weight", "first parameter is wte (nanoGPT order)")
t.eq(m:params()[#m:params()].name, "transformer.ln_f.bias", "last parameter is ln_f.bias")
t.eq(m:param("h.0.ln_1.weight"):get(1), 1, "LayerNorm weights start at 1 (short name accepted)")
t.err("no parameter named 'nope'", m.param, m, "nope")
t.err("unknown field 'n_embed'", kiln.model, { n_embed = 8 })
t.err("n_head", kiln.model, { n_embd = 10, n_head = 3 })
t.err("bad argument #1 to '[%w.]*model' %(table expected, got number%)", kiln.model, 5)

local wte = m:param("transformer.wte.weight")
local std = wte:stats().std
t.ok(std > 0.017 and std < 0.023, ("wte init std ~0.02 (got %.4f)"):format(std))

-- A view of a model's weights keeps the model alive.
local wview
do
  local m2 = kiln.model(cfg)
  wview = m2:param("transformer.wpe.weight")
end
collectgarbage(); collectgarbage()
t.ok(wview:norm() > 0, "parameter view outlives its model's last reference")

-- Closing the model's handle drops only that handle's reference: a view still holds the
-- model, and the closed handle itself raises a clean error.
do
  local m3 = kiln.model(cfg)
  local v3 = m3:param("transformer.wpe.weight")
  local norm3 = v3:norm()
  m3:close()
  t.eq(v3:norm(), norm3, "a view of a closed model's weights still reads them (it holds the model)")
  t.err("kiln.Model: object is closed", m3.forward, m3, kiln.batch(1, 4))
  t.eq(tostring(m3), "kiln.Model (closed)", "a closed handle prints as closed")
  m3:close()
  t.ok(true, "closing twice is harmless")
end

-- Forward/backward on a hand-made batch.
local batch = kiln.batch(2, 4)
for r = 1, 2 do for p = 1, 4 do batch:set(r, p, (r * 7 + p) % 256, (r * 7 + p + 1) % 256) end end
local loss = m:forward(batch)
t.near(loss, math.log(256), 0.05, "initial loss is about ln(256)")
t.eq(m:losses():size(1), 2, "losses() is [B,T]")
local kept_losses = m:losses()
local before_sum = kept_losses:sum()
local big = kiln.batch(8, 16)   -- larger than any batch so far: the arena grows
for r = 1, 8 do for p = 1, 16 do big:set(r, p, p, p + 1) end end
m:forward(big)
t.eq(kept_losses:sum(), before_sum, "losses() survives a later, larger forward (it is a copy)")
m:forward(batch)
m:zero_grad()
m:backward()
t.ok(m:grad("transformer.wte.weight"):norm() > 0, "backward fills gradients")
local w = kiln.tensor(4):fill(1)
t.eq(m:forward(batch, w), loss, "uniform weights give the plain mean loss")
t.err("expected 4 weights", m.forward, m, batch, { 1, 1, 1 })
t.err("expected a contiguous weight tensor of 4 values", m.forward, m, batch, kiln.tensor(5))
local bad = kiln.batch(1, 4)
bad:set(1, 1, 300, 1)
t.err("300", m.forward, m, bad)
t.err("bad argument #1 .*kiln.Model expected, got string", m.forward, "x", batch)
local acc = kiln.tensor(4)
m:forward(batch)
m:add_position_losses(acc)
t.near(acc:sum() / 8, m:forward(batch), 1e-5, "position sums average to the loss")

-- AdamW -----------------------------------------------------------------------------------
local opt = kiln.adamw(m, { lr = 1e-3 })
t.eq(opt.t, 0, "optimizer starts at t = 0")
local before = m:param("transformer.wte.weight"):clone()
local norm = opt:step()
t.ok(norm > 0, "step returns the gradient norm")
t.eq(opt.t, 1, "t counts steps")
local diff = before:clone():add(m:param("transformer.wte.weight"), -1):norm()
t.ok(diff > 0, "a step changes the weights")
t.err("unknown field 'learning_rate'", opt.step, opt, { learning_rate = 1 })
t.err("'beta1' must be in", kiln.adamw, m, { beta1 = 1.5 })
-- "ln_" matches ln_1/ln_2 weight and bias in 2 layers (8) and ln_f weight and bias (2)
t.eq(opt:set_group("ln_", { frozen = true }), 10, "set_group returns how many tensors matched")
t.err("matches no parameter", opt.set_group, opt, "nothing_like_this", {})
opt:reset()
t.eq(opt.t, 0, "reset sets t back to 0")

-- Datasets and rng -------------------------------------------------------------------------
local ds = kiln.dataset("tests/data/tiny_en.txt")
t.eq(ds:vocab(), 256, "byte datasets have vocab 256")
local f = io.open("tests/data/tiny_en.txt", "rb"); local text = f:read("a"); f:close()
t.eq(ds:num_tokens(), #text, "a byte dataset has one token per byte")
local rng = kiln.rng(5)
local sb = kiln.batch(3, 8)
ds:sample(sb, rng)
local s = sb:text(1)
t.ok(text:find(s, 1, true) ~= nil, "a sampled window is a substring of the file")
local st = rng:state()
ds:sample(sb, rng)
local s2 = sb:text(2)
rng:set_state(st)
ds:sample(sb, rng)
t.eq(sb:text(2), s2, "restoring the rng state replays the same windows")
t.err("expected the 64 hex digits", rng.set_state, rng, "zz")
t.err("no/such/file", kiln.dataset, "no/such/file")
t.err("invalid option 'words'", kiln.dataset, "tests/data/tiny_en.txt", { format = "words" })
local eb = kiln.batch(4, 16)
t.eq(ds:eval_batch(eb, 1), 4, "eval_batch fills the batch")
local first = eb:text(1)
ds:eval_batch(eb, 1)
t.eq(eb:text(1), first, "evaluation windows are fixed")
t.eq(text:sub(1, 17), first, "the first evaluation window starts at the file's first byte")
t.eq(ds:eval_batch(eb, 1, 7, 3), 3, "with a stride: windows 1, 4, 7")
t.eq(eb:text(2), text:sub(3 * 17 + 1, 4 * 17), "window 4 is the fourth tile of T+1 bytes")

t.done()
