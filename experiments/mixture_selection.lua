-- mixture_selection.lua — the temporal law's application (docs/experiments.md, "Temporal
-- scaling law"): choose a data mixture directly on the target model. Each candidate proportion of the upstream and
-- downstream corpora is trained for a short prefix of the full budget (with the full run's
-- warmup + cosine schedule); the temporal law fitted to that prefix predicts each candidate's
-- loss at the full budget; the candidate predicted best is the pick. The script then trains
-- every candidate to the end and reports whether the pick was right and by how much.
--
--   kiln experiments/mixture_selection.lua [config=FILE.yaml] [key=value ...]
--   e.g. steps=1000 prefix=0.3 weights=[0.9,0.7,0.5] out=runs/mix2
--
-- The target is the mean of the predicted final losses on both validation sets
-- (target=mean), or one set's (target=up / target=down). Corpora come from `make data`.
local kiln = require "kiln"
local util = require "kiln.util"
local tsl = require "kiln.tsl"
local laws = require "kiln.laws"
local formselect = require "kiln.formselect"

local here = (arg and arg[0] or "experiments/mixture_selection.lua"):match("^(.*)/[^/]*$") or "."
local setup = dofile(here .. "/lib/setup.lua")
local cfg = kiln.config.resolve({
  out = "runs/mixture_selection",
  upstream = "data/techdocs/train.txt", upstream_val = "data/techdocs/val.txt",
  downstream = "data/austen/train.txt", downstream_val = "data/austen/val.txt",
  tokenizer = "bytes",        -- bytes (V = 256), gpt2 or bpe8k: the token files `make data` built
  check_data = false,         -- true: open the data, print what would be read, and stop
  restart = false,            -- true: move each run directory's previous run aside and train it again
  weights = { 0.9, 0.7, 0.5, 0.3 },       -- upstream share of each candidate mixture
  steps = 1200, prefix = 0.3, batch = 32, context = 64, lr = 3e-3, warmup = 60, floor_frac = 0.1,
  n_layer = 2, n_head = 4, n_embd = 64, eval_windows = 512, evals = 40, target = "mean", seed = 1,
  forms = { a0 = "log", a1 = "hyperbolic", a2 = "cosine" },
}, arg, { rules = {
  weights = { min = 0, max = 1 }, steps = { min = 1 }, prefix = { above = 0, max = 1 }, batch = { min = 1 },
  context = { min = 1 }, lr = { above = 0 }, warmup = { min = 0 }, floor_frac = { min = 0, max = 1 },
  n_layer = { min = 1 }, n_head = { min = 1 }, n_embd = { min = 1 }, eval_windows = { min = 1 },
  evals = { min = 2 }, target = { one_of = { "mean", "up", "down" } }, tokenizer = setup.tokenizer_rule,
} })
local data, V = setup.open_data("mixture_selection", cfg.tokenizer, { upstream = cfg.upstream,
  upstream_val = cfg.upstream_val, downstream = cfg.downstream, downstream_val = cfg.downstream_val },
  "to build the corpora")
setup.report_data("mixture_selection", cfg, data, V)

