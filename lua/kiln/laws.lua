-- kiln.laws — schedule-aware loss-curve laws, the metrics every loss predictor is scored
-- with, and the comparison table of the temporal-scaling experiment (docs/experiments.md,
-- "Schedule-aware laws and metrics").
--
--   local laws = require "kiln.laws"
--   local c = laws.curve(run, "val")                 -- {lrs=, steps=, loss=, warmup=} from tsl.read_run
--   local m = laws.fit("multipower", { c1, c2 })     -- least squares over one or more curves
--   local yhat = laws.predict(m, other.lrs, other.steps)
--   local y = laws.eval("annealing", { L0 = 2, A = 1, alpha = 0.5, C = 0.3 }, lrs, steps)
--   local s = laws.metrics(truth, pred, { steps = steps, total = last_step })
--   local t = laws.compare(run, { cut = 0.3 })       -- predictors x metrics, per set
--
-- LRs: lrs[i] is the LR of the i-th optimizer update (kiln.schedule's step i - 1), and a
-- checkpoint at step s has seen updates 1..s. The laws work in LR units of `lr_unit` (the
-- largest LR of the fitted curves): a change of unit rescales A, C (and B) and nothing else,
-- and one unit for every curve of a fit keeps curves with different peaks comparable.
--
--   annealing   L(s) = L0 + A·S1^(−alpha) − C·S2      (Tissue et al. 2024)
--               S1 = Σ_{i≤s} η_i (warmup included), S2 = Σ_{i≤s} m_i,
--               m_i = λ·m_{i−1} + (η_{i−1} − η_i) for updates after the warmup, 0 before.
--   multipower  L(s) = L0 + A·S(s)^(−alpha) − B·Σ_{k} (η_{k−1} − η_k)·G(η_k^(−gamma)·S_k(s))
--               (Luo et al. 2025) with S(s) = Σ_{i≤s} η_i (= S1 + S_W), k over the updates
--               after the warmup, S_k(s) = Σ_{τ=k..s} η_τ, G(x) = 1 − (C·x + 1)^(−beta).
local kiln = require "kiln"
local check = require "kiln.check"
local util = require "kiln.util"
local tsl = require "kiln.tsl"
local stats = require "kiln.stats"

local M = {}

local function fail(fmt, ...) error("kiln.laws: " .. fmt:format(...), 0) end
local function finite(x) return type(x) == "number" and x == x and x ~= math.huge and x ~= -math.huge end

M.lambda = 0.999
M.params = {
  annealing = { "L0", "A", "alpha", "C" },
  multipower = { "L0", "A", "alpha", "B", "C", "beta", "gamma" },
}
M.formulas = {
  annealing = "L0 + A*S1^(-alpha) - C*S2",
  multipower = "L0 + A*S^(-alpha) - B*sum_k (eta_{k-1} - eta_k)*(1 - (C*eta_k^(-gamma)*S_k + 1)^(-beta))",
}

local function check_law(name, who)
  if not M.params[name] then fail("%s: unknown law '%s' (laws: annealing, multipower)", who, tostring(name)) end
end

local function check_lrs(lrs, who)
  if type(lrs) ~= "table" or #lrs == 0 then fail("%s: lrs must be a non-empty list of learning rates (one per update)", who) end
  for i = 1, #lrs do
    if not finite(lrs[i]) or lrs[i] < 0 then fail("%s: lrs[%d] is %s (expected a finite LR >= 0)", who, i, tostring(lrs[i])) end
  end
end

local function check_steps(steps, n_lrs, who)
  if type(steps) ~= "table" or #steps == 0 then fail("%s: steps must be a non-empty list of checkpoint steps", who) end
  for i = 1, #steps do
    local s = steps[i]
    if math.type(s) ~= "integer" or s < 1 or s > n_lrs then
      fail("%s: steps[%d] is %s (expected a whole step in 1..%d, the updates whose LR is known)", who, i, tostring(s), n_lrs)
    end
  end
end

-- The warmup: the updates before the first one at the largest LR.
function M.warmup_of(lrs)
  check.numbers("kiln.laws.warmup_of", "lrs", lrs)
  local top, at = -math.huge, 1
  for i = 1, #lrs do if lrs[i] > top then top, at = lrs[i], i end end
  return at - 1
end

local function max_lr(curves)
  local top = 0
  for _, c in ipairs(curves) do for i = 1, #c.lrs do if c.lrs[i] > top then top = c.lrs[i] end end end
  return top
end

-- Features of one LR sequence --------------------------------------------------------------

-- The normalised LRs, their running sum and (for the annealing law) S2 at every step.
local function prepare(lrs, warmup, unit, lambda)
  local n = #lrs
  local eta, cum, s2 = {}, { [0] = 0 }, { [0] = 0 }
  for i = 1, n do eta[i] = lrs[i] / unit; cum[i] = cum[i - 1] + eta[i] end
  local m = 0
  for i = 1, n do
    if i > warmup + 1 then m = lambda * m + (eta[i - 1] - eta[i]) else m = 0 end
    s2[i] = s2[i - 1] + m
  end
  -- The decay terms of the multi-power law: only updates where the LR changed contribute.
  local ks, dk, leta = {}, {}, {}
  for k = warmup + 2, n do
    local d = eta[k - 1] - eta[k]
    if d ~= 0 then ks[#ks + 1], dk[#dk + 1], leta[#leta + 1] = k, d, eta[k] end
  end
  return { eta = eta, cum = cum, s2 = s2, ks = ks, dk = dk, keta = leta, warmup = warmup }
end

-- Σ_k d_k·G(η_k^(−γ)·S_k(s)) for each step in `steps` (B = 1).
local function loss_drop(f, steps, C, beta, gamma, out)
  local ks, dk, keta, cum = f.ks, f.dk, f.keta, f.cum
  local w = {}
  for j = 1, #ks do w[j] = keta[j] ^ (-gamma) end
  for i, s in ipairs(steps) do
    local total, cs = 0, cum[s]
    for j = 1, #ks do
      local k = ks[j]
      if k > s then break end
      local x = w[j] * (cs - cum[k - 1])
      if x ~= x then x = 0 end   -- an LR of 0 with no area after it: no drop yet
      total = total + dk[j] * (1 - (C * x + 1) ^ (-beta))
    end
    out[i] = total
  end
  return out
end

local function law_values(name, p, f, steps, out)
  out = out or {}
  if name == "annealing" then
    local L0, A, alpha, C = p[1], p[2], p[3], p[4]
    for i, s in ipairs(steps) do
      local s1 = f.cum[s]
      out[i] = s1 > 0 and (L0 + A * s1 ^ (-alpha) - C * f.s2[s]) or 0 / 0
    end
    return out
  end
  local L0, A, alpha, B, C, beta, gamma = p[1], p[2], p[3], p[4], p[5], p[6], p[7]
  loss_drop(f, steps, C, beta, gamma, out)
  for i, s in ipairs(steps) do
    local S = f.cum[s]
    out[i] = S > 0 and (L0 + A * S ^ (-alpha) - B * out[i]) or 0 / 0
  end
  return out
end

local function param_vector(name, params, who)
  local names, p = M.params[name], {}
  for j, pn in ipairs(names) do
    local v = params[pn] or params[j]
    if not finite(v) then fail("%s: parameter '%s' of the %s law is %s (expected a finite number)", who, pn, name, tostring(v)) end
    p[j] = v
  end
  return p
end

-- eval(name, params, lrs, steps [, {lr_unit=, lambda=, warmup=}]) -> losses at the steps.
-- params by name ({L0 = ..}) or position; lr_unit defaults to max(lrs).
function M.eval(name, params, lrs, steps, opts)
  check_law(name, "eval")
  if type(params) ~= "table" then fail("eval: params must be a table of the %s law's parameters", name) end
  opts = opts or {}
  check_lrs(lrs, "eval")
  check_steps(steps, #lrs, "eval")
  local p = param_vector(name, params, "eval")
  local unit = opts.lr_unit or max_lr { { lrs = lrs } }
  if not (finite(unit) and unit > 0) then fail("eval: lr_unit must be a positive number (got %s)", tostring(unit)) end
  local f = prepare(lrs, opts.warmup or M.warmup_of(lrs), unit, opts.lambda or M.lambda)
  return law_values(name, p, f, steps)
end

-- Fitting ----------------------------------------------------------------------------------

-- Least squares for y ≈ X·c with a few columns (normal equations, partial pivoting).
local function linear_ls(cols, ys)
  local k, n = #cols, #ys
  local a, b = {}, {}
  for r = 1, k do
    a[r], b[r] = {}, 0
    for c = 1, k do
      local s = 0
      for i = 1, n do s = s + cols[r][i] * cols[c][i] end
      a[r][c] = s
    end
    for i = 1, n do b[r] = b[r] + cols[r][i] * ys[i] end
  end
  for c = 1, k do
    local piv = c
    for r = c + 1, k do if math.abs(a[r][c]) > math.abs(a[piv][c]) then piv = r end end
    a[c], a[piv], b[c], b[piv] = a[piv], a[c], b[piv], b[c]
    if math.abs(a[c][c]) < 1e-300 then return nil end
    for r = c + 1, k do
      local q = a[r][c] / a[c][c]
      for cc = c, k do a[r][cc] = a[r][cc] - q * a[c][cc] end
      b[r] = b[r] - q * b[c]
    end
  end
  local x = {}
  for r = k, 1, -1 do
    local s = b[r]
    for c = r + 1, k do s = s - a[r][c] * x[c] end
    x[r] = s / a[r][r]
  end
  return x
end

-- The grids of the nonlinear parameters searched for starting points (the linear ones,
-- L0, A and C or B, are solved exactly at each grid point).
M.grid = {
  annealing = { alpha = { 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.3, 1.7, 2.2, 3.0 } },
  multipower = { alpha = { 0.1, 0.3, 0.5, 0.8, 1.2 }, C = { 0.3, 1, 3 }, beta = { 0.3, 0.6, 1.0 },
                 gamma = { 0.2, 0.5, 0.8 } },
}

-- Every (curve, step, loss) point of a fit, with the curve's features.
local function gather(curves, opts, who)
  if type(curves) ~= "table" or #curves == 0 then
    if type(curves) == "table" and curves.lrs then curves = { curves } else
      fail("%s: expected a curve {lrs=, steps=, loss=} or a list of them", who)
    end
  end
  local unit = opts.lr_unit or max_lr(curves)
  if not (finite(unit) and unit > 0) then fail("%s: the curves' LRs are all 0; nothing to fit against", who) end
  local pts = { unit = unit, curves = {}, ys = {}, n = 0 }
  for ci, c in ipairs(curves) do
    local what = ("%s: curve %d"):format(who, ci)
    check_lrs(c.lrs, what)
    check_steps(c.steps, #c.lrs, what)
    if type(c.loss) ~= "table" or #c.loss ~= #c.steps then fail("%s: loss must list one value per step (%d)", what, #c.steps) end
    local warmup = c.warmup or M.warmup_of(c.lrs)
    local f = prepare(c.lrs, warmup, unit, opts.lambda or M.lambda)
    local steps, loss = {}, {}
    for i, s in ipairs(c.steps) do
      -- The laws describe training after the warmup; points inside it are left out.
      if s > warmup then
        if not finite(c.loss[i]) then fail("%s: loss[%d] is %s (expected a finite number)", what, i, tostring(c.loss[i])) end
        steps[#steps + 1], loss[#loss + 1] = s, c.loss[i]
        pts.ys[#pts.ys + 1] = c.loss[i]
      end
    end
    pts.curves[ci] = { f = f, steps = steps, first = pts.n + 1 }
    pts.n = pts.n + #steps
  end
  return pts
end

local function all_values(name, p, pts)
  local out = {}
  for _, c in ipairs(pts.curves) do
    local v = law_values(name, p, c.f, c.steps)
    for i = 1, #v do out[c.first + i - 1] = v[i] end
  end
  return out
end

local function ssr_of(pred, ys)
  local s = 0
  for i = 1, #ys do
    local r = pred[i] - ys[i]
    if r ~= r then return math.huge end
    s = s + r * r
  end
  return s
end

-- Grid starts: for each grid point of the nonlinear parameters, the exact least squares of
-- the linear ones; the best few by SSR.
local function grid_starts(name, pts, keep)
  local g, cands = M.grid[name], {}
  local function try(nl)
    local cols = { {}, {}, {} }
    for _, c in ipairs(pts.curves) do
      local drop = name == "multipower" and loss_drop(c.f, c.steps, nl.C, nl.beta, nl.gamma, {}) or nil
      for i, s in ipairs(c.steps) do
        local j = c.first + i - 1
        cols[1][j] = 1
        cols[2][j] = c.f.cum[s] ^ (-nl.alpha)
        cols[3][j] = name == "annealing" and -c.f.s2[s] or -drop[i]
      end
    end
    -- A curve with no LR decay in the fit leaves the third column 0: solve without it.
    local any = false
    for j = 1, pts.n do any = any or cols[3][j] ~= 0 end
    local x = linear_ls(any and cols or { cols[1], cols[2] }, pts.ys)
    if not x then return end
    local third = any and x[3] or 0
    local p = name == "annealing" and { x[1], x[2], nl.alpha, third }
      or { x[1], x[2], nl.alpha, third, nl.C, nl.beta, nl.gamma }
    for j = 1, #p do if p[j] < 0 then p[j] = 0 end end   -- the bounds: every parameter >= 0
    local ssr = ssr_of(all_values(name, p, pts), pts.ys)
    if ssr < math.huge then cands[#cands + 1] = { p = p, ssr = ssr } end
  end
  if name == "annealing" then
    for _, a in ipairs(g.alpha) do try { alpha = a } end
  else
    for _, a in ipairs(g.alpha) do for _, C in ipairs(g.C) do for _, b in ipairs(g.beta) do for _, gm in ipairs(g.gamma) do
      try { alpha = a, C = C, beta = b, gamma = gm }
    end end end end
  end
  table.sort(cands, function(u, v) return u.ssr < v.ssr end)
  local out = {}
  for i = 1, math.min(keep, #cands) do out[i] = cands[i].p end
  return out
end

-- fit(name, curves [, opts]) -> model {law=, p=, named=, lr_unit=, lambda=, ssr=, mse=, r2=, n=, converged=}
--   curves: one curve {lrs=, steps=, loss= [, warmup=]} or a list; the points inside each
--   curve's warmup are left out. opts: lr_unit, lambda (annealing; 0.999), starts (grid
--   points polished by Levenberg–Marquardt; 3), p0 (a start of your own, by name), lower/upper.
function M.fit(name, curves, opts)
  check_law(name, "fit")
  opts = opts or {}
  if type(opts) ~= "table" then fail("fit: opts must be a table (got %s)", type(opts)) end
  local pts = gather(curves, opts, "fit")
  local np = #M.params[name]
  if pts.n < np + 1 then
    fail("fit: %d points after the warmup, too few for the %d parameters of the %s law (need at least %d)", pts.n, np, name, np + 1)
  end
  local starts = grid_starts(name, pts, opts.starts or 3)
  if opts.p0 then table.insert(starts, 1, param_vector(name, opts.p0, "fit: p0")) end
  if #starts == 0 then fail("fit: no starting point gives finite predictions for the %s law", name) end
  -- One evaluation of all points per parameter vector: kiln.fit.curve asks point by point.
  local cache_p, cache_v = {}, nil
  local function model_fn(x, p)
    local same = cache_v ~= nil
    for j = 1, np do same = same and cache_p[j] == p[j] end
    if not same then
      for j = 1, np do cache_p[j] = p[j] end
      cache_v = all_values(name, cache_p, pts)
    end
    return cache_v[x]
  end
  local xs = {}
  for i = 1, pts.n do xs[i] = i end
  local lower = opts.lower or {}
  if not opts.lower then for j = 1, np do lower[j] = 0 end end
  local best
  for _, p0 in ipairs(starts) do
    cache_v = nil
    local ok, r = pcall(kiln.fit.curve, model_fn, xs, pts.ys, p0,
      { lower = lower, upper = opts.upper, names = M.params[name], starts = 1, tol = opts.tol })
    if ok and r.ssr == r.ssr and (not best or r.ssr < best.ssr) then best = r end
  end
  if not best then fail("fit: Levenberg–Marquardt failed from every start for the %s law", name) end
  local named = {}
  for j, pn in ipairs(M.params[name]) do named[pn] = best.p[j] end
  return { law = name, p = best.p, named = named, lr_unit = pts.unit, lambda = opts.lambda or M.lambda,
           ssr = best.ssr, mse = best.mse, r2 = best.r2, n = pts.n, converged = best.converged,
           formula = M.formulas[name] }
end

-- predict(model, lrs, steps [, {warmup=}]) -> predicted losses at the steps of a run with
-- these LRs (the model's lr_unit and lambda are kept).
function M.predict(model, lrs, steps, opts)
  if type(model) ~= "table" or not M.params[model.law or ""] then fail("predict: expected a model from laws.fit") end
  return M.eval(model.law, model.p, lrs, steps,
    { lr_unit = model.lr_unit, lambda = model.lambda, warmup = opts and opts.warmup })
end

-- Runs ---------------------------------------------------------------------------------------

-- curve(run, set [, {upto=}]) -> {lrs=, steps=, loss=, tokens_per_step=, lr_source=} for a
-- run read by tsl.read_run: the set's mean loss per checkpoint (up to step `upto`) and the
-- LR of every update to the end of the planned run.
function M.curve(run, set, opts)
  if type(run) ~= "table" or not run.sets then fail("curve: expected a run from tsl.read_run") end
  set = set or run.set_names[1]
  local s = run.sets[set]
  if not s then fail("curve: %s has no evaluation set '%s'", run.dir or "the run", tostring(set)) end
  if not run.lr then
    fail("curve: %s records no LR kiln can rebuild (no schedule in config.yaml, no lr column); pass opts.schedule to tsl.read_run",
      run.dir or "the run")
  end
  local upto = opts and opts.upto or math.huge
  local last = 0
  for _, st in ipairs(s.steps) do if st > last then last = st end end
  local n = math.max(run.total_steps or 0, last)
  local lrs = {}
  for i = 1, n do
    local ok, v = pcall(run.lr, i)
    if not ok then
      if i <= last then error(v, 0) end
      break
    end
    lrs[i] = v
  end
  local steps, loss = {}, {}
  for k, st in ipairs(s.steps) do
    if st <= upto and st >= 1 then steps[#steps + 1], loss[#loss + 1] = st, s.mean[k] end
  end
  return { lrs = lrs, steps = steps, loss = loss, tokens_per_step = run.tokens_per_step, lr_source = run.lr_source, set = set }
end

-- Metrics ----------------------------------------------------------------------------------

M.are_from = 0.7

-- metrics(truth, pred [, {steps=, total=, are_from=0.7}]) -> {n=, mse=, mape=, r2=, final_true=,
-- final_pred=, final_err=, are=, are_n=}. mape and final_err are in %; final_err is signed
-- (pred − true at the last point, relative). ARE is mean |(y − ŷ)/y| (a fraction) over the
-- points whose step (∝ tokens) is at least are_from × total (total: the last step by default).
function M.metrics(truth, pred, opts)
  opts = opts or {}
  if type(truth) ~= "table" or type(pred) ~= "table" or #truth ~= #pred or #truth == 0 then
    fail("metrics: truth and pred must be lists of the same non-zero length (got %s and %s)",
      type(truth) == "table" and #truth or type(truth), type(pred) == "table" and #pred or type(pred))
  end
  local n = #truth
  local steps = opts.steps
  if steps and #steps ~= n then fail("metrics: opts.steps has %d values for %d points", #steps, n) end
  local are_from = opts.are_from or M.are_from
  if not (type(are_from) == "number" and are_from >= 0 and are_from <= 1) then
    fail("metrics: are_from must be a fraction in [0, 1] (got %s)", tostring(are_from))
  end
  local total = opts.total or (steps and steps[n]) or n
  local se, ape, are, are_n, mean = 0, 0, 0, 0, 0
  for i = 1, n do
    local y, yh = truth[i], pred[i]
    if not finite(y) or y == 0 then fail("metrics: truth[%d] is %s (expected a finite, non-zero loss)", i, tostring(y)) end
    local rel = math.abs((y - yh) / y)
    se, ape, mean = se + (y - yh) ^ 2, ape + rel, mean + y
    local at = steps and steps[i] or i
    if at >= are_from * total then are, are_n = are + rel, are_n + 1 end
  end
  mean = mean / n
  local tss = 0
  for i = 1, n do tss = tss + (truth[i] - mean) ^ 2 end
  return { n = n, mse = se / n, mape = 100 * ape / n, r2 = tss > 0 and 1 - se / tss or 0 / 0,
           final_true = truth[n], final_pred = pred[n], final_err = 100 * (pred[n] - truth[n]) / truth[n],
           are = are_n > 0 and are / are_n or 0 / 0, are_n = are_n }
end

-- over_seeds(list of metric tables [, level]) -> {metric = {mean=, half=, df=, n=}} for every
-- numeric metric: the mean over seeds and its Student-t interval half-width (nil below 2 seeds).
function M.over_seeds(list, level)
  if type(list) ~= "table" or #list == 0 then fail("over_seeds: expected a list of metric tables, one per seed") end
  local out = {}
  for _, key in ipairs { "mse", "mape", "final_err", "are", "r2" } do
    local xs = {}
    for i, m in ipairs(list) do
      if type(m) ~= "table" then fail("over_seeds: list[%d] must be a table of metrics, got %s", i, type(m)) end
      if finite(m[key]) then xs[#xs + 1] = m[key] end
    end
    if #xs >= 2 then
      local mean, half, df = stats.ci_mean(xs, level)
      out[key] = { mean = mean, half = half, df = df, n = #xs }
    elseif #xs == 1 then
      out[key] = { mean = xs[1], n = 1 }
    end
  end
  return out
end

-- The comparison ---------------------------------------------------------------------------

M.predictors = { "temporal", "temporal_auto", "power", "reciprocal", "log", "annealing", "multipower" }

-- Across schedules the temporal law needs forms that can be carried to another schedule: the
-- paper's a2 (a piecewise cosine tied to the fitted run's schedule) is, on a cosine run, an
-- affine function of the LR, so "lr" is the same form made portable; log_lr adds a trend in time.
M.cross_temporal = {
  { name = "temporal", forms = { a0 = "log", a1 = "hyperbolic", a2 = "lr" } },
  { name = "temporal_lr", forms = { a0 = "log_lr", a1 = "hyperbolic", a2 = "log_lr" } },
}

local function score_row(rows, set, name, formula, truth, steps, predict_fn, total, opts, extra)
  local row = { set = set, predictor = name, formula = formula, n_test = #steps }
  local ok, pred = pcall(function()
    local out = {}
    for i, st in ipairs(steps) do out[i] = predict_fn(st, i) end
    return out
  end)
  if ok then
    local ok2, m = pcall(M.metrics, truth, pred, { steps = steps, total = total, are_from = opts.are_from })
    if ok2 then for k, v in pairs(m) do row[k] = v end; row.predictions = pred else row.error = tostring(m) end
  else
    row.error = tostring(pred)
  end
  for k, v in pairs(extra or {}) do row[k] = v end
  rows[#rows + 1] = row
  return row
end

-- A predictor that failed to fit still gets a row, with its reason.
local function failed_row(rows, set, name, formula, msg)
  rows[#rows + 1] = { set = set, predictor = name, formula = formula, error = tostring(msg) }
end

-- The forms of a temporal law as the tables print them.
function M.forms_text(forms)
  check.arg("kiln.laws.forms_text", "forms", forms, "table")
  return ("a0:%s a1:%s a2:%s"):format(tostring(forms.a0), tostring(forms.a1), tostring(forms.a2))
end
local forms_text = M.forms_text

-- Both schedule-aware laws fitted on curve `fit_on` and scored on steps `tsteps` of a run whose
-- LR sequence is `lrs` (the same run, or another schedule's).
local function score_laws(rows, set, fit_on, lrs, tloss, tsteps, total, opts)
  for _, law in ipairs { "annealing", "multipower" } do
    local okl, lm = pcall(M.fit, law, fit_on, { lambda = opts.lambda })
    if okl then
      local pred = M.predict(lm, lrs, tsteps)
      score_row(rows, set, law, M.formulas[law], tloss, tsteps, function(_, i) return pred[i] end, total, opts, { params = lm.named })
    else failed_row(rows, set, law, M.formulas[law], lm) end
  end
end

local function within_run(run, set, cut, opts, rows)
  local formselect = require "kiln.formselect"
  local s = run.sets[set]
  local from = opts.fit_from or run.peak_step or 1
  local fsteps, floss, tsteps, tloss = {}, {}, {}, {}
  for k, st in ipairs(s.steps) do
    if st >= from and st <= cut then fsteps[#fsteps + 1], floss[#floss + 1] = st, s.mean[k] end
    if st > cut then tsteps[#tsteps + 1], tloss[#tloss + 1] = st, s.mean[k] end
  end
  if #tsteps == 0 then fail("compare: set '%s' has no checkpoint after the cut (step %d) to predict", set, cut) end
  local total = tsteps[#tsteps]
  local before = formselect.truncate(run, cut)
  local forms = opts.forms or tsl.default_forms
  local ok, m = pcall(tsl.fit_temporal, before, { set = set, fit_until = cut, fit_from = from, forms = forms, unit = opts.unit })
  if ok then score_row(rows, set, "temporal", forms_text(forms), tloss, tsteps, function(st) return tsl.predict(m, st).loss end, total, opts)
  else failed_row(rows, set, "temporal", forms_text(forms), m) end
  local ok2, auto = pcall(formselect.choose, run, { set = set, cut = cut, fit_from = from, holdout = opts.holdout,
                                                    candidates = opts.candidates, unit = opts.unit })
  if ok2 then
    score_row(rows, set, "temporal_auto", forms_text(auto.forms), tloss, tsteps,
      function(st) return tsl.predict(auto.model, st).loss end, total, opts, { forms = auto.forms })
  else failed_row(rows, set, "temporal_auto", "", auto) end
  for _, b in ipairs(tsl.baselines) do
    local okb, bl = pcall(tsl.fit_baseline, b.name, fsteps, floss, run.tokens_per_step, opts.unit)
    if okb then score_row(rows, set, b.name, b.formula, tloss, tsteps, bl.at, total, opts)
    else failed_row(rows, set, b.name, b.formula, bl) end
  end
  local curve = M.curve(run, set, { upto = cut })
  score_laws(rows, set, curve, curve.lrs, tloss, tsteps, total, opts)
end

local function cross_run(run, target, set, opts, rows)
  local a, b = M.curve(run, set), M.curve(target, set)
  local wb = M.warmup_of(b.lrs)
  local tsteps, tloss = {}, {}
  for i, st in ipairs(b.steps) do if st > wb then tsteps[#tsteps + 1], tloss[#tloss + 1] = st, b.loss[i] end end
  if #tsteps == 0 then fail("compare: the target run has no checkpoint of set '%s' after its warmup", set) end
  local total = tsteps[#tsteps]
  local wa = M.warmup_of(a.lrs)
  local fsteps, floss = {}, {}
  for i, st in ipairs(a.steps) do if st > wa then fsteps[#fsteps + 1], floss[#floss + 1] = st, a.loss[i] end end
  -- Schedule-free baselines fitted on run A predict B as if B were A.
  for _, bn in ipairs(tsl.baselines) do
    local okb, bl = pcall(tsl.fit_baseline, bn.name, fsteps, floss, run.tokens_per_step, opts.unit)
    if okb then
      local tps = target.tokens_per_step / run.tokens_per_step
      score_row(rows, set, bn.name, bn.formula, tloss, tsteps, function(st) return bl.at(st * tps) end, total, opts)
    else failed_row(rows, set, bn.name, bn.formula, bl) end
  end
  score_laws(rows, set, a, b.lrs, tloss, tsteps, total, opts)
  -- The temporal law with forms that follow the LR, fitted on run A from its warmup on and
  -- evaluated under B's schedule.
  for _, v in ipairs(M.cross_temporal) do
    local okt, m = pcall(tsl.fit_temporal, run, { set = set, forms = v.forms, unit = opts.unit })
    if okt then
      score_row(rows, set, v.name, forms_text(v.forms), tloss, tsteps,
        function(st) return tsl.predict(m, st, { run = target }).loss end, total, opts)
    else failed_row(rows, set, v.name, forms_text(v.forms), m) end
  end
end

local function num(x, fmt)
  if x == nil then return "" end
  if x ~= x then return "nan" end
  return (fmt or "%.4g"):format(x)
end

local function markdown(result)
  local out = { ("LRs per update from %s%s.\n"):format(result.lr_source or "?",
    result.target_lr_source and ("; the target's from " .. result.target_lr_source) or "") }
  for _, set in ipairs(result.sets) do
    out[#out + 1] = ("### set `%s` (%s)\n"):format(set, result.mode == "cross"
      and "fit on run A, predict run B" or ("fit up to step %d, predict the later checkpoints"):format(result.cut))
    out[#out + 1] = ("| predictor | form | MSE | MAPE %% | final err %% | ARE %% (points ≥ %g of the final step) |"):format(result.are_from)
    out[#out + 1] = "|---|---|---:|---:|---:|---:|"
    for _, r in ipairs(result.rows) do
      if r.set == set then
        if r.error then
          out[#out + 1] = ("| %s | failed: %s | | | | |"):format(r.predictor, (r.error:gsub("|", "/")))
        else
          out[#out + 1] = ("| %s | %s | %s | %s | %s | %s (%d) |"):format(r.predictor, r.formula, num(r.mse), num(r.mape, "%.3f"),
            num(r.final_err, "%.3f"), num(r.are and 100 * r.are, "%.3f"), r.are_n or 0)
        end
      end
    end
    out[#out + 1] = ""
  end
  return table.concat(out, "\n")
end

-- compare(run, {cut=0.3, sets=, forms=, candidates=, holdout=, fit_from=, unit=, are_from=0.7,
--               lambda=, target=}) -> {rows = {{set=, predictor=, formula=, mse=, mape=,
--               final_err=, are=, are_n=, n_test=, error=?}, ...}, sets=, mode=, cut=, lr_source=,
--               target_lr_source=, markdown=}
-- lr_source says where the LRs came from: the schedule rebuilt from config.yaml, or the LR
-- logged in metrics.csv and interpolated between its rows.
-- Within one run (no target): every predictor is fitted on the checkpoints up to `cut` (a
-- step or a fraction of the planned steps) and scored on the later ones, for each set (ID,
-- OOD, ...). With target = another run (tsl.read_run) the schedule-aware laws and the
-- schedule-free baselines are fitted on the whole of `run` and scored on the target's
-- checkpoints after its warmup, and so is the temporal law with the forms of M.cross_temporal,
-- evaluated under the target's schedule.
function M.compare(run, opts)
  opts = opts or {}
  if type(run) ~= "table" or not run.sets then fail("compare: expected a run from tsl.read_run") end
  local result = { rows = {}, sets = {}, are_from = opts.are_from or M.are_from, lr_source = run.lr_source }
  local sets = opts.sets or run.set_names
  if opts.target then
    if type(opts.target) ~= "table" or not opts.target.sets then fail("compare: target must be a run from tsl.read_run") end
    result.mode = "cross"
    result.target_lr_source = opts.target.lr_source
    for _, set in ipairs(sets) do
      if run.sets[set] and opts.target.sets[set] then
        result.sets[#result.sets + 1] = set
        cross_run(run, opts.target, set, opts, result.rows)
      end
    end
    if #result.sets == 0 then fail("compare: the two runs share no evaluation set") end
  else
    result.mode = "within"
    local c = opts.cut or 0.3
    if math.type(c) == "integer" and c >= 1 then result.cut = c
    elseif type(c) == "number" and c > 0 and c <= 1 then result.cut = math.floor(c * run.total_steps + 0.5)
    else fail("compare: cut must be a step >= 1 or a fraction in (0, 1] (got %s)", tostring(c)) end
    for _, set in ipairs(sets) do
      if not run.sets[set] then fail("compare: the run has no evaluation set '%s'", tostring(set)) end
      result.sets[#result.sets + 1] = set
      within_run(run, set, result.cut, opts, result.rows)
    end
  end
  result.markdown = markdown(result)
  return result
end

return M
