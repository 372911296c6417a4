-- kiln.suite — run variants × seeds as separate runs under one directory, then aggregate.
--
--   local results = kiln.suite {
--     dir = "runs/reweighting",
--     variants = { { name = "uniform", ... }, { name = "head", ... } },   -- any fields you like
--     seeds = { 1, 2, 3 },
--     run = function(variant, seed, run_dir) return kiln.train { ..., run_dir = run_dir } end,
--     report = function(summary, variant, seed, run_dir) return { val_loss = ..., ... } end,
--     columns = { "val_loss", ... },          -- order of the metrics in the tables (optional)
--     title = "Re-weighting ablation",        -- heading of results.md (optional)
--     parallel = "data" or "runs",            -- under mpirun (optional, default "data")
--     baseline = "uniform",                   -- compare every variant with this one (optional)
--     windows = function(summary, variant, seed, run_dir) return { val = {...} } end,  -- optional
--     timing = { "tokens_per_s", "wall_seconds" },  -- metrics kept out of the quality table
--   }
--
-- Under mpirun with N processes: parallel = "data" (the default) trains every run in turn
-- over all N processes (kiln.train is data parallel); parallel = "runs" deals the runs out
-- round-robin (run k on rank (k-1) % N), each trained by one process on its own, and
-- gathers their reports. Either way every rank returns the same tables and rank 0 alone
-- writes the suite's files, which are those a single process writes (with "runs", the same
-- bytes: each run is the single-process run).
--
-- Each run lives in dir/<variant>/seed<seed>/. A run whose summary.yaml exists is not
-- trained again (kiln.train returns its summary at once); one that stopped part way resumes
-- from its newest checkpoint. At the end the suite writes
--   dir/runs.csv       one row per run: variant, seed, then every metric
--   dir/results.csv    one row per variant: n, then <metric>_mean and <metric>_std
--   dir/results.md     the same as a Markdown table, mean ± std over seeds
--   dir/timing.csv     the `timing` metrics (speed, not quality): variant, n, mean, std
--   dir/comparison.csv with a baseline: per variant and evaluation set, the paired
--                      difference to the baseline with its 95% interval and a verdict
-- and returns { runs = {...}, variants = {...}, table = <markdown text>, status, failed,
-- comparisons = {...} }.
--
-- Comparison with a baseline: for each evaluation set, a run's per-window losses (from
-- `windows`, by default the final evaluation's, which kiln.train keeps in the summary and in
-- run_dir/windows/) are paired with the baseline run of the same seed, window by window, and
-- kiln.stats.paired gives the mean difference and its 95% confidence interval over seeds
-- (Student t on the per-seed mean differences; with one seed, over windows). Seeds where
-- either run failed are left out of the pair. The verdict is "no detectable difference" when
-- the interval contains 0, else "better/worse by X ± Y" (lower loss is better).
-- A run that diverges (kiln.train stops on a non-finite training or evaluation loss) or whose
-- report holds a non-finite number is recorded as failed: its row in runs.csv has status
-- "failed" and no metrics, it is left out of results.csv / results.md (n counts complete
-- runs), results.md lists it with the message, and the returned status is "failed". Any
-- other error from `run` or `report` stops the suite.
local kiln = require "kiln"
local util = require "kiln.util"
local check = require "kiln.check"
local train_mod = require "kiln.train"
local stats = require "kiln.stats"
local evaluate_mod = require "kiln.evaluate"

local M = {}

local function fail(fmt, ...) error("kiln.suite: " .. fmt:format(...), 0) end

local KNOWN = { dir = true, variants = true, seeds = true, run = true, report = true,
                columns = true, title = true, quiet = true, digits = true, parallel = true,
                baseline = true, windows = true, timing = true }
local DEFAULT_TIMING = { "tokens_per_s", "wall_seconds" }