local up, down = data.upstream, data.downstream
local sets = { up = data.upstream_val, down = data.downstream_val }
local prefix_steps = math.floor(cfg.prefix * cfg.steps + 0.5)
-- Dense evaluations inside the prefix (log-spaced), sparser after it.
local at, seen = {}, {}
for k = 0, cfg.evals - 1 do
  local s = math.floor(5 * (prefix_steps / 5) ^ (k / (cfg.evals - 1)) + 0.5)
  if not seen[s] then seen[s] = true; at[#at + 1] = s end
end
for k = 1, 10 do
  local s = math.floor(prefix_steps + k * (cfg.steps - prefix_steps) / 10 + 0.5)
  if not seen[s] then seen[s] = true; at[#at + 1] = s end
end

local restarted = {}   -- run directories restarted by this process (restart=true)
local function train(w, stop_at)
  local run_dir = ("%s/up%g"):format(cfg.out, w)
  local o = {
    model = { vocab_size = V, block_size = cfg.context, n_layer = cfg.n_layer, n_head = cfg.n_head, n_embd = cfg.n_embd, seed = cfg.seed },
    optimizer = { lr = cfg.lr }, steps = cfg.steps, batch = cfg.batch, context = cfg.context, seed = cfg.seed,
    data = { { name = "up", dataset = up, weight = w }, { name = "down", dataset = down, weight = 1 - w } },
    schedule = kiln.schedule.cosine { peak = cfg.lr, floor_frac = cfg.floor_frac, steps = cfg.steps, warmup = cfg.warmup },
    eval = { at = at, sets = sets, windows = cfg.eval_windows }, run_dir = run_dir, log_every = 100, config = cfg,
    checkpoint = { at = { prefix_steps } }, quiet = true,
    restart = cfg.restart and not restarted[run_dir],   -- once: a later call continues the same run
  }
  if stop_at then o.on_step = function(info) if info.step >= stop_at then return "stop" end end end
  kiln.train(o)
  restarted[run_dir] = true
  return run_dir
end

local function target_of(values)
  if cfg.target == "mean" then return 0.5 * (values.up + values.down) end
  return values[cfg.target]
end

-- Every predictor's forecast of a set's mean loss at the last step, from the prefix's
-- checkpoints (fitted from the LR peak on, as laws.compare does): the temporal law with the
-- configured forms and with forms chosen inside the prefix, the average-loss baselines, the
-- two schedule-aware laws, and the loss at the end of the prefix itself (the naive ranking).
-- A predictor that fails to fit gets its reason instead of a number.
local predictors = { "temporal", "temporal_auto", "power", "reciprocal", "log", "annealing", "multipower", "prefix_loss" }
local function forecasts(run, set)
  local out = {}
  local function try(name, f)
    local ok, v = pcall(f)
    out[name] = ok and v or { error = tostring(v) }
  end
  local s = run.sets[set]
  local from = run.peak_step or 1
  local fsteps, floss = {}, {}
  for k, st in ipairs(s.steps) do
    if st >= from and st <= prefix_steps then fsteps[#fsteps + 1], floss[#floss + 1] = st, s.mean[k] end
  end
  try("temporal", function()
    return tsl.predict(tsl.fit_temporal(run, { set = set, fit_until = prefix_steps, forms = cfg.forms }), cfg.steps).loss
  end)
  try("temporal_auto", function()
    return tsl.predict(formselect.choose(run, { set = set, cut = prefix_steps }).model, cfg.steps).loss
  end)
  for _, b in ipairs(tsl.baselines) do
    try(b.name, function() return tsl.fit_baseline(b.name, fsteps, floss, run.tokens_per_step).at(cfg.steps) end)
  end
  local curve = laws.curve(run, set, { upto = prefix_steps })
  for _, law in ipairs { "annealing", "multipower" } do
    try(law, function() return laws.predict(laws.fit(law, curve), curve.lrs, { cfg.steps })[1] end)
  end
  try("prefix_loss", function() return floss[#floss] end)
  return out
end

local function target_forecast(f)
  for _, set in ipairs { "up", "down" } do if type(f[set]) ~= "number" then return nil end end
  return target_of(f)
end

-- 1. Prefixes and forecasts.
local cands = {}
for _, w in ipairs(cfg.weights) do
  print(("== upstream share %g: training the prefix (%d of %d steps)"):format(w, prefix_steps, cfg.steps))
  local run_dir = train(w, prefix_steps)
  local run = tsl.read_run(run_dir)
  local by_set = { up = forecasts(run, "up"), down = forecasts(run, "down") }
  local pred = {}
  for _, name in ipairs(predictors) do
    local f = { up = by_set.up[name], down = by_set.down[name] }
    pred[name] = { up = f.up, down = f.down, target = target_forecast(f) }
  end
  -- The pick is the temporal law's: without its forecast there is nothing to select with.
  local t = pred.temporal
  if not t.target then
    local e = type(t.up) == "table" and t.up.error or t.down.error
    kiln.config.fail("mixture_selection: the temporal law could not be fitted to the prefix of %s: %s", run_dir, tostring(e))
  end
  cands[#cands + 1] = { w = w, dir = run_dir, forecast = pred }
end
table.sort(cands, function(a, b) return a.forecast.temporal.target < b.forecast.temporal.target end)
local pick = cands[1]
print(("predicted best: upstream share %g (predicted target loss %.4f)"):format(pick.w, pick.forecast.temporal.target))

-- 2. Train every candidate to the end (each resumes from its prefix checkpoint).
for _, c in ipairs(cands) do
  print(("== upstream share %g: training to the end"):format(c.w))
  train(c.w)
  local summary = kiln.yaml.load(c.dir .. "/summary.yaml")
  c.true_vals = { up = summary.eval.up, down = summary.eval.down }
  c.true_target = target_of(c.true_vals)
end
local best = cands[1]
for _, c in ipairs(cands) do if c.true_target < best.true_target then best = c end end

-- Kendall's tau between a predictor's ranking and the trained-out one (ties count 0).
local function kendall(pred_of)
  local conc, n = 0, 0
  for i = 1, #cands do for j = i + 1, #cands do
    local a, b = cands[i], cands[j]
    local dp, dt = pred_of(a) - pred_of(b), a.true_target - b.true_target
    conc = conc + ((dp * dt > 0) and 1 or ((dp * dt < 0) and -1 or 0))
    n = n + 1
  end end
  return n > 0 and conc / n or 0
end

-- The largest cross-entropy a model can sensibly have is about ln V; below 0 is impossible.
local function plausible(x) return x >= 0 and x <= 2 * math.log(V) end
local function marked(x) return ("%.4f%s"):format(x, plausible(x) and "" or " !") end

local md = { "# Mixture selection with the temporal scaling law", "",
  ("Prefix %d of %d steps (%g); target = %s of the validation losses; forms a0 %s, a1 %s, a2 %s."):format(
    prefix_steps, cfg.steps, cfg.prefix, cfg.target, cfg.forms.a0, cfg.forms.a1, cfg.forms.a2), "",
  "| upstream share | predicted up | predicted down | predicted target | true up | true down | true target |",
  "|---:|---:|---:|---:|---:|---:|---:|" }
table.sort(cands, function(a, b) return a.w > b.w end)
for _, c in ipairs(cands) do
  local t = c.forecast.temporal
  md[#md + 1] = ("| %g | %s | %s | %s | %.4f | %.4f | %.4f |"):format(c.w, marked(t.up), marked(t.down),
    marked(t.target), c.true_vals.up, c.true_vals.down, c.true_target)
end
md[#md + 1] = ""
md[#md + 1] = ("Pick: %g; truly best: %g. %s (regret: the pick's true target loss is %.4f above the best's)."):format(
  pick.w, best.w, pick.w == best.w and "The pick was right" or "The pick was wrong", pick.true_target - best.true_target)
md[#md + 1] = ""
md[#md + 1] = "## Every predictor from the same prefix"
md[#md + 1] = ""
md[#md + 1] = "Predicted target loss per candidate (upstream share), the predictor's pick, its regret (true target of the pick " ..
  "minus the best's) and Kendall's tau between its ranking and the trained-out one (1 = the same order). `prefix_loss` " ..
  "ranks by the loss at the end of the prefix, with no law. `!` marks a forecast below 0 or above 2·ln V: not a loss a model can have."
md[#md + 1] = ""
local head = { "predictor" }
for _, c in ipairs(cands) do head[#head + 1] = ("%g"):format(c.w) end
for _, h in ipairs { "pick", "regret", "tau" } do head[#head + 1] = h end
md[#md + 1] = "| " .. table.concat(head, " | ") .. " |"
md[#md + 1] = "|---" .. string.rep("|---:", #head - 1) .. "|"
local true_row = { "trained out" }
for _, c in ipairs(cands) do true_row[#true_row + 1] = ("%.4f"):format(c.true_target) end
true_row[#true_row + 1] = ("%g"):format(best.w)
true_row[#true_row + 1] = "0"
true_row[#true_row + 1] = "1"
md[#md + 1] = "| " .. table.concat(true_row, " | ") .. " |"
local csv = { util.csv_line { "predictor", "upstream_share", "pred_up", "pred_down", "pred_target", "true_target" } }
for _, name in ipairs(predictors) do
  local cells, ok, pk = { name }, true, nil
  for _, c in ipairs(cands) do
    local f = c.forecast[name]
    if f.target then
      cells[#cells + 1] = marked(f.target)
      if not pk or f.target < pk.forecast[name].target then pk = c end
    else
      ok = false
      local e = type(f.up) == "table" and f.up.error or (type(f.down) == "table" and f.down.error) or "no forecast"
      cells[#cells + 1] = "failed: " .. tostring(e):gsub("|", "/"):sub(1, 60)
    end
    csv[#csv + 1] = util.csv_line { name, c.w, type(f.up) == "number" and f.up or "", type(f.down) == "number" and f.down or "",
      f.target or "", c.true_target }
  end
  if ok then
    cells[#cells + 1] = ("%g"):format(pk.w)
    cells[#cells + 1] = ("%.4f"):format(pk.true_target - best.true_target)
    cells[#cells + 1] = ("%.2f"):format(kendall(function(c) return c.forecast[name].target end))
  else
    for _ = 1, 3 do cells[#cells + 1] = "" end
  end
  md[#md + 1] = "| " .. table.concat(cells, " | ") .. " |"
end
local text = table.concat(md, "\n") .. "\n"
util.write_atomic(cfg.out .. "/forecasts.csv", table.concat(csv))
util.write_atomic(cfg.out .. "/results.md", text)
print(text)
