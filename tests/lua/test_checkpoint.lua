#!/usr/bin/env kiln
-- Checkpoints: bit-exact round trip, exact resume in a new process, determinism, and clear
-- errors for bad files.
local t = dofile("tests/lua/tap.lua")
local kiln = require "kiln"
local dir = t.tmpdir()
local kiln_bin = (os.getenv("KILN_BUILD") or "build") .. "/kiln"

local cfg = { vocab_size = 256, block_size = 24, n_layer = 2, n_head = 3, n_embd = 24, seed = 11 }

-- Round trip: every parameter and moment identical to the bit.
local m = kiln.model(cfg)
local opt = kiln.adamw(m, { lr = 1e-3 })
local ds = kiln.dataset("tests/data/tiny_en.txt")
local batch, rng = kiln.batch(4, 24), kiln.rng(1)
for _ = 1, 3 do
  ds:sample(batch, rng); m:zero_grad(); m:forward(batch); m:backward(); opt:step()
end
local path = dir .. "/a.safetensors"
kiln.save(path, { model = m, optimizer = opt, meta = { step = 3, note = "hello", lr = 1e-3 } })
local m2, meta = kiln.load(path)
local all_equal = true
for _, p in ipairs(m:params()) do
  local d = m:param(p.name):clone():add(m2:param(p.name), -1)
  if d:norm() ~= 0 then all_equal = false; t.note("differs: " .. p.name) end
end
t.ok(all_equal, "loaded parameters equal the saved ones bit for bit")
t.eq(meta.step, "3", "metadata comes back (as strings)")
t.eq(meta.note, "hello", "string metadata")
t.eq(tonumber(meta.lr), 1e-3, "numbers are written exactly (%.17g)")
t.eq(meta["kiln.config.n_head"], "3", "the model config is in the metadata")
local info = kiln.checkpoint_info(path)
local names = {}
for _, e in ipairs(info.tensors) do names[e.name] = e.shape end
t.ok(names["lm_head.weight"] and names["optim.m.transformer.wte.weight"], "nanoGPT tied head and optimizer moments are stored")

local m3 = kiln.model(cfg)
local opt3 = kiln.adamw(m3)
kiln.load(path, { model = m3, optimizer = opt3 })
t.eq(opt3.t, 3, "optimizer step count restored")
local mm, vv = opt:moments("transformer.h.1.mlp.c_fc.weight")
local mm3, vv3 = opt3:moments("transformer.h.1.mlp.c_fc.weight")
t.eq(mm:clone():add(mm3, -1):norm() + vv:clone():add(vv3, -1):norm(), 0, "moments restored bit for bit")

-- Loading into a model of another shape names the tensor and both shapes.
local other = kiln.model { vocab_size = 256, block_size = 24, n_layer = 2, n_head = 3, n_embd = 12 }
t.err("'transformer.wte.weight' has shape 256x24, the model expects 256x12", kiln.load, path, { model = other })
kiln.save(dir .. "/noopt.safetensors", { model = m })
t.err("has no optimizer state", kiln.load, dir .. "/noopt.safetensors", { model = m3, optimizer = opt3 })
t.err("reserved prefix", kiln.save, dir .. "/x.safetensors", { model = m, meta = { ["kiln.step"] = 1 } })
t.err("meta.bad must be a string, number or boolean", kiln.save, dir .. "/x.safetensors", { model = m, meta = { bad = {} } })

-- Bad files: clear errors naming the file, never a crash.
local write = t.write
local f = assert(io.open(path, "rb")); local bytes = f:read("a"); f:close()
write(dir .. "/trunc.safetensors", bytes:sub(1, #bytes // 2))
t.err("trunc.safetensors", kiln.load, dir .. "/trunc.safetensors")
write(dir .. "/short.safetensors", "abc")
t.err("short.safetensors", kiln.load, dir .. "/short.safetensors")
-- Flip a bit in the JSON header: either a clean error or (if it only hit padding) a load.
local flipped = bytes:sub(1, 20) .. string.char(bytes:byte(21) ~ 0x20) .. bytes:sub(22)
write(dir .. "/flip.safetensors", flipped)
local ok, err = pcall(kiln.load, dir .. "/flip.safetensors")
t.ok(ok or tostring(err):find("flip.safetensors", 1, true), "a flipped header bit is a clean error naming the file")
t.err("no/such/ckpt", kiln.load, "no/such/ckpt.safetensors")
local nm, msg = kiln.try_load(dir .. "/short.safetensors")
t.ok(nm == nil and msg:find("short.safetensors", 1, true), "try_load returns nil, message")

-- A failed save leaves an existing file untouched.
kiln.save(dir .. "/keep.safetensors", { model = m })
local before = io.open(dir .. "/keep.safetensors", "rb"):read("a")
-- (the message names the temporary file it could not create and the reason)
local function lit(text) return (text:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")) end
local missing = dir .. "/missing-dir/keep.safetensors"
t.err("ckpt: cannot write '" .. lit(missing) .. "': cannot create '" .. lit(missing) ..
      "%.tmp%.%d+' %(its temporary file%): No such file or directory", kiln.save, missing, { model = m })
t.eq(io.open(dir .. "/keep.safetensors", "rb"):read("a"), before, "existing checkpoint untouched by a failed save")

-- Determinism and exact resume, each run in its own process with one thread.
local script = dir .. "/train.lua"
write(script, [[
local kiln = require "kiln"
kiln.set_threads(1)
local steps, save_at, resume, out = tonumber(arg[1]), tonumber(arg[2]), arg[3], arg[4]
local seed = tonumber(arg[5] or "7")
local cfg = { vocab_size = 256, block_size = 32, n_layer = 2, n_head = 2, n_embd = 16, seed = seed }
local m = kiln.model(cfg)
local opt = kiln.adamw(m, { lr = 3e-3, clip = 0.5 })
local ds = kiln.dataset("tests/data/tiny_en.txt")
local batch, rng = kiln.batch(4, 32), kiln.rng(seed)
local start = 0
if resume ~= "-" then
  local _, meta = kiln.load(resume, { model = m, optimizer = opt })
  rng:set_state(meta.rng)
  start = tonumber(meta.step)
end
for step = start, steps - 1 do
  ds:sample(batch, rng)
  m:zero_grad()
  local loss = m:forward(batch)
  m:backward()
  opt:step { lr = 3e-3 * (1 - step / 100) }
  io.write(string.format("%d %a\n", step, loss))
  if step + 1 == save_at then
    kiln.save(out, { model = m, optimizer = opt, meta = { step = step + 1, rng = rng:state() } })
  end
end
]])
local function run(...)
  local cmd = table.concat({ kiln_bin, script, ... }, " ")
  local p = io.popen(cmd .. " 2>&1"); local o = p:read("a"); local okp = p:close()
  return o, okp
end
local straight = run(8, 0, "-", "-")
local first_half = run(3, 3, "-", dir .. "/k.safetensors")
local second_half = run(8, 0, dir .. "/k.safetensors", "-")
t.ok(straight:match("^0 ") and select(2, straight:gsub("\n", "")) == 8, "straight run printed 8 losses")
t.eq(first_half .. second_half, straight, "3 steps + save + new process load + 5 steps == 8 steps, to the bit")
t.eq(run(8, 0, "-", "-"), straight, "same seed gives the same loss curve bit for bit")
local other_seed = run(8, 0, "-", "-", 8)
t.ok(other_seed ~= straight, "a different seed gives a different curve")

t.done()
