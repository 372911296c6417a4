-- mup_ladder.lua — predicting the loss of larger models from smaller ones (docs/experiments.md,
-- "Cross-size loss prediction"). A ladder of widths (head size fixed) trained on the same
-- data, steps and schedule with the same global hyperparameters, under μP (base width
-- mup.base_width) and under the standard parametrisation. L(N) = a·N^b + c (N in millions of
-- parameters, non-embedding by default) is fitted to the final losses of all but the
-- `fit.hold_out` largest widths and predicts those; under μP the HPs transfer across widths,
-- under SP they do not, so the SP ladder is expected to bend away from the law.
-- The same is done at each evaluated fraction of training, and a size-and-data law
-- L(N, D) = E + A/N^α + B/D^β is fitted on the smaller widths' intermediate checkpoints;
-- accuracy is the mean absolute relative error ARE = mean |(y − ŷ)/y| on the held-out widths.
--
--   kiln experiments/mup_ladder.lua [quick=true] [config=FILE.yaml] [key=value ...]
-- (settings: mup_ladder.yaml; layering: docs/guide.md, "Settings")
--
-- Writes <out>/<param>/d<width>/ (kiln.train run directories; a rerun skips finished runs),
-- <out>/results.md, results.csv (one row per run and evaluated fraction, with predictions),
-- and <out>/ladder_<param>.png (+ .dat/.gp): loss vs N with the fitted law.
local kiln = require "kiln"
local util = require "kiln.util"
local ladder = kiln.ladder

local here = (arg and arg[0] or "experiments/mup_ladder.lua"):match("^(.*)/[^/]*$") or "."
local setup = dofile(here .. "/lib/setup.lua")
local P, N, R = setup.positive, setup.count, setup.rate
local cfg = setup.config(here, "mup_ladder", arg, {
  threads = N, ["model.widths"] = P, ["model.head_size"] = P, ["model.n_layer"] = P, ["model.context"] = P,
  ["mup.base_width"] = P, ["mup.output_mult"] = R, ["mup.attn_mult"] = R,
  parametrizations = { one_of = { "mup", "sp" } }, lr = R, params = { one_of = { "non_embedding", "total" } },
  ["fit.hold_out"] = P, ["fit.fractions"] = { above = 0, max = 1 }, ["fit.fit_from"] = setup.fraction,
  ["fit.target_from"] = setup.fraction, ["train.steps"] = P, ["train.batch"] = P, ["train.warmup"] = N,
  ["train.schedule"] = { one_of = { "cosine", "constant" } }, ["train.floor_frac"] = setup.fraction,
  ["train.weight_decay"] = { min = 0 }, ["train.clip"] = { min = 0 }, ["train.eval_windows"] = P,
})
local mc, tc, T = cfg.model, cfg.train, cfg.model.context
local widths = mc.widths
for i, w in ipairs(widths) do
  if w % mc.head_size ~= 0 then kiln.config.fail("mup_ladder: model.widths[%d] = %d is not a multiple of model.head_size %d", i, w, mc.head_size) end
  if i > 1 and w <= widths[i - 1] then kiln.config.fail("mup_ladder: model.widths must increase (%d after %d)", w, widths[i - 1]) end
