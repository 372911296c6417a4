-- kiln.schedule — learning-rate schedules as plain Lua values.
--
--   local schedule = require "kiln.schedule"
--   local s = schedule.cosine{ peak = 3e-4, floor_frac = 0.1, steps = 1000, warmup = 50 }
--   local lr = s(step)          -- step is the 0-based optimizer step: 0 for the first update
--   print(s:describe())         -- cosine(peak=0.0003, floor=3e-05, steps=1000, warmup=50)
--   for _, p in ipairs(s:sample(100)) do print(p.step, p.lr) end
--
-- A schedule is a table with a metatable whose __call maps a step (a non-negative number,
-- normally an integer: 0 is the first optimizer step) to a learning rate. Every function here
-- that takes a schedule also accepts a plain Lua function `function(step) return lr end`, a
-- number (a constant LR) or a config table `{kind = "cosine", peak = ..., ...}` (see
-- schedule.make). Schedules are pure: the same step always gives the same LR.
--
-- Conventions shared by all constructors
--   * Linear warmup of W steps from `start` to `peak`: lr(k) = start + (peak - start) * k / W for
--     0 <= k < W, so step 0 gets `start` (0 by default) and step W is the first at `peak`.
--   * `warmup` is a whole number of steps. `warmup_frac` is the alternative: a fraction of
--     `steps` in [0, 1), rounded half up to whole steps (W = floor(frac * steps + 0.5)). Giving
--     both is an error; a non-integer `warmup` is an error (it is never silently a fraction).
--   * `floor` is an absolute LR; `floor_frac` is the alternative, a fraction of `peak`
--     (floor_frac = 0.1 is the "min LR = 0.1 x max LR" of the continual-pretraining paper).
--   * "Decay to floor by `steps`" means lr(steps) == floor exactly and lr stays at the floor
--     for every later step.
--   * Unknown fields are errors (a typo like `peek` must not silently become a default).

local M = {}

local S = {}                         -- methods shared by every schedule
local MT = { __index = S, __name = "kiln.schedule" }

local floor, cos, pi, sqrt = math.floor, math.cos, math.pi, math.sqrt

local util = require "kiln.util"
local check = require "kiln.check"

-- Shortest decimal text that reads back as the same number (for describe()).
local fmt = util.num
M._fmt = fmt

-- Human text for describe(): at most 6 significant digits (3.0000000000000001e-05 -> 3e-05).
local function short(x)
  if type(x) ~= "number" or math.type(x) == "integer" then return fmt(x) end
  local s = fmt(x)
  if #s <= 8 then return s end
  return (("%.6g"):format(x))
end

local show, fail = util.show, util.fail   -- "who: message"; values quoted / exact

-- ---------------------------------------------------------------------------------------
-- Argument checking. spec = list of {name, kind, default | nil, required = bool}
-- kinds: "lr" (finite number >= 0), "count" (whole number >= 0), "pos" (whole number >= 1),
--        "frac" (number in [0,1)), "ffrac" (number in [0,1]), "schedule", "shape"
-- ---------------------------------------------------------------------------------------
local expect = {
  lr = "a finite number >= 0",
  count = "a whole number >= 0",
  pos = "a whole number >= 1",
  frac = "a number in [0, 1)",
  ffrac = "a number in [0, 1]",
  schedule = "a schedule, a function of the step or a number",
  shape = '"linear", "cosine" or "sqrt"',
}

local function isnum(v) return type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge end

local function convert(who, name, kind, v)
  if kind == "lr" then
    if isnum(v) and v >= 0 then return v end
  elseif kind == "count" or kind == "pos" then
    if isnum(v) and v == floor(v) and v >= (kind == "pos" and 1 or 0) then
      return math.tointeger(v) or v
    end
    if isnum(v) and kind == "count" and v > 0 and v < 1 and name == "warmup" then
      fail(who, "'warmup' must be a whole number of steps (got %s); use 'warmup_frac' for a fraction of 'steps'", fmt(v))
    end
  elseif kind == "frac" then
    if isnum(v) and v >= 0 and v < 1 then return v end
  elseif kind == "ffrac" then
    if isnum(v) and v >= 0 and v <= 1 then return v end
  elseif kind == "schedule" then
    return M.make(v, who .. ": '" .. name .. "'")
  elseif kind == "shape" then
    if v == "linear" or v == "cosine" or v == "sqrt" then return v end
  end
  fail(who, "'%s' must be %s (got %s)", name, expect[kind], show(v))
