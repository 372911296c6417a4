-- kiln.ladder — the analysis behind the scaling-ladder and LR-transfer experiments
-- (experiments/mup_ladder.lua, experiments/lr_transfer.lua; docs/experiments.md): a loss
-- law in model size L(N) = a·N^b + c, a size-and-data law L(N, D) = E + A/N^α + B/D^β fitted
-- on intermediate checkpoints, their prediction error, and the best learning rate of a grid.
--
--   local law = kiln.ladder.fit_size(ns, losses)        -- N in millions of parameters
--   print(law.a, law.b, law.c, law.predict(10))
--   local err = kiln.ladder.are(true_losses, predicted)  -- mean |(y - ŷ)/y|
--   local best = kiln.ladder.lr_optimum(lrs, losses)     -- best.lr, best.log2_lr, best.refined
--
-- Pure Lua over kiln.fit: nothing here trains a model.
local kiln = require "kiln"
local check = require "kiln.check"
local util = require "kiln.util"

local M = {}

local function fail(fmt, ...) error("kiln.ladder: " .. fmt:format(...), 0) end

local function check_points(who, xs, ys, min_n)
  if type(xs) ~= "table" or type(ys) ~= "table" then fail("%s: expected two lists of numbers", who) end
  if #xs ~= #ys then fail("%s: %d x values but %d losses", who, #xs, #ys) end
  if #xs < min_n then fail("%s: needs at least %d points (got %d)", who, min_n, #xs) end
  for k = 1, #xs do
    if type(xs[k]) ~= "number" or type(ys[k]) ~= "number" or xs[k] ~= xs[k] or ys[k] ~= ys[k] then
      fail("%s: point %d is not a pair of finite numbers", who, k)
    end
  end
end

-- The parameter count N of a model or a kiln.model config: "non_embedding" (default) leaves
-- out the token and position embeddings (at byte level the 256-row embedding is a large,
-- width-proportional share of a small model that does not scale like the rest), "total"
-- counts everything.
function M.params(model, which)
  check.arg("kiln.ladder.params", "model", model, "kiln.Model|table")
  which = which or "non_embedding"
  if which ~= "non_embedding" and which ~= "total" then
    fail("params: which must be \"non_embedding\" or \"total\" (got %s)", tostring(which))
  end
  if type(model) == "table" then model = check.call("kiln.ladder.params", kiln.model, model) end
  local n = 0
  for _, p in ipairs(model:params()) do
    local embedding = p.name:find("wte", 1, true) or p.name:find("wpe", 1, true)
    if which == "total" or not embedding then
      local k = 1
      for _, s in ipairs(p.shape) do k = k * s end
      n = n + k
    end
  end
  return n
end

-- L(N) = a·N^b + c fitted by least squares (kiln.fit's `power` law alpha + beta·N^-gamma,
-- so a = beta, b = -gamma <= 0, c = alpha). By default a >= 0 and c >= 0: the loss falls with
-- N towards a non-negative floor. Without these bounds a ladder whose losses do not fall
-- fits a degenerate law (b -> 0 with a and c of opposite sign and huge, i.e. a logarithm).
-- opts: kiln.fit.curve's (lower/upper keyed alpha, beta, gamma replace the defaults).
-- Returns {a, b, c, r2, mse, n, predict(N)}.
function M.fit_size(ns, ys, opts)
  check_points("fit_size", ns, ys, 4)
  for k, n in ipairs(ns) do if n <= 0 then fail("fit_size: N[%d] = %s must be > 0", k, util.num(n)) end end
  local o = { lower = { alpha = 0, beta = 0, gamma = 0 } }
  for k, v in pairs(opts or {}) do o[k] = v end
  local r = kiln.fit.curve("power", ns, ys, nil, o)
  local a, b, c = r.named.beta, -r.named.gamma, r.named.alpha
  return { a = a, b = b, c = c, r2 = r.r2, mse = r.mse, n = #ns,
           predict = function(n) return a * n ^ b + c end }
end

