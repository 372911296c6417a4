#!/usr/bin/env kiln
-- Cooldowns forked from a checkpoint (kiln.cooldown, `kiln cooldown`): the fork starts from
-- the checkpoint's weights and AdamW moments, its LR follows the chosen shape from the run's
-- LR, its config records the start checkpoint, its fingerprint guards reruns, and mistakes
-- name the setting.
local t = dofile("tests/lua/tap.lua")
local kiln = require "kiln"
local util = require "kiln.util"
local cooldown = require "kiln.cooldown"
local dir = t.tmpdir()
local kiln_bin = (os.getenv("KILN_BUILD") or "build") .. "/kiln"
kiln.set_threads(1)

local EN, OTHER = "tests/data/tiny_en.txt", "tests/data/tiny_other.txt"
local PEAK, T = 3e-3, 16

local function original(run_dir, schedule, ema)
  return kiln.train {
    ema = ema,
    model = { vocab_size = 256, block_size = T, n_layer = 1, n_head = 2, n_embd = 16, seed = 3 },
    optimizer = { lr = PEAK, weight_decay = 0.1, clip = 1.0 },
    data = kiln.dataset(EN), steps = 12, batch = 4, context = T, seed = 5, log_every = 1, quiet = true,
    schedule = schedule,
    eval = { every = 4, windows = 8, sets = { val = kiln.dataset(EN), ood = kiln.dataset(OTHER) } },
    checkpoint = { every = 4 }, run_dir = run_dir,
  }
end

local run = dir .. "/const"
original(run, kiln.schedule.wsd { peak = PEAK, warmup = 2, stable = 10, decay = 0 })
local ckpt = run .. "/checkpoints/step_00000008.safetensors"

-- The weights, moments and step count at the checkpoint, and its evaluation, loaded directly.
local ref_model = kiln.load(ckpt)
local ref_opt = kiln.adamw(ref_model)
kiln.load(ckpt, { model = ref_model, optimizer = ref_opt })
local ref_val = kiln.train.evaluate(ref_model, kiln.dataset(EN), T, 8, 4)

local function same_values(x, y)
  if type(x) ~= "table" then return x == y end
  if #x ~= #y then return false end
  for i = 1, #x do if not same_values(x[i], y[i]) then return false end end
  return true
end
local function same_tensor(a, b) return same_values(a:totable(), b:totable()) end

local seen = {}
local out = dir .. "/cool"
local s = cooldown.fork { run = run, at = 8, length = 6, shape = "cosine", out = out, quiet = true,
  on_eval = function(info)
    if info.step ~= 0 then return end
    seen.params = same_tensor(info.model:flat_params(), ref_model:flat_params())
    local m1, v1 = info.optimizer:moments("transformer.h.0.mlp.c_fc.weight")
    local m2, v2 = ref_opt:moments("transformer.h.0.mlp.c_fc.weight")
    seen.moments = same_tensor(m1, m2) and same_tensor(v1, v2)
    seen.t = info.optimizer.t
  end }
t.eq(s.status, "complete", "the fork completes")
t.eq(s.steps, 6, "the fork trains `length` steps")
t.ok(seen.params, "before the first update the fork's weights are the checkpoint's, bit for bit")
t.ok(seen.moments, "... and so are the AdamW moments")
t.eq(seen.t, 8, "... and the optimizer's step count")

local metrics = util.read_csv(out .. "/metrics.csv")
local col = {}
for i, h in ipairs(metrics.header) do col[h] = i end
t.eq(metrics.rows[1][1], 0, "metrics.csv starts with the step-0 evaluation")
t.eq(metrics.rows[1][col.val_loss], ref_val, "the step-0 evaluation equals evaluating the checkpoint file directly")

-- The LR of update s (row s + 1) against the shape's formula from the run's LR at step 8.
local formulas = {
  linear = function(x) return 1 - x end,
  cosine = function(x) return 0.5 * (1 + math.cos(math.pi * x)) end,
  ["1-sqrt"] = function(x) return 1 - math.sqrt(x) end,
}
local function lr_matches(rows, shape, L, lr0, floor)
  local worst = 0
  for s = 0, L - 1 do
    local want = floor + (lr0 - floor) * formulas[shape](s / L)
    worst = math.max(worst, math.abs(rows[s + 2][col.lr] - want) / want)
  end
  return worst
