#!/usr/bin/env kiln
-- Ownership and lifetimes in the binding: closed handles, objects that hold others alive,
-- and the calls that used to crash (stale forward shapes, optimizers of another model,
-- extreme integers, hostile checkpoint metadata), each now a clean error.
local t = dofile("tests/lua/tap.lua")
local kiln = require "kiln"
local dir = t.tmpdir()

local small_cfg = { vocab_size = 256, block_size = 16, n_layer = 1, n_head = 2, n_embd = 8, seed = 1 }
local big_cfg = { vocab_size = 256, block_size = 16, n_layer = 2, n_head = 2, n_embd = 16, seed = 2 }

local function filled_batch(B, T)
  local b = kiln.batch(B, T)
  for r = 1, B do for p = 1, T do b:set(r, p, (r * 13 + p) % 256, (r * 13 + p + 1) % 256) end end
  return b
end

-- The last forward's shape comes from the core: a reserve since then leaves no losses.
do
  local m = kiln.model(small_cfg)
  m:forward(filled_batch(2, 8))
  m:reserve(4, 16)
  t.err("losses: no per%-token losses", m.losses, m)
  t.err("add_position_losses: no per%-token losses", m.add_position_losses, m, kiln.tensor(8))
  t.err("backward needs a preceding forward", m.backward, m)
  m:forward(filled_batch(3, 4))
  t.eq(m:losses():size(1), 3, "after a new forward, losses() has its batch size")
  t.eq(m:losses():size(2), 4, "and its context length")
  t.err("bad argument #1 to 'add_position_losses' %(expected a contiguous tensor of 4 values%)",
    function() return m:add_position_losses(kiln.tensor(8)) end)
end

-- Closed handles: a clean error naming the class, for every class.
do
  local m = kiln.model(small_cfg)
  local objects = {
    ["kiln.Tensor"] = kiln.tensor(2),
    ["kiln.Model"] = kiln.model(small_cfg),
    ["kiln.AdamW"] = kiln.adamw(m),
    ["kiln.Batch"] = kiln.batch(1, 4),
    ["kiln.Dataset"] = kiln.dataset("tests/data/tiny_en.txt"),
    ["kiln.Rng"] = kiln.rng(1),
  }
  local use = {
    ["kiln.Tensor"] = function(x) return x:sum() end,
    ["kiln.Model"] = function(x) return x:config() end,
    ["kiln.AdamW"] = function(x) return x:step() end,
    ["kiln.Batch"] = function(x) return x:size() end,
    ["kiln.Dataset"] = function(x) return x:num_tokens() end,
    ["kiln.Rng"] = function(x) return x:uniform() end,
  }
  for _, name in ipairs { "kiln.Tensor", "kiln.Model", "kiln.AdamW", "kiln.Batch", "kiln.Dataset", "kiln.Rng" } do
    local x = objects[name]
    x:close()
    t.err(name:gsub("%.", "%%.") .. ": object is closed", use[name], x)
    t.eq(tostring(x), name .. " (closed)", name .. " prints as closed")
    x:close()
  end
  local opt = kiln.adamw(kiln.model(small_cfg))
  opt:close()
  t.err("kiln%.AdamW: object is closed", function() return opt.t end)
  t.err("kiln object expected", kiln.tensor(1).close, {})
end

-- A <close> variable releases at the end of its scope.
do
  local escaped
  do
    local m <close> = kiln.model(small_cfg)
    escaped = m
  end
  t.eq(tostring(escaped), "kiln.Model (closed)", "a <close> model is closed when its scope ends")
end

-- An optimizer holds its model; views hold what they look at.
do
  local m = kiln.model(small_cfg)
  local opt = kiln.adamw(m, { lr = 1e-2 })
  local b = filled_batch(2, 8)
  m:forward(b); m:backward()
  local wpe = m:param("wpe.weight")
  local before = wpe:clone()
  m:close()
  opt:step()
  t.ok(wpe:clone():add(before, -1):norm() > 0, "the optimizer steps a model whose handle was closed")
  local mm = opt:model()
  t.ok(mm ~= m and tostring(mm):find("^kiln.Model%(n_layer=1"), "opt:model() gives an open handle on the same model")
  t.eq(opt:model(), mm, "and the same handle next time")
  t.eq(mm:param("wpe.weight"):sum(), wpe:sum(), "it sees the same weights")
  local mom = opt:moments("transformer.wpe.weight")
  local msum = mom:sum()
  opt:close(); mm:close()
  collectgarbage(); collectgarbage()
  t.eq(mom:sum(), msum, "a moment view keeps the optimizer's memory after every handle is closed")
  t.eq(type(opt.model), "function", "methods of a closed optimizer are still found")
  t.err("kiln%.AdamW: object is closed", opt.model, opt)
end

