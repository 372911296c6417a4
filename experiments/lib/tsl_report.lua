-- tsl_report.lua — the tables and verdicts of experiments/temporal_scaling.lua, from the rows
-- its analysis collects (ctx.rows = {quality = ..., predictions = ..., cross = ...}):
-- results.md (settings, runs, per-position quality, predictions over seeds, cross-schedule,
-- verdicts) and results.csv (one row per run, per seed and set, per seed and predictor).
-- Load it relative to the script: dofile(here .. "/lib/tsl_report.lua").
local util = require "kiln.util"
local laws = require "kiln.laws"
local stats = require "kiln.stats"

local M = {}

local BASELINES = { "power", "reciprocal", "log" }
local SCHEDULE_LAWS = { "annealing", "multipower" }
local TEMPORAL = { "temporal", "temporal_auto" }

local function finite(x) return type(x) == "number" and x == x and x ~= math.huge and x ~= -math.huge end
local function num(x, fmt)
  if x == nil then return "" end
  if x ~= x then return "nan" end
  return (fmt or "%.4f"):format(x)
end
local function cell(text) return (tostring(text):gsub("|", "/"):gsub("\n", " ")) end

-- Per-position quality ------------------------------------------------------------------------

-- One run's per-checkpoint detail for positions.md.
function M.quality_detail(set, q)
  local out = { ("## set `%s`: %d checkpoints after the warmup; median R² %s, ceiling %s, gap %s; power law R² %s\n"):format(
    set, q.n, num(q.median_r2), num(q.median_ceiling), num(q.median_gap), num(q.median_power_r2)),
    "| step | R² reciprocal | noise ceiling | gap | R² power |", "|---:|---:|---:|---:|---:|" }
  for _, c in ipairs(q.checkpoints) do
    out[#out + 1] = ("| %d | %s | %s | %s | %s |"):format(c.step, num(c.r2), num(c.ceiling), num(c.gap), num(c.power_r2))
  end
  return table.concat(out, "\n") .. "\n"
end

-- Medians over every checkpoint of every seed of (size, set).
local function pooled_quality(rows, size, set)
  local cols = { r2 = {}, ceiling = {}, gap = {}, power_r2 = {} }
  local seeds = 0
  for _, r in ipairs(rows) do
    if r.size == size and r.set == set then
      seeds = seeds + 1
      for _, c in ipairs(r.q.checkpoints) do
        for k, list in pairs(cols) do if finite(c[k]) then list[#list + 1] = c[k] end end
      end
    end
  end
  local out = { seeds = seeds, n = #cols.r2 }
  for k, list in pairs(cols) do out[k] = util.median(list) end
  return out
end

local function quality_section(ctx)
  local out = { "## Per-position law quality", "",
    "At every checkpoint after the warmup, per set: R² of L_i = a0/(1 + a1·i) + a2 over positions i = 1..T, and its " ..
    "noise ceiling 1 − Σ SE_i² / Σ (L_i − mean L)², the R² the true curve itself would get under the measured " ..
    "standard errors (SE_i: standard error of the mean loss at position i over the evaluation windows). " ..
    "gap = ceiling − R²: what the law leaves unexplained beyond the noise (≤ 0: as good as the noise allows). " ..
    "`power`: the alternative law a + b·i^(−c). Medians over the checkpoints of every seed.", "",
    "| size | set | seeds | checkpoints | median R² | median ceiling | median gap | power: median R² | power: median gap |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|" }
  for _, s in ipairs(ctx.sizes) do
    for _, set in ipairs(ctx.set_names) do
      local p = pooled_quality(ctx.rows.quality, s.name, set)
      if p.seeds > 0 then
        local pgap = {}
        for _, r in ipairs(ctx.rows.quality) do
          if r.size == s.name and r.set == set then
            for _, c in ipairs(r.q.checkpoints) do
              if finite(c.ceiling) and finite(c.power_r2) then pgap[#pgap + 1] = c.ceiling - c.power_r2 end
            end
          end
        end
        out[#out + 1] = ("| %s | %s | %d | %d | %s | %s | %s | %s | %s |"):format(s.name, set, p.seeds, p.n, num(p.r2),
          num(p.ceiling), num(p.gap), num(p.power_r2), num(util.median(pgap)))
      end
    end
  end
  return table.concat(out, "\n") .. "\n"
end

-- Predictions over seeds ----------------------------------------------------------------------

-- rows of (size, cut, set, predictor), one per seed; key -> list.
local function group_predictions(rows, key_of)
  local groups = {}
  for _, r in ipairs(rows) do
    local k = key_of(r)
    groups[k] = groups[k] or {}
    table.insert(groups[k], r)
  end
  return groups
end

local function pred_key(size, cut, set, predictor) return ("%s|%g|%s|%s"):format(size, cut, set, predictor) end

local function mean_ci(m, fmt)
  if not m then return "" end
  if m.half then return num(m.mean, fmt) .. " ± " .. num(m.half, fmt) end
  return num(m.mean, fmt)
end

local function aggregate(list)
  local ok, failed = {}, 0
  for _, r in ipairs(list or {}) do
    if r.error or not finite(r.mse) then failed = failed + 1 else ok[#ok + 1] = r end
  end
  return #ok > 0 and laws.over_seeds(ok) or nil, #ok, failed
end

-- One line per (predictor, reason) of the failed fits, listing where: "size seed s cut c set".
local function failure_notes(rows)
  local order, where = {}, {}
  for _, r in ipairs(rows) do
    if r.error then
      local reason = cell(r.error):gsub("%d+", "N"):sub(1, 160)
      local key = r.predictor .. "|" .. reason
      if not where[key] then
        where[key] = { predictor = r.predictor, reason = cell(r.error):sub(1, 200), at = {} }
        order[#order + 1] = key
      end
      local at = where[key].at
      at[#at + 1] = ("%s/seed%d/%g/%s"):format(r.size, r.seed, r.cut, r.set)
    end
  end
  local out = {}
  for _, key in ipairs(order) do
    local w = where[key]
    local shown = #w.at > 6 and (table.concat(w.at, ", ", 1, 6) .. (", and %d more"):format(#w.at - 6)) or table.concat(w.at, ", ")
    out[#out + 1] = ("- `%s` (%s): %s"):format(w.predictor, shown, w.reason)
  end
  return out
end

local function predictions_section(ctx)
  local groups = group_predictions(ctx.rows.predictions, function(r) return pred_key(r.size, r.cut, r.set, r.predictor) end)
  local out = { "## Predictions of the average loss", "",
    "Each predictor is fitted on the checkpoints from the LR peak to the cut and predicts every later checkpoint's " ..
    "average loss (" .. ctx.unit .. "). Mean ± half-width of the 95% Student-t interval over seeds (no interval with " ..
    "one seed). MSE in nats²; MAPE and final error in %; ARE (a fraction, ×100 here) over the checkpoints with at " ..
    "least 70% of the last one's tokens. `temporal` uses the forms a0 " .. ctx.cfg.forms.a0 .. ", a1 " ..
    ctx.cfg.forms.a1 .. ", a2 " .. ctx.cfg.forms.a2 .. " — our reading of the paper's mapping, not confirmed from " ..
    "its text; `temporal_auto` chooses the forms inside the fit window. A failed fit is counted, not averaged.", "",
    "| size | cut | set | predictor | seeds | MSE | MAPE % | final err % | ARE % | failed |",
    "|---|---:|---|---|---:|---:|---:|---:|---:|---:|" }
  for _, s in ipairs(ctx.sizes) do
    for _, cut in ipairs(ctx.cfg.cuts) do
      for _, set in ipairs(ctx.set_names) do
        for _, p in ipairs(laws.predictors) do
          local list = groups[pred_key(s.name, cut, set, p)]
          if list then
            local agg, n, failed = aggregate(list)
            local are = agg and agg.are and { mean = 100 * agg.are.mean, half = agg.are.half and 100 * agg.are.half } or nil
            out[#out + 1] = ("| %s | %g | %s | %s | %d | %s | %s | %s | %s | %s |"):format(s.name, cut, set, p, n,
              agg and mean_ci(agg.mse, "%.3g") or "", agg and mean_ci(agg.mape, "%.3f") or "",
              agg and mean_ci(agg.final_err, "%.3f") or "", mean_ci(are, "%.3f"), failed > 0 and failed or "")
          end
        end
      end
    end
  end
  local failures = failure_notes(ctx.rows.predictions)
  if #failures > 0 then
    out[#out + 1] = ""
    out[#out + 1] = "Failed fits (each reason once, with where it happened; every one is in results.csv):"
    for _, f in ipairs(failures) do out[#out + 1] = f end
  end
  return table.concat(out, "\n") .. "\n"
end

-- Cross-schedule --------------------------------------------------------------------------------

-- The temporal-law variants of the cross-schedule table, as laws.cross_temporal defines them.
local function cross_temporal_text()
  local parts = {}
  for _, v in ipairs(laws.cross_temporal) do
    parts[#parts + 1] = ("`%s` (%s)"):format(v.name, laws.forms_text(v.forms))
  end
  return table.concat(parts, " and ")
end

local function cross_section(ctx)
  if not ctx.cross then return "## Cross-schedule\n\nNot run (cross_schedule = false).\n" end
  local b = ctx.cross.base
  local out = { "## Cross-schedule", "",
    ("Fitted on every checkpoint after the warmup of the cosine run (%s, seed %d), predicting the average loss of the " ..
     "same model trained with another schedule (checkpoints after its warmup). One seed: no interval. The temporal " ..
     "law appears with forms that follow the LR (lr = alpha + beta·lr/lr_max, the paper's piecewise-cosine a2 on a " ..
     "cosine run; log_lr = alpha + beta·ln t + gamma·lr/lr_max), evaluated under the target's schedule: %s."):format(
     b.size, b.seed, cross_temporal_text()), "",
    "| target schedule | set | predictor | MSE | MAPE % | final err % | ARE % |", "|---|---|---|---:|---:|---:|---:|" }
  for _, r in ipairs(ctx.rows.cross) do
    if r.error then
      out[#out + 1] = ("| %s | %s | %s | failed: %s | | | |"):format(r.target, r.set, r.predictor, cell(r.error))
    else
      out[#out + 1] = ("| %s | %s | %s | %s | %s | %s | %s |"):format(r.target, r.set, r.predictor, num(r.mse, "%.3g"),
        num(r.mape, "%.3f"), num(r.final_err, "%.3f"), num(r.are and 100 * r.are, "%.3f"))
    end
  end
  return table.concat(out, "\n") .. "\n"
end

-- Verdicts --------------------------------------------------------------------------------------

-- {seed = mse} of one predictor at (size, cut, set); failed fits left out.
local function mse_by_seed(rows, size, cut, set, predictor)
  local out = {}
  for _, r in ipairs(rows) do
    if r.size == size and math.abs(r.cut - cut) < 1e-9 and r.set == set and r.predictor == predictor
       and not r.error and finite(r.mse) then
      out[r.seed] = r.mse
    end
  end
  return out
end

-- The paired comparison of predictor a against b over the seeds both have: differences of
-- MSE (a − b), their mean and 95% t-interval (from two seeds), and a word that the interval
-- supports: "lower", "higher" or "no detectable difference"; with one seed, "one seed".
function M.compare_mse(a, b)
  local d, seeds = {}, {}
  for seed, v in pairs(a) do if b[seed] then d[#d + 1], seeds[#seeds + 1] = v - b[seed], seed end end
  local r = { n = #d }
  if #d == 0 then r.word = "no common seed"; return r end
  if #d == 1 then r.mean, r.word = d[1], "one seed"; return r end
  r.mean, r.half = stats.ci_mean(d)
  if r.mean + r.half < 0 then r.word = "lower"
  elseif r.mean - r.half > 0 then r.word = "higher"
  else r.word = "no detectable difference" end
  return r
end

local function mean_of(t)
  local xs = {}
  for _, v in pairs(t) do xs[#xs + 1] = v end
  return #xs > 0 and stats.mean(xs) or nil, #xs
end

-- Seeds where `a` has a lower MSE than every one of `others`.
local function wins(a, others)
  local n, of = 0, 0
  for seed, v in pairs(a) do
    local all, better = true, true
    for _, o in ipairs(others) do
      if not o[seed] then all = false elseif v >= o[seed] then better = false end
    end
    if all then of = of + 1; if better then n = n + 1 end end
  end
  return n, of
end

local function comparison_text(name, c, mean_a, mean_b)
  local means = ("mean MSE %s vs %s"):format(num(mean_a, "%.3g"), num(mean_b, "%.3g"))
  if c.word == "one seed" then
    return ("%s: %s (one seed: %s in this seed, no interval)"):format(name, means, c.mean < 0 and "lower" or "not lower")
  end
  if c.word == "no common seed" then return name .. ": no seed where both fitted" end
  local ci = ("difference %s ± %s over %d seeds"):format(num(c.mean, "%.3g"), num(c.half, "%.3g"), c.n)
  return ("%s: %s, %s: %s"):format(name, means, ci, c.word)
end

local function verdict_lines(ctx, size, set, cut)
  local rows, out = ctx.rows.predictions, {}
  local mses = {}
  for _, p in ipairs(laws.predictors) do mses[p] = mse_by_seed(rows, size, cut, set, p) end
  local base_list = {}
  for _, b in ipairs(BASELINES) do base_list[#base_list + 1] = mses[b] end
  for _, p in ipairs(TEMPORAL) do
    local mean_p, n_p = mean_of(mses[p])
    if n_p == 0 then
      out[#out + 1] = ("- `%s`: failed to fit in every seed; no verdict."):format(p)
    else
      local won, of = wins(mses[p], base_list)
      local cmp, all_lower = {}, true
      for _, b in ipairs(BASELINES) do
        local c = M.compare_mse(mses[p], mses[b])
        all_lower = all_lower and c.word == "lower"
        cmp[#cmp + 1] = comparison_text(b, c, mean_p, (mean_of(mses[b])))
      end
      local head
      if of == 0 then
        head = "no seed where all three baselines fitted, so no comparison with all of them"
      elseif of == 1 then
        head = ("one seed: %s every average-loss baseline on MSE in that seed"):format(won == 1 and "beats" or "does not beat")
      elseif all_lower then
        head = ("beats every average-loss baseline on MSE (every paired interval below 0); lower than all three in %d of %d seeds"):format(won, of)
      else
        head = ("not shown to beat every average-loss baseline on MSE; lower than all three in %d of %d seeds"):format(won, of)
      end
      out[#out + 1] = ("- `%s` (mean MSE %s over %d seed%s): %s."):format(p, num(mean_p, "%.3g"), n_p, n_p == 1 and "" or "s", head)
      out[#out + 1] = "  - " .. table.concat(cmp, "; ") .. "."
      local sl = {}
      for _, l in ipairs(SCHEDULE_LAWS) do
        sl[#sl + 1] = comparison_text(l, M.compare_mse(mses[p], mses[l]), mean_p, (mean_of(mses[l])))
      end
      out[#out + 1] = "  - against the schedule-aware laws: " .. table.concat(sl, "; ") .. "."
    end
  end
  return out
end

local function verdict_section(ctx)
  local cut = ctx.cfg.verdict_cut
  local out = { "## Verdicts", "",
    ("At the %g%% cut, per size and set: does the temporal law beat every average-loss baseline (power, reciprocal, " ..
     "log) on MSE? Compared seed by seed (same run): the difference of MSE (temporal − other), its mean and 95%% " ..
     "t-interval over seeds; \"lower\" or \"higher\" only when the interval excludes 0. With one seed no interval " ..
     "exists and nothing is claimed beyond that seed."):format(100 * cut), "" }
  for _, s in ipairs(ctx.sizes) do
    for _, set in ipairs(ctx.set_names) do
      local any = false
      for _, r in ipairs(ctx.rows.predictions) do any = any or (r.size == s.name and r.set == set) end
      if any then
        out[#out + 1] = ("### %s, set `%s`"):format(s.name, set)
        for _, l in ipairs(verdict_lines(ctx, s.name, set, cut)) do out[#out + 1] = l end
        out[#out + 1] = ""
      end
    end
  end
  return table.concat(out, "\n") .. "\n"
end

-- Settings and runs -----------------------------------------------------------------------------

local function settings_section(ctx)
  local c = ctx.cfg
  local sets = { ("`val` %s"):format(ctx.data.val:path()) }
  for i = 2, #ctx.set_names do sets[#sets + 1] = ("`%s` %s"):format(ctx.set_names[i], ctx.data[ctx.set_names[i]]:path()) end
  local out = { "# Temporal scaling law: token-level protocol", "", "## Settings", "",
    ("- data: train %s; validation sets (ID first) %s; tokenizer %s (V = %d); losses in %s"):format(
      ctx.data.train:path(), table.concat(sets, ", "), c.tokenizer, ctx.V, ctx.unit),
    ("- training: %d steps x batch %d x context %d = %d tokens per run; AdamW, peak LR %g, %d warmup steps, cosine to %g x peak"):format(
      c.steps, c.batch, c.context, c.steps * c.batch * c.context, c.lr, c.warmup, c.floor_frac),
    ("- evaluation: %d checkpoints per run (steps %d..%d: %d log-spaced to %g of the run, %d uniform), %s windows per set"):format(
      #ctx.at, ctx.at[1], ctx.at[#ctx.at], c.evals_log, c.log_until, c.evals_uniform, tostring(c.eval_windows)),
    ("- cuts %s; verdicts at %g; fits start at %s"):format(table.concat(c.cuts, ", "), c.verdict_cut,
      c.fit_from == "" and "the LR peak" or ("step " .. c.fit_from)) }
  for _, s in ipairs(ctx.sizes) do
    out[#out + 1] = ("- size %s: %d layers x d=%d (%d heads): %d non-embedding parameters, %d in all; seeds %s%s"):format(
      s.name, s.mc.n_layer, s.mc.n_embd, s.mc.n_head, s.non_embedding, s.params, table.concat(s.seeds, ", "),
      s.run and "" or " — not run (sizes_run)")
  end
  return table.concat(out, "\n") .. "\n"
end

local function runs_section(ctx)
  local out = { "## Runs", "", "Wall time and tokens/s (median over steps) from each run's summary; a run found complete " ..
    "was not trained again, and its numbers are from when it was.", "",
    "| size | seed | schedule | wall s | tokens/s | final train loss | trained now | analysis s |", "|---|---:|---|---:|---:|---:|---|---:|" }
  for _, r in ipairs(ctx.runs) do
    out[#out + 1] = ("| %s | %d | %s | %s | %s | %s | %s | %s |"):format(r.size, r.seed, r.schedule, num(r.wall, "%.1f"),
      num(r.tokens_per_s, "%.0f"), num(r.final_loss), r.reused and "no (complete)" or "yes", num(r.analysis_wall, "%.1f"))
  end
  return table.concat(out, "\n") .. "\n"
end

function M.markdown(ctx)
  return table.concat({ settings_section(ctx), runs_section(ctx), quality_section(ctx), predictions_section(ctx),
                        cross_section(ctx), verdict_section(ctx) }, "\n")
end

-- results.csv ---------------------------------------------------------------------------------

M.csv_columns = { "kind", "size", "seed", "schedule", "cut", "cut_step", "set", "predictor", "formula", "n_test",
  "mse", "mape", "final_err", "are", "are_n", "r2", "checkpoints", "median_r2", "median_ceiling", "median_gap",
  "median_power_r2", "non_embedding", "wall_seconds", "tokens_per_s", "final_loss", "error" }

function M.csv(ctx)
  local cols = M.csv_columns
  local lines = { util.csv_line(cols) }
  local function add(t)
    local f = {}
    for i, c in ipairs(cols) do f[i] = t[c] end
    lines[#lines + 1] = util.csv_line(f, #cols)
  end
  for _, r in ipairs(ctx.runs) do
    add { kind = "run", size = r.size, seed = r.seed, schedule = r.schedule, non_embedding = r.non_embedding,
          wall_seconds = r.wall, tokens_per_s = r.tokens_per_s, final_loss = r.final_loss }
  end
  for _, r in ipairs(ctx.rows.quality) do
    add { kind = "positions", size = r.size, seed = r.seed, schedule = "cosine", set = r.set, checkpoints = r.q.n,
          median_r2 = r.q.median_r2, median_ceiling = r.q.median_ceiling, median_gap = r.q.median_gap,
          median_power_r2 = r.q.median_power_r2 }
  end
  for _, r in ipairs(ctx.rows.predictions) do
    local t = util.copy(r)
    t.kind, t.schedule, t.error = "prediction", "cosine", r.error and cell(r.error) or nil
    add(t)
  end
  for _, r in ipairs(ctx.rows.cross) do
    local t = util.copy(r)
    t.kind, t.schedule, t.error = "cross", r.target, r.error and cell(r.error) or nil
    add(t)
  end
  return table.concat(lines)
end

return M
