#!/usr/bin/env kiln
-- experiments/position_law.lua on a small byte-level model trained here (no data/ needed):
-- every checkpoint and set gets a row with the window count, finite R² of both laws and the
-- noise ceiling, which equals tsl.noise_ceiling of the same evaluation; mistakes in what was
-- asked are one line naming the setting.
local t = dofile("tests/lua/tap.lua")
local kiln = require "kiln"
local tsl = require "kiln.tsl"
local dir = t.tmpdir()
local kiln_bin = (os.getenv("KILN_BUILD") or "build") .. "/kiln"
kiln.set_threads(1)

local EN, OTHER = "tests/data/tiny_en.txt", "tests/data/tiny_other.txt"
local model = kiln.model { vocab_size = 256, block_size = 32, n_layer = 1, n_head = 2, n_embd = 16, seed = 2 }
kiln.train { model = model, data = kiln.dataset(EN), steps = 30, batch = 8, context = 32, quiet = true,
             optimizer = { lr = 1e-2 } }
local ckpt = dir .. "/m.safetensors"
kiln.save(ckpt, { model = model })

local cmd = ("%s experiments/position_law.lua %s sets.val=%s sets.austen=%s sets.prose= windows=16 threads=1 out=%s/pl.md")
  :format(kiln_bin, ckpt, EN, OTHER, dir)
local out, code = t.sh(cmd)
t.eq(code, 0, "the script runs")
local rows = {}
for line in t.read(dir .. "/pl.md"):gmatch("[^\n]+") do
  local cells = {}
  for c in line:gmatch("|%s*([^|]-)%s*%f[|]") do cells[#cells + 1] = c end
  if cells[1] == ckpt then rows[cells[2]] = cells end
end
t.ok(rows.val and rows.austen and not rows.prose, "a row per set; sets.prose= drops the default set")
local e = kiln.evaluate(model, kiln.dataset(EN), 32, { windows = 16 })
t.eq(tonumber(rows.val[3]), 16, "the window count")
t.near(tonumber(rows.val[4]), e.loss, 1e-4, "the loss is the evaluation's")
t.near(tonumber(rows.val[9]), tsl.noise_ceiling(e.positions, e.positions_se), 1e-4, "the ceiling is tsl.noise_ceiling of it")
t.near(tonumber(rows.val[8]), tsl.fit_positions(e.positions).r2, 1e-4, "R² is tsl.fit_positions' of it")
for _, set in ipairs { "val", "austen" } do
  local finite = true
  for i = 3, 14 do finite = finite and tonumber(rows[set][i]) ~= nil and tonumber(rows[set][i]) == tonumber(rows[set][i]) end
  t.ok(finite, set .. ": every number is finite")
end

local msg, c2 = t.sh(("%s experiments/position_law.lua windows=16"):format(kiln_bin))
t.ok(c2 ~= 0 and msg:find("give one or more checkpoints", 1, true) and not msg:find("traceback"), "no checkpoint: one line")
msg, c2 = t.sh(("%s experiments/position_law.lua %s windows=0"):format(kiln_bin, ckpt))
t.ok(c2 ~= 0 and msg:find("windows", 1, true) and not msg:find("traceback"), "a bad window count names the setting")
msg, c2 = t.sh(("%s experiments/position_law.lua %s sets.val= sets.austen= sets.prose="):format(kiln_bin, ckpt))
t.ok(c2 ~= 0 and msg:find("no evaluation set left", 1, true), "no set left: one line")
t.done()