-- L(N, D) = E + A/N^alpha + B/D^beta fitted to points {n =, d =, loss =} (N and D in any
-- fixed unit, e.g. millions). The starting point puts E just below the smallest loss and
-- splits the rest between the two terms; exponents are kept in [0, 3].
-- Returns {E, A, alpha, B, beta, r2, mse, n, predict(N, D)}.
function M.fit_size_data(points, opts)
  if type(points) ~= "table" then fail("fit_size_data: expected a list of {n =, d =, loss =}") end
  local xs, ys = {}, {}
  for k, p in ipairs(points) do
    if type(p) ~= "table" or type(p.n) ~= "number" or type(p.d) ~= "number" or p.n <= 0 or p.d <= 0 then
      fail("fit_size_data: point %d needs n > 0 and d > 0", k)
    end
    xs[k], ys[k] = k, p.loss
  end
  check_points("fit_size_data", xs, ys, 6)
  local lo = math.huge
  for _, y in ipairs(ys) do lo = math.min(lo, y) end
  -- x is the point's index: kiln.fit.curve passes one number, the law needs two
  local function f(x, p)
    local q = points[x]
    return p[1] + p[2] / q.n ^ p[3] + p[4] / q.d ^ p[5]
  end
  local o = { lower = { 0, 0, 0, 0, 0 }, upper = { nil, nil, 3, nil, 3 }, starts = 16, seed = 1,
              names = { "E", "A", "alpha", "B", "beta" } }
  for k, v in pairs(opts or {}) do o[k] = v end
  local r = kiln.fit.curve(f, xs, ys, { 0.8 * lo, 0.1 * lo, 0.3, 0.1 * lo, 0.3 }, o)
  local p = r.p
  return { E = p[1], A = p[2], alpha = p[3], B = p[4], beta = p[5], r2 = r.r2, mse = r.mse, n = #points,
           predict = function(n, d) return p[1] + p[2] / n ^ p[3] + p[4] / d ^ p[5] end }
end

-- Absolute relative error mean |(y - ŷ)/y| over the pairs (the "ARE" of scaling-law
-- estimation studies), and the largest one.
function M.are(ys, yhat)
  check_points("are", ys, yhat, 1)
  local sum, worst = 0, 0
  for k = 1, #ys do
    local e = math.abs((ys[k] - yhat[k]) / ys[k])
    sum, worst = sum + e, math.max(worst, e)
  end
  return sum / #ys, worst
end

