-- kiln.tsl — the temporal scaling law (Xiong et al., arXiv 2404.17785; docs/experiments.md,
-- "Temporal scaling law"): the loss at token position i follows
--
--     L_i(t) = a0(t) / (1 + a1(t)·i) + a2(t)
--
-- at every checkpoint t; modelling how a0, a1, a2 drift with the trained tokens predicts the
-- future average loss (the mean of L_i over positions) from early checkpoints. Which form
-- each parameter follows is not confirmed by the paper's text we could read, so it is a
-- choice (`forms`), and `evaluate` compares against three baselines fitted to the average
-- loss directly.
--
--   local tsl = require "kiln.tsl"
--   local f = tsl.fit_positions(losses)                 -- {a0=, a1=, a2=, r2=, mse=, n=}
--   local m = tsl.fit_temporal("runs/x", { fit_until = 0.2, set = "val",
--               forms = { a0 = "log", a1 = "hyperbolic", a2 = "cosine" } })
--   local p = tsl.predict(m, 1000)                      -- {step=, tokens=, loss=, positions=, a0=, ...}
--   local q = tsl.predict(m, 1000, { run = other })     -- the same law under another run's schedule
--   local r = tsl.evaluate("runs/x", { fit_until = 0.2 })  -- r.rows, r.markdown, r.csv
--
-- Time: the trained tokens in units of `unit` tokens (default 1e6): x = tokens / unit.
-- Forms (each maps x, or a covariate of the schedule, to a parameter's value):
--   log         alpha + beta·ln x
--   hyperbolic  alpha + beta/(x + gamma)
--   power       alpha + beta·x^(−gamma)
--   lr          alpha + beta·lr(t)/lr_max        (follows the run's own LR schedule)
--   log_lr      alpha + beta·ln x + gamma·lr(t)/lr_max   (a trend in time and a term in the LR)
--   cosine      alpha + beta·c(t): c = 1 up to the LR peak, a half cosine from 1 to 0 over the
--               schedule's decay, 0 after it ends (piecewise cosine, tied to the schedule)
--   linear      alpha + beta·x;      constant   alpha
--   or a table {f = function(x, p, info) ... end, p0 = {...}, names = {...}, lower=, upper=}
--   (info = {step=, tokens=, lr=lr/lr_max, cosine=c}), or {law = "power", p0=, lower=, upper=}.
-- The schedule forms are checked against the run (matched_form): a default that does not suit
-- it is replaced with a note, an asked-for one refused. evaluate chooses the fit window from
-- the evaluations present when none is given (choose_fit_until) and flags degenerate fits
-- (fit_flags, range_flag) in its tables; the loss plot's y axis ignores flagged predictions.
local kiln = require "kiln"
local util = require "kiln.util"
local check = require "kiln.check"
local schedule_mod = require "kiln.schedule"
local plot_mod = require "kiln.plot"

local M = {}

local PARAMS = { "a0", "a1", "a2" }
M.position_a1_max = 10
M.default_forms = { a0 = "log", a1 = "hyperbolic", a2 = "cosine" }
M.baselines = {
  { name = "power", law = "kaplan", formula = "L_inf + (t_c/t)^alpha" },
  { name = "reciprocal", law = "reciprocal", formula = "A + B/(t + C)" },
  { name = "log", law = "neglog", formula = "A - B*ln(t)" },
}

local function fail(fmt, ...) error("kiln.tsl: " .. fmt:format(...), 0) end
local function finite(x) return type(x) == "number" and x == x and x ~= math.huge and x ~= -math.huge end

-- Per-position law ------------------------------------------------------------------------

-- fit_positions(losses [, opts]): fit a0/(1 + a1·i) + a2 to one per-position loss vector
-- (i = 1..T). opts are kiln.fit.curve's (lower/upper by name, starts, ...); the default
-- bounds are a0, a1, a2 >= 0 and a1 <= tsl.position_a1_max (10).
-- With opts.law = "power" it fits the alternative law a + b·i^(−c) instead (default bounds
-- b, c >= 0) and returns {law = "power", a=, b=, c=, r2=, mse=, n=, converged=}.
function M.fit_positions(losses, opts)
  if type(losses) ~= "table" then fail("fit_positions: expected a list of per-position losses (got %s)", type(losses)) end
  check.arg("kiln.tsl.fit_positions", "opts", opts, "?table")
  local law = opts and opts.law
  if law ~= nil and law ~= "reciprocal" and law ~= "power" then
    fail("fit_positions: opts.law must be 'reciprocal' (a0/(1 + a1·i) + a2) or 'power' (a + b·i^(−c)) (got %s)",
      check.describe(law))
  end
  local n = #losses
  if n > check.MAX_POSITIONS then fail("fit_positions: %d positions is more than the limit %d", n, check.MAX_POSITIONS) end
  if n < 4 then fail("fit_positions: %d positions is too few for a0, a1, a2 (need at least 4)", n) end
  local xs = {}
  for i = 1, n do
    local v = losses[i]
    if not finite(v) then fail("fit_positions: the loss at position %d is %s (every loss must be a finite number)", i, tostring(v)) end
    xs[i] = i
  end
  -- Losses are >= 0 and fall with context: a0, a2 >= 0 by default. Without that, a noisy,
  -- nearly flat vector is fitted as well by a1 -> 0 with a0 and a2 huge and cancelling,
  -- which says nothing and wrecks the parameter trajectories.
  -- Likewise a1 <= 10 (M.position_a1_max): past that the curve is a pure A/i drop, only
  -- a0/a1 is identified, and a0, a1 run off to infinity together.
  opts = util.copy(opts or {})
  opts.law = nil
  if law == "power" then
    -- b, c >= 0: the loss falls with context; a is free (a noisy tail may sit below a).
    if opts.lower == nil then opts.lower = { beta = 0, gamma = 0 } end
    local r = check.call("kiln.tsl.fit_positions", kiln.fit.curve, "power", xs, losses, nil, opts)
    return { law = "power", a = r.p[1], b = r.p[2], c = r.p[3], r2 = r.r2, mse = r.mse, n = n, converged = r.converged }
  end
  if opts.lower == nil then opts.lower = { a0 = 0, a1 = 0, a2 = 0 } end
  if opts.upper == nil then opts.upper = { a1 = M.position_a1_max } end
  local r = check.call("kiln.tsl.fit_positions", kiln.fit.curve, "position", xs, losses, nil, opts)
  return { a0 = r.p[1], a1 = r.p[2], a2 = r.p[3], r2 = r.r2, mse = r.mse, n = n, converged = r.converged }
end

-- noise_ceiling(losses, se) -> 1 − Σ_i se_i² / Σ_i (L_i − mean L)²: the R² the true
-- per-position curve itself would score against measurements with standard errors se_i (its
-- expected residual sum of squares is Σ se_i²). A law's R² can exceed it only by fitting
-- noise; the gap ceiling − R² is what the law leaves unexplained beyond the noise. It is
-- below 0 when the noise is larger than the spread of the losses, and nan for a flat vector.
function M.noise_ceiling(losses, se)
  local who = "kiln.tsl.noise_ceiling"
  check.numbers(who, "losses", losses, true)
  check.numbers(who, "se", se, true)
  if #se ~= #losses then check.error(who, "'losses' has %d entries but 'se' %d", #losses, #se) end
  if #losses < 2 then check.error(who, "need at least 2 positions (got %d)", #losses) end
  local mean, noise, tss = 0, 0, 0
  for i = 1, #losses do mean = mean + losses[i] end
  mean = mean / #losses
  for i = 1, #losses do
    if se[i] < 0 then check.error(who, "se[%d] is %s (a standard error is >= 0)", i, util.num(se[i])) end
    noise, tss = noise + se[i] ^ 2, tss + (losses[i] - mean) ^ 2
  end
  if tss == 0 then return 0 / 0 end
  return 1 - noise / tss
end

-- The law at positions 1..T.
function M.position_curve(a0, a1, a2, T)
  local who = "kiln.tsl.position_curve"
  check.number(who, "a0", a0); check.number(who, "a1", a1); check.number(who, "a2", a2)
  T = check.integer(who, "T", T, 1, check.MAX_POSITIONS)
  local out = {}
  for i = 1, T do out[i] = a0 / (1 + a1 * i) + a2 end
  return out
end

-- Reading a run ---------------------------------------------------------------------------

-- A schedule back from config.yaml's one-line description ("cosine(peak=0.003, ...)").
local function schedule_from_text(text)
  if type(text) ~= "string" then return nil end
  local kind, args = text:match("^([%w_]+)%((.*)%)$")
  if not kind or not schedule_mod.kinds[kind] or kind == "sequence" then return nil end
  local spec = { kind = kind }
  for k, v in args:gmatch("([%w_]+)=([^,]+)") do
    local num = tonumber(v)
    if num == nil then return nil end
    spec[k] = math.tointeger(num) or num
  end
  local ok, s = pcall(schedule_mod.make, spec)
  return ok and s or nil
end

-- The standard errors of positions.csv's means (positions_se.csv, written by kiln.train
-- beside it), as s.se[k] for the k-th evaluation of each set; a checkpoint without a row
-- keeps s.se[k] = nil. A run from before the file existed has none: run.has_se = false.
local function read_position_se(run, path)
  run.has_se = false
  if not util.exists(path) then return end
  local csv = util.read_csv(path)
  local h = csv.header
  if h[1] ~= "step" or h[2] ~= "set" or #h ~= run.T + 2 then
    fail("%s: expected a header 'step,set,pos1..pos%d' like positions.csv's (got '%s')", path, run.T,
      table.concat(h, ","):sub(1, 60))
  end
  local index = {}
  for name, s in pairs(run.sets) do
    s.se = {}
    index[name] = {}
    for k, st in ipairs(s.steps) do index[name][st] = k end
  end
  for ln, row in ipairs(csv.rows) do
    local k = index[row[2]] and index[row[2]][row[1]]
    if k then
      if #row ~= run.T + 2 then fail("%s line %d: %d fields, expected %d", path, ln + 1, #row, run.T + 2) end
      local se = {}
      for i = 1, run.T do
        local v = row[i + 2]
        if not (finite(v) and v >= 0) then
          fail("%s line %d: the standard error at position %d is %s (expected a finite number >= 0)", path, ln + 1, i,
            tostring(v))
        end
        se[i] = v
      end
      run.sets[row[2]].se[k] = se
      run.has_se = true
    end
  end
end

-- read_run(run_dir [, opts]) -> the per-position evaluations of a run, by set:
--   { dir=, T=, tokens_per_step=, total_steps=, set_names={...}, lr_source=,
--     sets = { <name> = { steps={...}, tokens={...}, losses={{...},...}, mean={...}, se={{...},...} } },
--     has_se= }  (se: the per-position standard errors from positions_se.csv, when present)
-- opts.schedule (a schedule, function of the step, or spec) gives the LR where config.yaml's
-- description cannot be turned back into one; else metrics.csv's logged LR is interpolated.
-- The planned steps are walked once to find the schedule's shape, so total_steps is at most
-- check.MAX_SAMPLES (10^7).
function M.read_run(run_dir, opts)
  local who = "kiln.tsl.read_run"
  opts = check.arg(who, "opts", opts, "?table") or {}
  if type(run_dir) ~= "string" then fail("read_run: expected a run directory (got %s)", type(run_dir)) end
  if opts.tokens_per_step ~= nil then check.positive(who, "opts.tokens_per_step", opts.tokens_per_step) end
  if opts.total_steps ~= nil then check.integer(who, "opts.total_steps", opts.total_steps, 1, check.MAX_SAMPLES) end
  local ppath = run_dir .. "/positions.csv"
  if not util.exists(ppath) then
    fail("%s has no positions.csv: it holds no per-position evaluations (train with a run_dir and " ..
      "eval = {sets = {...}} so that kiln.train writes them)", run_dir)
  end
  local csv = util.read_csv(ppath)
  local h = csv.header
  if h[1] ~= "step" or h[2] ~= "set" or h[3] ~= "pos1" then
    fail("%s: expected a header 'step,set,pos1,...' (got '%s')", ppath, table.concat(h, ","):sub(1, 60))
  end
  local T = #h - 2
  local run = { dir = run_dir, T = T, sets = {}, set_names = {} }
  for ln, row in ipairs(csv.rows) do
    local step, set = row[1], row[2]
    if math.type(step) ~= "integer" or type(set) ~= "string" then
      fail("%s line %d: expected a step number and a set name", ppath, ln + 1)
    end
    if #row ~= T + 2 then fail("%s line %d: %d fields, expected %d", ppath, ln + 1, #row, T + 2) end
    local losses, sum = {}, 0
    for i = 1, T do
      local v = row[i + 2]
      if not finite(v) then fail("%s line %d: the loss at position %d is %s (not a finite number)", ppath, ln + 1, i, tostring(v)) end
      losses[i] = v
      sum = sum + v
    end
    local s = run.sets[set]
    if not s then
      s = { name = set, steps = {}, losses = {}, mean = {} }
      run.sets[set] = s
      run.set_names[#run.set_names + 1] = set
    end
    local k = #s.steps + 1
    s.steps[k], s.losses[k], s.mean[k] = step, losses, sum / T
  end
  if #run.set_names == 0 then fail("%s has no evaluations yet (only a header)", ppath) end
  read_position_se(run, run_dir .. "/positions_se.csv")
  table.sort(run.set_names, function(a, b)
    if (a == "val") ~= (b == "val") then return a == "val" end
    return a < b
  end)

  local config = util.exists(run_dir .. "/config.yaml") and kiln.yaml.load(run_dir .. "/config.yaml") or {}
  local train = config.train or {}
  run.tokens_per_step = opts.tokens_per_step or train.tokens_per_step
  if type(run.tokens_per_step) == "number" then run.tokens_per_step = run.tokens_per_step + 0.0 end
  run.total_steps = opts.total_steps or train.steps
  local metrics = util.exists(run_dir .. "/metrics.csv") and util.read_csv(run_dir .. "/metrics.csv") or nil
  local lr_col, tok_col
  if metrics then
    for i, name in ipairs(metrics.header) do
      if name == "lr" then lr_col = i elseif name == "tokens" then tok_col = i end
    end
    if not run.tokens_per_step and tok_col and #metrics.rows > 0 then
      local r = metrics.rows[#metrics.rows]
      run.tokens_per_step = r[tok_col] / r[1]
    end
  end
  if not run.tokens_per_step then fail("%s: cannot tell the tokens per step (no config.yaml train.tokens_per_step, no metrics.csv)", run_dir) end
  if not (check.isfinite(run.tokens_per_step) and run.tokens_per_step > 0) then
    fail("%s: the tokens per step is %s (expected a number > 0)", run_dir, check.describe(run.tokens_per_step))
  end
  if run.total_steps ~= nil and not (math.type(run.total_steps) == "integer" and run.total_steps >= 0
                                     and run.total_steps <= check.MAX_SAMPLES) then
    fail("%s: config.yaml's train.steps is %s (expected a whole number in 0..%d)", run_dir,
      check.describe(run.total_steps), check.MAX_SAMPLES)
  end
  if not run.total_steps then
    local last = 0
    for _, s in pairs(run.sets) do last = math.max(last, s.steps[#s.steps]) end
    run.total_steps = last
  end
  for _, s in pairs(run.sets) do
    s.tokens = {}
    for k, st in ipairs(s.steps) do s.tokens[k] = st * run.tokens_per_step end
  end

  -- The LR at a checkpoint (after `step` updates) is the schedule's value for the last update.
  local sched
  if opts.schedule ~= nil then
    sched, run.lr_source = schedule_mod.make(opts.schedule, "kiln.tsl: schedule"), "opts.schedule"
  else
    local ok, exact = pcall(schedule_mod.make, train.schedule_config)
    if train.schedule_config ~= nil and ok then
      sched, run.lr_source = exact, "config.yaml: schedule_config"
    else
      sched = schedule_from_text(train.schedule)
      if sched then run.lr_source = "config.yaml: " .. train.schedule end
    end
  end
  if type(train.schedule_config) == "table" and type(train.schedule_config.kind) == "string" then
    run.schedule_kind = train.schedule_config.kind
  elseif type(train.schedule) == "string" then
    run.schedule_kind = train.schedule:match("^([%w_]+)%(")
  end
  if sched then
    run.lr = function(step) return sched(math.max(step - 1, 0)) end
  elseif metrics and lr_col and #metrics.rows > 0 and type(metrics.rows[#metrics.rows][lr_col]) == "number" then
    local st, lr = {}, {}
    for _, r in ipairs(metrics.rows) do   -- a step-0 evaluation row has no LR
      if type(r[lr_col]) == "number" then st[#st + 1], lr[#lr + 1] = r[1], r[lr_col] end
    end
    run.lr_source = "metrics.csv (logged LR, interpolated)"
    run.lr = function(step)
      if step <= st[1] then return lr[1] end
      if step > st[#st] then
        fail("%s: the LR at step %d is unknown (metrics.csv ends at step %d and the schedule '%s' cannot be rebuilt; pass opts.schedule)",
          run_dir, step, st[#st], tostring(train.schedule))
      end
      local lo, hi = 1, #st
      while hi - lo > 1 do
        local mid = (lo + hi) // 2
        if st[mid] < step then lo = mid else hi = mid end
      end
      local w = (step - st[lo]) / (st[hi] - st[lo])
      return lr[lo] + w * (lr[hi] - lr[lo])
    end
  end
  if run.lr then
    -- Shape of the schedule over the planned run: its peak and where its decay ends.
    local lr_max, peak_step, total = -math.huge, 0, run.total_steps
    local known_until = total
    local ok = pcall(run.lr, total)
    if not ok then known_until = 0 end
    for s = 1, known_until do
      local v = run.lr(s)
      if v > lr_max + 1e-15 * math.abs(v) then lr_max, peak_step = v, s end
    end
    local final = run.lr(known_until)
    local decay_end = known_until
    while decay_end > peak_step and math.abs(run.lr(decay_end - 1) - final) <= 1e-12 * math.max(lr_max, 1e-30) do
      decay_end = decay_end - 1
    end
    run.lr_max, run.peak_step, run.decay_end = lr_max, peak_step, decay_end
  end
  return run
end

-- Forms -------------------------------------------------------------------------------------

local BUILTIN_FORMS = {
  log = { law = "log", formula = "alpha + beta*ln(t)" },
  hyperbolic = { law = "hyperbolic", formula = "alpha + beta/(t + gamma)" },
  power = { law = "power", formula = "alpha + beta*t^(-gamma)" },
  linear = { law = "linear", formula = "alpha + beta*t" },
  constant = { law = "constant", formula = "alpha" },
  lr = { law = "linear", covariate = "lr", formula = "alpha + beta*lr(t)/lr_max" },
  -- Time and LR together, so that a fit on one schedule can be carried to another (a cosine
  -- run's LR alone is a function of time there, and says nothing about a constant LR).
  log_lr = { fn = function(x, p, info) return p[1] + p[2] * math.log(x) + p[3] * info.lr end,
             p0 = { 1, 0, 0 }, names = { "alpha", "beta", "gamma" }, uses_lr = true,
             formula = "alpha + beta*ln(t) + gamma*lr(t)/lr_max" },
  cosine = { law = "linear", covariate = "cosine", formula = "alpha + beta*c(t), c: 1 to the LR peak, half cosine to 0 at the decay end" },
}
M.forms = BUILTIN_FORMS

-- The schedule covariates at a step.
local function covariates(run, step)
  local lr = run.lr and run.lr(step) / run.lr_max or nil
  local c
  if run.peak_step then
    if step <= run.peak_step then c = 1
    elseif step >= run.decay_end then c = 0
    else c = 0.5 * (1 + math.cos(math.pi * (step - run.peak_step) / (run.decay_end - run.peak_step))) end
  end
  return lr, c
end

-- What the run's schedule looks like after its peak, for matching forms to it:
--   {kind = the config's schedule kind or nil, decays = the LR falls after the peak,
--    cosine = the fall is a half cosine from the peak to the decay end (within 2% of lr_max)}.
function M.schedule_shape(run)
  if type(run) ~= "table" then check.fail("kiln.tsl.schedule_shape", "run", "a table from tsl.read_run", run) end
  local shape = { kind = run.schedule_kind }
  if not run.lr or not run.peak_step then return shape end
  shape.decays = run.decay_end > run.peak_step
  if not shape.decays then return shape end
  local floor = run.lr(run.decay_end) / run.lr_max
  local worst = 0
  for st = run.peak_step, run.decay_end do
    local _, c = covariates(run, st)
    worst = math.max(worst, math.abs(run.lr(st) / run.lr_max - (floor + (1 - floor) * c)))
  end
  shape.cosine_error = worst
  shape.cosine = worst <= 0.02
  return shape
end

-- A form whose covariate is the schedule ('cosine', 'lr') must suit the run: 'cosine' only
-- a cosine decay, and either one only if its covariate varies over the fitted checkpoints
-- (a constant covariate leaves alpha and beta unidentified: any split fits, and the
-- prediction after the cut is arbitrary). Returns nil when it suits, else why not and the
-- form to use instead.
local function form_mismatch(run, name, steps)
  if name ~= "cosine" and name ~= "lr" and name ~= "log_lr" then return nil end
  local shape = M.schedule_shape(run)
  local sched = "the run's " .. (shape.kind and shape.kind .. " schedule" or "schedule")
  if name == "cosine" and shape.decays ~= nil and not shape.cosine then
    local instead = shape.decays and "lr" or "log"
    return ("the LR of %s %s"):format(sched, shape.decays and
      ("does not decay as a half cosine after its peak (off by up to %.0f%% of the peak)"):format(100 * shape.cosine_error)
      or "does not decay after its peak"), instead
  end
  if not run.lr or #steps == 0 then return nil end
  local lo, hi = math.huge, -math.huge
  for _, st in ipairs(steps) do
    local lr, c = covariates(run, st)
    local v = name == "cosine" and c or lr
    lo, hi = math.min(lo, v), math.max(hi, v)
  end
  if hi - lo <= 1e-6 then
    return ("its covariate (%s) is constant over the fitted checkpoints (steps %d..%d) of %s"):format(
      name == "cosine" and "the cosine" or "the LR", steps[1], steps[#steps], sched), "log"
  end
  return nil
end

local function resolve_form(spec, pname)
  if type(spec) == "string" then
    local f = BUILTIN_FORMS[spec]
    if not f then
      fail("forms.%s: unknown form '%s' (forms: %s, or a table {f = function(x, p, info) ... end, p0 = {...}})",
        pname, spec, table.concat(util.sorted_keys(BUILTIN_FORMS), ", "))
    end
    return { name = spec, law = f.law, covariate = f.covariate, formula = f.formula, fn = f.fn, p0 = f.p0,
             names = f.names, uses_lr = f.uses_lr }
  end
  if type(spec) == "table" and type(spec.f) == "function" then
    if type(spec.p0) ~= "table" or #spec.p0 == 0 then fail("forms.%s: a function form needs p0 (a list of starting values)", pname) end
    return { name = spec.name or "function", fn = spec.f, p0 = spec.p0, names = spec.names,
             lower = spec.lower, upper = spec.upper, formula = spec.formula or "a Lua function" }
  end
  if type(spec) == "table" and type(spec.law) == "string" then
    local base = BUILTIN_FORMS[spec.law]
    if not base then fail("forms.%s: unknown form '%s'", pname, spec.law) end
    return { name = spec.name or spec.law, law = base.law, covariate = base.covariate, formula = base.formula,
             p0 = spec.p0, lower = spec.lower, upper = spec.upper }
  end
  fail("forms.%s: expected a form name, {law = name, ...} or {f = function, p0 = {...}} (got %s)", pname, type(spec))
end

-- Fit one form to (steps, values); returns {form=, formula=, p=, named=, r2=, mse=,
-- at = function(step [, on])}: the fitted form at a step of this run, or of run `on` (its
-- schedule and tokens per step: the same law carried to another run).
local function fit_form(run, form, steps, values, unit, pname)
  if (form.covariate or form.uses_lr) and not run.lr then
    fail("form '%s' for %s needs the run's LR schedule, which %s does not record in a form kiln can rebuild (pass opts.schedule)",
      form.name, pname, run.dir or "the run")
  end
  local function time_of(step, on) return step * on.tokens_per_step / unit end
  local function x_of(step, on)
    if form.covariate == "lr" then return (covariates(on, step)) end
    if form.covariate == "cosine" then local _, c = covariates(on, step); return c end
    return time_of(step, on)
  end
  local function info_of(step, on)
    local lr, c
    if on.lr then lr, c = covariates(on, step) end
    return { step = step, tokens = step * on.tokens_per_step, lr = lr, cosine = c }
  end
  local xs = {}
  for k, st in ipairs(steps) do xs[k] = x_of(st, run) end
  local r, at
  if form.fn then
    local info_at = {}
    for k, st in ipairs(steps) do info_at[xs[k]] = info_of(st, run) end
    local user = form.fn
    r = kiln.fit.curve(function(x, p) return user(x, p, info_at[x] or info_of(x * unit / run.tokens_per_step, run)) end,
      xs, values, form.p0, { lower = form.lower, upper = form.upper, names = form.names })
    local p = r.p
    at = function(step, on) on = on or run; return user(time_of(step, on), p, info_of(step, on)) end
  else
    local ok, res = pcall(kiln.fit.curve, form.law, xs, values, form.p0, { lower = form.lower, upper = form.upper })
    if not ok then fail("fitting %s with form '%s': %s", pname, form.name, tostring(res)) end
    r = res
    local law, p = form.law, r.p
    at = function(step, on) return kiln.fit.eval(law, p, x_of(step, on or run)) end
  end
  return { form = form.name, formula = form.formula, p = r.p, named = r.named, r2 = r.r2, mse = r.mse, at = at,
           law = not form.fn and not form.covariate and form.law or nil, lower = form.lower, upper = form.upper,
           needs_lr = (form.covariate or form.uses_lr) and true or nil }
end

-- Temporal law ------------------------------------------------------------------------------

local function resolve_step(v, run, what, default)
  if v == nil then return default end
  if math.type(v) == "integer" then
    if v < 0 then fail("%s must be a step >= 0 or a fraction in (0, 1] (got %d)", what, v) end
    return v
  end
  if type(v) == "number" and v > 0 and v <= 1 then return math.floor(v * run.total_steps + 0.5) end
  fail("%s must be a step (an integer) or a fraction of the run's %d steps in (0, 1] (got %s)", what, run.total_steps, tostring(v))
end

local function get_run(run_or_dir, opts)
  if type(run_or_dir) == "string" then return M.read_run(run_or_dir, opts) end
  if type(run_or_dir) == "table" and type(run_or_dir.sets) == "table" and type(run_or_dir.set_names) == "table" then
    return run_or_dir
  end
  fail("expected a run directory or a table from tsl.read_run (got %s)", type(run_or_dir))
end

-- Per-checkpoint position fits of a set (cached on the run table).
function M.position_fits(run, set)
  if type(run) ~= "table" or type(run.sets) ~= "table" or type(run.set_names) ~= "table" then
    check.fail("kiln.tsl.position_fits", "run", "a table from tsl.read_run", run)
  end
  local s = set ~= nil and run.sets[set] or nil
  if not s then fail("%s has no evaluation set '%s' (sets: %s)", run.dir or "the run", tostring(set), table.concat(run.set_names, ", ")) end
  if not s.fits then
    s.fits = {}
    for k, losses in ipairs(s.losses) do
      local ok, f = pcall(M.fit_positions, losses)
      if not ok then fail("%s: set '%s' at step %d: %s", run.dir or "run", set, s.steps[k], tostring(f)) end
      f.step = s.steps[k]
      s.fits[k] = f
    end
  end
  return s.fits
end

-- position_quality(run, set [, {from=}]) -> how well the per-position laws fit, checkpoint by
-- checkpoint from step `from` on (default: the LR peak, i.e. after the warmup):
--   { checkpoints = {{step=, r2=, ceiling=, gap=, power_r2=}, ...}, n=,
--     median_r2=, median_ceiling=, median_gap=, median_power_r2=, median_power_gap= }
-- r2 is the reciprocal law's, power_r2 the alternative a + b·i^(−c)'s (nan where it failed),
-- ceiling the noise ceiling from the checkpoint's standard errors (nil without
-- positions_se.csv), gap = ceiling − r2. Medians are over the checkpoints with a value.
function M.position_quality(run, set, opts)
  local who = "kiln.tsl.position_quality"
  opts = check.arg(who, "opts", opts, "?table") or {}
  local fits = M.position_fits(run, set)
  local s = run.sets[set]
  local from = opts.from or run.peak_step or 1
  check.integer(who, "opts.from", from, 0)
  local out = { checkpoints = {} }
  local cols = { r2 = {}, ceiling = {}, gap = {}, power_r2 = {}, power_gap = {} }
  for k, st in ipairs(s.steps) do
    if st >= from then
      local c = { step = st, r2 = fits[k].r2 }
      local ok, pw = pcall(M.fit_positions, s.losses[k], { law = "power" })
      c.power_r2 = ok and pw.r2 or 0 / 0
      if s.se and s.se[k] then
        c.ceiling = M.noise_ceiling(s.losses[k], s.se[k])
        c.gap, c.power_gap = c.ceiling - c.r2, c.ceiling - c.power_r2
      end
      out.checkpoints[#out.checkpoints + 1] = c
      for name, list in pairs(cols) do if finite(c[name]) then list[#list + 1] = c[name] end end
    end
  end
  out.n = #out.checkpoints
  for name, list in pairs(cols) do out["median_" .. name] = util.median(list) end
  return out
end

-- fit_temporal(run_dir | run, {set=, fit_until=, fit_from=, forms=, unit=, schedule=}) -> model
--   fit_until: last step (integer) or fraction of the planned steps (0.2) whose checkpoints
--              are fitted; all checkpoints by default.
--   fit_from:  first step fitted (integer or fraction); default: the LR peak (end of warmup).
--   forms:     {a0 = ..., a1 = ..., a2 = ...} (defaults: log, hyperbolic, cosine).
function M.fit_temporal(run_or_dir, opts)
  local who = "kiln.tsl.fit_temporal"
  opts = check.arg(who, "opts", opts, "?table") or {}
  check.arg(who, "opts.set", opts.set, "?string")
  check.arg(who, "opts.forms", opts.forms, "?table")
  if opts.unit ~= nil then check.positive(who, "opts.unit", opts.unit) end
  local run = get_run(run_or_dir, opts)
  local set = opts.set or run.set_names[1]
  local fits = M.position_fits(run, set)
  local s = run.sets[set]
  local unit = opts.unit or 1e6
  local cut = resolve_step(opts.fit_until, run, "fit_until", s.steps[#s.steps])
  local from = resolve_step(opts.fit_from, run, "fit_from", run.peak_step or 1)
  if from < 1 then from = 1 end
  local steps, vals, used = {}, { a0 = {}, a1 = {}, a2 = {} }, {}
  for k, st in ipairs(s.steps) do
    if st >= from and st <= cut then
      steps[#steps + 1] = st
      used[#used + 1] = k
      for _, p in ipairs(PARAMS) do vals[p][#steps] = fits[k][p] end
    end
  end
  local forms_spec = opts.forms or M.default_forms
  local model = { set = set, T = run.T, unit = unit, tokens_per_step = run.tokens_per_step,
                  fit_until = cut, fit_from = from, steps = steps, forms = {}, run = run,
                  lr_source = run.lr_source, notes = {} }
  for _, p in ipairs(PARAMS) do
    local form = M.matched_form(run, p, forms_spec[p], steps, opts.match_schedule, model.notes)
    local need = form.fn and #form.p0 or kiln.fit.laws()[form.law] and #kiln.fit.laws()[form.law].params or 3
    if #steps < need + 1 then
      local later = {}
      for _, st in ipairs(s.steps) do if st >= from then later[#later + 1] = st end end
      local hint = later[need + 1] and ("fit_until = %d would give %d"):format(later[need + 1], need + 1)
                   or ("set '%s' has only %d evaluations from step %d on"):format(set, #later, from)
      fail("only %d checkpoints of set '%s' lie in steps %d..%d, too few to fit %s with form '%s' (need at least %d; %s): " ..
        "evaluate more often early (eval = {at = {...}}) or fit until a later step", #steps, set, from, cut, p, form.name,
        need + 1, hint)
    end
    model.forms[p] = fit_form(run, form, steps, vals[p], unit, p)
  end
  return model
end

-- The form for parameter `pname`: `asked` (nil = the default) resolved, and checked against
-- the run's schedule over the fitted `steps`. A default that does not suit the run is
-- replaced, with a sentence added to `notes`; an asked-for form that does not suit is refused
-- (match_schedule = false fits it regardless).
function M.matched_form(run, pname, asked, steps, match_schedule, notes)
  local form = resolve_form(asked or M.default_forms[pname], pname)
  if match_schedule == false then return form end
  for _ = 1, 2 do   -- cosine -> lr -> log at most
    local why, instead = form_mismatch(run, form.name, steps)
    if not why then return form end
    if asked ~= nil then
      fail("forms.%s = '%s' does not suit %s: %s (use %s=%s, or match_schedule=false to fit it anyway)",
        pname, form.name, run.dir or "the run", why, pname, instead)
    end
    local note = ("%s: the default form '%s' does not suit this run: %s; using '%s' instead"):format(
      pname, form.name, why, instead)
    if notes then notes[#notes + 1] = note end
    form = resolve_form(instead, pname)
  end
  return form
end

-- predict(model, step | {steps} [, {run = other}]) -> {step=, tokens=, a0=, a1=, a2=, loss=,
-- positions={...}} (or a list). With opts.run (a run from read_run with the same context)
-- the forms are evaluated at that run's steps: its tokens per step and, for the forms that
-- follow the LR, its schedule.
local function target_run(model, opts)
  opts = check.arg("kiln.tsl.predict", "opts", opts, "?table") or {}
  local on = opts.run
  if on == nil then return nil end
  if type(on) ~= "table" or type(on.tokens_per_step) ~= "number" then
    fail("predict: opts.run must be a run from tsl.read_run (got %s)", check.describe(on))
  end
  if on.T ~= model.T then
    fail("predict: opts.run (%s) has context %s, the model %s: the position law would not be the same curve",
      tostring(on.dir), tostring(on.T), tostring(model.T))
  end
  for _, p in ipairs(PARAMS) do
    if type(model.forms[p]) == "table" and model.forms[p].needs_lr and not on.lr then
      fail("predict: form '%s' of %s follows the LR, and opts.run (%s) has no LR schedule kiln can rebuild",
        model.forms[p].form, p, tostring(on.dir))
    end
  end
  return on
end

function M.predict(model, steps, opts)
  if type(model) ~= "table" or not model.forms then fail("predict: expected a model from tsl.fit_temporal") end
  local single = type(steps) == "number"
  local list = single and { steps } or steps
  if type(list) ~= "table" then fail("predict: expected a step or a list of steps (got %s)", type(steps)) end
  local on = target_run(model, opts)
  local tokens_per_step = on and on.tokens_per_step or model.tokens_per_step
  local out = {}
  for k, st in ipairs(list) do
    if not finite(st) or st <= 0 then fail("predict: steps must be positive numbers (got %s)", tostring(st)) end
    for _, p in ipairs(PARAMS) do
      if type(model.forms[p]) ~= "table" or type(model.forms[p].at) ~= "function" then
        fail("predict: expected a model from tsl.fit_temporal (its forms.%s is missing)", p)
      end
    end
    if math.type(model.T) ~= "integer" or model.T < 1 or model.T > check.MAX_POSITIONS then
      fail("predict: expected a model from tsl.fit_temporal (its T is %s)", check.describe(model.T))
    end
    local a0, a1, a2 = model.forms.a0.at(st, on), model.forms.a1.at(st, on), model.forms.a2.at(st, on)
    local clamped = false
    if a1 < 0 then a1, clamped = 0, true end   -- the law needs a1 >= 0; flagged, not hidden
    local pos = M.position_curve(a0, a1, a2, model.T)
    local sum = 0
    for i = 1, model.T do sum = sum + pos[i] end
    out[k] = { step = st, tokens = st * tokens_per_step, a0 = a0, a1 = a1, a2 = a2,
               loss = sum / model.T, positions = pos, a1_clamped = clamped or nil }
  end
  return single and out[1] or out
end

-- Baselines ---------------------------------------------------------------------------------

-- fit_baseline(name, steps, losses, tokens_per_step [, unit]) -> {name=, formula=, p=, named=, r2=, at = function(step)}
function M.fit_baseline(name, steps, losses, tokens_per_step, unit)
  local who = "kiln.tsl.fit_baseline"
  check.numbers(who, "steps", steps, true)
  check.numbers(who, "losses", losses, true)
  if #steps ~= #losses then check.error(who, "'steps' has %d entries but 'losses' %d", #steps, #losses) end
  check.positive(who, "tokens_per_step", tokens_per_step)
  if unit ~= nil then check.positive(who, "unit", unit) end
  unit = unit or 1e6
  tokens_per_step = tokens_per_step + 0.0   -- floats: step x tokens never wraps around
  local b
  for _, x in ipairs(M.baselines) do if x.name == name then b = x end end
  if not b then fail("unknown baseline '%s' (power, reciprocal, log)", tostring(name)) end
  local xs = {}
  for k, st in ipairs(steps) do xs[k] = st * tokens_per_step / unit end
  local r = check.call(who, kiln.fit.curve, b.law, xs, losses)
  local p, law = r.p, b.law
  return { name = name, formula = b.formula, p = r.p, named = r.named, r2 = r.r2, mse = r.mse, law = law,
           at = function(step) return kiln.fit.eval(law, p, step * tokens_per_step / unit) end }
end

-- Evaluation --------------------------------------------------------------------------------

local function held_out_stats(truth, pred)
  local n = #truth
  if n == 0 then return {} end
  local r2, mse = kiln.fit.stats(truth, pred)
  local ape = 0
  for i = 1, n do ape = ape + math.abs(pred[i] - truth[i]) / math.abs(truth[i]) end
  return { r2 = r2, mse = mse, mape = 100 * ape / n, final_pred = pred[n], final_true = truth[n],
           final_err = 100 * (pred[n] - truth[n]) / truth[n] }
end

-- The fit window when none is asked for: the first `fraction` (20%) of the set's evaluations
-- from step `from` on, but at least M.min_fit_points (enough for a three-parameter form plus
-- one) and leaving at least one evaluation to predict. Returns the last fitted step and a
-- sentence saying what was chosen.
M.default_fit_fraction = 0.2
M.min_fit_points = 4
function M.choose_fit_until(run, set, from, fraction)
  local who = "kiln.tsl.choose_fit_until"
  if type(run) ~= "table" or type(run.sets) ~= "table" then check.fail(who, "run", "a table from tsl.read_run", run) end
  local s = run.sets[set]
  if not s then fail("%s has no evaluation set '%s'", run.dir or "the run", tostring(set)) end
  check.integer(who, "from", from, 0)
  fraction = fraction or M.default_fit_fraction
  check.number(who, "fraction", fraction, 0, 1)
  local later = {}
  for _, st in ipairs(s.steps) do if st >= from then later[#later + 1] = st end end
  local n = #later
  local k = math.max(M.min_fit_points, math.ceil(fraction * n - 1e-9))
  if n < M.min_fit_points + 1 then
    fail("set '%s' has %d evaluations from step %d on; the temporal law needs at least %d (%d to fit, 1 to predict): " ..
      "evaluate more often (eval = {every = ..., at = {...}}) or give fit_from", set, n, from, M.min_fit_points + 1,
      M.min_fit_points)
  end
  k = math.min(k, n - 1)
  return later[k], ("fit_until = step %d: the first %d of the %d evaluations of set '%s' from step %d on " ..
    "(%g%% of them, at least %d)"):format(later[k], k, n, set, from, 100 * fraction, M.min_fit_points)
end

-- Degenerate fits --------------------------------------------------------------------------

-- How far outside the observed losses a prediction may fall before it is flagged, as a
-- multiple of their spread (max - min over the evaluations from fit_from on).
M.range_margin = 0.5
M.flag_meanings = {
  bound = "a fitted parameter sits on its bound (the law degenerates, e.g. a power with exponent 0)",
  pole = "the law has a pole (x = -gamma) between the first fitted and the last predicted checkpoint",
  range = "a prediction lies outside the observed losses by more than range_margin times their spread",
  a1_negative = "the predicted a1 went negative and was clamped to 0",
}

local function bound_at(bounds, j, names)
  if type(bounds) ~= "table" then return nil end
  local v = bounds[j]
  if v == nil and names then v = bounds[names[j]] end
  return v
end

-- fit_flags(fit, x_lo, x_hi) -> list of flag names for one fitted law ({law=, p=, lower=,
-- upper=} as fit_form and fit_baseline return) over x (tokens / unit) in [x_lo, x_hi]:
-- "bound" when a parameter sits on a finite bound (its own or the law's), "pole" when a
-- hyperbolic or reciprocal law's pole -gamma lies in the range.
function M.fit_flags(fit, x_lo, x_hi)
  local who = "kiln.tsl.fit_flags"
  check.arg(who, "fit", fit, "table")
  check.numbers(who, "fit.p", fit.p, true)
  check.number(who, "x_lo", x_lo); check.number(who, "x_hi", x_hi)
  local flags = {}
  local law = fit.law and kiln.fit.laws()[fit.law]
  if not law then return flags end
  for j, v in ipairs(fit.p) do
    for _, b in ipairs { bound_at(fit.lower, j, law.params) or law.lower[j], bound_at(fit.upper, j, law.params) or law.upper[j] } do
      if finite(b) and math.abs(v - b) <= 1e-6 * math.max(1, math.abs(b)) then flags.bound = true end
    end
  end
  if (fit.law == "hyperbolic" or fit.law == "reciprocal") and -fit.p[3] >= x_lo and -fit.p[3] <= x_hi then
    flags.pole = true
  end
  local out = {}
  for _, f in ipairs { "bound", "pole" } do if flags[f] then out[#out + 1] = f end end
  return out
end

-- range_flag(predictions, observed [, margin]) -> "range" or nil: a prediction that is not
-- finite or lies outside [min - m, max + m] of the observed losses, m = margin x their spread.
function M.range_flag(predictions, observed, margin)
  local who = "kiln.tsl.range_flag"
  check.list(who, "predictions", predictions, "number")
  check.numbers(who, "observed", observed, true)
  margin = margin or M.range_margin
  check.number(who, "margin", margin, 0)
  local lo, hi = math.huge, -math.huge
  for _, v in ipairs(observed) do lo, hi = math.min(lo, v), math.max(hi, v) end
  if #observed == 0 then return nil end
  local m = margin * (hi - lo)
  for _, v in ipairs(predictions) do
    if not finite(v) or v < lo - m or v > hi + m then return "range" end
  end
  return nil
end

local function join_flags(list)
  local seen, out = {}, {}
  for _, f in ipairs(list) do if f ~= "" and not seen[f] then seen[f] = true; out[#out + 1] = f end end
  return table.concat(out, " ")
end

-- evaluate(run_dir | run, opts) -> {rows = {...}, sets = {...}, notes = {...}, markdown = text, csv = text}
--   opts: fit_until (default: tsl.choose_fit_until's window), fit_from, forms, unit, schedule,
--         sets = {names}, variants = { name = forms, ... } (extra temporal-law rows with other
--         forms), min_position_r2 (0.95: the threshold counted in the position-fit summary),
--         match_schedule (false: keep schedule forms that do not suit the run),
--         range_margin (tsl.range_margin)
-- For each validation set: fit the temporal law and each baseline on the checkpoints in
-- [fit_from, fit_until], predict the average loss at every later checkpoint, and score the
-- predictions there (R², MSE, mean absolute % error, error at the last checkpoint). Each row
-- carries `flags` (tsl.flag_meanings) when its fit is degenerate.
function M.evaluate(run_or_dir, opts)
  local who = "kiln.tsl.evaluate"
  opts = check.arg(who, "opts", opts, "?table") or {}
  if opts.sets ~= nil then check.list(who, "opts.sets", opts.sets, "string") end
  check.arg(who, "opts.variants", opts.variants, "?table")
  check.arg(who, "opts.forms", opts.forms, "?table")
  check.arg(who, "opts.match_schedule", opts.match_schedule, "?boolean")
  if opts.min_position_r2 ~= nil then check.number(who, "opts.min_position_r2", opts.min_position_r2) end
  if opts.unit ~= nil then check.positive(who, "opts.unit", opts.unit) end
  if opts.range_margin ~= nil then check.number(who, "opts.range_margin", opts.range_margin, 0) end
  local run = get_run(run_or_dir, opts)
  local thr = opts.min_position_r2 or 0.95
  local result = { run = run, rows = {}, sets = {}, fit_until = opts.fit_until, notes = {} }
  local set_names = opts.sets or run.set_names
  for _, set in ipairs(set_names) do
    local s = run.sets[set]
    if not s then fail("%s has no evaluation set '%s' (sets: %s)", run.dir or "the run", set, table.concat(run.set_names, ", ")) end
    local info = { set = set, models = {}, baselines = {} }
    local fit_until = opts.fit_until
    if fit_until == nil then
      local from = math.max(1, resolve_step(opts.fit_from, run, "fit_from", run.peak_step or 1))
      fit_until, info.fit_choice = M.choose_fit_until(run, set, from)
    end
    local variants = { { name = "temporal", forms = opts.forms } }
    for _, vname in ipairs(util.sorted_keys(opts.variants or {})) do
      variants[#variants + 1] = { name = vname, forms = opts.variants[vname] }
    end
    local base_model
    for _, v in ipairs(variants) do
      local m = M.fit_temporal(run, { set = set, fit_until = fit_until, fit_from = opts.fit_from,
                                      forms = v.forms, unit = opts.unit, match_schedule = opts.match_schedule })
      info.models[v.name] = m
      base_model = base_model or m
      for _, n in ipairs(m.notes) do result.notes[#result.notes + 1] = ("set %s, %s: %s"):format(set, v.name, n) end
    end
    local cut, from = base_model.fit_until, base_model.fit_from
    info.fit_until, info.fit_from = cut, from
    -- Baselines on the average loss over the same checkpoints.
    local fsteps, flosses, tsteps, tlosses, observed = {}, {}, {}, {}, {}
    for k, st in ipairs(s.steps) do
      if st >= from and st <= cut then fsteps[#fsteps + 1], flosses[#flosses + 1] = st, s.mean[k] end
      if st > cut then tsteps[#tsteps + 1], tlosses[#tlosses + 1] = st, s.mean[k] end
      if st >= from then observed[#observed + 1] = s.mean[k] end
    end
    if #tsteps == 0 then
      fail("set '%s': no checkpoint after step %d to predict (fit_until is at or past the last evaluation)", set, cut)
    end
    info.test_steps, info.test_losses, info.observed = tsteps, tlosses, observed
    local unit = opts.unit or 1e6
    local x_lo, x_hi = from * run.tokens_per_step / unit, tsteps[#tsteps] * run.tokens_per_step / unit
    -- Position-fit quality over the checkpoints from fit_from on.
    local fits = M.position_fits(run, set)
    local r2s, ceilings, n_ok = {}, {}, 0
    for k, f in ipairs(fits) do
      if s.steps[k] >= from then
        r2s[#r2s + 1] = f.r2
        if f.r2 >= thr then n_ok = n_ok + 1 end
        local c = s.se and s.se[k] and M.noise_ceiling(s.losses[k], s.se[k])
        if finite(c) then ceilings[#ceilings + 1] = c end
      end
    end
    table.sort(r2s)
    info.position_r2 = { min = r2s[1], median = util.median(r2s), n = #r2s, n_above = n_ok, threshold = thr,
                         median_ceiling = util.median(ceilings) }
    local function add_row(method, formula, predict_fn, fit_r2, flags)
      local pred = {}
      for k, st in ipairs(tsteps) do pred[k] = predict_fn(st) end
      local st = held_out_stats(tlosses, pred)
      local row = { set = set, method = method, formula = formula, n_fit = #fsteps, n_test = #tsteps,
                    fit_from = from, fit_until = cut, fit_r2 = fit_r2 }
      for k, v in pairs(st) do row[k] = v end
      row.predictions = pred
      flags = flags or {}
      flags[#flags + 1] = M.range_flag(pred, observed, opts.range_margin)
      row.flags = join_flags(flags)
      result.rows[#result.rows + 1] = row
      return row
    end
    for _, v in ipairs(variants) do
      local m = info.models[v.name]
      local parts, flags = {}, {}
      for _, p in ipairs(PARAMS) do
        parts[#parts + 1] = p .. ":" .. m.forms[p].form
        for _, f in ipairs(M.fit_flags(m.forms[p], x_lo, x_hi)) do flags[#flags + 1] = f .. "(" .. p .. ")" end
      end
      local clamped = false
      add_row(v.name, table.concat(parts, " "), function(st)
        local pr = M.predict(m, st)
        clamped = clamped or pr.a1_clamped
        return pr.loss
      end, math.min(m.forms.a0.r2 or 1, m.forms.a1.r2 or 1, m.forms.a2.r2 or 1), flags)
      if clamped then result.rows[#result.rows].flags = join_flags { result.rows[#result.rows].flags, "a1_negative" } end
    end
    for _, b in ipairs(M.baselines) do
      local ok, bl = pcall(M.fit_baseline, b.name, fsteps, flosses, run.tokens_per_step, opts.unit)
      if ok then
        info.baselines[b.name] = bl
        add_row(b.name, b.formula, bl.at, bl.r2, M.fit_flags(bl, x_lo, x_hi))
      else
        local row = add_row(b.name, b.formula, function() return 0 / 0 end, nil)
        row.error = tostring(bl)
      end
    end
    result.sets[#result.sets + 1] = info
  end
  result.markdown = M.markdown(result)
  result.csv = M.csv(result)
  return result
end

local function f4(x, d)
  if x == nil then return "" end
  if x ~= x then return "nan" end
  return ("%." .. (d or 4) .. "f"):format(x)
end
local function g4(x)
  if x == nil then return "" end
  if x ~= x then return "nan" end
  return ("%.3g"):format(x)
end

M.csv_columns = { "set", "method", "formula", "fit_from", "fit_until", "n_fit", "n_test", "fit_r2", "r2", "mse",
                  "mape", "final_true", "final_pred", "final_err", "flags" }

-- A result of tsl.evaluate (rows and sets lists of tables), or an error naming `who`.
local function check_result(who, result)
  check.arg(who, "result", result, "table")
  check.list(who, "result.rows", result.rows, "table")
  check.list(who, "result.sets", result.sets, "table")
end

function M.csv(result, extra)
  check_result("kiln.tsl.csv", result)
  if extra ~= nil then check.list("kiln.tsl.csv", "extra", extra, "string") end
  local cols = {}
  for _, c in ipairs(extra or {}) do cols[#cols + 1] = c end
  for _, c in ipairs(M.csv_columns) do cols[#cols + 1] = c end
  local out = { util.csv_line(cols) }
  for _, r in ipairs(result.rows) do
    local f = {}
    for i, c in ipairs(cols) do f[i] = r[c] end
    out[#out + 1] = util.csv_line(f, #cols)
  end
  return table.concat(out)
end

function M.markdown(result)
  check_result("kiln.tsl.markdown", result)
  for i, info in ipairs(result.sets) do
    if type(info.position_r2) ~= "table" or type(info.models) ~= "table" or type(info.test_steps) ~= "table" then
      check.fail("kiln.tsl.markdown", ("result.sets[%d]"):format(i), "a set's entry from tsl.evaluate", info)
    end
  end
  local out = {}
  for _, info in ipairs(result.sets) do
    local pr = info.position_r2
    out[#out + 1] = ("### set `%s`: fit on steps %d..%d, predict %d later checkpoints (steps %d..%d)\n"):format(
      info.set, info.fit_from, info.fit_until, #info.test_steps, info.test_steps[1], info.test_steps[#info.test_steps])
    out[#out + 1] = ("Per-position fits from step %d on: R² min %.4f, median %.4f; %d of %d checkpoints ≥ %.2f%s.\n"):format(
      info.fit_from, pr.min or 0 / 0, pr.median or 0 / 0, pr.n_above, pr.n, pr.threshold,
      pr.median_ceiling and ("; median noise ceiling %.4f (the R² the true curve would get under the " ..
        "evaluation's standard errors)"):format(pr.median_ceiling) or "")
    if info.fit_choice then out[#out + 1] = "Fit window chosen: " .. info.fit_choice .. ".\n" end
    out[#out + 1] = "| method | form | R² (held out) | MSE | MAPE % | final true | final pred | final err % | fit R² | flags |"
    out[#out + 1] = "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
    local flagged = {}
    for _, r in ipairs(result.rows) do
      if r.set == info.set then
        out[#out + 1] = ("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |"):format(r.method, r.error and ("failed: " .. r.error) or r.formula,
          f4(r.r2), g4(r.mse), f4(r.mape, 2), f4(r.final_true), f4(r.final_pred), f4(r.final_err, 2), f4(r.fit_r2), r.flags or "")
        for f in (r.flags or ""):gmatch("[%w_]+") do if M.flag_meanings[f] then flagged[f] = true end end
      end
    end
    out[#out + 1] = ""
    for _, f in ipairs(util.sorted_keys(flagged)) do
      out[#out + 1] = ("Flag `%s`: %s."):format(f, M.flag_meanings[f])
    end
    if next(flagged) then out[#out + 1] = "Flagged rows are degenerate fits: read their numbers with care.\n" end
    for _, name in ipairs(util.sorted_keys(info.models)) do
      local m = info.models[name]
      out[#out + 1] = ("%s parameter laws (t in units of %g tokens):"):format(name, m.unit)
      for _, p in ipairs(PARAMS) do
        local f = m.forms[p]
        local ps = {}
        for j, v in ipairs(f.p) do ps[#ps + 1] = (f.named and next(f.named) and "" or "") .. ("p%d=%.5g"):format(j, v) end
        out[#out + 1] = ("- %s = %s [%s], %s; fit R² %s"):format(p, f.form, f.formula, table.concat(ps, ", "), f4(f.r2))
      end
      out[#out + 1] = ""
    end
  end
  return table.concat(out, "\n")
end

-- Plots -------------------------------------------------------------------------------------

M.has_gnuplot = function() return plot_mod.available() end

local function series(name, x, y, points) return { name = name, x = x, y = y, points = points } end

-- The measured per-position loss and the fitted law at a few checkpoints (5%, 25%, 50%, end).
local function plot_positions(run, set, s, fits, path)
  local picks, n = {}, #s.steps
  for _, q in ipairs { 0.05, 0.25, 0.5, 1.0 } do
    local k = math.max(1, math.min(n, math.floor(q * n + 0.5)))
    if picks[#picks] ~= k then picks[#picks + 1] = k end
  end
  local pos, out = {}, {}
  for i = 1, run.T do pos[i] = i end
  for _, k in ipairs(picks) do
    local f = fits[k]
    out[#out + 1] = series(("step %d"):format(s.steps[k]), pos, s.losses[k], true)
    out[#out + 1] = series(("fit at step %d (R^2 %.3f)"):format(s.steps[k], f.r2), pos, M.position_curve(f.a0, f.a1, f.a2, run.T))
  end
  return plot_mod.lines { path = path, series = out, logx = true, xlabel = "position i", ylabel = "loss (nats)",
    title = ("per-position loss, set %s: L_i = a0/(1+a1 i) + a2"):format(set) }
end

-- a0, a1, a2 fitted per checkpoint and their fitted forms over training, the end of the
-- fitting window marked.
local function plot_params(run, set, s, fits, info, m, path)
  local x, fx, last = {}, {}, s.steps[#s.steps]
  local per, form = { a0 = {}, a1 = {}, a2 = {} }, { a0 = {}, a1 = {}, a2 = {} }
  for k, st in ipairs(s.steps) do
    x[k] = st * run.tokens_per_step / m.unit
    for _, p in ipairs(PARAMS) do per[p][k] = fits[k][p] end
  end
  for j = 0, 200 do
    local st = math.max(1, info.fit_from) * (last / math.max(1, info.fit_from)) ^ (j / 200)
    fx[j + 1] = st * run.tokens_per_step / m.unit
    for _, p in ipairs(PARAMS) do form[p][j + 1] = m.forms[p].at(st) end
  end
  local out, lo, hi = {}, math.huge, -math.huge
  for _, p in ipairs(PARAMS) do
    out[#out + 1] = series(p .. " per checkpoint", x, per[p], true)
    out[#out + 1] = series(p .. ": " .. m.forms[p].form, fx, form[p])
    -- the y range from the per-checkpoint values: a form with a pole does not flatten them
    for k, st in ipairs(s.steps) do
      if st >= info.fit_from and finite(per[p][k]) then lo, hi = math.min(lo, per[p][k]), math.max(hi, per[p][k]) end
    end
  end
  local pad = 0.5 * math.max(hi - lo, 1e-3 * math.max(math.abs(hi), 1))
  return plot_mod.lines { path = path, series = out, logx = true, ylabel = "parameter value",
    yrange = lo <= hi and { lo - pad, hi + pad } or nil,
    xlabel = ("tokens / %g"):format(m.unit), title = "per-position law parameters over training, set " .. set,
    vlines = { { x = info.fit_until * run.tokens_per_step / m.unit, label = "fit until" } } }
end

-- The measured average loss against the temporal law's prediction and each baseline.
local function plot_loss(run, set, s, info, m, path, result_rows)
  local x, measured, predicted, px = {}, {}, {}, {}
  local base = {}
  for _, b in ipairs(M.baselines) do base[b.name] = {} end
  for k, st in ipairs(s.steps) do
    x[k], measured[k] = st * run.tokens_per_step / m.unit, s.mean[k]
    if st >= info.fit_from then
      px[#px + 1], predicted[#predicted + 1] = x[k], M.predict(m, st).loss
      for _, b in ipairs(M.baselines) do
        local bl = info.baselines[b.name]
        base[b.name][#px] = bl and bl.at(st) or 0 / 0
      end
    end
  end
  -- The y range is the measured losses and the predictions of unflagged methods: a degenerate
  -- fit (a pole, a prediction of -5 nats) is drawn, clipped, but does not squash the axis.
  local flags_of = {}
  for _, r in ipairs(result_rows or {}) do
    if r.set == set then flags_of[r.method] = r.flags ~= "" and r.flags or (r.error and "failed") or nil end
  end
  local lo, hi = math.huge, -math.huge
  for k, st in ipairs(s.steps) do
    if st >= info.fit_from or k == #s.steps then lo, hi = math.min(lo, s.mean[k]), math.max(hi, s.mean[k]) end
  end
  local function widen(name, ys)
    if flags_of[name] then return end
    for _, v in ipairs(ys) do if finite(v) then lo, hi = math.min(lo, v), math.max(hi, v) end end
  end
  local function title(name, text) return text .. (flags_of[name] and (" [flagged: " .. flags_of[name] .. "]") or "") end
  widen("temporal", predicted)
  local out = { series("measured", x, measured, true), series(title("temporal", "temporal law"), px, predicted) }
  local shown = { power = "power (Kaplan)", reciprocal = "reciprocal", log = "logarithmic" }
  for _, b in ipairs(M.baselines) do
    widen(b.name, base[b.name])
    out[#out + 1] = series(title(b.name, shown[b.name] or b.name), px, base[b.name])
  end
  local pad = 0.05 * math.max(hi - lo, 1e-3)
  return plot_mod.lines { path = path, series = out, logx = true, xlabel = ("tokens / %g"):format(m.unit),
    yrange = lo <= hi and { lo - pad, hi + pad } or nil,
    ylabel = "loss (nats)", title = ("average loss, set %s: measured vs predicted"):format(set),
    vlines = { { x = info.fit_until * run.tokens_per_step / m.unit, label = "fit until" } } }
end

-- plot(result, dir): per set, three figures through kiln.plot, each NAME.dat + NAME.gp (always)
-- and NAME.png (when gnuplot is installed): positions_<set>, params_<set>, loss_<set>.
-- Returns the list of files written.
function M.plot(result, dir, opts)
  local who = "kiln.tsl.plot"
  check_result(who, result)
  check.arg(who, "result.run", result.run, "table")
  check.string(who, "dir", dir, true)
  check.arg(who, "opts", opts, "?table")
  for i, info in ipairs(result.sets) do
    if type(info.models) ~= "table" or type(info.models.temporal) ~= "table" or type(info.set) ~= "string" then
      check.fail(who, ("result.sets[%d]"):format(i), "a set's entry from tsl.evaluate", info)
    end
  end
  util.mkdir(dir)
  local run, files = result.run, {}
  local function add(made)
    files[#files + 1] = made.dat
    files[#files + 1] = made.gp
    if made.png then files[#files + 1] = made.png end
  end
  for _, info in ipairs(result.sets) do
    local set, s = info.set, run.sets[info.set]
    local fits, m = M.position_fits(run, set), info.models.temporal
    add(plot_positions(run, set, s, fits, dir .. "/positions_" .. set))
    add(plot_params(run, set, s, fits, info, m, dir .. "/params_" .. set))
    add(plot_loss(run, set, s, info, m, dir .. "/loss_" .. set, result.rows))
  end
  return files
end

return M
