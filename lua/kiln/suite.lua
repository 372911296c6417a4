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
-- and returns { runs = {...}, variants = {...}, table = <markdown text>, status, failed }.
-- A run that diverges (kiln.train stops on a non-finite training or evaluation loss) or whose
-- report holds a non-finite number is recorded as failed: its row in runs.csv has status
-- "failed" and no metrics, it is left out of results.csv / results.md (n counts complete
-- runs), results.md lists it with the message, and the returned status is "failed". Any
-- other error from `run` or `report` stops the suite.
local kiln = require "kiln"
local util = require "kiln.util"
local check = require "kiln.check"
local train_mod = require "kiln.train"

local M = {}

local function fail(fmt, ...) error("kiln.suite: " .. fmt:format(...), 0) end

local KNOWN = { dir = true, variants = true, seeds = true, run = true, report = true,
                columns = true, title = true, quiet = true, digits = true, parallel = true }

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
    end
  end
  if r.status == "failed" and not o.quiet then
    io.stderr:write(("kiln.suite: %s seed %d FAILED: %s\n"):format(v.name, seed, r.message))
  end
  return r
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
      lines[#lines + 1] = ("{ k = %d, status = %q, message = %q, metrics = { %s } },"):format(
        r.k, r.status, r.message or "", table.concat(fields, ", "))
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
                    metrics = all[k].metrics, status = all[k].status,
                    message = all[k].message ~= "" and all[k].message or nil }
      end
    end
  end
  for _, r in ipairs(runs) do r.k = nil end
  -- Only rank 0 writes; every rank builds the same tables.
  local write_atomic = rank == 0 and util.write_atomic or function() end

  -- Columns: as given, else every metric name in first-seen order (sorted per run).
  local columns = o.columns
  if not columns then
    columns, seen = {}, {}
    for _, r in ipairs(runs) do
      for _, name in ipairs(util.sorted_keys(r.metrics)) do
        if not seen[name] then seen[name] = true; columns[#columns + 1] = name end
      end
    end
  end

  -- runs.csv
  local lines = { util.csv_line({ "variant", "seed", table.unpack(columns) }) }
  local failed = {}
  for _, r in ipairs(runs) do
    local fields = { r.variant, r.seed }
    for _, c in ipairs(columns) do fields[#fields + 1] = r.metrics[c] end
    lines[#lines + 1] = util.csv_line(fields, 2 + #columns)
    if r.status == "failed" then failed[#failed + 1] = r end
  end
  if #failed > 0 then   -- a status column only when a run failed (complete suites keep their format)
    lines[1] = util.csv_line({ "variant", "seed", "status", table.unpack(columns) })
    for i, r in ipairs(runs) do
      local fields = { r.variant, r.seed, r.status }
      for _, c in ipairs(columns) do fields[#fields + 1] = r.metrics[c] end
      lines[i + 1] = util.csv_line(fields, 3 + #columns)
    end
  end
  write_atomic(o.dir .. "/runs.csv", table.concat(lines))

  -- results.csv and results.md: mean ± std over seeds per variant.
  local header = { "variant", "n" }
  for _, c in ipairs(columns) do header[#header + 1] = c .. "_mean"; header[#header + 1] = c .. "_std" end
  local csv = { util.csv_line(header) }
  local md = { ("# %s\n\n"):format(o.title or "Results"),
               ("%d seed%s per variant (%s); mean ± standard deviation over seeds.\n\n"):format(
                 #seeds, #seeds == 1 and "" or "s", table.concat(seeds, ", ")),
               "| variant | " .. table.concat(columns, " | ") .. " |\n",
               "|---|" .. string.rep("---|", #columns) .. "\n" }
  local variants = {}
  for _, v in ipairs(o.variants) do
    local per = {}
    for _, c in ipairs(columns) do per[c] = {} end
    local n = 0
    for _, r in ipairs(runs) do
      if r.variant == v.name and r.status == "complete" then
        n = n + 1
        for _, c in ipairs(columns) do
          local x = r.metrics[c]
          if type(x) == "number" then per[c][#per[c] + 1] = x end
        end
      end
    end
    local fields, cells, agg = { v.name, n }, {}, { name = v.name, n = n }
    for _, c in ipairs(columns) do
      local mean, std = util.mean_std(per[c])
      fields[#fields + 1] = mean
      fields[#fields + 1] = std
      agg[c] = { mean = mean, std = std }
      local std_text = std and (math.abs(mean) >= 1000 and ("%.0f"):format(std) or fmt_num(std, digits))
      cells[#cells + 1] = mean and (#per[c] > 1 and (fmt_num(mean, digits) .. " ± " .. std_text) or fmt_num(mean, digits)) or ""
    end
    csv[#csv + 1] = util.csv_line(fields, 2 + 2 * #columns)
    md[#md + 1] = "| " .. v.name .. " | " .. table.concat(cells, " | ") .. " |\n"
    variants[#variants + 1] = agg
  end
  write_atomic(o.dir .. "/results.csv", table.concat(csv))
  if #failed > 0 then
    md[#md + 1] = ("\n**%d run%s failed** (left out of the table; n counts the complete runs):\n\n"):format(
      #failed, #failed == 1 and "" or "s")
    for _, r in ipairs(failed) do
      md[#md + 1] = ("- %s seed %d: %s\n"):format(r.variant, r.seed, (r.message:gsub("\n", " ")))
    end
  end
  local text = table.concat(md)
  write_atomic(o.dir .. "/results.md", text)
  if size > 1 then mpi.barrier() end   -- the files exist when any rank returns
  return { runs = runs, variants = variants, table = text, columns = columns, failed = failed,
           status = #failed > 0 and "failed" or "complete" }
end

return setmetatable(M, { __call = function(_, o) return M.run(o) end })
