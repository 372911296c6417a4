#!/usr/bin/env kiln
-- Non-finite values stop runs: a NaN evaluation loss, a NaN parameter at a checkpoint, and
-- suites that record such runs as failed instead of averaging NaN into their tables.
local t = dofile("tests/lua/tap.lua")
local kiln = require "kiln"
local util = require "kiln.util"
local train = require "kiln.train"
local dir = t.tmpdir()
kiln.set_threads(1)

local val = kiln.dataset("tests/data/tiny_en.txt")
local ood = kiln.dataset("tests/data/tiny_other.txt")

local function setup(seed, run_dir)
  return {
    model = kiln.model { vocab_size = 256, block_size = 16, n_layer = 1, n_head = 2, n_embd = 16, seed = seed },
    optimizer = { lr = 3e-3 }, data = kiln.dataset("tests/data/tiny_en.txt"),
    steps = 8, batch = 4, context = 16, seed = seed, log_every = 2, quiet = true, run_dir = run_dir,
    eval = { every = 2, sets = { val = val, ood = ood }, windows = 4 },
    checkpoint = { every = 2 },
  }
end

-- A real NaN evaluation: from the `from`-th evaluation of `set` on, the model's final
-- LayerNorm weight is NaN while that set is evaluated (restored afterwards, so training
-- losses stay finite and only the evaluation sees it).
local original_evaluate = train.evaluate
local function poison_eval(set, from)
  local calls = 0
  train.evaluate = function(model, ds, ...)
    if ds ~= set then return original_evaluate(model, ds, ...) end
    calls = calls + 1
    if calls < from then return original_evaluate(model, ds, ...) end
    local p = model:param("transformer.ln_f.weight")
    local saved = p:clone()
    p:fill(0 / 0)
    local mean, per = original_evaluate(model, ds, ...)
    p:copy(saved)
    return mean, per
  end
end
local function restore_eval() train.evaluate = original_evaluate end

-- 1. A NaN evaluation stops the run at that step and names the checkpoint before it.
local run1 = dir .. "/run1"
poison_eval(ood, 2)
local ok, msg = pcall(kiln.train, setup(1, run1))
restore_eval()
t.ok(not ok, "a NaN evaluation loss stops the run")
t.ok(tostring(msg):find("step 4: the evaluation loss on 'ood' is %-?nan") ~= nil, "the message names the step and the set: " .. tostring(msg))
t.ok(tostring(msg):find("last good checkpoint: " .. run1 .. "/checkpoints/step_00000002.safetensors", 1, true) ~= nil,
  "the last good checkpoint is the one before the NaN evaluation")
t.ok(train.is_divergence(msg), "the error is recognised as a divergence")
t.ok(util.exists(run1 .. "/checkpoints/step_00000002.safetensors"), "the good checkpoint exists")
t.ok(not util.exists(run1 .. "/checkpoints/step_00000004.safetensors"), "no checkpoint is written at the NaN evaluation")
t.ok(not util.exists(run1 .. "/summary.yaml"), "a failed run writes no summary")
local _, meta = kiln.load(run1 .. "/checkpoints/step_00000002.safetensors")
t.eq(tonumber(meta.step), 2, "the named checkpoint holds step 2")

-- 2. A checkpoint is never written with non-finite parameters.
local run2 = dir .. "/run2"
local o2 = setup(2, run2)
o2.eval, o2.checkpoint = nil, { every = 1 }
o2.on_step = function(info)
  if info.step == 3 then info.model:param("transformer.h.0.mlp.c_fc.bias"):fill(math.huge) end
end
ok, msg = pcall(kiln.train, o2)
t.ok(not ok and tostring(msg):find("step 3: parameter %d+ of the model is inf") ~= nil,
  "a non-finite parameter stops the run at the checkpoint: " .. tostring(msg))
t.ok(tostring(msg):find("step_00000002.safetensors", 1, true) ~= nil, "and names the step-2 checkpoint as the last good one")
t.ok(not util.exists(run2 .. "/checkpoints/step_00000003.safetensors"), "the bad checkpoint is not written")

-- 3. A NaN training loss names a checkpoint whose evaluation was finite.
local run3 = dir .. "/run3"
local o3 = setup(3, run3)
o3.on_step = function(info)
  if info.step == 5 then info.model:param("transformer.ln_f.weight"):fill(0 / 0) end
end
ok, msg = pcall(kiln.train, o3)
t.ok(not ok and tostring(msg):find("step 5: the loss is %-?nan") ~= nil, "a NaN training loss stops the run: " .. tostring(msg))
t.ok(tostring(msg):find("step_00000004.safetensors", 1, true) ~= nil, "naming the step-4 checkpoint")

-- 4. Suites: a diverged run is failed, left out of the tables, listed with its message.
local sdir = dir .. "/suite"
local res = kiln.suite {
  dir = sdir, quiet = true, seeds = { 1, 2 },
  variants = { { name = "fine" }, { name = "broken" } },
  run = function(v, seed, run_dir)
    if v.name == "broken" and seed == 2 then poison_eval(ood, 1) end
    local okr, s = pcall(kiln.train, setup(seed, run_dir))
    restore_eval()
    if not okr then error(s, 0) end
    return s
  end,
}
t.eq(res.status, "failed", "the suite's status is failed")
t.eq(#res.failed, 1, "one run failed")
t.ok(res.failed[1] and res.failed[1].variant == "broken" and res.failed[1].seed == 2, "the failed run is broken seed 2")
local csv = util.read_csv(sdir .. "/results.csv")
local by = {}
for _, r in ipairs(csv.rows) do by[r[1]] = r end
t.eq(by.fine[2], 2, "the complete variant has n = 2")
t.eq(by.broken[2], 1, "the variant with a failed run counts only its complete run")
local text = util.read_file(sdir .. "/results.csv")
t.ok(not text:lower():find("nan"), "results.csv holds no NaN")
local runs = util.read_csv(sdir .. "/runs.csv")
t.eq(runs.header[3], "status", "runs.csv has a status column when a run failed")
local failed_row
for _, r in ipairs(runs.rows) do if r[1] == "broken" and r[2] == 2 then failed_row = r end end
t.ok(failed_row and failed_row[3] == "failed" and (failed_row[4] == "" or failed_row[4] == nil), "the failed run's row has no metrics")
local md = util.read_file(sdir .. "/results.md")
t.ok(md:find("1 run failed", 1, true) and md:find("broken seed 2: kiln.train: diverged: step 2: the evaluation loss on 'ood'", 1, true),
  "results.md lists the failed run with its message")

-- 5. A report with a non-finite metric fails that run; other errors still stop the suite.
local res2 = kiln.suite {
  dir = dir .. "/suite2", quiet = true, variants = { { name = "a" } },
  run = function() return { status = "complete" } end,
  report = function() return { loss = 0 / 0 } end,
}
t.ok(res2.status == "failed" and res2.failed[1].message:find("metric 'loss' is %-?nan"), "a NaN metric marks the run failed")
t.err("kiln.suite: run%(a, 1%) returned", kiln.suite, {
  dir = dir .. "/suite3", quiet = true, variants = { { name = "a" } }, run = function() return 5 end })
t.err("not a divergence", kiln.suite, {
  dir = dir .. "/suite4", quiet = true, variants = { { name = "a" } }, run = function() error("not a divergence", 0) end })

t.done()
