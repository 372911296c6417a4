#!/usr/bin/env kiln
-- The MLP activation option: kiln.model{activation = "gelu_tanh" | "gelu"}, model:config(),
-- the checkpoint key kiln.config.activation and what kiln.load makes of files without it.
local t = dofile("tests/lua/tap.lua")
local kiln = require "kiln"
local dir = t.tmpdir()
kiln.set_threads(1)

local base = { vocab_size = 256, block_size = 16, n_layer = 2, n_head = 2, n_embd = 16, seed = 4 }
local function cfg(extra)
  local c = {}
  for k, v in pairs(base) do c[k] = v end
  for k, v in pairs(extra or {}) do c[k] = v end
  return c
end

-- Configs.
local tanh_m, erf_m = kiln.model(cfg()), kiln.model(cfg { activation = "gelu" })
t.eq(tanh_m:config().activation, "gelu_tanh", "the default activation is gelu_tanh")
t.eq(erf_m:config().activation, "gelu", "activation = \"gelu\" is kept in config()")
t.eq(kiln.model(cfg { activation = "gelu_tanh" }):config().activation, "gelu_tanh", "and \"gelu_tanh\" by name")
t.err('activation must be "gelu_tanh" or "gelu" %(got relu%)', kiln.model, cfg { activation = "relu" })
t.err('activation must be "gelu_tanh" or "gelu" %(got true%)', kiln.model, cfg { activation = true })

-- The same weights, a different function: wider MLP weights so that its inputs are O(1)
-- (at init they stay near 0, where the two forms agree to ~1e-9), and a wider embedding so
-- that the logits are too.
tanh_m:param("transformer.wte.weight"):scale(30)
for l = 0, base.n_layer - 1 do
  tanh_m:param(("transformer.h.%d.mlp.c_fc.weight"):format(l)):scale(30)
  tanh_m:param(("transformer.h.%d.mlp.c_proj.weight"):format(l)):scale(30)
end
erf_m:flat_params():copy(tanh_m:flat_params())
local batch = kiln.batch(2, 16)
local text = "It is a truth universally acknowledged, that a single man"
for r = 1, 2 do for i = 1, 16 do batch:set(r, i, text:byte(i + 20 * (r - 1)), text:byte(i + 1 + 20 * (r - 1))) end end
local lt, le = tanh_m:forward(batch), erf_m:forward(batch)
-- Everything but the GELU is the same computation, so any difference is the GELU's (7.5e-5
-- measured; float32 resolves ~5e-7 at this loss).
t.ok(math.abs(lt - le) > 1e-5, ("the same weights give losses %.6f (gelu_tanh) and %.6f (gelu)"):format(lt, le))

-- Checkpoints carry it, and kiln.load builds (or checks) the model with it.
local path = dir .. "/erf.safetensors"
kiln.save(path, { model = erf_m })
t.eq(kiln.checkpoint_info(path).meta["kiln.config.activation"], "gelu", "kiln.save writes kiln.config.activation")
local back = kiln.load(path)
t.eq(back:config().activation, "gelu", "kiln.load builds a gelu model from it")
t.eq(back:forward(batch), le, "which computes the saved model's loss exactly")
t.err("the checkpoint's activation is gelu, the model's is gelu_tanh", kiln.load, path, { model = kiln.model(cfg()) })
t.ok(pcall(kiln.load, path, { model = kiln.model(cfg { activation = "gelu" }) }), "and loads into a gelu model")

-- Files without the key: rewrite the header of a kiln file (same data, new JSON).
local function rewrite(src, dst, edit)
  local raw = t.read(src)
  local n = string.unpack("<I8", raw)
  local header = edit(raw:sub(9, 8 + n):gsub("%s+$", ""))
  header = header .. string.rep(" ", (8 - #header % 8) % 8)
  t.write(dst, string.pack("<I8", #header) .. header .. raw:sub(9 + n))
end
local old = dir .. "/old.safetensors"
rewrite(path, old, function(h) return (h:gsub(',?"kiln%.config%.activation":%s*"gelu"', "")) end)
t.eq(kiln.checkpoint_info(old).meta["kiln.config.activation"], nil, "(a kiln file without the key)")
t.eq(kiln.load(old):config().activation, "gelu_tanh", "a kiln file from before the option is gelu_tanh")
local foreign = dir .. "/foreign.safetensors"
rewrite(path, foreign, function(h) return (h:gsub(',?"__metadata__":%s*%b{}', ""):gsub("^{,", "{")) end)
t.eq(next(kiln.checkpoint_info(foreign).meta), nil, "(a file with no metadata, as nanoGPT writes)")
t.eq(kiln.load(foreign, { n_head = 2 }):config().activation, "gelu", "a foreign (nanoGPT) file is taken as nanoGPT's exact gelu")
t.eq(kiln.load(foreign, { n_head = 2, activation = "gelu_tanh" }):config().activation, "gelu_tanh",
  "unless kiln.load's activation option says otherwise")
t.err("'activation' must be \"gelu_tanh\" or \"gelu\"", kiln.load, foreign, { n_head = 2, activation = "tanh" })
t.done()
