#!/usr/bin/env kiln
-- kiln.train with weight averaging: the averaged weights evaluated beside the raw ones, saved
-- with every checkpoint as a loadable model, restored on resume bit for bit, fingerprinted.
local t = dofile("tests/lua/tap.lua")
local kiln = require "kiln"
local util = require "kiln.util"

local EN, OTHER = "tests/data/tiny_en.txt", "tests/data/tiny_other.txt"
local dir = t.tmpdir()
local function opts(run_dir, over)
  local o = {
    model = { n_layer = 1, n_head = 2, n_embd = 16, block_size = 16, seed = 3 },
    optimizer = { lr = 1e-2 }, data = kiln.dataset(EN), steps = 8, batch = 4, context = 16,
    eval = { every = 2, sets = { val = kiln.dataset(OTHER) }, windows = 8 },
    checkpoint = { every = 4 }, run_dir = run_dir, quiet = true, ema = { decay = 0.9 },
  }
  for k, v in pairs(over or {}) do o[k] = v end
  return o
end

local full = kiln.train(opts(dir .. "/full"))
local m = util.read_csv(dir .. "/full/metrics.csv")
local hdr = table.concat(m.header, ",")
t.ok(hdr:find("val_loss,val_avg_loss", 1, true), "metrics.csv has val_avg_loss beside val_loss (" .. hdr .. ")")
local last = m.rows[#m.rows]
t.ok(type(last[#last]) == "number" and last[#last] ~= last[#last - 1], "the averaged weights' loss is logged and differs from the raw one")
t.ok(full.eval_average and full.eval_average.val == last[#last], "summary.eval_average holds the final averaged loss")

local avg_file = dir .. "/full/checkpoints/step_00000008.average.safetensors"
t.ok(util.exists(avg_file), "the average is saved beside the checkpoint")
local am = kiln.load(avg_file)
local loss_loaded = kiln.train.evaluate(am, kiln.dataset(OTHER), 16, 8, 4)
t.eq(loss_loaded, full.eval_average.val, "the average file loads as a model and evaluates to the reported averaged loss")

-- The averaged weights are evaluated on the raw evaluation's windows, final_windows included.
local fw = kiln.train(opts(dir .. "/fw", { eval = { every = 4, sets = { val = kiln.dataset(OTHER) }, windows = 4,
                                                       final_windows = 8 } }))
local evaluate = require "kiln.evaluate"
local _, raw8 = evaluate.read_windows(dir .. "/fw/windows/val_step00000008.csv")
local avg8, avg8_idx = evaluate.read_windows(dir .. "/fw/windows/val_avg_step00000008.csv")
local avg4 = evaluate.read_windows(dir .. "/fw/windows/val_avg_step00000004.csv")
t.eq(#avg8, 8, "the final averaged evaluation uses final_windows, as the raw one")
t.eq(table.concat(avg8_idx, ","), table.concat(raw8, ","), "... the same windows")
t.eq(#avg4, 4, "an intermediate averaged evaluation uses eval.windows")
t.near(require("kiln.stats").mean(avg8), fw.eval_average.val, 1e-9, "the averaged windows' mean is the reported averaged loss")

-- Stopped at step 4 (a checkpoint), then resumed: the same files as the run in one go.
local stopped = kiln.train(opts(dir .. "/two", { on_step = function(info) if info.step == 4 then return "stop" end end }))
t.eq(stopped.status, "stopped", "a hook stops the run at step 4")
local resumed = kiln.train(opts(dir .. "/two"))
t.eq(resumed.status, "complete", "the resumed run completes")
t.eq(t.read(dir .. "/two/metrics.csv"), t.read(dir .. "/full/metrics.csv"), "metrics.csv of the resumed run equals the uninterrupted one, averaged losses included")
t.eq(t.read(dir .. "/two/checkpoints/step_00000008.average.safetensors"), t.read(avg_file),
  "the final average is bit-identical after resume")

-- A changed averaging setting is a different run.
t.err("other settings %(average%.decay: 0%.9 %-> 0%.99%)", kiln.train, opts(dir .. "/full", { ema = { decay = 0.99 } }))
t.err("kiln%.train: argument 'ema%.decay' must be a number in %[0, 1%)", kiln.train, opts(dir .. "/bad", { ema = { decay = 1 } }))
t.err("kiln%.train: give 'average' or 'ema', not both", kiln.train, opts(dir .. "/bad", { average = { kind = "mean" } }))
local mo = opts(dir .. "/mean", { average = { kind = "mean", start = 3 } })
mo.ema = nil
local mean = kiln.train(mo)
t.ok(mean.eval_average.val ~= nil, "a running mean from step 3 is evaluated too")
t.done()