-- The best learning rate of a grid: the grid minimum (NaN losses, e.g. diverged runs, are
-- skipped), refined by the vertex of a parabola in log2(lr) fitted by least squares to the
-- minimum and `opts.neighbours` (default 1) grid points on each side. The refinement is used
-- only when the minimum is inside the grid, the parabola opens upwards and its vertex lies
-- within the points used; otherwise the grid value stands (refined = false, and edge = true
-- when the minimum is the first or last finite point).
-- Returns {index, grid_lr, lr, log2_lr, loss, refined, edge} or nil when no loss is finite.
function M.lr_optimum(lrs, losses, opts)
  opts = opts or {}
  if type(lrs) ~= "table" or type(losses) ~= "table" or #lrs ~= #losses or #lrs == 0 then
    fail("lr_optimum: expected two lists of the same non-zero length")
  end
  local xs, ys, idx = {}, {}, {}
  for k = 1, #lrs do
    if type(lrs[k]) ~= "number" or not (lrs[k] > 0) then fail("lr_optimum: lr[%d] must be > 0", k) end
    if k > 1 and lrs[k] <= lrs[k - 1] then fail("lr_optimum: the lrs must increase (lr[%d] <= lr[%d])", k, k - 1) end
    local y = losses[k]
    if type(y) == "number" and y == y and y ~= math.huge then
      xs[#xs + 1], ys[#ys + 1], idx[#idx + 1] = math.log(lrs[k], 2), y, k
    end
  end
  if #xs == 0 then return nil end
  local bi = 1
  for i = 2, #ys do if ys[i] < ys[bi] then bi = i end end
  local out = { index = idx[bi], grid_lr = lrs[idx[bi]], lr = lrs[idx[bi]], log2_lr = xs[bi], loss = ys[bi],
                refined = false, edge = bi == 1 or bi == #xs }
  local k = opts.neighbours or 1
  if out.edge then return out end
  local from, to = math.max(1, bi - k), math.min(#xs, bi + k)
  local v = M.parabola_vertex({ table.unpack(xs, from, to) }, { table.unpack(ys, from, to) })
  if v and v >= xs[from] and v <= xs[to] then
    out.log2_lr, out.lr, out.refined = v, 2 ^ v, true
  end
  return out
end

-- The x of the minimum of the least-squares parabola y = p·x² + q·x + r through the points,
-- or nil when it does not open upwards (or the points are fewer than 3).
function M.parabola_vertex(xs, ys)
  check.numbers("kiln.ladder.parabola_vertex", "xs", xs)
  check.numbers("kiln.ladder.parabola_vertex", "ys", ys)
  if #ys ~= #xs then fail("parabola_vertex: xs has %d values and ys %d", #xs, #ys) end
  if #xs < 3 then return nil end
  local x0 = 0
  for _, x in ipairs(xs) do x0 = x0 + x / #xs end     -- centre x for a better-conditioned system
  local s = { 0, 0, 0, 0, 0 }
  local t = { 0, 0, 0 }
  for i = 1, #xs do
    local x, y = xs[i] - x0, ys[i]
    for j = 0, 4 do s[j + 1] = s[j + 1] + x ^ j end
    for j = 0, 2 do t[j + 1] = t[j + 1] + y * x ^ j end
  end
  -- normal equations for (r, q, p): [s0 s1 s2; s1 s2 s3; s2 s3 s4] · (r, q, p) = t
  local m = { { s[1], s[2], s[3], t[1] }, { s[2], s[3], s[4], t[2] }, { s[3], s[4], s[5], t[3] } }
  for c = 1, 3 do
    local piv = c
    for rr = c + 1, 3 do if math.abs(m[rr][c]) > math.abs(m[piv][c]) then piv = rr end end
    m[c], m[piv] = m[piv], m[c]
    if m[c][c] == 0 then return nil end
    for rr = 1, 3 do
      if rr ~= c then
        local f = m[rr][c] / m[c][c]
        for cc = c, 4 do m[rr][cc] = m[rr][cc] - f * m[c][cc] end
      end
    end
  end
  local q, p = m[2][4] / m[2][2], m[3][4] / m[3][3]
  if not (p > 0) then return nil end
  return x0 - q / (2 * p)
end

-- Mean, sample standard deviation (0 for one value), min and max of the finite numbers in
-- xs; nil when there are none.
function M.summary(xs)
  check.arg("kiln.ladder.summary", "xs", xs, "table")
  local v = {}
  for _, x in ipairs(xs) do if type(x) == "number" and x == x then v[#v + 1] = x end end
  if #v == 0 then return nil end
  local mean, lo, hi = 0, math.huge, -math.huge
  for _, x in ipairs(v) do mean, lo, hi = mean + x / #v, math.min(lo, x), math.max(hi, x) end
  local ss = 0
  for _, x in ipairs(v) do ss = ss + (x - mean) ^ 2 end
  return { mean = mean, sd = #v > 1 and math.sqrt(ss / (#v - 1)) or 0, min = lo, max = hi, n = #v }
end

-- The validation losses a kiln.train run directory logged: a list of {step, tokens, loss}
-- from metrics.csv's `<set>_loss` column (default set "val"), in step order.
function M.evals(run_dir, set)
  check.string("kiln.ladder.evals", "run_dir", run_dir, true)
  check.arg("kiln.ladder.evals", "set", set, "?string")
  local path = run_dir .. "/metrics.csv"
  if not util.exists(path) then fail("evals: %s does not exist", path) end
  local csv = util.read_csv(path)
  local col = {}
  for i, h in ipairs(csv.header) do col[h] = i end
  local key = (set or "val") .. "_loss"
  if not col[key] then fail("evals: %s has no column %s", path, key) end
  local out = {}
  for _, row in ipairs(csv.rows) do
    local l = tonumber(row[col[key]])
    if l then out[#out + 1] = { step = tonumber(row[col.step]), tokens = tonumber(row[col.tokens]), loss = l } end
  end
  return out
end

return M
