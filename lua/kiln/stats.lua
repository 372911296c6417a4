-- kiln.stats — the statistics a reviewer asks of a comparison: standard errors, Student-t
-- confidence intervals, paired differences to a baseline over seeds and evaluation windows,
-- a deterministic hierarchical bootstrap, and a plain-words verdict.
--
--   local stats = require "kiln.stats"
--   stats.mean(xs), stats.sd(xs), stats.se(xs)
--   stats.t_quantile(0.975, df)                 -- Student t inverse CDF
--   stats.ci_mean(xs [, level])                 -> mean, half_width, df
--   local d = stats.paired(variant, baseline [, opts])
--       variant[s][w], baseline[s][w]: the loss of evaluation window w under seed s (same
--       seeds, same data order, same windows on both sides). d.diff is mean(variant - baseline),
--       [d.lo, d.hi] its confidence interval (see below), d.n_seeds, d.n_windows, d.per_seed.
--   stats.verdict(d [, opts])                   -> "no detectable difference" / "worse by X ± Y"
--
-- The interval. With two or more seeds, each seed gives one paired mean difference d_s over
-- all windows; the interval is the Student-t interval of those d_s (df = seeds - 1). Each d_s
-- carries its own window-sampling noise, so the spread over seeds already includes the noise
-- of the finite evaluation set as well as the seed-to-seed variation of training. With one
-- seed there is no seed variation to measure: the interval is the normal interval of the
-- paired window differences (method "windows"), and says so. opts.bootstrap = N adds a
-- hierarchical percentile bootstrap (seeds resampled, then windows within each seed) as a
-- cross-check; it is deterministic for a given opts.bootstrap_seed.
local M = {}

local function fail(fmt, ...) error("kiln.stats." .. fmt:format(...), 0) end

local function show(x) return x ~= x and "nan" or tostring(x) end

local function check_list(fname, name, xs, min_len)
  if type(xs) ~= "table" then fail("%s: argument '%s' must be a list of numbers, got %s", fname, name, type(xs)) end
  if #xs < (min_len or 1) then fail("%s: argument '%s' needs at least %d values, got %d", fname, name, min_len or 1, #xs) end
  for i = 1, #xs do
    local x = xs[i]
    if type(x) ~= "number" or x ~= x or x == math.huge or x == -math.huge then
      fail("%s: argument '%s'[%d] must be a finite number, got %s", fname, name, i, show(x))
    end
  end
end

local function check_level(fname, level)
  if level == nil then return 0.95 end
  if type(level) ~= "number" or not (level > 0 and level < 1) then
    fail("%s: 'level' must be a number strictly between 0 and 1, got %s", fname, tostring(level))
  end
  return level
end

function M.mean(xs)
  check_list("mean", "xs", xs)
  local s = 0
  for i = 1, #xs do s = s + xs[i] end
  return s / #xs
end

