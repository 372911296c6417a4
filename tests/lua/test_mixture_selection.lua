#!/usr/bin/env kiln
-- experiments/mixture_selection.lua end to end on the tiny test corpora (bytes): three
-- candidate mixtures, the temporal law's pick and regret, and every other predictor's
-- forecast from the same prefix with its pick, regret and Kendall tau; a second invocation
-- trains nothing and writes the same tables.
local t = dofile("tests/lua/tap.lua")
local util = require "kiln.util"
local dir = t.tmpdir()
local kiln_bin = (os.getenv("KILN_BUILD") or "build") .. "/kiln"

local cmd = ("KILN_THREADS=1 %s experiments/mixture_selection.lua upstream=tests/data/tiny_en.txt " ..
  "upstream_val=tests/data/tiny_en.txt downstream=tests/data/tiny_other.txt downstream_val=tests/data/tiny_other.txt " ..
  "out=%s/mx steps=60 prefix=0.5 'weights=[0.8,0.5,0.2]' n_embd=16 n_layer=1 n_head=2 context=16 batch=4 " ..
  "eval_windows=8 evals=12 warmup=4"):format(kiln_bin, dir)
local out, code = t.sh(cmd)
t.eq(code, 0, "three candidates train and are compared" .. (code == 0 and "" or (": " .. out)))
local md = t.read(dir .. "/mx/results.md") or ""
t.ok(md:find("Pick: [%d.]+; truly best: [%d.]+%. The pick was %a+ %(regret: the pick's true target loss is [%d.]+ above"),
  "the temporal law's pick, the best mixture and the regret")
local trained = md:match("| trained out | ([^\n]+)")
t.ok(trained and select(2, trained:gsub("%d%.%d%d%d%d", "")) == 3, "the trained-out target of each candidate")
for _, name in ipairs { "temporal", "temporal_auto", "power", "reciprocal", "log", "annealing", "multipower", "prefix_loss" } do
  local row = md:match("\n| " .. name .. " | ([^\n]+)")
  local tau = row and tonumber(row:match("| (%-?[%d.]+) |$"))
  t.ok(row and (row:find("failed: ") or (tau and tau >= -1 and tau <= 1)),
    ("%s: a forecast per candidate and a tau in [-1, 1], or its failure named: %s"):format(name, tostring(row)))
end
local csv = util.read_csv(dir .. "/mx/forecasts.csv")
t.eq(csv and #csv.rows, 8 * 3, "forecasts.csv: a row per predictor and candidate")
local regret = tonumber(md:match("regret: the pick's true target loss is ([%d.]+)"))
local pick_regret = tonumber(md:match("\n| temporal | [^\n]-| ([%d.]+) | %-?[%d.]+ |\n"))
t.ok(regret and pick_regret and math.abs(regret - pick_regret) < 1e-4, "the temporal row's regret is the pick's")

local out2, code2 = t.sh(cmd)
t.ok(code2 == 0 and (t.read(dir .. "/mx/results.md") or "") == md, "a second invocation writes the same tables" ..
  (code2 == 0 and "" or (": " .. out2)))
t.done()
