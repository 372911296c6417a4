#!/usr/bin/env kiln
-- kiln.formselect: the held-out choice of the temporal law's forms finds a combination that
-- predicts a run whose parameters follow known forms; it never looks past the cut (every
-- point after the cut replaced by absurd values, or extra checkpoints added, leaves the
-- choice, every score and every prediction bitwise unchanged), while it does depend on the
-- points before the cut; and bad options are refused with a clear message.
local t = dofile("tests/lua/tap.lua")
local kiln = require "kiln"
local util = require "kiln.util"
local tsl = require "kiln.tsl"
local formselect = require "kiln.formselect"
local dir = t.tmpdir()

local N, TPS, T = 2000, 1000, 32
local SCHED = kiln.schedule.cosine { peak = 1e-3, floor = 1e-4, steps = N, warmup = 100 }
-- a0 = 3 − 0.2·ln x (x = tokens / 1e6), a1 = 0.3, a2 = 1.5 + 1.2·c(t) (the piecewise cosine).
local function params_at(step)
  local x = step * TPS / 1e6
  local c
  if step <= 101 then c = 1 elseif step >= N then c = 0 else c = 0.5 * (1 + math.cos(math.pi * (step - 101) / (N - 101))) end
  return 3 - 0.2 * math.log(x), 0.3, 1.5 + 1.2 * c
end

local d = dir .. "/run"
util.mkdir(d)
util.write_atomic(d .. "/config.yaml", kiln.yaml.encode { train = { steps = N, tokens_per_step = TPS,
  schedule = SCHED:describe(), schedule_config = SCHED:config() } })