-- Sample standard deviation (n - 1 in the denominator).
function M.sd(xs)
  check_list("sd", "xs", xs, 2)
  local m = M.mean(xs)
  local v = 0
  for i = 1, #xs do v = v + (xs[i] - m) ^ 2 end
  return math.sqrt(v / (#xs - 1))
end

-- Standard error of the mean.
function M.se(xs)
  check_list("se", "xs", xs, 2)
  return M.sd(xs) / math.sqrt(#xs)
end

-- log Γ(x) for x > 0 (Lanczos series, g = 7; accurate to ~1e-14 relative here).
local LANCZOS = { 0.99999999999980993, 676.5203681218851, -1259.1392167224028,
                  771.32342877765313, -176.61503916999185, 12.507343278686905,
                  -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7 }
local function log_gamma(x)
  if x < 0.5 then return math.log(math.pi / math.abs(math.sin(math.pi * x))) - log_gamma(1 - x) end
  x = x - 1
  local a = LANCZOS[1]
  local t = x + 7.5
  for i = 1, 8 do a = a + LANCZOS[i + 1] / (x + i) end
  return 0.5 * math.log(2 * math.pi) + (x + 0.5) * math.log(t) - t + math.log(a)
end

-- Continued fraction of the regularized incomplete beta function (modified Lentz).
local function beta_cf(x, a, b)
  local tiny = 1e-300
  local c, d = 1, 1 - (a + b) * x / (a + 1)
  if math.abs(d) < tiny then d = tiny end
  d = 1 / d
  local h = d
  for m = 1, 500 do
    local m2 = 2 * m
    local aa = m * (b - m) * x / ((a + m2 - 1) * (a + m2))
    d = 1 + aa * d; if math.abs(d) < tiny then d = tiny end
    c = 1 + aa / c; if math.abs(c) < tiny then c = tiny end
    d = 1 / d; h = h * d * c
    aa = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))
    d = 1 + aa * d; if math.abs(d) < tiny then d = tiny end
    c = 1 + aa / c; if math.abs(c) < tiny then c = tiny end
    d = 1 / d
    local del = d * c
    h = h * del
    if math.abs(del - 1) < 1e-15 then break end
  end
  return h
end

-- I_x(a, b), the regularized incomplete beta function.
local function inc_beta(x, a, b)
  if x <= 0 then return 0 end
  if x >= 1 then return 1 end
  local front = math.exp(log_gamma(a + b) - log_gamma(a) - log_gamma(b) + a * math.log(x) + b * math.log(1 - x))
  if x < (a + 1) / (a + b + 2) then return front * beta_cf(x, a, b) / a end
  return 1 - front * beta_cf(1 - x, b, a) / b
end

-- P(T <= t) for Student's t with df degrees of freedom.
function M.t_cdf(t, df)
  if type(t) ~= "number" or t ~= t then fail("t_cdf: argument 't' must be a number, got %s", tostring(t)) end
  if type(df) ~= "number" or not (df > 0) then fail("t_cdf: argument 'df' must be a positive number, got %s", tostring(df)) end
  if t == math.huge then return 1 elseif t == -math.huge then return 0 end
  local tail = 0.5 * inc_beta(df / (df + t * t), df / 2, 0.5)
  return t >= 0 and 1 - tail or tail
end

-- The p-quantile of Student's t (bisection on the CDF: monotone, 200 halvings reach the
-- float resolution for any df).
function M.t_quantile(p, df)
  if type(p) ~= "number" or not (p > 0 and p < 1) then fail("t_quantile: argument 'p' must be strictly between 0 and 1, got %s", tostring(p)) end
  if type(df) ~= "number" or not (df > 0) then fail("t_quantile: argument 'df' must be a positive number, got %s", tostring(df)) end
  if p < 0.5 then return -M.t_quantile(1 - p, df) end
  local lo, hi = 0, 1
  while M.t_cdf(hi, df) < p do hi = hi * 2 end
  for _ = 1, 200 do
    local mid = 0.5 * (lo + hi)
    if M.t_cdf(mid, df) < p then lo = mid else hi = mid end
    if hi - lo <= 1e-15 * hi then break end
  end
  return 0.5 * (lo + hi)
end

-- The standard normal p-quantile, as the t quantile at df = 10^6 (within 1e-6 of the normal
-- one; much larger df loses accuracy in the incomplete beta function).
local function z_quantile(p) return M.t_quantile(p, 1e6) end

-- Mean and half-width of its Student-t confidence interval.
function M.ci_mean(xs, level)
  check_list("ci_mean", "xs", xs, 2)
  level = check_level("ci_mean", level)
  local df = #xs - 1
  return M.mean(xs), M.t_quantile(0.5 + level / 2, df) * M.se(xs), df
end

-- splitmix64: a tiny deterministic generator for the bootstrap (no global math.random state).
local function splitmix(seed)
  local s = seed
  return function(n)   -- a uniform integer in 1..n
    s = s + 0x9E3779B97F4A7C15
    local z = s
    z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ~ (z >> 27)) * 0x94D049BB133111EB
    z = z ~ (z >> 31)
    return (z >> 11) % n + 1
  end
