-- temporal_scaling.lua — the temporal scaling law at token level (docs/experiments.md,
-- "Temporal scaling law"): train three sizes with warmup + cosine (several seeds of the
-- smallest), evaluate the per-position loss on an in-distribution set and two
-- out-of-distribution sets at >= 60 checkpoints (log-spaced early, uniform later), then
--   1. per checkpoint after the warmup, the R² of the per-position law against its noise
--      ceiling (from the evaluation's standard errors), and the alternative law a + b·i^(−c);
--   2. at cuts of 10%, 20%, 30% of the steps, every predictor of kiln.laws.compare (temporal
--      law with the paper's and with automatic forms, average-loss baselines, the annealing
--      and multi-power laws), aggregated over seeds (mean, 95% t-interval);
--   3. with cross_schedule, the smallest size also under WSD and constant LR, predicted from
--      the cosine run by the schedule-aware laws and the baselines;
--   4. verdicts that say no more than the seeds support.
--
--   kiln experiments/temporal_scaling.lua [config=FILE.yaml] [quick=true] [key=value ...]
-- (defaults: temporal_scaling.yaml; layering: docs/guide.md, "Settings")
--   e.g. sizes_run=[small] seeds=[1,2] out=runs/ts2     ood=data/austen/val.txt
--
-- Writes OUT/<size>/seed<s>/ (a kiln.train run directory each; laws_<cut>.md, positions.md),
-- OUT/<smallest>/seed<s>-wsd/ and -constant/ with cross_schedule, and OUT/results.md,
-- OUT/results.csv. A finished run is not trained again (kiln.train finds its summary.yaml and
-- the same fingerprint); restart=true trains it again.
local kiln = require "kiln"
local util = require "kiln.util"
local tsl = require "kiln.tsl"
local laws = require "kiln.laws"

local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
local setup = dofile(here .. "/lib/setup.lua")
local report = dofile(here .. "/lib/tsl_report.lua")
local fail = kiln.config.fail

-- `ood` is the map of OOD sets by name, replaced as a whole (from a file or the command
-- line); a single path is one set called `ood`.
local function ood_sets(v)
  if type(v) == "string" then return { ood = v } end
  local expected = "a file path or a map {name: file path, ...}"
  if type(v) ~= "table" or #v > 0 then return nil, expected end
  for name, path in pairs(v) do
    if type(name) ~= "string" or type(path) ~= "string" then return nil, expected end
  end
  return v
end

local P = { min = 1 }
local cfg = setup.config(here, "temporal_scaling", arg, {
  steps = P, batch = P, context = P, lr = { above = 0 }, warmup = { min = 0 }, floor_frac = { min = 0, max = 1 },
  evals_log = P, evals_uniform = P, log_until = { above = 0, max = 1 }, min_evals = { min = 0 },
  cuts = { above = 0, max = 1 }, verdict_cut = { above = 0, max = 1 }, threads = { min = 0 },
  tokenizer = setup.tokenizer_rule, seeds = { min = 0 }, seeds_other = { min = 0 }, wsd_decay = { above = 0, max = 1 },
  eval_windows = { check = function(v)
    if v == "all" or (math.tointeger(tonumber(v)) or 0) >= 1 then return nil end
    return 'a positive whole number or "all"'
  end },
}, { ood = ood_sets })

-- Checks across settings -------------------------------------------------------------------
local function check_settings()
  local ood = {}
  for name, path in pairs(cfg.ood) do
    if not name:match("^[%a][%w_]*$") or name == "val" or name == "train" then
      fail("setting 'ood.%s': a set name must be a word (letters, digits, _) other than 'val' and 'train'", name)
    end
    if path ~= "" then ood[name] = path end
  end
  if next(ood) == nil then fail("setting 'ood': no out-of-distribution set left (every path is empty)") end
  cfg.ood = ood
  if #cfg.seeds == 0 then fail("setting 'seeds': at least one seed") end
  if #cfg.seeds_other == 0 then fail("setting 'seeds_other': at least one seed") end
  for _, c in ipairs(cfg.cross_schedules) do
    if c ~= "wsd" and c ~= "constant" then fail("setting 'cross_schedules': expected wsd and/or constant, got '%s'", tostring(c)) end
  end
  local has = false
  for _, c in ipairs(cfg.cuts) do has = has or math.abs(c - cfg.verdict_cut) < 1e-9 end
  if not has then fail("setting 'verdict_cut' = %g must be one of cuts (%s)", cfg.verdict_cut, table.concat(cfg.cuts, ", ")) end
  for _, name in ipairs(cfg.sizes_run) do
    if type(name) ~= "string" or not cfg.sizes[name] then
      fail("setting 'sizes_run': unknown size '%s' (sizes: %s)", tostring(name), table.concat(util.sorted_keys(cfg.sizes), ", "))
    end
  end
  cfg.eval_windows = cfg.eval_windows == "all" and "all" or math.tointeger(tonumber(cfg.eval_windows))
  if cfg.warmup >= cfg.steps then fail("setting 'warmup' = %d must be below steps = %d", cfg.warmup, cfg.steps) end
end
check_settings()

local files = { train = cfg.train, val = cfg.id }
for name, path in pairs(cfg.ood) do files[name] = path end
local data, V = setup.open_data("temporal_scaling", cfg.tokenizer, files, "to build the corpora")
setup.report_data("temporal_scaling", cfg, data, V)
local sets = {}
for role, ds in pairs(data) do if role ~= "train" then sets[role] = ds end end
local set_names = { "val" }
for _, name in ipairs(util.sorted_keys(cfg.ood)) do set_names[#set_names + 1] = name end

-- Evaluation steps: log-spaced early, uniform over the whole run.
local function eval_steps(steps)
  local set, out = {}, {}
  local hi = math.max(11, math.floor(cfg.log_until * steps))
  for k = 0, cfg.evals_log - 1 do
    set[math.floor(10 * (hi / 10) ^ (k / math.max(1, cfg.evals_log - 1)) + 0.5)] = true
  end
  for k = 1, cfg.evals_uniform do set[math.floor(k * steps / cfg.evals_uniform + 0.5)] = true end
  for s in pairs(set) do if s >= 1 and s <= steps then out[#out + 1] = s end end
  table.sort(out)
  return out
end
local at = eval_steps(cfg.steps)
if #at < cfg.min_evals then
  fail("temporal_scaling: evals_log = %d and evals_uniform = %d give %d distinct evaluation steps over %d steps, " ..
    "fewer than min_evals = %d; raise them (or lower min_evals)", cfg.evals_log, cfg.evals_uniform, #at, cfg.steps, cfg.min_evals)
end

-- fit_from: "" (the LR peak), a step, or a fraction of the steps; before the first cut.
local function resolve_fit_from()
  if cfg.fit_from == "" then return nil end
  local v = tonumber(cfg.fit_from)
  local step = v and (math.tointeger(v) or (v > 0 and v <= 1 and math.floor(v * cfg.steps + 0.5))) or nil
  if not step or step < 0 then fail("setting 'fit_from' must be \"\", a step or a fraction in (0, 1] (got %s)", cfg.fit_from) end
  local first_cut = math.huge
  for _, c in ipairs(cfg.cuts) do first_cut = math.min(first_cut, math.floor(c * cfg.steps + 0.5)) end
  if step >= first_cut then
    fail("setting 'fit_from' = %s (step %d) must come before the first cut (step %d)", cfg.fit_from, step, first_cut)
  end
  return step
end
cfg.fit_from_step = resolve_fit_from()

-- The sizes: parameters outside the embeddings (wte, wpe) decide the order; the smallest
-- trains every seed of `seeds`, the others those of `seeds_other`.
local function plan_sizes()
  local list = {}
  for name, mc in pairs(cfg.sizes) do
    local m = kiln.model { vocab_size = V, block_size = cfg.context, n_layer = mc.n_layer, n_head = mc.n_head,
                           n_embd = mc.n_embd, seed = 1 }
    local total = m:num_params()
    list[#list + 1] = { name = name, mc = mc, params = total, non_embedding = total - (V + cfg.context) * mc.n_embd }
  end
  table.sort(list, function(a, b) return a.non_embedding < b.non_embedding end)
  local chosen = {}
  for _, n in ipairs(cfg.sizes_run) do chosen[n] = true end
  for i, s in ipairs(list) do
    s.seeds = i == 1 and cfg.seeds or cfg.seeds_other
    s.run = #cfg.sizes_run == 0 or chosen[s.name] == true
  end
  return list
end
local sizes = plan_sizes()

local function describe_plan()
  print(("temporal_scaling: tokenizer %s (V = %d), context %d, batch %d, %d steps (%d tokens per run), warmup %d + cosine to %g x lr"):format(
    cfg.tokenizer, V, cfg.context, cfg.batch, cfg.steps, cfg.steps * cfg.batch * cfg.context, cfg.warmup, cfg.floor_frac))
  print(("temporal_scaling: %d evaluations per run (steps %d..%d), %s windows per set (%s); %d threads"):format(
    #at, at[1], at[#at], tostring(cfg.eval_windows), table.concat(set_names, ", "), kiln.get_threads()))
  for _, s in ipairs(sizes) do
    print(("  size %s: %d layers x d=%d, %d non-embedding parameters (%d in all), seeds %s%s"):format(s.name, s.mc.n_layer,
      s.mc.n_embd, s.non_embedding, s.params, table.concat(s.seeds, ","), s.run and "" or " [not run: sizes_run]"))
  end
  if cfg.cross_schedule then
    print(("  cross-schedule: size %s, seed %d, also under %s (WSD decays over the last %g%%)"):format(
      sizes[1].name, sizes[1].seeds[1], table.concat(cfg.cross_schedules, " and "), 100 * cfg.wsd_decay))
  end
end
describe_plan()
if cfg.plan_only then os.exit(0) end

-- Training ------------------------------------------------------------------------------------
local schedules = {
  cosine = function() return kiln.schedule.cosine { peak = cfg.lr, floor_frac = cfg.floor_frac, steps = cfg.steps, warmup = cfg.warmup } end,
  wsd = function()
    local decay = math.max(1, math.floor(cfg.wsd_decay * cfg.steps + 0.5))
    return kiln.schedule.wsd { peak = cfg.lr, warmup = cfg.warmup, stable = math.max(0, cfg.steps - cfg.warmup - decay),
                               decay = decay, floor_frac = cfg.floor_frac }
  end,
  constant = function() return kiln.schedule.warmup { peak = cfg.lr, steps = math.max(1, cfg.warmup) } end,
}

local function run_dir_of(size, seed, schedule)
  return ("%s/%s/seed%d%s"):format(cfg.out, size.name, seed, schedule == "cosine" and "" or ("-" .. schedule))
end

local function train_one(size, seed, schedule)
  local dir = run_dir_of(size, seed, schedule)
  print(("== %s seed %d, %s schedule -> %s"):format(size.name, seed, schedule, dir))
  local mc = size.mc
  local model = kiln.model { vocab_size = V, block_size = cfg.context, n_layer = mc.n_layer, n_head = mc.n_head,
                             n_embd = mc.n_embd, seed = seed }
  local t0 = kiln.clock()
  local summary = kiln.train {
    model = model, optimizer = { lr = cfg.lr }, data = data.train, steps = cfg.steps, batch = cfg.batch,
    context = cfg.context, seed = seed, run_dir = dir, log_every = 50, config = cfg, schedule = schedules[schedule](),
    eval = { at = at, sets = sets, windows = cfg.eval_windows }, checkpoint = { every = cfg.steps }, restart = cfg.restart,
  }
  return { size = size.name, seed = seed, schedule = schedule, dir = dir, params = size.params,
           non_embedding = size.non_embedding, wall = summary.wall_seconds, tokens_per_s = summary.tokens_per_s,
           final_loss = summary.final_loss, reused = summary.already_complete == true, this_wall = kiln.clock() - t0 }
end

local runs, cosine_runs = {}, {}
local function train_all()
  for _, size in ipairs(sizes) do
    if size.run then
      for _, seed in ipairs(size.seeds) do
        local r = train_one(size, seed, "cosine")
        runs[#runs + 1], cosine_runs[#cosine_runs + 1] = r, r
      end
    end
  end
  if not cfg.cross_schedule then return nil end
  local small, seed = sizes[1], sizes[1].seeds[1]
  local cross = { base = nil, targets = {} }
  for _, r in ipairs(cosine_runs) do if r.size == small.name and r.seed == seed then cross.base = r end end
  if not cross.base then   -- the smallest size was left out of sizes_run: its cosine run is still needed
    cross.base = train_one(small, seed, "cosine")
    runs[#runs + 1] = cross.base
  end
  for _, sched in ipairs(cfg.cross_schedules) do
    local r = train_one(small, seed, sched)
    runs[#runs + 1] = r
    cross.targets[#cross.targets + 1] = r
  end
  return cross
end
local cross = train_all()

-- Analysis ------------------------------------------------------------------------------------
local function fit_from() return cfg.fit_from_step end

-- One cosine run: the per-position quality per set, the comparison at every cut.
local function analyse(r, rows)
  local t0 = kiln.clock()
  local run = tsl.read_run(r.dir)
  local qmd = { ("# Per-position law quality, %s seed %d\n"):format(r.size, r.seed) }
  for _, set in ipairs(set_names) do
    local ok, q = pcall(tsl.position_quality, run, set)
    if ok then
      rows.quality[#rows.quality + 1] = { size = r.size, seed = r.seed, set = set, q = q }
      qmd[#qmd + 1] = report.quality_detail(set, q)
    else
      qmd[#qmd + 1] = ("## set `%s`: failed: %s\n"):format(set, tostring(q))
      print(("%s: set %s: no per-position quality: %s"):format(r.dir, set, tostring(q)))
    end
  end
  util.write_atomic(r.dir .. "/positions.md", table.concat(qmd, "\n") .. "\n")
  for _, cut in ipairs(cfg.cuts) do
    -- after hours of training, one cut that cannot be compared must not lose the others
    local ok, c = pcall(laws.compare, run, { cut = cut, forms = cfg.forms, fit_from = fit_from() })
    if not ok then
      c = { rows = {}, cut = math.floor(cut * cfg.steps + 0.5), markdown = "failed: " .. tostring(c) }
      for _, set in ipairs(set_names) do
        for _, p in ipairs(laws.predictors) do c.rows[#c.rows + 1] = { set = set, predictor = p, error = c.markdown } end
      end
    end
    util.write_atomic(("%s/laws_%g.md"):format(r.dir, cut), c.markdown .. "\n")
    for _, row in ipairs(c.rows) do
      row.size, row.seed, row.cut, row.cut_step = r.size, r.seed, cut, c.cut
      rows.predictions[#rows.predictions + 1] = row
    end
  end
  if cfg.plots then   -- figures only: a failure is reported, and the tables are still written
    local ok, err = pcall(function()
      local e = tsl.evaluate(run, { fit_until = cfg.verdict_cut, fit_from = fit_from(), forms = cfg.forms })
      tsl.plot(e, r.dir .. "/tsl_plots")
    end)
    if not ok then print(("%s: no plots: %s"):format(r.dir, tostring(err))) end
  end
  r.analysis_wall = kiln.clock() - t0
end

local function analyse_cross(rows)
  if not cross then return end
  local base = tsl.read_run(cross.base.dir)
  for _, tr in ipairs(cross.targets) do
    local ok, c = pcall(laws.compare, base, { target = tsl.read_run(tr.dir) })
    if not ok then c = { rows = { { set = "all", predictor = "all", error = tostring(c) } }, markdown = "failed: " .. tostring(c) } end
    util.write_atomic(("%s/laws_from_cosine.md"):format(tr.dir), c.markdown .. "\n")
    for _, row in ipairs(c.rows) do
      row.size, row.seed, row.target = tr.size, tr.seed, tr.schedule
      rows.cross[#rows.cross + 1] = row
    end
  end
end

local rows = { quality = {}, predictions = {}, cross = {} }
for _, r in ipairs(cosine_runs) do analyse(r, rows) end
analyse_cross(rows)

-- Report --------------------------------------------------------------------------------------
local ctx = { cfg = cfg, V = V, at = at, sizes = sizes, set_names = set_names, runs = runs, rows = rows,
              cross = cross, data = data, unit = setup.loss_unit(cfg.tokenizer) }
local text = report.markdown(ctx)
util.write_atomic(cfg.out .. "/results.md", text)
util.write_atomic(cfg.out .. "/results.csv", report.csv(ctx))
print(text)
print("wrote " .. cfg.out .. "/results.md, " .. cfg.out .. "/results.csv")
