#!/usr/bin/env kiln
-- kiln.stats: t quantiles against published tables, intervals on known data, the coverage of
-- the paired interval on synthetic suites with a known effect, verdicts and argument errors.
local t = dofile("tests/lua/tap.lua")
local stats = require "kiln.stats"

-- Student t 97.5% quantiles (standard tables, 9 digits).
for _, row in ipairs { { 1, 12.706204736 }, { 2, 4.302652730 }, { 4, 2.776445105 },
                       { 9, 2.262157163 }, { 30, 2.042272456 }, { 1e6, 1.959966 } } do
  t.near(stats.t_quantile(0.975, row[1]), row[2], 1e-6 * row[2], ("t_quantile(0.975, %g)"):format(row[1]))
end
t.near(stats.t_quantile(0.025, 4), -2.776445105, 1e-6, "t quantiles are symmetric")
t.near(stats.t_cdf(0, 7), 0.5, 1e-15, "t_cdf(0) = 1/2")
t.near(stats.t_cdf(stats.t_quantile(0.9, 3), 3), 0.9, 1e-12, "t_cdf inverts t_quantile")

local m, half, df = stats.ci_mean { 1, 2, 3, 4, 5 }
t.near(m, 3, 1e-15, "ci_mean: mean")
t.eq(df, 4, "ci_mean: df = n - 1")
t.near(half, 2.776445105 * math.sqrt(2.5) / math.sqrt(5), 1e-8, "ci_mean: half width = t * sd / sqrt(n)")
t.near(stats.sd { 2, 4, 4, 4, 5, 5, 7, 9 }, math.sqrt(32 / 7), 1e-14, "sd uses n - 1")

-- Synthetic suites: window w of seed s has loss base_w + seed noise + window noise; the
-- variant adds a true effect delta. Windows are shared (paired) within a seed.
local function normal()
  local u1, u2 = math.random(), math.random()
  return math.sqrt(-2 * math.log(1 - u1)) * math.cos(2 * math.pi * u2)
end
local function suite(delta, seeds, windows)
  local v, b = {}, {}
  for s = 1, seeds do
    local seed_b, seed_v = 0.004 * normal(), 0.004 * normal()
    v[s], b[s] = {}, {}
    for w = 1, windows do
      local base = 3 + 0.5 * normal()          -- hard and easy windows: shared by both sides
      b[s][w] = base + seed_b + 0.02 * normal()
      v[s][w] = base + seed_v + delta + 0.02 * normal()
    end
  end
  return v, b
end

math.randomseed(12345)
local covered, reps, detected = 0, 300, 0
for _ = 1, reps do
  local v, b = suite(0.01, 5, 100)
  local d = stats.paired(v, b)
  if d.lo <= 0.01 and 0.01 <= d.hi then covered = covered + 1 end
  if stats.verdict(d) ~= "no detectable difference" then detected = detected + 1 end
end
t.note(("coverage of the 95%% interval over %d synthetic 5-seed suites: %d"):format(reps, covered))
t.ok(covered >= 0.91 * reps and covered <= 0.99 * reps, "the paired interval covers the true effect about 95% of the time")
t.ok(detected > 0.5 * reps, "an effect of 2.5 seed-sd is detected in most suites (" .. detected .. "/" .. reps .. ")")

local null_hits = 0
for _ = 1, reps do
  local d = stats.paired(suite(0, 5, 100))
  if stats.verdict(d) ~= "no detectable difference" then null_hits = null_hits + 1 end
end
t.ok(null_hits <= 0.09 * reps, "no effect: a difference is claimed in at most ~5% of suites (" .. null_hits .. "/" .. reps .. ")")

local v, b = suite(0.05, 1, 400)
local d1 = stats.paired(v, b)
t.eq(d1.method, "windows", "one seed: the interval is over windows")
t.ok(d1.lo <= 0.05 + 0.01 and d1.hi >= 0.05 - 0.01, "one seed: interval near the effect")
t.eq(d1.n_windows, 400, "n_windows counted")
v, b = suite(0.01, 4, 50)
local d = stats.paired(v, b, { bootstrap = 500, bootstrap_seed = 7 })
local d_again = stats.paired(v, b, { bootstrap = 500, bootstrap_seed = 7 })
t.eq(d.method, "seeds", "four seeds: the interval is over seeds")
t.eq(d.df, 3, "df = seeds - 1")
t.ok(d.boot_lo == d_again.boot_lo and d.boot_hi == d_again.boot_hi, "bootstrap is deterministic for a seed")
t.ok(d.boot_lo <= d.diff and d.diff <= d.boot_hi, "bootstrap interval contains the estimate")

t.eq(stats.verdict { diff = 0.01, half = 0.02, lo = -0.01, hi = 0.03 }, "no detectable difference", "verdict: CI contains 0")
t.eq(stats.verdict { diff = 0.0123, half = 0.0021, lo = 0.0102, hi = 0.0144 }, "worse by 0.0123 ± 0.0021", "verdict: higher loss is worse")
t.eq(stats.verdict({ diff = -0.5, half = 0.1, lo = -0.6, hi = -0.4 }, { digits = 2 }), "better by 0.50 ± 0.10", "verdict: lower loss is better")

t.err("kiln.stats.paired: seed 1 has 3 windows for the variant and 2 for the baseline", stats.paired, { { 1, 2, 3 } }, { { 1, 2 } })
t.err("kiln.stats.paired: argument 'variant%[1%]'%[2%] must be a finite number, got nan", stats.paired, { { 1, 0 / 0 } }, { { 1, 2 } })
t.err("kiln.stats.ci_mean: 'level' must be a number strictly between 0 and 1", stats.ci_mean, { 1, 2 }, 1.5)
t.err("kiln.stats.t_quantile: argument 'df' must be a positive number", stats.t_quantile, 0.9, 0)
t.err("kiln.stats.sd: argument 'xs' needs at least 2 values", stats.sd, { 1 })
t.done()