end

local function check_paired(variant, baseline)
  if type(variant) ~= "table" or #variant == 0 then fail("paired: argument 'variant' must be a non-empty list (one list of window losses per seed)") end
  if type(baseline) ~= "table" or #baseline ~= #variant then
    fail("paired: argument 'baseline' must have one list per seed like 'variant' (%d), got %s",
      #variant, type(baseline) == "table" and tostring(#baseline) or type(baseline))
  end
  for s = 1, #variant do
    check_list("paired", ("variant[%d]"):format(s), variant[s], 2)
    check_list("paired", ("baseline[%d]"):format(s), baseline[s], 2)
    if #variant[s] ~= #baseline[s] then
      fail("paired: seed %d has %d windows for the variant and %d for the baseline; pairing needs the same windows",
        s, #variant[s], #baseline[s])
    end
  end
end

local function bootstrap(diffs, reps, seed, level)
  local pick = splitmix(seed)
  local means = {}
  local S = #diffs
  for r = 1, reps do
    local total, count = 0, 0
    for _ = 1, S do
      local d = diffs[pick(S)]
      local W = #d
      for _ = 1, W do total = total + d[pick(W)] end
      count = count + W
    end
    means[r] = total / count
  end
  table.sort(means)
  local a = (1 - level) / 2
  local function q(p) return means[math.max(1, math.min(reps, math.floor(p * reps + 0.5)))] end
  return q(a), q(1 - a)
end

function M.paired(variant, baseline, opts)
  check_paired(variant, baseline)
  opts = opts or {}
  if type(opts) ~= "table" then fail("paired: argument 'opts' must be a table, got %s", type(opts)) end
  local level = check_level("paired", opts.level)
  local per_seed, diffs, seed_means = {}, {}, {}
  local n_windows = 0
  for s = 1, #variant do
    local d = {}
    for w = 1, #variant[s] do d[w] = variant[s][w] - baseline[s][w] end
    diffs[s] = d
    local m = M.mean(d)
    per_seed[s] = { diff = m, se = M.se(d), windows = #d }
    seed_means[s] = m
    n_windows = n_windows + #d
  end
  local r = { n_seeds = #variant, n_windows = n_windows, level = level, per_seed = per_seed }
  if #variant >= 2 then
    local m, half, df = M.ci_mean(seed_means, level)
    r.diff, r.half, r.df, r.method = m, half, df, "seeds"
  else
    r.diff = per_seed[1].diff
    r.half = z_quantile(0.5 + level / 2) * per_seed[1].se
    r.method = "windows"
  end
  r.lo, r.hi = r.diff - r.half, r.diff + r.half
  if opts.bootstrap then
    local reps = opts.bootstrap
    if math.type(reps) ~= "integer" or reps < 100 or reps > 100000 then
      fail("paired: 'bootstrap' must be an integer number of resamples in 100..100000, got %s", tostring(reps))
    end
    r.boot_lo, r.boot_hi = bootstrap(diffs, reps, opts.bootstrap_seed or 1, level)
  end
  return r
end

-- "no detectable difference" when the interval contains 0; otherwise "better/worse by X ± Y"
-- (lower is better, as for a loss, unless opts.higher_is_better).
function M.verdict(d, opts)
  if type(d) ~= "table" or type(d.diff) ~= "number" or type(d.half) ~= "number" then
    fail("verdict: argument 'd' must be a result of kiln.stats.paired")
  end
  opts = opts or {}
  local digits = opts.digits or 4
  if d.lo <= 0 and d.hi >= 0 then return "no detectable difference" end
  local worse = d.diff > 0
  if opts.higher_is_better then worse = not worse end
  return ("%s by %." .. digits .. "f ± %." .. digits .. "f"):format(worse and "worse" or "better", math.abs(d.diff), d.half)
end

return M