-- Checkpoints with an optimizer of another model: refused, naming both models.
do
  local small, big = kiln.model(small_cfg), kiln.model(big_cfg)
  local small_opt, big_opt = kiln.adamw(small), kiln.adamw(big)
  local path = dir .. "/big.safetensors"
  kiln.save(path, { model = big, optimizer = big_opt })
  t.err("the optimizer belongs to another model %(its model 0x%x+: n_layer=1 .*; given model 0x%x+: n_layer=2",
    kiln.load, path, { model = big, optimizer = small_opt })
  local spath = dir .. "/small.safetensors"
  kiln.save(spath, { model = small, optimizer = small_opt })
  t.err("the optimizer belongs to another model", kiln.load, spath, { model = small, optimizer = big_opt })
  local other = kiln.model(small_cfg)
  t.err("the optimizer belongs to another model", kiln.load, spath, { model = other, optimizer = small_opt })
  local out = dir .. "/mixed.safetensors"
  t.err("mixed.safetensors: the optimizer belongs to another model", kiln.save, out,
    { model = small, optimizer = big_opt })
  t.eq(io.open(out, "rb"), nil, "a refused save writes nothing")
  local _, meta = kiln.load(spath, { model = other, optimizer = kiln.adamw(other) })
  t.eq(meta["kiln.adamw.t"], "0", "the model's own optimizer loads")

  -- a step count that is not an integer is refused, and nothing is loaded
  local f = assert(io.open(spath, "rb")); local bytes = f:read("a"); f:close()
  local bad, n = bytes:gsub('"kiln%.adamw%.t":"0"', '"kiln.adamw.t":"a"')
  t.eq(n, 1, "the step count was found in the header")
  t.write(dir .. "/bad_t.safetensors", bad)
  local o2 = kiln.adamw(other)
  t.err("bad_t.safetensors: metadata 'kiln.adamw.t' = 'a' is not an integer", kiln.load,
    dir .. "/bad_t.safetensors", { model = other, optimizer = o2 })
  t.eq(o2.t, 0, "the optimizer is untouched")
end

-- A metadata-only checkpoint whose config asks for a huge model: refused before allocating.
do
  local header = '{"__metadata__":{"kiln.format":"kiln-1","kiln.config.vocab_size":"16777216",' ..
      '"kiln.config.block_size":"65536","kiln.config.n_layer":"8","kiln.config.n_head":"8",' ..
      '"kiln.config.n_embd":"4096"}}'
  local path = dir .. "/huge.safetensors"
  t.write(path, string.pack("<I8", #header) .. header)
  t.err("huge.safetensors: tensor 'transformer.wte.weight' is missing", kiln.load, path)
end

-- Optimizer groups: NaN, Inf and negative scales are refused, naming the field.
do
  local opt = kiln.adamw(kiln.model(small_cfg))
  t.err("set_group: field 'lr_scale' must be a finite number >= 0", opt.set_group, opt, "ln_", { lr_scale = 0 / 0 })
  t.err("set_group: field 'wd_scale' must be a finite number >= 0", opt.set_group, opt, "ln_", { wd_scale = math.huge })
  t.err("field 'lr_scale' must be a finite number >= 0", opt.set_group, opt, "ln_", { lr_scale = -1 })
  t.err("field 'lr_scale' must be a number", opt.set_group, opt, "ln_", { lr_scale = "x" })
  t.eq(opt:group("transformer.ln_f.weight").lr_scale, 1, "a refused set_group changes nothing")
  t.eq(opt:set_group("ln_f", { lr_scale = 0.5 }), 2, "a valid scale is set")
  t.eq(opt:group("transformer.ln_f.bias").lr_scale, 0.5, "and read back")
  t.eq(opt:group("transformer.ln_f.bias").wd_scale, 0, "fields not given keep their value")
end

-- Extreme integers: clean argument errors, no signed overflow.
do
  local minint = tostring(math.mininteger):gsub("%-", "%%-")
  local x = kiln.tensor(4, 3)
  t.err("bad argument #2 to 'narrow' %(start out of range: " .. minint,
    function() return x:narrow(1, math.mininteger, 1) end)
  t.err("bad argument #3 to 'narrow' %(length out of range", function() return x:narrow(1, 2, math.maxinteger) end)
  t.err("bad argument #1 to 'narrow' %(dimension", function() return x:narrow(math.mininteger, 1, 1) end)
  t.eq(x:narrow(1, 2, 3):size(1), 3, "a valid narrow still works")
  t.err("index " .. minint .. " out of range", x.get, x, math.mininteger, 1)

  local ds = kiln.dataset("tests/data/tiny_en.txt")
  local b, r = kiln.batch(2, 8), kiln.rng(1)
  t.err("bad argument #3 to 'sample' %(first row out of range: " .. minint,
    function() return ds:sample(b, r, math.mininteger) end)
  t.err("bad argument #4 to 'sample' %(row count out of range", function() return ds:sample(b, r, 2, math.maxinteger) end)
  t.err("row count out of range", ds.sample, ds, b, r, 1, math.mininteger)
  ds:sample(b, r, 2, 1)
  t.eq(b:rows(), 2, "a valid sample of row 2 fills up to row 2")
  t.eq(ds:eval_batch(b, 1, math.maxinteger, math.maxinteger), 1, "a huge stride takes one window, no overflow")
  t.err("token id must be in 0..2^31%-1", b.set, b, 1, 1, 1 << 40, 1)
end

-- A weights table no longer goes through a shared static buffer: any T works.
do
  local m = kiln.model { vocab_size = 256, block_size = 16, n_layer = 1, n_head = 1, n_embd = 4 }
  local b = filled_batch(1, 16)
  local w = {}
  for i = 1, 16 do w[i] = 1 end
  t.eq(m:forward(b, w), m:forward(b), "a table of ones gives the plain loss")
  t.err("bad argument #2 to 'forward' %(weight 3 is string",
    function() return m:forward(b, { 1, 1, "x", 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 }) end)
end

t.done()