-- The default report: final training loss, each evaluation set's final loss, tokens/s.
local function default_report(summary)
  local row = { final_loss = summary.final_loss, tokens_per_s = summary.tokens_per_s }
  for name, loss in pairs(summary.eval or {}) do row[name .. "_loss"] = loss end
  return row
end

local function fmt_num(x, digits)
  if x == nil then return "" end
  if x ~= x then return "nan" end
  local a = math.abs(x)
  if a >= 1000 then return ("%.0f"):format(x) end
  return ("%." .. digits .. "f"):format(x)
end

-- The first metric of a report that is a number but not finite, as name, value.
local function nonfinite_metric(metrics)
  for _, name in ipairs(util.sorted_keys(metrics)) do
    local x = metrics[name]
    if type(x) == "number" and (x ~= x or x == math.huge or x == -math.huge) then return name, x end
  end
end

-- The default `windows`: the final evaluation's per-window losses of each set, from the
-- summary kiln.train returned, or from the files its summary names (a run completed earlier).
local function default_windows(summary, _, _, run_dir)
  if type(summary.window_losses) == "table" and next(summary.window_losses) then return summary.window_losses end
  local out = {}
  for name, file in pairs(summary.windows_file or {}) do
    out[name] = evaluate_mod.read_windows(run_dir .. "/" .. file)
  end
  return out
end

-- {set = {loss per window}} of one run, checked, or an error naming the run.
local function run_windows(o, summary, v, seed, run_dir)
  local what = ("kiln.suite: windows(%s, %d)"):format(v.name, seed)
  local w = check.call(what, o.windows or default_windows, summary, v, seed, run_dir)
  if type(w) ~= "table" then fail("windows(%s, %d) returned %s, expected {set = {loss, ...}}", v.name, seed, type(w)) end
  for name, losses in pairs(w) do
    if type(name) ~= "string" then fail("windows(%s, %d): keys must be evaluation set names", v.name, seed) end
    check.numbers(what, name, losses)
  end
  return w
end

-- One run: {variant, seed, run_dir, status, metrics, message}. A run that diverges (kiln.train
-- stops on a non-finite loss or evaluation) or whose report has a non-finite number is
-- "failed" with no metrics; any other error is the suite's error.
local function run_one(o, report, v, seed, run_dir, by_runs)
  local mpi = kiln.mpi
  local ok, summary
  if by_runs then ok, summary = pcall(mpi.solo, o.run, v, seed, run_dir)
  else ok, summary = pcall(o.run, v, seed, run_dir) end
  local r = { variant = v.name, seed = seed, run_dir = run_dir, status = "complete", metrics = {} }
  if not ok then
    if not train_mod.is_divergence(summary) then
      error(("kiln.suite: run(%s, %d): %s"):format(v.name, seed, tostring(summary)), 0)
    end
    r.status, r.message = "failed", tostring(summary)
  elseif type(summary) ~= "table" then
    fail("run(%s, %d) returned %s, expected a summary table", v.name, seed, type(summary))
  elseif summary.status == "failed" then
    r.status, r.message = "failed", tostring(summary.message or "the run reports status failed")
  else
    local metrics = check.call(("kiln.suite: report(%s, %d)"):format(v.name, seed), report, summary, v, seed, run_dir)
    if type(metrics) ~= "table" then
      fail("report(%s, %d) returned %s, expected a table of metrics", v.name, seed, type(metrics))
    end
    local name, x = nonfinite_metric(metrics)
    if name then
      r.status, r.message = "failed", ("metric '%s' is %s"):format(tostring(name), tostring(x))
    else
      r.metrics = metrics
      if o.baseline then r.windows = run_windows(o, summary, v, seed, run_dir) end
    end
  end
  if r.status == "failed" and not o.quiet then
    io.stderr:write(("kiln.suite: %s seed %d FAILED: %s\n"):format(v.name, seed, r.message))
  end
  return r
end