end

local function parse(who, args, spec, positional)
  return util.parse_fields(who, args, spec, convert, { mt = MT, positional = positional, expect = expect })
end

-- warmup / warmup_frac -> whole steps; floor / floor_frac -> absolute floor.
local function resolve_warmup(who, p, steps)
  if p.warmup ~= nil and p.warmup_frac ~= nil then
    fail(who, "give 'warmup' (steps) or 'warmup_frac' (fraction of 'steps'), not both")
  end
  if p.warmup_frac ~= nil then
    p.warmup = floor(p.warmup_frac * steps + 0.5)
    p.warmup = math.tointeger(p.warmup) or p.warmup
  end
  p.warmup = p.warmup or 0
end

local function resolve_floor(who, p)
  if p.floor ~= nil and p.floor_frac ~= nil then
    fail(who, "give 'floor' (an LR) or 'floor_frac' (a fraction of 'peak'), not both")
  end
  if p.floor_frac ~= nil then p.floor = p.floor_frac * p.peak end
  p.floor = p.floor or 0
  if p.floor > p.peak then
    fail(who, "'floor' must be <= 'peak' (got %s > %s)", fmt(p.floor), fmt(p.peak))
  end
end

local function new(kind, params, f, length, order)
  return setmetatable({ kind = kind, params = params, _f = f, _length = length, _order = order }, MT)
end

-- ---------------------------------------------------------------------------------------
-- Methods
-- ---------------------------------------------------------------------------------------
local function check_step(step)
  if not isnum(step) or step < 0 then
    error(("kiln.schedule: step must be a non-negative number (got %s)"):format(show(step)), 0)
  end
end

MT.__call = function(self, step)
  check_step(step)
  return self._f(step)
end
MT.__tostring = function(self) return self:describe() end

-- The receiver of a method: s:at(5), not s.at(5).
local function is_self(who, self) return check.self("kiln.schedule:" .. who, self, "kiln.schedule") end

-- The LR at `step` (same as s(step)).
function S:at(step) is_self("at", self); check_step(step); return self._f(step) end

-- The natural length of the schedule in steps (where it reaches its final value), or nil.
function S:length() is_self("length", self); return self._length end