end
t.ok(lr_matches(metrics.rows, "cosine", 6, PEAK, 0) < 1e-7, "cosine: the lr column is ½(1 + cos(πs/L)) from the run's LR")
t.eq(#metrics.rows, 7, "a row per step after the step-0 row")
t.near(metrics.rows[7][col.val_loss], s.eval.val, 0, "an evaluation at the end")

local cfg = kiln.yaml.load(out .. "/config.yaml")
t.eq(cfg.start.path, ckpt, "config.yaml records the start checkpoint's path")
t.eq(cfg.start.sha256, (kiln.sha256_file(ckpt)), "... and its SHA-256")
t.eq(cfg.fingerprint.settings["start.sha256"], (kiln.sha256_file(ckpt)), "the start checkpoint is part of the fingerprint")
t.eq(cfg.train.seed, 5 + 8, "the fork's data order is seeded by the run's seed + at")
t.eq(cfg.fingerprint.settings["eval.windows"], 8, "the run's evaluation windows")
t.eq(cfg.train.batch, 4, "the run's batch")
t.eq(cfg.optimizer.weight_decay, 0.1, "the run's optimizer hyperparameters")
t.eq(cfg.train.eval_sets.ood, OTHER, "the run's evaluation sets")

local again = cooldown.fork { run = run, at = 8, length = 6, shape = "cosine", out = out, quiet = true }
t.ok(again.already_complete, "rerunning the same fork is 'already complete'")
t.err("train%.steps: 6 %-> 7", cooldown.fork, { run = run, at = 8, length = 7, shape = "cosine", out = out, quiet = true })
t.err("lr%.sha256", cooldown.fork, { run = run, at = 8, length = 6, shape = "linear", out = out, quiet = true })

-- The other shapes, with a floor; the default output directory.
for _, shape in ipairs { "linear", "1-sqrt" } do
  local r = cooldown.fork { run = run, at = 4, length = 5, shape = shape, floor = 1e-4, quiet = true }
  t.eq(r.cooldown.out, ("%s-cooldown-4-5-%s"):format(run, shape), shape .. ": the default out is RUN-cooldown-AT-LENGTH-SHAPE")
  local rows = util.read_csv(r.cooldown.out .. "/metrics.csv").rows
  t.ok(lr_matches(rows, shape, 5, PEAK, 1e-4) < 1e-7, shape .. ": the lr column follows the shape down to the floor")
end

-- Mistakes name the setting.
t.err("at = 5: .*step_00000005%.safetensors does not exist %(checkpoints of .*: steps 4, 8, 12%)",
      cooldown.fork, { run = run, at = 5, length = 2, shape = "linear", quiet = true })
t.err("'shape' must be one of linear, cosine, 1%-sqrt", cooldown.fork, { run = run, at = 4, length = 2, shape = "sqrt", quiet = true })
local msg, code = t.sh(kiln_bin .. " cooldown " .. run .. " at=6 length=2 shape=linear")
t.ok(code == 1 and msg:find("at = 6", 1, true) and msg:find("steps 4, 8, 12", 1, true) and not msg:find("traceback"),
     "kiln cooldown: a missing step is one line listing the checkpoints")
msg, code = t.sh(kiln_bin .. " cooldown " .. run .. " at=4 length=2 shape=square")
t.ok(code == 1 and msg:find("setting 'shape'", 1, true) and not msg:find("traceback"), "kiln cooldown: a bad shape names the setting")

-- A run that was decaying is refused (force = true forks anyway); a run without a schedule
-- config takes its LR from metrics.csv and says so.
local decaying = dir .. "/cos"
original(decaying, kiln.schedule.cosine { peak = PEAK, steps = 12, warmup = 2 })
t.err("not constant at step 8", cooldown.fork, { run = decaying, at = 8, length = 2, shape = "linear", quiet = true })
local forced = cooldown.fork { run = decaying, at = 8, length = 2, shape = "linear", quiet = true, force = true }
t.eq(forced.cooldown.start_lr, kiln.schedule.cosine { peak = PEAK, steps = 12, warmup = 2 }(8), "force: the LR starts at the schedule's LR at step 8")

local plain = dir .. "/plain"
original(plain, function(step) return step < 2 and PEAK * step / 2 or PEAK end)
t.eq(kiln.yaml.load(plain .. "/config.yaml").train.schedule_config.kind, "function", "a Lua-function schedule has no rebuildable config")
local p = cooldown.fork { run = plain, at = 8, length = 3, shape = "linear", quiet = true }
t.eq(p.cooldown.start_lr, tonumber(util.num32(PEAK)), "without a schedule config the LR comes from metrics.csv")
t.ok(p.cooldown.lr_source:find("metrics.csv", 1, true), "... and the fork says so")

-- A run's weight average carries into its forks: the fork starts from the average saved with
-- the checkpoint (same count) and keeps updating it with the run's settings; average = false
-- keeps none; a table starts a new one.
local ema_run = dir .. "/ema"
original(ema_run, kiln.schedule.wsd { peak = PEAK, warmup = 2, stable = 10, decay = 0 }, { decay = 0.9 })
local parent_rows = util.read_csv(ema_run .. "/metrics.csv")
local pcol = {}
for i, h in ipairs(parent_rows.header) do pcol[h] = i end
local parent_avg_at_8
for _, row in ipairs(parent_rows.rows) do if row[1] == 8 then parent_avg_at_8 = row[pcol.val_avg_loss] end end
local A0 = kiln.load(ema_run .. "/checkpoints/step_00000008.average.safetensors"):flat_params():totable()
local ws = {}
local ema_out = dir .. "/ema-cool"
local e = cooldown.fork { run = ema_run, at = 8, length = 3, shape = "linear", out = ema_out, quiet = true,
  checkpoint_every = 1, on_step = function(info) ws[#ws + 1] = info.model:flat_params():totable() end }
local ecfg = kiln.yaml.load(ema_out .. "/config.yaml")
t.eq(ecfg.fingerprint.settings["average.decay"], 0.9, "the fork keeps the run's EMA settings")
t.eq(ecfg.fingerprint.settings["average.from_sha256"],
     (kiln.sha256_file(ema_run .. "/checkpoints/step_00000008.average.safetensors")),
     "the continued average is part of the fork's fingerprint")
local erows = util.read_csv(ema_out .. "/metrics.csv")
local ecol = {}
for i, h in ipairs(erows.header) do ecol[h] = i end
t.ok(parent_avg_at_8 ~= nil and erows.rows[1][ecol.val_avg_loss] == parent_avg_at_8,
     "the fork's step-0 average evaluation equals the run's at the checkpoint")
-- The average after 3 more steps against a ← 0.9·a + 0.1·w from the checkpoint's average.
local want = A0
for k = 1, #ws do
  for i = 1, #want do want[i] = 0.9 * want[i] + 0.1 * ws[k][i] end
end
local got = kiln.load(ema_out .. "/checkpoints/step_00000003.average.safetensors"):flat_params():totable()
local worst = 0
for i = 1, #want do worst = math.max(worst, math.abs(got[i] - want[i])) end
t.eq(#ws, 3, "three steps seen")
t.ok(worst < 1e-6, ("the fork's average continues the run's: |a - reference| <= %.2g"):format(worst))
t.eq(e.eval_average and type(e.eval_average.val), "number", "the summary has the average's final evaluation")
local none = cooldown.fork { run = ema_run, at = 8, length = 2, shape = "linear", out = dir .. "/ema-none", quiet = true,
                             average = false }
t.eq(none.eval_average, nil, "average = false: the fork keeps no average")
local fresh = cooldown.fork { run = ema_run, at = 8, length = 2, shape = "linear", out = dir .. "/ema-fresh", quiet = true,
                              average = { kind = "ema", decay = 0.5 } }
t.eq(kiln.yaml.load(dir .. "/ema-fresh/config.yaml").fingerprint.settings["average.from"], nil,
     "average = {...}: a new average, not the run's")
t.eq(type(fresh.eval_average.val), "number", "... evaluated like any other")
msg, code = t.sh(("%s cooldown %s at=8 length=2 shape=linear out=%s/ema-cli average=false"):format(kiln_bin, ema_run, dir))
t.ok(code == 0 and not table.concat(util.read_csv(dir .. "/ema-cli/metrics.csv").header, ","):find("avg"),
     "kiln cooldown average=false: no averaged column")
t.err("'average' must be false or a table", cooldown.fork,
      { run = ema_run, at = 8, length = 2, shape = "linear", quiet = true, average = true })
t.err("ema%.from: the weight average '.*nope' does not exist", kiln.train, {
  model = { vocab_size = 256, block_size = T, n_layer = 1, n_head = 2, n_embd = 16 }, data = kiln.dataset(EN),
  steps = 1, batch = 2, context = T, quiet = true, ema = { decay = 0.9, from = dir .. "/nope" } })
t.err("ema%.from: .* is not a weight average written by kiln%.train", kiln.train, {
  model = { vocab_size = 256, block_size = T, n_layer = 1, n_head = 2, n_embd = 16 }, data = kiln.dataset(EN),
  steps = 1, batch = 2, context = T, quiet = true, ema = { decay = 0.9, from = ckpt } })

t.done()
