-- kiln.evaluate — a model's unweighted loss on a dataset's fixed evaluation windows, with
-- the standard errors that say how far the number can be trusted, and the per-window losses
-- that let a comparison be paired window by window.
--
--   local r = kiln.evaluate(model, dataset, T [, {windows = 64 | "all", batch = 16, split = false}])
--   r.loss          mean cross-entropy over every evaluated token
--   r.se            its standard error over windows: sd(window means) / sqrt(n)
--   r.n             how many windows were evaluated (r.total: how many the list holds)
--   r.positions     [T] mean loss at each position;  r.positions_se  [T] its standard error
--   r.windows       [n] each window's mean loss, in list order
--   r.indices       the evaluated windows' 1-based places in the dataset's list
--
--   kiln.evaluate.write_windows(path, r) / kiln.evaluate.read_windows(path) -> losses, indices
--
-- Windows: the dataset's fixed list of non-overlapping windows of T+1 tokens. windows = "all"
-- (the default) evaluates all of them; a number n smaller than the list takes n spread evenly
-- over it (1, 1+s, 1+2s, ...), so a validation file's later documents count too. Either way
-- every evaluation of every run sees the same windows, which is what lets two runs be
-- compared window by window.
--
-- Why windows are the unit of the standard error: the tokens of one window share a document
-- and a context, so they are not independent; whole windows (disjoint stretches of the
-- validation text) are much closer to independent samples.
--
-- With split = true (a collective: every rank must call it) each rank evaluates its share of
-- the windows and the sums are combined with kiln.mpi.allreduce.
--
-- Batches go through m:evaluate, the forward without gradient work or backward buffers.
local kiln = require "kiln"
local check = require "kiln.check"
local util = require "kiln.util"

local M = {}

-- The list of windows to evaluate: count n, stride s, first and last index of this rank.
local function window_plan(ds, T, windows, split)
  local total = ds:num_eval_windows(T)
  if total < 1 then error(("%s: no evaluation window of %d tokens fits"):format(ds:path(), T + 1), 0) end
  local n = (windows ~= "all" and windows < total) and windows or total
  local stride = total // n
  local plan = { total = total, n = n, stride = stride, lo = 1, hi = n }   -- lo..hi: places 1..n
  local nranks = split and kiln.mpi.size() or 1
  if nranks > 1 then
    local r = kiln.mpi.rank()
    plan.lo, plan.hi = n * r // nranks + 1, n * (r + 1) // nranks
  end
  return plan
end

local function check_args(model, ds, T, o)
  local who = "kiln.evaluate"
  check.arg(who, "model", model, "kiln.Model")
  check.arg(who, "dataset", ds, "kiln.Dataset")
  T = check.integer(who, "T", T, 1, check.MAX_POSITIONS)
  o = check.arg(who, "options", o, "?table") or {}
  check.fields(who, "options", o, { "windows", "batch", "split" })
  local windows = o.windows or "all"
  if windows ~= "all" then windows = check.integer(who, "windows", windows, 1) end
  local B = o.batch ~= nil and check.integer(who, "batch", o.batch, 1, check.MAX_BATCH) or 16
  check.arg(who, "split", o.split, "?boolean")
  return T, windows, B, o.split and true or false
end

-- Mean and standard error from a sum, a sum of squares and a count (se = nil below 2).
local function mean_se(sum, sumsq, n)
  local mean = sum / n
  if n < 2 then return mean, nil end
  local var = math.max(0, (sumsq - n * mean * mean) / (n - 1))
  return mean, math.sqrt(var / n)
end

function M.run(model, ds, T, o)
  local windows, B, split
  T, windows, B, split = check_args(model, ds, T, o)
  local plan = window_plan(ds, T, windows, split)
  local batch = kiln.batch(math.min(B, plan.n), T)
  -- Per-batch sums come back in float32 and are added up here in double precision: the
  -- per-position variance is a difference of two large sums, which float32 totals over
  -- thousands of windows would blur.
  local sum, sumsq, means = kiln.tensor(T), kiln.tensor(T), kiln.tensor(plan.n)
  local sums, sqs = {}, {}
  for t = 1, T do sums[t], sqs[t] = 0, 0 end
  local place = plan.lo
  while place <= plan.hi do
    local first = 1 + (place - 1) * plan.stride
    local last = 1 + (plan.hi - 1) * plan.stride
    local got = ds:eval_batch(batch, first, last, plan.stride)
    model:evaluate(batch)
    sum:fill(0); sumsq:fill(0)
    model:add_loss_stats(sum, sumsq, means, place)
    local bs, bq = sum:totable(), sumsq:totable()
    for t = 1, T do sums[t], sqs[t] = sums[t] + bs[t], sqs[t] + bq[t] end
    place = place + got
  end
  if split and kiln.mpi.size() > 1 then
    local ts, tq = kiln.tensor_from(sums), kiln.tensor_from(sqs)
    for _, x in ipairs { ts, tq, means } do kiln.mpi.allreduce(x, "sum", "evaluation") end
    sums, sqs = ts:totable(), tq:totable()
  end
  local r = { n = plan.n, total = plan.total, windows = means:totable(), indices = {}, positions = {}, positions_se = {} }
  local s, ss = 0, 0
  for i, x in ipairs(r.windows) do
    s, ss = s + x, ss + x * x
    r.indices[i] = 1 + (i - 1) * plan.stride
  end
  r.loss, r.se = mean_se(s, ss, plan.n)
  for t = 1, T do r.positions[t], r.positions_se[t] = mean_se(sums[t], sqs[t], plan.n) end
  return r
end

-- A CSV of one evaluation's windows: "window,loss" (the window's 1-based place in the
-- dataset's list, its mean loss), written atomically.
function M.write_windows(path, r)
  check.string("kiln.evaluate.write_windows", "path", path)
  check.arg("kiln.evaluate.write_windows", "result", r, "table")
  check.arg("kiln.evaluate.write_windows", "result.windows", r.windows, "table")
  check.arg("kiln.evaluate.write_windows", "result.indices", r.indices, "table")
  local lines = { "window,loss\n" }
  for i, x in ipairs(r.windows) do lines[i + 1] = util.csv_line { r.indices[i], x } end
  util.write_atomic(path, table.concat(lines))
end

-- The losses and window places of a file written by write_windows, or an error naming it.
function M.read_windows(path)
  check.string("kiln.evaluate.read_windows", "path", path)
  local csv, err = util.read_csv(path)
  if not csv then error(("kiln.evaluate.read_windows: %s"):format(tostring(err)), 0) end
  if csv.header[1] ~= "window" or csv.header[2] ~= "loss" then
    error(("kiln.evaluate.read_windows: %s: expected the header 'window,loss'"):format(path), 0)
  end
  local losses, indices = {}, {}
  for i, row in ipairs(csv.rows) do
    if math.type(row[1]) ~= "integer" or not check.isfinite(row[2]) then
      error(("kiln.evaluate.read_windows: %s: line %d: expected a window number and a finite loss"):format(path, i + 1), 0)
    end
    indices[i], losses[i] = row[1], row[2]
  end
  return losses, indices
end

return setmetatable(M, { __call = function(_, ...) return M.run(...) end })