local lines = { "step,set" }
for i = 1, T do lines[1] = lines[1] .. ",pos" .. i end
for s = 40, N, 40 do
  local a0, a1, a2 = params_at(s)
  local row = { s, "val" }
  for i = 1, T do row[#row + 1] = a0 / (1 + a1 * i) + a2 end
  lines[#lines + 1] = util.csv_line(row):sub(1, -2)
end
util.write_atomic(d .. "/positions.csv", table.concat(lines, "\n") .. "\n")
local run = tsl.read_run(d)
t.eq(run.peak_step, 101, "the run's LR peaks at step 101 (after 100 warmup updates)")

local CUT = 1000
local function copy_run(r)
  local c = {}
  for k, v in pairs(r) do c[k] = v end
  c.sets, c.set_names = {}, { "val" }
  local s = r.sets.val
  local n = { name = "val", steps = {}, tokens = {}, losses = {}, mean = {} }
  for k = 1, #s.steps do
    n.steps[k], n.tokens[k], n.mean[k] = s.steps[k], s.tokens[k], s.mean[k]
    n.losses[k] = {}
    for i = 1, #s.losses[k] do n.losses[k][i] = s.losses[k][i] end
  end
  c.sets.val = n
  return c
end

-- 1. The choice on a run that follows known forms -------------------------------------------
local base = formselect.choose(run, { set = "val", cut = CUT })
t.ok(base.cut == CUT and base.inner_cut < CUT and base.n_val >= 1,
  ("choose: fits steps %d..%d, scores steps after %d up to the cut %d (%d fit, %d held out)"):format(
    base.fit_from, base.inner_cut, base.inner_cut, CUT, base.n_fit, base.n_val))
t.ok(base.scores[1].mse < 1e-8, ("choose: the chosen forms %s predict the held-out checkpoints (MSE %.3g < 1e-8)"):format(
  base.scores[1].key, base.scores[1].mse))
local true_score
for _, sc in ipairs(base.scores) do if sc.key == "log/constant/cosine" then true_score = sc.mse end end
t.ok(true_score and base.scores[1].mse <= true_score, "choose: the true combination log/constant/cosine scores no better than the chosen one")
t.ok(#base.scores > 100, ("choose: %d combinations were scored"):format(#base.scores))
do
  local worst = 0
  for k, s in ipairs(run.sets.val.steps) do
    if s > CUT then worst = math.max(worst, math.abs(tsl.predict(base.model, s).loss - run.sets.val.mean[k]) / run.sets.val.mean[k]) end
  end
  t.ok(worst < 1e-4, ("choose: the refitted model predicts every checkpoint after the cut within %.2e relative (< 1e-4)"):format(worst))
end

-- 2. Nothing after the cut is used ----------------------------------------------------------
local function same_choice(a, b, what)
  t.ok(a.forms.a0 == b.forms.a0 and a.forms.a1 == b.forms.a1 and a.forms.a2 == b.forms.a2,
    what .. ": the same forms (" .. a.scores[1].key .. " vs " .. b.scores[1].key .. ")")
  local same = #a.scores == #b.scores
  for i = 1, math.min(#a.scores, #b.scores) do same = same and a.scores[i].key == b.scores[i].key and a.scores[i].mse == b.scores[i].mse end
  t.ok(same, what .. ": every combination's score is bitwise equal")
  local eq = true
  for s = 40, N + 400, 20 do eq = eq and tsl.predict(a.model, s).loss == tsl.predict(b.model, s).loss end
  t.ok(eq, what .. ": predictions at every step up to the cut and beyond are bitwise equal")
end
do
  local absurd = copy_run(run)
  local s = absurd.sets.val
  for k, st in ipairs(s.steps) do
    if st > CUT then
      for i = 1, T do s.losses[k][i] = (i % 2 == 0) and 1e9 or 0 / 0 end
      s.mean[k] = 0 / 0
    end
  end
  -- and checkpoints beyond the planned run, with negative losses
  for extra = 1, 3 do
    local k = #s.steps + 1
    s.steps[k], s.tokens[k], s.mean[k], s.losses[k] = N + 40 * extra, (N + 40 * extra) * TPS, -5, {}
    for i = 1, T do s.losses[k][i] = -5 end
  end
  same_choice(base, formselect.choose(absurd, { set = "val", cut = CUT }), "every point after the cut absurd (1e9, NaN, negative)")
  local fewer = copy_run(run)
  local f = fewer.sets.val
  while f.steps[#f.steps] > CUT do
    f.steps[#f.steps], f.tokens[#f.tokens], f.mean[#f.mean], f.losses[#f.losses] = nil, nil, nil, nil
  end
  same_choice(base, formselect.choose(fewer, { set = "val", cut = CUT }), "the points after the cut removed")
end

-- 3. ... while the points before the cut matter ---------------------------------------------
do
  local moved = copy_run(run)
  local s = moved.sets.val
  for k, st in ipairs(s.steps) do
    if st > base.inner_cut and st <= CUT then
      for i = 1, T do s.losses[k][i] = s.losses[k][i] + 0.05 end
      s.mean[k] = s.mean[k] + 0.05
    end
  end
  local r = formselect.choose(moved, { set = "val", cut = CUT })
  t.ok(r.scores[1].mse ~= base.scores[1].mse, ("held-out points before the cut raised by 0.05: the best score moves (%.3g -> %.3g)"):format(
    base.scores[1].mse, r.scores[1].mse))
  t.ok(tsl.predict(r.model, CUT).loss ~= tsl.predict(base.model, CUT).loss, "held-out points before the cut raised: the refitted prediction at the cut changes")
end

-- 4. Options and bad input -------------------------------------------------------------------
do
  local r = formselect.choose(run, { set = "val", cut = CUT, candidates = { "log", "power" } })
  t.ok((r.forms.a0 == "log" or r.forms.a0 == "power") and #r.scores == 8, "choose: a candidate list applies to every parameter (2^3 = 8 combinations)")
  r = formselect.choose(run, { set = "val", cut = 0.5 })
  t.eq(r.cut, 1000, "choose: a cut given as a fraction of the planned steps")
  t.err("needs at least 5 to fit", formselect.choose, run, { set = "val", cut = 200 })
  t.err("holdout must be a fraction", formselect.choose, run, { set = "val", cut = CUT, holdout = 1.5 })
  t.err("candidate form 'cubic'", formselect.choose, run, { set = "val", cut = CUT, candidates = { "cubic" } })
  t.err("no evaluation set 'ood'", formselect.choose, run, { set = "ood", cut = CUT })
  t.err("cut must be a step", formselect.choose, run, { set = "val", cut = -3 })
end

t.done()
