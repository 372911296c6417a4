#!/usr/bin/env kiln
-- experiments/temporal_scaling.lua end to end on a tiny generated corpus (bytes, no data/
-- needed): the plan (default sizes and evaluation count, settings refused by name), then two
-- seeds of a small and one of a medium model with the cross-schedule runs; results.md has
-- every table with finite numbers, results.csv a row per seed, and a second invocation
-- trains nothing again.
local t = dofile("tests/lua/tap.lua")
local kiln = require "kiln"
local util = require "kiln.util"
local dir = t.tmpdir()
local kiln_bin = (os.getenv("KILN_BUILD") or "build") .. "/kiln"

-- A corpus of sentences from a word list: train and an ID validation file from one list, two
-- OOD files from others.
local rng = kiln.rng(3)
local function corpus(path, words, n)
  local out = {}
  for s = 1, n do
    local len = 4 + math.floor(rng:uniform() * 6)
    local w = {}
    for i = 1, len do w[i] = words[1 + math.floor(rng:uniform() * #words) % #words] end
    out[s] = table.concat(w, " ") .. ". "
  end
  t.write(path, table.concat(out))
end
local en = { "the", "model", "loss", "falls", "with", "context", "and", "tokens", "train", "a", "law", "of", "time" }
corpus(dir .. "/train.txt", en, 3000)
corpus(dir .. "/val.txt", en, 400)
corpus(dir .. "/a.txt", { "she", "walked", "to", "the", "garden", "at", "dusk", "with", "her", "sister" }, 400)
corpus(dir .. "/b.txt", { "in", "the", "beginning", "was", "word", "light", "and", "darkness", "upon", "earth" }, 400)

local base = ("%s experiments/temporal_scaling.lua tokenizer=bytes train=%s/train.txt id=%s/val.txt threads=1"):format(
  kiln_bin, dir, dir)
local ood = (" 'ood={a: %s/a.txt, b: %s/b.txt}'"):format(dir, dir)

-- 0. The verdict's paired comparison of MSE over seeds (experiments/lib/tsl_report.lua).
do
  local report = dofile("experiments/lib/tsl_report.lua")
  local c = report.compare_mse({ [1] = 0.1 }, { [1] = 0.3 })
  t.ok(c.word == "one seed" and c.half == nil and math.abs(c.mean + 0.2) < 1e-12, "one seed: no interval, the word says so")
  c = report.compare_mse({ 0.10, 0.11, 0.12 }, { 0.30, 0.31, 0.33 })
  t.ok(c.word == "lower" and c.n == 3 and c.mean + c.half < 0, ("three seeds, all lower: 'lower' (%.4f ± %.4f)"):format(c.mean, c.half))
  c = report.compare_mse({ 0.10, 0.40, 0.12 }, { 0.30, 0.20, 0.33 })
  t.eq(c.word, "no detectable difference", "mixed signs over seeds: no detectable difference")
  c = report.compare_mse({ 0.5, 0.6 }, { 0.1, 0.2 })
  t.eq(c.word, "higher", "two seeds, both clearly higher by the same amount: 'higher'")
  t.eq(report.compare_mse({ [1] = 0.1 }, { [2] = 0.1 }).word, "no common seed", "seeds are paired, not pooled")
end

-- 1. The plan of the default settings: sizes and evaluation count (no training).
local out, code = t.sh(base .. ood .. " plan_only=true")
t.eq(code, 0, "plan_only with the default settings runs" .. (code == 0 and "" or (": " .. out)))
local n_evals = tonumber(out:match("(%d+) evaluations per run"))
t.ok(n_evals and n_evals >= 60, ("the defaults evaluate %s distinct steps (>= 60)"):format(tostring(n_evals)))
local ne = {}
for name, n in out:gmatch("size (%a+): %d+ layers x d=%d+, (%d+) non%-embedding") do ne[name] = tonumber(n) end
t.ok(ne.small and ne.small > 0.5e6 and ne.small < 1.5e6 and ne.medium > 2e6 and ne.medium < 4e6
  and ne.large > 8e6 and ne.large < 12e6,
  ("default sizes: about 1M, 3M, 10M non-embedding parameters (%s, %s, %s)"):format(tostring(ne.small), tostring(ne.medium), tostring(ne.large)))
t.ok(out:find("%(val, a, b%)"), "the sets: val and the two OOD sets given as a map")
t.ok(out:find("seeds 1,2,3") and out:find("cross%-schedule: size small, seed 1"), "seeds of the smallest size, and its cross-schedule runs")
out, code = t.sh(base .. " ood=" .. dir .. "/a.txt plan_only=true eval_windows=all")
t.ok(code == 0 and out:find("%(val, ood%)") and out:find("all windows per set"),
  "a single OOD path is set 'ood'; eval_windows=all is accepted" .. (code == 0 and "" or (": " .. out)))
-- `ood` from a config file: a single path, or a map with names of one's own.
t.write(dir .. "/ood1.yaml", ("ood: %s/a.txt\n"):format(dir))
out, code = t.sh(base .. " config=" .. dir .. "/ood1.yaml plan_only=true")
t.ok(code == 0 and out:find("%(val, ood%)"), "a config file's single OOD path is set 'ood'" .. (code == 0 and "" or (": " .. out)))
t.write(dir .. "/ood2.yaml", ("ood:\n  mine: %s/b.txt\n"):format(dir))
out, code = t.sh(base .. " config=" .. dir .. "/ood2.yaml ood.extra=" .. dir .. "/a.txt plan_only=true")
t.ok(code == 0 and out:find("%(val, extra, mine%)"),
  "a config file's map names its own sets; ood.NAME=FILE adds one" .. (code == 0 and "" or (": " .. out)))
local refused = {
  { "ood=[a,b]", "setting 'ood' expects a file path or a map {name: file path, ...}, got '%[a,b%]'" },
  { "eval_windows=0", 'eval_windows.*a positive whole number or "all"' },
  { "verdict_cut=0.5", "verdict_cut' = 0.5 must be one of cuts" },
  { "sizes_run=[tiny]", "sizes_run': unknown size 'tiny'" },
  { "fit_from=300", "fit_from' = 300 %(step 300%) must come before the first cut %(step 200%)" },
  { "evals_log=5 evals_uniform=5", "give %d+ distinct evaluation steps over 2000 steps, fewer than min_evals = 60" },
}
for _, r in ipairs(refused) do
  out, code = t.sh(base .. ood .. " plan_only=true " .. r[1])
  t.ok(code ~= 0 and out:find(r[2]), r[1] .. " is refused by name: " .. out:gsub("\n", " "):sub(1, 200))
end

-- 2. End to end on tiny settings.
local run_args = ood .. (" quick=true out=%s/ts steps=60 context=32 batch=4 warmup=4 evals_log=12 evals_uniform=10 " ..
  "min_evals=10 eval_windows=16 seeds=[1,2] sizes.small.n_embd=16 sizes.medium.n_embd=24 plots=false cuts=[0.3] " ..
  "verdict_cut=0.3"):format(dir)   -- one cut: the fits of the schedule-aware laws take most of the time
local t0 = kiln.clock()
out, code = t.sh(base .. run_args)
local first = kiln.clock() - t0
t.eq(code, 0, ("the experiment runs end to end (%.1f s)"):format(first) .. (code == 0 and "" or (": " .. out:sub(-1500))))
local md = t.read(dir .. "/ts/results.md") or ""
for _, h in ipairs { "## Settings", "## Runs", "## Per-position law quality", "## Predictions of the average loss",
                     "## Cross-schedule", "## Verdicts" } do
  t.ok(md:find(h, 1, true), "results.md has " .. h)
end
t.ok(md:find("non-embedding parameters", 1, true) and md:find("not confirmed", 1, true),
  "results.md gives each size's non-embedding count and says the forms mapping is unconfirmed")
for _, d in ipairs { "small/seed1", "small/seed2", "medium/seed1", "small/seed1-wsd", "small/seed1-constant" } do
  t.ok(util.exists(dir .. "/ts/" .. d .. "/summary.yaml") and util.exists(dir .. "/ts/" .. d .. "/positions_se.csv"),
    "run directory " .. d .. " is complete, with positions_se.csv")
end

-- Per-position table: every (size, set) with finite medians, the ceiling at most 1.
local qrows = 0
for size, set, seeds, r2, ceil in md:gmatch("\n| (%a+) | (%a+) | (%d) | %d+ | (%S+) | (%S+) | %S+ | %S+ | %S+ |") do
  qrows = qrows + 1
  local R, C = tonumber(r2), tonumber(ceil)
  t.ok(R and R == R and C and C <= 1 and tonumber(seeds) == (size == "small" and 2 or 1),
    ("per-position row %s/%s: R² %s, ceiling %s (finite, ceiling <= 1), %s seeds"):format(size, set, r2, ceil, seeds))
end
t.eq(qrows, 6, "the per-position table has 2 sizes x 3 sets")

-- results.csv: a row per seed for every prediction; finite metrics where the fit succeeded.
local csv = util.read_csv(dir .. "/ts/results.csv")
local col = {}
for i, h in ipairs(csv.header) do col[h] = i end
local count, finite_rows, bad = { run = 0, positions = 0, prediction = 0, cross = 0 }, 0, 0
local seeds_of_small = {}
for _, r in ipairs(csv.rows) do
  local kind = r[col.kind]
  count[kind] = (count[kind] or 0) + 1
  if kind == "prediction" and r[col.size] == "small" then seeds_of_small[r[col.seed]] = true end
  if (kind == "prediction" or kind == "cross") and r[col.error] == "" then
    local ok = true
    for _, m in ipairs { "mse", "mape", "final_err" } do
      local v = r[col[m]]
      ok = ok and type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge
    end
    if ok then finite_rows = finite_rows + 1 else bad = bad + 1 end
  end
  if kind == "positions" then
    local c = r[col.median_ceiling]
    if not (type(c) == "number" and c <= 1) then bad = bad + 1 end
  end
end
t.eq(count.run, 5, "results.csv: one row per run (3 cosine, WSD, constant)")
t.eq(count.positions, 3 * 3, "results.csv: per-position rows for 3 runs x 3 sets")
t.eq(count.prediction, 3 * 3 * 7, "results.csv: 3 runs x 3 sets x 7 predictors (one cut)")
t.eq(count.cross, 2 * 3 * 7, "results.csv: 2 target schedules x 3 sets x 7 predictors (the temporal law with two LR-following form sets among them)")
t.ok(seeds_of_small[1] and seeds_of_small[2], "results.csv keeps each seed of the small size apart")
t.ok(finite_rows >= 40 and bad == 0, ("every fitted row has finite metrics (%d rows, %d bad)"):format(finite_rows, bad))
t.ok(md:find("### small, set `val`", 1, true) and md:find("over 2 seeds", 1, true) and md:find("one seed", 1, true),
  "verdicts per size and set, with intervals over 2 seeds for small and 'one seed' for medium")

-- 3. Started again (on the medium size alone, to keep the analysis short), nothing is retrained.
t0 = kiln.clock()
out, code = t.sh(base .. run_args .. " sizes_run=[medium] cross_schedule=false")
md = t.read(dir .. "/ts/results.md") or ""
local _, reused = md:gsub("| no %(complete%) |", "")
t.ok(code == 0 and reused == 1 and not out:find("step 60/60", 1, true),
  ("a second invocation trains nothing: its run is marked complete (%.1f s)"):format(kiln.clock() - t0))

t.done()