end
local n_fit = #widths - cfg.fit.hold_out
if n_fit < 4 then
  kiln.config.fail("mup_ladder: %d widths with fit.hold_out = %d leaves %d to fit L(N) = a·N^b + c; it needs >= 4",
    #widths, cfg.fit.hold_out, n_fit)
end
if tc.schedule == "cosine" and tc.warmup >= tc.steps then
  kiln.config.fail("mup_ladder: train.warmup %d must be < train.steps %d", tc.warmup, tc.steps)
end

local function model_config(param, width) return setup.width_model(cfg, param, width, 256) end

-- The evaluated steps: each fraction of train.steps (at least step 1), the last one always.
local eval_steps, fraction_of = {}, {}
for _, f in ipairs(cfg.fit.fractions) do
  local s = math.max(1, math.floor(f * tc.steps + 0.5))
  if not fraction_of[s] then eval_steps[#eval_steps + 1], fraction_of[s] = s, s / tc.steps end
end
if not fraction_of[tc.steps] then eval_steps[#eval_steps + 1], fraction_of[tc.steps] = tc.steps, 1 end
table.sort(eval_steps)

local n_of = {}      -- N (millions) by width
for _, w in ipairs(widths) do n_of[w] = ladder.params(model_config("mup", w), cfg.params) / 1e6 end
local tokens_per_step = tc.batch * T

print(("μP ladder: %s x widths %s (N = %s params: %s M), fit on the %d smallest, predict %d; %d steps of %d x %d tokens, lr %s, %d threads -> %s"):format(
  table.concat(cfg.parametrizations, "/"), table.concat(widths, ","), cfg.params:gsub("_", "-"),
  table.concat((function() local t = {} for i, w in ipairs(widths) do t[i] = ("%.4g"):format(n_of[w]) end return t end)(), ","),
  n_fit, cfg.fit.hold_out, tc.steps, tc.batch, T, util.num(cfg.lr), kiln.get_threads(), cfg.out))
if cfg.plan_only then return end
setup.require_data("mup_ladder", cfg, { "train", "val" })
local train_ds, val_ds = kiln.dataset(cfg.data.train), kiln.dataset(cfg.data.val)
util.mkdir(cfg.out)

local function schedule()
  if tc.schedule == "cosine" then
    return kiln.schedule.cosine { peak = cfg.lr, steps = tc.steps, warmup = tc.warmup, floor = tc.floor_frac * cfg.lr }
  end
  return tc.warmup > 0 and kiln.schedule.warmup { steps = tc.warmup, peak = cfg.lr } or cfg.lr
end

-- One run: its validation loss at each evaluated step ({[step] = loss}), NaN everywhere when
-- it diverged (recorded in <dir>/diverged, not retried).
local function run(param, width)
  local dir = ("%s/%s/d%d"):format(cfg.out, param, width)
  local losses = {}
  if setup.diverged(dir) then
    for _, s in ipairs(eval_steps) do losses[s] = 0 / 0 end
    return { losses = losses, diverged = true }
  end
  local model = kiln.model(model_config(param, width))
  local opt = kiln.mup.optimizer(model, { lr = cfg.lr, weight_decay = tc.weight_decay, clip = tc.clip })
  local s = setup.train_or_diverged {
    model = model, optimizer = opt, data = train_ds, steps = tc.steps, batch = tc.batch, context = T,
    seed = tc.seed, schedule = schedule(), eval = { at = eval_steps, sets = { val = val_ds }, windows = tc.eval_windows },
    run_dir = dir, config = cfg, quiet = true,
  }
  if not s then return run(param, width) end
  for _, e in ipairs(ladder.evals(dir)) do losses[e.step] = e.loss end
  return { losses = losses, wall = s.wall_seconds }
end

local t0 = kiln.clock()
local results = {}   -- results[param][width] = run
for _, param in ipairs(cfg.parametrizations) do
  results[param] = {}
  for _, w in ipairs(widths) do
    local r = run(param, w)
    results[param][w] = r
    print(("  %-3s d=%-4d N=%.4gM  val loss %s%s"):format(param, w, n_of[w],
      r.diverged and "diverged" or ("%.4f"):format(r.losses[tc.steps]), r.wall and ("  (%.0f s)"):format(r.wall) or ""))
  end
end

-- Fits ------------------------------------------------------------------------------------
-- L(N) on the smaller widths' losses at `step`, or nil and why (too few finite points).
local function size_fit(param, step)
  local ns, ys = {}, {}
  for i = 1, n_fit do
    local y = results[param][widths[i]].losses[step]
    if y == y then ns[#ns + 1], ys[#ys + 1] = n_of[widths[i]], y end
  end
  if #ns < 4 then return nil, ("%d finite losses to fit"):format(#ns) end
  return ladder.fit_size(ns, ys)
end

-- ARE of `predict(width, step)` over the held-out widths at the given steps (finite losses only).
local function held_out_are(param, steps, predict)
  local ys, yh = {}, {}
  for i = n_fit + 1, #widths do
    for _, s in ipairs(steps) do
      local y = results[param][widths[i]].losses[s]
      local p = predict(widths[i], s)
      if y == y and p then ys[#ys + 1], yh[#yh + 1] = y, p end
    end
  end
  if #ys == 0 then return nil end
  return ladder.are(ys, yh), #ys
end

local analysis = {}
for _, param in ipairs(cfg.parametrizations) do
  local a = { by_step = {} }
  for _, s in ipairs(eval_steps) do a.by_step[s] = size_fit(param, s) end
  a.final = a.by_step[tc.steps]
  -- L(N, D) on the smaller widths' checkpoints from fit_from on
  local pts = {}
  for i = 1, n_fit do
    for _, s in ipairs(eval_steps) do
      local y = results[param][widths[i]].losses[s]
      if fraction_of[s] >= cfg.fit.fit_from - 1e-12 and y == y then
        pts[#pts + 1] = { n = n_of[widths[i]], d = s * tokens_per_step / 1e6, loss = y }
      end
    end
  end
  if #pts >= 6 then a.nd = ladder.fit_size_data(pts) end
  local targets = {}
  for _, s in ipairs(eval_steps) do if fraction_of[s] >= cfg.fit.target_from - 1e-12 then targets[#targets + 1] = s end end
  a.targets = targets
  a.are_final = a.final and held_out_are(param, { tc.steps }, function(w) return a.final.predict(n_of[w]) end)
  a.are_per_fraction = held_out_are(param, targets, function(w, s)
    return a.by_step[s] and a.by_step[s].predict(n_of[w]) end)
  a.are_nd = a.nd and held_out_are(param, targets, function(w, s) return a.nd.predict(n_of[w], s * tokens_per_step / 1e6) end)
  analysis[param] = a
end

-- Tables ----------------------------------------------------------------------------------
local function f4(x) return x and x == x and ("%.4f"):format(x) or "-" end
local function pct(x) return x and x == x and ("%.2f%%"):format(100 * x) or "-" end
local md = { ("# Cross-size loss prediction%s\n"):format(cfg.quick and " (quick setting)" or ""),
  ("Widths %s (head size %d, %d layers, context %d), %d steps of %d x %d tokens (%s tokens), %d warmup steps then %s (peak lr %s%s), AdamW wd %s, clip %s, seed %d; μP base width %d, attn_mult %s, output_mult %s; SP with the same lr. Validation loss (nats/byte) on %d fixed windows of %s. N = %s parameters in millions. L(N) = a·N^b + c fitted on the %d smallest widths; the %d largest are predicted.\n"):format(
    table.concat(widths, ", "), mc.head_size, mc.n_layer, T, tc.steps, tc.batch, T, util.num(tc.steps * tokens_per_step),
    tc.warmup, tc.schedule, util.num(cfg.lr), tc.schedule == "cosine" and (", floor %s x peak"):format(util.num(tc.floor_frac)) or "",
    util.num(tc.weight_decay), util.num(tc.clip), tc.seed, cfg.mup.base_width, util.num(cfg.mup.attn_mult), util.num(cfg.mup.output_mult),
    tc.eval_windows, cfg.data.val, cfg.params:gsub("_", "-"), n_fit, cfg.fit.hold_out) }
md[#md + 1] = "## Final loss: fitted and predicted\n"
md[#md + 1] = "| param | width | N (M) | role | val loss | L(N) | rel. error |"
md[#md + 1] = "|---|---|---|---|---|---|---|"
local csv = { util.csv_line { "param", "width", "n_params", "step", "fraction", "tokens", "role", "val_loss", "pred_size_law", "pred_size_data_law" } }
for _, param in ipairs(cfg.parametrizations) do
  local a = analysis[param]
  for i, w in ipairs(widths) do
    local y = results[param][w].losses[tc.steps]
    local p = a.final and a.final.predict(n_of[w])
    md[#md + 1] = ("| %s | %d | %.4g | %s | %s | %s | %s |"):format(param, w, n_of[w], i <= n_fit and "fit" or "**predicted**",
      f4(y), f4(p), (p and y == y) and ("%+.2f%%"):format(100 * (p - y) / y) or "-")
    for _, s in ipairs(eval_steps) do
      local ps = a.by_step[s] and a.by_step[s].predict(n_of[w])
      local pnd = a.nd and a.nd.predict(n_of[w], s * tokens_per_step / 1e6)
      csv[#csv + 1] = util.csv_line { param, w, n_of[w] * 1e6, s, fraction_of[s], s * tokens_per_step,
        i <= n_fit and "fit" or "held_out", results[param][w].losses[s], ps, pnd }
    end
  end
end
md[#md + 1] = "\n## Fitted laws and prediction error on the held-out widths\n"
md[#md + 1] = ("ARE = mean |(y − ŷ)/y| over the held-out widths. \"Final\": L(N) fitted on the final losses, scored on the final losses. \"Per fraction\": L(N) fitted separately at each checkpoint fraction ≥ %s and scored at the same fraction. \"L(N, D)\": E + A/N^α + B/D^β (D in millions of tokens) fitted once on the smaller widths' checkpoints at fractions ≥ %s, scored on the held-out widths' checkpoints at fractions ≥ %s.\n"):format(
  util.num(cfg.fit.target_from), util.num(cfg.fit.fit_from), util.num(cfg.fit.target_from))
md[#md + 1] = "\"Flat\" is the baseline that predicts no gain: every held-out width gets the final loss of the largest fitted width.\n"
md[#md + 1] = "| param | a | b | c | fit R² | ARE final (max) | ARE flat | ARE per fraction | L(N, D): E, A, α, B, β | ARE L(N, D) |"
md[#md + 1] = "|---|---|---|---|---|---|---|---|---|---|"
for _, param in ipairs(cfg.parametrizations) do
  local a = analysis[param]
  local fl = a.final
  local are, worst = nil, nil
  if fl then
    local ys, yh = {}, {}
    for i = n_fit + 1, #widths do
      local y = results[param][widths[i]].losses[tc.steps]
      if y == y then ys[#ys + 1], yh[#yh + 1] = y, fl.predict(n_of[widths[i]]) end
    end
    if #ys > 0 then are, worst = ladder.are(ys, yh) end
  end
  local last_fit = results[param][widths[n_fit]].losses[tc.steps]
  local are_flat = held_out_are(param, { tc.steps }, function() return last_fit == last_fit and last_fit or nil end)
  md[#md + 1] = ("| %s | %s | %s | %s | %s | %s (%s) | %s | %s | %s | %s |"):format(param,
    fl and ("%.4g"):format(fl.a) or "-", fl and ("%.4g"):format(fl.b) or "-", fl and ("%.4g"):format(fl.c) or "-",
    fl and ("%.4f"):format(fl.r2) or "-", pct(are), pct(worst), pct(are_flat), pct(a.are_per_fraction),
    a.nd and ("%.3f, %.3g, %.3f, %.3g, %.3f"):format(a.nd.E, a.nd.A, a.nd.alpha, a.nd.B, a.nd.beta) or "-", pct(a.are_nd))
end
md[#md + 1] = "\n## ARE of L(N) at each fraction of training\n"
md[#md + 1] = "| fraction | step | " .. table.concat(cfg.parametrizations, " | ") .. " |"
md[#md + 1] = "|---|---|" .. ("---|"):rep(#cfg.parametrizations)
for _, s in ipairs(eval_steps) do
  local cells = {}
  for _, param in ipairs(cfg.parametrizations) do
    local a = analysis[param]
    cells[#cells + 1] = pct(a.by_step[s] and held_out_are(param, { s }, function(w) return a.by_step[s].predict(n_of[w]) end))
  end
  md[#md + 1] = ("| %s | %d | %s |"):format(util.num(fraction_of[s]), s, table.concat(cells, " | "))
end
local train_wall = 0
for _, param in ipairs(cfg.parametrizations) do
  for _, w in ipairs(widths) do train_wall = train_wall + (results[param][w].wall or 0) end
end
md[#md + 1] = ("\nTraining time %.0f s (the runs' own wall times, also when a rerun skipped them); this invocation %.0f s.\n"):format(
  train_wall, kiln.clock() - t0)
local text = table.concat(md, "\n")
util.write_atomic(cfg.out .. "/results.md", text .. "\n")
util.write_atomic(cfg.out .. "/results.csv", table.concat(csv))
print("\n" .. text)

-- Plots: final loss vs N and the law fitted on the smaller widths --------------------------
for _, param in ipairs(cfg.parametrizations) do
  local fl = analysis[param].final
  local xs_fit, ys_fit, xs_out, ys_out = {}, {}, {}, {}
  for i, w in ipairs(widths) do
    local y = results[param][w].losses[tc.steps]
    if i <= n_fit then xs_fit[#xs_fit + 1], ys_fit[#ys_fit + 1] = n_of[w], y
    else xs_out[#xs_out + 1], ys_out[#ys_out + 1] = n_of[w], y end
  end
  local series = { { name = "fitted widths", x = xs_fit, y = ys_fit, points = true },
                   { name = "held-out widths", x = xs_out, y = ys_out, points = true } }
  if fl then
    local xs, ys, lo, hi = {}, {}, n_of[widths[1]], n_of[widths[#widths]]
    for k = 0, 40 do xs[k + 1] = lo * (hi / lo) ^ (k / 40); ys[k + 1] = fl.predict(xs[k + 1]) end
    series[#series + 1] = { name = ("L(N) = %.3g N^%.3f + %.3f"):format(fl.a, fl.b, fl.c), x = xs, y = ys }
  end
  local p = kiln.plot.lines { path = ("%s/ladder_%s"):format(cfg.out, param), series = series, logx = true,
    title = ("%s ladder: final loss vs N"):format(param == "mup" and "muP" or "SP"),
    xlabel = ("N (%s params, millions)"):format(cfg.params:gsub("_", "-")), ylabel = "val loss (nats/byte)" }
  print(("plot: %s"):format(p.png or p.gp))
end