-- Per variant over its complete runs: n, and mean and std of each column; as CSV text,
-- Markdown table text and a list of {name, n, [column] = {mean, std}}.
local function aggregate(variants, runs, columns, digits)
  local header = { "variant", "n" }
  for _, c in ipairs(columns) do header[#header + 1] = c .. "_mean"; header[#header + 1] = c .. "_std" end
  local csv = { util.csv_line(header) }
  local md = { "| variant | " .. table.concat(columns, " | ") .. " |\n", "|---|" .. string.rep("---|", #columns) .. "\n" }
  local out = {}
  for _, v in ipairs(variants) do
    local per, n = {}, 0
    for _, c in ipairs(columns) do per[c] = {} end
    for _, r in ipairs(runs) do
      if r.variant == v.name and r.status == "complete" then
        n = n + 1
        for _, c in ipairs(columns) do
          if type(r.metrics[c]) == "number" then per[c][#per[c] + 1] = r.metrics[c] end
        end
      end
    end
    local fields, cells, agg = { v.name, n }, {}, { name = v.name, n = n }
    for _, c in ipairs(columns) do
      local mean, std = util.mean_std(per[c])
      fields[#fields + 1], fields[#fields + 2] = mean, std
      agg[c] = { mean = mean, std = std }
      local std_text = std and (math.abs(mean) >= 1000 and ("%.0f"):format(std) or fmt_num(std, digits))
      cells[#cells + 1] = mean and (#per[c] > 1 and (fmt_num(mean, digits) .. " ± " .. std_text) or fmt_num(mean, digits)) or ""
    end
    csv[#csv + 1] = util.csv_line(fields, 2 + 2 * #columns)
    md[#md + 1] = "| " .. v.name .. " | " .. table.concat(cells, " | ") .. " |\n"
    out[#out + 1] = agg
  end
  return { csv = table.concat(csv), md = table.concat(md), variants = out }
end

-- Every variant against the baseline, set by set: the seeds where both runs completed and
-- have the set's windows, paired window by window (kiln.stats.paired).
local function compare_all(variants, runs, baseline)
  local by = {}
  for _, r in ipairs(runs) do
    if r.status == "complete" and r.windows then by[r.variant .. "\0" .. r.seed] = r end
  end
  local out = {}
  for _, v in ipairs(variants) do
    if v.name ~= baseline then
      local sets = {}
      for _, r in ipairs(runs) do
        if r.variant == v.name and r.windows then for name in pairs(r.windows) do sets[name] = true end end
      end
      for _, set in ipairs(util.sorted_keys(sets)) do
        local vs, bs, seeds = {}, {}, {}
        for _, r in ipairs(runs) do
          local b = by[baseline .. "\0" .. r.seed]
          if r.variant == v.name and by[v.name .. "\0" .. r.seed] and b and b.windows[set] and r.windows[set] then
            vs[#vs + 1], bs[#bs + 1], seeds[#seeds + 1] = r.windows[set], b.windows[set], r.seed
          end
        end
        local c = { variant = v.name, set = set, n_seeds = #vs, seeds = seeds }
        if #vs > 0 then
          local ok, d = pcall(stats.paired, vs, bs)
          if not ok then fail("comparing %s with %s on '%s': %s", v.name, baseline, set, tostring(d)) end
          c.d, c.verdict = d, stats.verdict(d)
        else
          c.verdict = "no complete pair of runs"
        end
        out[#out + 1] = c
      end
    end
  end
  return out
end

local function comparison_csv(comparisons)
  local lines = { util.csv_line { "variant", "set", "n_seeds", "n_windows", "diff", "ci_lo", "ci_hi", "half_width", "method", "verdict" } }
  for _, c in ipairs(comparisons) do
    local d = c.d or {}
    lines[#lines + 1] = util.csv_line({ c.variant, c.set, c.n_seeds, d.n_windows, d.diff, d.lo, d.hi, d.half, d.method, c.verdict }, 10)
  end
  return table.concat(lines)
end

local function comparison_md(comparisons, baseline, digits)
  local md = { ("\n## Difference to %s (paired by seed and evaluation window)\n\n"):format(baseline),
               "Variant minus baseline loss, mean over seeds; 95% confidence interval over seeds (Student t on the\n",
               "per-seed mean differences; with one seed, a normal interval over windows). Negative is better.\n\n",
               "| variant | set | seeds | windows/seed | difference | 95% CI | verdict |\n|---|---|---|---|---|---|---|\n" }
  for _, c in ipairs(comparisons) do
    local d = c.d
    if d then
      md[#md + 1] = ("| %s | %s | %d | %d | %s | [%s, %s] | %s |\n"):format(c.variant, c.set, c.n_seeds,
        d.n_windows // d.n_seeds, fmt_num(d.diff, digits), fmt_num(d.lo, digits), fmt_num(d.hi, digits), c.verdict)
    else
      md[#md + 1] = ("| %s | %s | 0 | | | | %s |\n"):format(c.variant, c.set, c.verdict)
    end
  end
  return table.concat(md)
end

function M.run(o)
  if type(o) ~= "table" then error("kiln.suite: expected a table of options", 2) end
  for k in pairs(o) do
    if not KNOWN[k] then fail("unknown option '%s' (known: %s)", tostring(k), table.concat(util.sorted_keys(KNOWN), ", ")) end
  end
  if type(o.dir) ~= "string" or o.dir == "" then fail("'dir' (the suite's directory) is required") end
  if type(o.variants) ~= "table" or #o.variants == 0 then fail("'variants' must be a non-empty list") end
  if type(o.run) ~= "function" then fail("'run' must be a function(variant, seed, run_dir)") end
  local seeds = check.arg("kiln.suite", "seeds", o.seeds, "?table") or { 1 }
  local seen = {}
  for i, v in ipairs(o.variants) do
    if type(v) ~= "table" or type(v.name) ~= "string" or not v.name:match("^[%w_%-%.]+$") then
      fail("variants[%d] needs a 'name' made of letters, digits, '_', '-' or '.'", i)
    end
    if seen[v.name] then fail("two variants are named '%s'", v.name) end
    seen[v.name] = true
  end
  for i, s in ipairs(seeds) do
    if math.type(s) ~= "integer" then fail("seeds[%d] must be an integer", i) end
  end
  local who = "kiln.suite"
  check.arg(who, "report", o.report, "?callable")
  if o.columns ~= nil then check.list(who, "columns", o.columns, "string") end
  check.arg(who, "title", o.title, "?string")
  check.arg(who, "quiet", o.quiet, "?boolean")
  if o.digits ~= nil then check.integer(who, "digits", o.digits, 0, 17) end
  check.arg(who, "windows", o.windows, "?callable")
  if o.timing ~= nil then check.list(who, "timing", o.timing, "string") end
  if o.baseline ~= nil then
    check.string(who, "baseline", o.baseline)
    if not seen[o.baseline] then fail("baseline '%s' is not one of the variants", o.baseline) end
  end
  local report = o.report or default_report
  local digits = o.digits or 4
  local parallel = o.parallel or "data"
  if parallel ~= "data" and parallel ~= "runs" then fail("'parallel' must be \"data\" or \"runs\" (got %s)", tostring(parallel)) end
  local mpi = kiln.mpi
  local rank, size = mpi.rank(), mpi.size()
  local by_runs = parallel == "runs" and size > 1
  if rank == 0 or by_runs then check.call("kiln.suite", util.mkdir, o.dir) end

  -- Runs, in a fixed order: variant by variant, seed by seed.
  local runs = {}
  local k = 0
  for _, v in ipairs(o.variants) do
    for _, seed in ipairs(seeds) do
      k = k + 1
      local run_dir = ("%s/%s/seed%d"):format(o.dir, v.name, seed)
      if not by_runs or (k - 1) % size == rank then
        if not o.quiet and (rank == 0 or by_runs) then print(("== %s seed %d -> %s"):format(v.name, seed, run_dir)) end
        runs[#runs + 1] = run_one(o, report, v, seed, run_dir, by_runs)
        runs[#runs].k = k
      end
    end
  end
  if by_runs then
    -- Every rank's reports to every rank, exactly (%q writes floats in hexadecimal).
    local lines = {}
    for _, r in ipairs(runs) do
      local fields = {}
      for _, name in ipairs(util.sorted_keys(r.metrics)) do
        local x = r.metrics[name]
        if type(x) ~= "number" and type(x) ~= "string" and type(x) ~= "boolean" then
          fail("report for %s seed %d: metric '%s' is a %s; with parallel = \"runs\" metrics must be numbers, strings or booleans",
            r.variant, r.seed, tostring(name), type(x))
        end
        fields[#fields + 1] = ("[%q] = %q"):format(name, x)
      end
      local wins = {}
      for _, name in ipairs(util.sorted_keys(r.windows or {})) do
        local xs = {}
        for i, x in ipairs(r.windows[name]) do xs[i] = ("%q"):format(x) end
        wins[#wins + 1] = ("[%q] = { %s }"):format(name, table.concat(xs, ", "))
      end
      lines[#lines + 1] = ("{ k = %d, status = %q, message = %q, metrics = { %s }, windows = %s },"):format(
        r.k, r.status, r.message or "", table.concat(fields, ", "),
        r.windows and ("{ " .. table.concat(wins, ", ") .. " }") or "nil")
    end
    local all = {}
    for _, text in ipairs(mpi.allgather(table.concat(lines, "\n"))) do
      for _, r in ipairs(assert(load("return {" .. text .. "}", "=suite reports", "t", {}))()) do all[r.k] = r end
    end
    runs, k = {}, 0
    for _, v in ipairs(o.variants) do
      for _, seed in ipairs(seeds) do
        k = k + 1
        runs[k] = { variant = v.name, seed = seed, run_dir = ("%s/%s/seed%d"):format(o.dir, v.name, seed),
                    metrics = all[k].metrics, status = all[k].status, windows = all[k].windows,
                    message = all[k].message ~= "" and all[k].message or nil }
      end
    end
  end
  for _, r in ipairs(runs) do r.k = nil end
  -- Only rank 0 writes; every rank builds the same tables.
  local write_atomic = rank == 0 and util.write_atomic or function() end

  -- Columns: as given, else every metric name in first-seen order (sorted per run). The
  -- timing metrics go to their own table: speed says nothing of quality.
  local all_columns = o.columns
  if not all_columns then
    all_columns, seen = {}, {}
    for _, r in ipairs(runs) do
      for _, name in ipairs(util.sorted_keys(r.metrics)) do
        if not seen[name] then seen[name] = true; all_columns[#all_columns + 1] = name end
      end
    end
  end
  local is_timing = {}
  for _, c in ipairs(o.timing or DEFAULT_TIMING) do is_timing[c] = true end
  local columns, timing_columns = {}, {}
  for _, c in ipairs(all_columns) do
    local list = is_timing[c] and timing_columns or columns
    list[#list + 1] = c
  end

  -- runs.csv
  local lines = { util.csv_line({ "variant", "seed", table.unpack(all_columns) }) }
  local failed = {}
  for _, r in ipairs(runs) do
    local fields = { r.variant, r.seed }
    for _, c in ipairs(all_columns) do fields[#fields + 1] = r.metrics[c] end
    lines[#lines + 1] = util.csv_line(fields, 2 + #all_columns)
    if r.status == "failed" then failed[#failed + 1] = r end
  end
  if #failed > 0 then   -- a status column only when a run failed (complete suites keep their format)
    lines[1] = util.csv_line({ "variant", "seed", "status", table.unpack(all_columns) })
    for i, r in ipairs(runs) do
      local fields = { r.variant, r.seed, r.status }
      for _, c in ipairs(all_columns) do fields[#fields + 1] = r.metrics[c] end
      lines[i + 1] = util.csv_line(fields, 3 + #all_columns)
    end
  end
  write_atomic(o.dir .. "/runs.csv", table.concat(lines))

  -- results.csv / results.md: quality, mean ± std over seeds; timing.csv: speed.
  local q = aggregate(o.variants, runs, columns, digits)
  local tm = aggregate(o.variants, runs, timing_columns, digits)
  write_atomic(o.dir .. "/results.csv", q.csv)
  if #timing_columns > 0 then write_atomic(o.dir .. "/timing.csv", tm.csv) end
  local md = { ("# %s\n\n"):format(o.title or "Results"),
               ("%d seed%s per variant (%s); mean ± standard deviation over seeds.\n\n"):format(
                 #seeds, #seeds == 1 and "" or "s", table.concat(seeds, ", ")),
               q.md }
  local comparisons
  if o.baseline then
    comparisons = compare_all(o.variants, runs, o.baseline)
    write_atomic(o.dir .. "/comparison.csv", comparison_csv(comparisons))
    md[#md + 1] = comparison_md(comparisons, o.baseline, digits)
  end
  if #failed > 0 then
    md[#md + 1] = ("\n**%d run%s failed** (left out of the tables; n counts the complete runs):\n\n"):format(
      #failed, #failed == 1 and "" or "s")
    for _, r in ipairs(failed) do
      md[#md + 1] = ("- %s seed %d: %s\n"):format(r.variant, r.seed, (r.message:gsub("\n", " ")))
    end
  end
  if #timing_columns > 0 then
    md[#md + 1] = "\n## Timing (not a quality measure: depends on the machine's load)\n\n" .. tm.md
  end
  local text = table.concat(md)
  write_atomic(o.dir .. "/results.md", text)
  if size > 1 then mpi.barrier() end   -- the files exist when any rank returns
  for _, r in ipairs(runs) do r.windows = nil end   -- large; the files keep them
  return { runs = runs, variants = q.variants, timing = tm.variants, table = text, columns = columns,
           timing_columns = timing_columns, failed = failed, comparisons = comparisons,
           status = #failed > 0 and "failed" or "complete" }
end

-- Mean and 95% interval over a list of per-seed values (no interval from one value).
local function band(xs)
  if #xs == 0 then return nil end
  if #xs == 1 then return xs[1], nil, nil end
  local m, half = stats.ci_mean(xs)
  return m, m - half, m + half
end

-- The evaluated losses of one set in a run's metrics.csv, as {[step] = loss}.
local function eval_curve(run_dir, set)
  local csv = util.read_csv(run_dir .. "/metrics.csv")
  local out = {}
  if not csv then return out end
  local col
  for i, h in ipairs(csv.header) do if h == set .. "_loss" then col = i end end
  for _, row in ipairs(csv.rows) do
    if col and type(row[col]) == "number" then out[row[1]] = row[col] end
  end
  return out
end

-- The last evaluation's per-position losses of one set in a run's positions.csv.
local function last_positions(run_dir, set)
  local csv = util.read_csv(run_dir .. "/positions.csv")
  local last
  for _, row in ipairs(csv and csv.rows or {}) do
    if row[2] == set then last = row end
  end
  if not last then return nil end
  return table.move(last, 3, #last, 1, {})
end

-- Plots of a suite's result for one evaluation set, from its runs' files:
--   <path>_loss:      each variant's mean evaluation loss over seeds at each evaluated step,
--                     with its 95% interval over seeds as a band;
--   <path>_positions: each variant's final per-position loss minus the baseline's, paired
--                     by seed, mean and 95% band over seeds (needs opts.baseline).
-- opts = {set = "val", path = dir .. "/plot_val", baseline = "uniform"}. Returns the files.
function M.plot(result, opts)
  local who = "kiln.suite.plot"
  check.arg(who, "result", result, "table")
  check.arg(who, "opts", opts, "table")
  check.fields(who, "opts", opts, { "set", "path", "baseline", "xlabel", "ylabel" })
  check.string(who, "opts.set", opts.set)
  check.string(who, "opts.path", opts.path)
  check.arg(who, "result.runs", result.runs, "table")
  local plot = require "kiln.plot"
  local order, by_variant = {}, {}
  for _, r in ipairs(result.runs) do
    if not by_variant[r.variant] then by_variant[r.variant] = {}; order[#order + 1] = r.variant end
    if r.status == "complete" then table.insert(by_variant[r.variant], r) end
  end
  local series = {}
  for _, name in ipairs(order) do
    local curves, steps, seen = {}, {}, {}
    for _, r in ipairs(by_variant[name]) do
      local c = eval_curve(r.run_dir, opts.set)
      curves[#curves + 1] = c
      for step in pairs(c) do if not seen[step] then seen[step] = true; steps[#steps + 1] = step end end
    end
    table.sort(steps)
    local sr = { name = ("%s (%d seeds)"):format(name, #curves), x = {}, y = {}, lo = {}, hi = {} }
    for _, step in ipairs(steps) do
      local xs = {}
      for _, c in ipairs(curves) do if c[step] then xs[#xs + 1] = c[step] end end
      local k = #sr.x + 1
      sr.x[k] = step
      sr.y[k], sr.lo[k], sr.hi[k] = band(xs)
      sr.lo[k], sr.hi[k] = sr.lo[k] or 0 / 0, sr.hi[k] or 0 / 0
    end
    if #sr.x > 0 then series[#series + 1] = sr end
  end
  if #series == 0 then fail("plot: no run has evaluations of set '%s'", opts.set) end
  local out = { loss = plot.lines { path = opts.path .. "_loss", series = series, xlabel = "step",
    ylabel = opts.ylabel or (opts.set .. " loss"), title = opts.set .. " loss: mean over seeds, 95% band" } }
  if opts.baseline then
    check.string(who, "opts.baseline", opts.baseline)
    if not by_variant[opts.baseline] then fail("plot: baseline '%s' is not a variant of the result", opts.baseline) end
    local base = {}
    for _, r in ipairs(by_variant[opts.baseline]) do base[r.seed] = last_positions(r.run_dir, opts.set) end
    series = {}
    for _, name in ipairs(order) do
      if name ~= opts.baseline then
        local diffs = {}
        for _, r in ipairs(by_variant[name]) do
          local p, b = last_positions(r.run_dir, opts.set), base[r.seed]
          if p and b and #p == #b then
            local d = {}
            for i = 1, #p do d[i] = p[i] - b[i] end
            diffs[#diffs + 1] = d
          end
        end
        if #diffs > 0 then
          local sr = { name = ("%s - %s (%d seeds)"):format(name, opts.baseline, #diffs), x = {}, y = {}, lo = {}, hi = {} }
          for i = 1, #diffs[1] do
            local xs = {}
            for _, d in ipairs(diffs) do xs[#xs + 1] = d[i] end
            sr.x[i] = i
            sr.y[i], sr.lo[i], sr.hi[i] = band(xs)
            sr.lo[i], sr.hi[i] = sr.lo[i] or 0 / 0, sr.hi[i] or 0 / 0
          end
          series[#series + 1] = sr
        end
      end
    end
    if #series > 0 then
      out.positions = plot.lines { path = opts.path .. "_positions", series = series, xlabel = "position",
        ylabel = "loss difference", title = ("%s: per-position loss minus %s, mean over seeds, 95%% band"):format(opts.set, opts.baseline) }
    end
  end
  return out
end

return setmetatable(M, { __call = function(_, o) return M.run(o) end })