-- One line: kind(param=value, ...), parameters in a fixed order, numbers to 6 significant
-- digits, `start` left out when it is 0.
function S:describe()
  is_self("describe", self)
  if self._describe then return self._describe(self) end
  local parts = {}
  for _, k in ipairs(self._order) do
    local v = self.params[k]
    if v ~= nil and not (k == "start" and v == 0) then
      parts[#parts + 1] = k .. "=" .. (getmetatable(v) == MT and v:describe() or short(v))
    end
  end
  return self.kind .. "(" .. table.concat(parts, ", ") .. ")"
end

-- n points {step = s, lr = v} (also p[1], p[2]) evenly spread over [0, total_steps], both
-- ends included; steps are whole, rounded half up. total_steps defaults to s:length().
-- At most check.MAX_SAMPLES (10^7) points.
function S:sample(n, total_steps)
  is_self("sample", self)
  n = check.integer("kiln.schedule:sample", "n", n, 1, check.MAX_SAMPLES)
  total_steps = total_steps or self._length
  if total_steps == nil then
    error(("schedule:sample: 'total_steps' is required for %s (it has no natural length)"):format(self:describe()), 0)
  end
  if not (isnum(total_steps) and total_steps >= 0) then
    error(("schedule:sample: 'total_steps' must be a number >= 0 (got %s)"):format(show(total_steps)), 0)
  end
  local pts = {}
  for i = 1, n do
    local st = n == 1 and 0 or floor((i - 1) * total_steps / (n - 1) + 0.5)
    st = math.tointeger(st) or st
    local lr = self._f(st)
    pts[i] = { st, lr, step = st, lr = lr }
  end
  return pts
end

-- A plain table that schedule.make turns back into an equal schedule (for config.yaml).
function S:config()
  is_self("config", self)
  local c = { kind = self.kind }
  for k, v in pairs(self.params) do
    if getmetatable(v) == MT then c[k] = v:config()
    elseif k == "phases" then
      local ph = {}
      for i, p in ipairs(v) do ph[i] = { steps = p.steps, schedule = p.schedule:config() } end
      c.phases = ph
    else c[k] = v end
  end
  return c
end

-- ---------------------------------------------------------------------------------------
-- Building blocks
-- ---------------------------------------------------------------------------------------
-- Cosine from peak (k = 0) to floor (k = n), exact at both ends.
local function cosine_part(peak, fl, k, n)
  if k >= n then return fl end
  return peak - (peak - fl) * 0.5 * (1 - cos(pi * k / n))
end

local function linear_part(peak, fl, k, n)
  if k >= n then return fl end
  return peak + (fl - peak) * (k / n)
end

local function sqrt_part(peak, fl, k, n)   -- 1 - sqrt(x) cooldown (WSD papers)
  if k >= n then return fl end
  return fl + (peak - fl) * (1 - sqrt(k / n))
end

local shapes = { linear = linear_part, cosine = cosine_part, sqrt = sqrt_part }

-- ---------------------------------------------------------------------------------------
-- Constructors
-- ---------------------------------------------------------------------------------------

-- constant{lr} or constant(lr): lr at every step.
function M.constant(args)
  local p = parse("schedule.constant", args, { { "lr", "lr", required = true } }, "lr")
  local lr = p.lr
  return new("constant", p, function() return lr end, nil, { "lr" })
end

-- warmup{steps, peak, start = 0}: start + (peak - start) * step / steps, then peak for step >= steps.
function M.warmup(args)
  local who = "schedule.warmup"
  local p = parse(who, args, {
    { "steps", "count", required = true }, { "peak", "lr", required = true }, { "start", "lr", 0 } })
  local W, peak, start = p.steps, p.peak, p.start
  return new("warmup", p, function(s)
    if s >= W then return peak end
    return start + (peak - start) * (s / W)
  end, W, { "peak", "steps", "start" })
end

local decay_spec = {
  { "peak", "lr", required = true }, { "floor", "lr" }, { "floor_frac", "ffrac" },
  { "steps", "pos", required = true }, { "warmup", "count" }, { "warmup_frac", "frac" },
  { "start", "lr", 0 },
}

local function warm_then(kind, part, args)
  local who = "schedule." .. kind
  local p = parse(who, args, decay_spec)
  resolve_floor(who, p)
  resolve_warmup(who, p, p.steps)
  if p.warmup >= p.steps then
    fail(who, "'warmup' must be < 'steps' (got %s >= %s)", fmt(p.warmup), fmt(p.steps))
  end
  local peak, fl, n, W, start = p.peak, p.floor, p.steps, p.warmup, p.start
  p.floor_frac, p.warmup_frac = nil, nil
  return new(kind, p, function(s)
    if s < W then return start + (peak - start) * (s / W) end
    return part(peak, fl, s - W, n - W)
  end, n, { "peak", "floor", "steps", "warmup", "start" })
end

-- cosine{peak, floor = 0 | floor_frac, steps, warmup = 0 | warmup_frac, start = 0}:
-- linear warmup start -> peak over steps [0, warmup), then half-cosine from peak (at step
-- warmup) to floor (at step `steps`), flat at floor afterwards.
--   lr(s) = peak - (peak - floor) * (1 - cos(pi * (s - W) / (steps - W))) / 2   for W <= s < steps
function M.cosine(args) return warm_then("cosine", cosine_part, args) end

-- linear{peak, floor = 0 | floor_frac, steps, warmup = 0 | warmup_frac, start = 0}:
-- as cosine, but the decay is a straight line from peak (step W) to floor (step `steps`).
function M.linear(args) return warm_then("linear", linear_part, args) end

-- inverse_sqrt{peak, warmup}: peak * s / warmup for s < warmup, then peak * sqrt(warmup / s).
function M.inverse_sqrt(args)
  local p = parse("schedule.inverse_sqrt", args, { { "peak", "lr", required = true }, { "warmup", "pos", required = true } })
  local peak, W = p.peak, p.warmup
  return new("inverse_sqrt", p, function(s)
    if s < W then return peak * (s / W) end
    return peak * sqrt(W / s)
  end, nil, { "peak", "warmup" })
end

-- wsd{peak, warmup, stable, decay, floor = 0 | floor_frac, shape = "linear"}: warmup-stable-decay.
-- Linear warmup 0 -> peak over [0, warmup), peak over [warmup, warmup + stable), then the decay
-- (shape "linear", "cosine" or "sqrt" = 1 - sqrt(x)) from peak to floor over `decay` steps, so
-- lr(warmup + stable + decay) == floor, flat afterwards.
function M.wsd(args)
  local who = "schedule.wsd"
  local p = parse(who, args, {
    { "peak", "lr", required = true }, { "warmup", "count", 0 }, { "stable", "count", required = true },
    { "decay", "count", required = true }, { "floor", "lr" }, { "floor_frac", "ffrac" }, { "shape", "shape", "linear" } })
  resolve_floor(who, p)
  p.floor_frac = nil
  local peak, fl, W, St, D = p.peak, p.floor, p.warmup, p.stable, p.decay
  local part = shapes[p.shape]
  return new("wsd", p, function(s)
    if s < W then return peak * (s / W) end
    if s < W + St then return peak end
    return part(peak, fl, s - W - St, D)
  end, W + St + D, { "peak", "warmup", "stable", "decay", "floor", "shape" })
end

-- rewarm{from, warmup | warmup_frac, peak, floor | floor_frac, steps, before = nil}:
-- the continual-pretraining schedule. `steps` is the length of the new phase counted from
-- `from` (warmup included), so the floor is reached at step from + steps.
--   s <  from                : before(s), or the floor when there is no `before`
--   from <= s < from + W     : v0 + (peak - v0) * (s - from) / W, with v0 = before(from)
--                              (or the floor): continuous at `from`, lr(from) == v0
--   from + W <= s            : cosine from peak (at from + W) to floor (at from + steps), flat after
-- `warmup_frac` is a fraction of `steps` (the paper's "warmup as % of the downstream budget").
function M.rewarm(args)
  local who = "schedule.rewarm"
  local p = parse(who, args, {
    { "from", "count", required = true }, { "warmup", "count" }, { "warmup_frac", "frac" },
    { "peak", "lr", required = true }, { "floor", "lr" }, { "floor_frac", "ffrac" },
    { "steps", "pos", required = true }, { "before", "schedule" } })
  resolve_floor(who, p)
  resolve_warmup(who, p, p.steps)
  if p.warmup >= p.steps then
    fail(who, "'warmup' must be < 'steps' (got %s >= %s)", fmt(p.warmup), fmt(p.steps))
  end
  p.floor_frac, p.warmup_frac = nil, nil
  local from, W, peak, fl, n, before = p.from, p.warmup, p.peak, p.floor, p.steps, p.before
  local v0 = before and before(from) or fl
  return new("rewarm", p, function(s)
    if s < from then
      if before then return before(s) end
      return fl
    end
    local k = s - from
    if k < W then return v0 + (peak - v0) * (k / W) end
    return cosine_part(peak, fl, k - W, n - W)
  end, from + n, { "from", "warmup", "peak", "floor", "steps", "before" })
end

-- sequence{ {steps = n1, s1}, {steps = n2, s2}, ..., {sK} }: phase i covers the global steps
-- [o_i, o_i + n_i) with o_i = n_1 + ... + n_(i-1), and sees the local step s - o_i. The last
-- phase may omit `steps`; every step past the end of the phases belongs to the last phase (its
-- local step keeps counting, so a cosine there stays at its floor). A phase's schedule is
-- p[1] or p.schedule (any value schedule.make accepts).
function M.sequence(args)
  local who = "schedule.sequence"
  if type(args) ~= "table" or getmetatable(args) == MT then
    fail(who, "expected a list of phases {steps = n, schedule} (got %s)", show(args))
  end
  if args.phases ~= nil then args = args.phases end
  if #args == 0 then fail(who, "expected at least one phase {steps = n, schedule}") end
  for k in pairs(args) do
    if math.type(k) ~= "integer" or k < 1 or k > #args then
      fail(who, "unexpected field '%s' (expected a list of phases)", tostring(k))
    end
  end
  local phases, offsets, total = {}, {}, 0
  for i, ph in ipairs(args) do
    local pw = who .. ": phase " .. i
    if type(ph) ~= "table" or getmetatable(ph) == MT then
      fail(pw, "expected a table {steps = n, schedule} (got %s)", show(ph))
    end
    for k in pairs(ph) do
      if k ~= 1 and k ~= "steps" and k ~= "schedule" then
        fail(pw, "unknown field '%s' (fields: steps, schedule or [1])", tostring(k))
      end
    end
    local sched = ph.schedule
    if sched ~= nil and ph[1] ~= nil then fail(pw, "give the schedule as [1] or 'schedule', not both") end
    if sched == nil then sched = ph[1] end
    if sched == nil then fail(pw, "has no schedule (expected {steps = n, schedule})") end
    sched = M.make(sched, pw)
    local n = ph.steps
    if n == nil then
      if i < #args then fail(pw, "'steps' is required (only the last phase may omit it)") end
    elseif not (isnum(n) and n == floor(n) and n >= 1) then
      fail(pw, "'steps' must be a whole number >= 1 (got %s)", show(n))
    else
      n = math.tointeger(n) or n
    end
    phases[i] = { steps = n, schedule = sched }
    offsets[i] = total
    total = total + (n or 0)
  end
  local K = #phases
  local last = phases[K]
  local length = last.steps and total or (last.schedule:length() and offsets[K] + last.schedule:length())
  local s = new("sequence", { phases = phases }, function(s)
    for i = 1, K - 1 do
      if s < offsets[i] + phases[i].steps then return phases[i].schedule._f(s - offsets[i]) end
    end
    return last.schedule._f(s - offsets[K])
  end, length, {})
  s._describe = function(self)
    local parts = {}
    for i, ph in ipairs(phases) do
      parts[i] = (ph.steps and (short(ph.steps) .. " steps of ") or "then ") .. ph.schedule:describe()
    end
    return "sequence(" .. table.concat(parts, "; ") .. ")"
  end
  s.offsets = offsets
  return s
end

-- from(f [, description | {describe = text, steps = n}]): wrap a Lua function of the step.
-- The function must return a finite number >= 0; anything else is an error naming the step.
function M.from(f, opts)
  local who = "schedule.from"
  if type(f) ~= "function" and not (type(f) == "table" and getmetatable(f) and getmetatable(f).__call) then
    fail(who, "expected a function of the step (got %s)", show(f))
  end
  if type(opts) == "string" then opts = { describe = opts } end
  opts = opts or {}
  if type(opts) ~= "table" then fail(who, "options must be a string or a table (got %s)", show(opts)) end
  local text = opts.describe or ("function " .. tostring(f):gsub("^function: ", ""))
  local length = opts.steps
  local s = new("function", {}, function(step)
    local lr = f(step)
    if not (isnum(lr) and lr >= 0) then
      error(("schedule: function %s returned %s at step %s (expected a finite number >= 0)")
        :format(text, show(lr), fmt(step)), 0)
    end
    return lr
  end, length, {})
  s._describe = function() return text end
  s.config = function() return { kind = "function", describe = text } end
  return s
end

-- make(spec [, who]): the schedule described by spec, which may be a schedule (returned as
-- is), a function (schedule.from), a number (schedule.constant) or a config table
-- {kind = "cosine", peak = ..., ...} as written by s:config() or read from YAML.
function M.make(spec, who)
  who = check.arg("kiln.schedule.make", "who", who, "?string") or "schedule"
  if getmetatable(spec) == MT then return spec end
  local ty = type(spec)
  if ty == "function" then return M.from(spec) end
  if ty == "number" then return M.constant { lr = spec } end
  if ty == "table" and spec.kind ~= nil then
    local kind = spec.kind
    local ctor = M.kinds[kind]
    if not ctor then
      local ks = {}
      for k in pairs(M.kinds) do ks[#ks + 1] = k end
      table.sort(ks)
      fail(who, "unknown schedule kind %s (kinds: %s)", show(kind), table.concat(ks, ", "))
    end
    local args = {}
    for k, v in pairs(spec) do if k ~= "kind" then args[k] = v end end
    if kind == "sequence" then
      local phases = {}
      for i, ph in ipairs(args.phases or {}) do phases[i] = ph end
      return M.sequence(phases)
    end
    return ctor(args)
  end
  if ty == "table" and getmetatable(spec) and getmetatable(spec).__call then return M.from(spec) end
  fail(who, "expected a schedule, a function of the step, a number, or a table with 'kind' (got %s)", show(spec))
end

-- is(x): true when x is a schedule value built by this module.
function M.is(x) return getmetatable(x) == MT end

M.kinds = {
  constant = M.constant, warmup = M.warmup, cosine = M.cosine, linear = M.linear,
  inverse_sqrt = M.inverse_sqrt, wsd = M.wsd, rewarm = M.rewarm, sequence = M.sequence,
}

return M
