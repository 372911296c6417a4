-- kiln.weighting — per-position loss weightings (docs/design.md §3.2).
--
--   local weighting = require "kiln.weighting"
--   local w = weighting.head{ fraction = 0.1, factor = 0.5 }
--   local v = w:vector(256)     -- Lua array v[1..256]; v[i] weighs token position i-1
--   w.normalize                 -- false: loss = sum w[t] CE / (B T); true: divided by mean(w)
--
-- Positions. A vector for context length T is a Lua array of T weights: v[1] is token position
-- 0 (the first token of a window) and v[T] is token position T-1. Everywhere else in this
-- module (custom callbacks, regions, error messages) positions are 0-based token positions and
-- say so.
--
-- Boundary rule (also in docs/schedules-and-weightings.md). For a fraction f of T positions,
--   n(T, f) = max(1, floor(T*f + 1/2))        -- round half up, at least one position, at most T
--   head{fraction = f}    : token positions 0 .. n(T,f)-1
--   tail{fraction = f}    : token positions T-n(T,f) .. T-1
--   middle{fraction = f}  : what is strictly between a head and a tail of fraction e = (1-f)/2
--                           each, i.e. positions n(T,e) .. T-1-n(T,e) (e = 0, f = 1: all of them)
-- so head{0.1}, middle{0.8} and tail{0.1} partition 0..T-1 exactly for every T >= 3 (the middle
-- gets T - 2 n(T, 0.1) positions). T*f is computed with a 1e-9 tolerance and e is rounded to 12
-- significant digits, so 0.1*T = 2.5 counts as 3 and (1-0.8)/2 is exactly 0.1. Examples:
--   T = 10 : head 0..0, middle 1..8, tail 9..9            (1 + 8 + 1)
--   T = 256: head 0..25, middle 26..229, tail 230..255    (26 + 204 + 26; 25.6 rounds to 26)
--   T = 25 : head 0..2 (2.5 -> 3), middle 3..21, tail 22..24
-- For T <= 2 the middle is empty and middle{} weighs nothing down.
--
-- The positions in the region get `factor`, all others 1. With normalize = true the loss is
-- divided by mean(w) instead of 1 (w:loss_weights(T) gives w / mean(w)), so the effective
-- learning rate is unchanged; an all-zero vector cannot be normalized and is an error.

local M = {}
local W = {}                                  -- methods
local MT = { __index = W, __name = "kiln.weighting" }

local floor = math.floor

local util = require "kiln.util"
local check = require "kiln.check"
local fmt = util.num   -- shortest decimal that reads back exactly
local show, fail = util.show, util.fail   -- "who: message"; values quoted / exact

local function isnum(v) return type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge end

-- n(T, f): round half up with tolerance, clamped to [1, T].
local function count(T, f)
  local n = floor(T * f + 0.5 + 1e-9)
  if n < 1 then n = 1 end
  if n > T then n = T end
  return n
end

-- T, the context length: a whole number in 1..check.MAX_POSITIONS (a vector of T weights is
-- built, so an absurd T is refused before it is allocated).
local function check_T(T, who)
  if not (isnum(T) and T == floor(T) and T >= 1 and T <= check.MAX_POSITIONS) then
    error(("%s: T (the context length) must be a whole number in 1..%d (got %s)")
      :format(who or "weighting", check.MAX_POSITIONS, show(T)), 0)
  end
  return math.tointeger(T)
end

-- The receiver of a method: w:vector(T), not w.vector(T).
local function is_self(who, self) return check.self("kiln.weighting:" .. who, self, "kiln.weighting") end

-- split(T [, fraction = 0.1]): the head / middle / tail partition that head{fraction},
-- middle{fraction = 1 - 2*fraction} and tail{fraction} use. Each region is
-- {first = p, last = q, count = n} in 0-based token positions (inclusive; count may be 0 for
-- the middle, then last = first - 1).
function M.split(T, fraction)
  T = check_T(T, "weighting.split")
  fraction = fraction or 0.1
  if not (isnum(fraction) and fraction > 0 and fraction <= 0.5) then
    fail("weighting.split", "'fraction' must be a number in (0, 0.5] (got %s)", show(fraction))
  end
  local n = count(T, fraction)
  local mid_first, mid_last = n, T - 1 - n
  if mid_last < mid_first - 1 then mid_last = mid_first - 1 end
  return { first = 0, last = n - 1, count = n },
         { first = mid_first, last = mid_last, count = mid_last - mid_first + 1 },
         { first = T - n, last = T - 1, count = n }
end

-- ---------------------------------------------------------------------------------------
-- Argument parsing
-- ---------------------------------------------------------------------------------------
local function check(who, k, kind, v)
  if kind == "fraction" then
    if not (isnum(v) and v > 0 and v <= 1) then
      fail(who, "'%s' must be a number in (0, 1] (got %s)", k, show(v))
    end
  elseif kind == "weight" then
    if not (isnum(v) and v >= 0) then
      fail(who, "'%s' must be a finite number >= 0 (got %s)", k, show(v))
    end
  elseif kind == "boolean" then
    if type(v) ~= "boolean" then fail(who, "'%s' must be true or false (got %s)", k, show(v)) end
  end
  return v
end

local function parse(who, args, spec)
  return util.parse_fields(who, args, spec, check, { mt = MT })
end

local function new(kind, params, fill, order)
  local normalize = params.normalize or false
  params.normalize = nil
  return setmetatable({ kind = kind, params = params, normalize = normalize, _fill = fill, _order = order }, MT)
end

-- ---------------------------------------------------------------------------------------
-- Methods
-- ---------------------------------------------------------------------------------------

-- vector(T): a fresh Lua array of T weights (v[i] for token position i-1), each finite and >= 0.
-- vector(T) for the methods that build on it, naming `who` in a T error.
local function vector_of(self, T, who)
  T = check_T(T, who)
  local v = self._fill(T)
  if #v ~= T then
    error(("weighting: expected %d weights (one per position), got %d"):format(T, #v), 0)
  end
  local sum = 0
  for i = 1, T do
    local x = v[i]
    if not (isnum(x) and x >= 0) then
      error(("weighting: %s: weight at position %d (0-based) is %s (expected a finite number >= 0)")
        :format(self:describe(), i - 1, show(x)), 0)
    end
    sum = sum + x
  end
  if self.normalize and sum == 0 then
    error(("weighting: %s: all %d weights are 0, cannot normalize (mean(w) = 0)"):format(self:describe(), T), 0)
  end
  return v
end

function W:vector(T)
  is_self("vector", self)
  return vector_of(self, T, "weighting:vector")
end

-- mean(T): mean of vector(T) (the divisor of the loss when normalize is set).
function W:mean(T)
  is_self("mean", self)
  local v = vector_of(self, T, "weighting:mean")
  local s = 0
  for i = 1, #v do s = s + v[i] end
  return s / #v
end

-- loss_weights(T): the weights the loss actually multiplies CE[b, t] by before dividing by
-- B*T: vector(T), divided by its mean when normalize is set (so they average to 1).
function W:loss_weights(T)
  is_self("loss_weights", self)
  local v = vector_of(self, T, "weighting:loss_weights")
  if not self.normalize then return v end
  local s = 0
  for i = 1, #v do s = s + v[i] end
  local m = s / #v
  for i = 1, #v do v[i] = v[i] / m end
  return v
end

-- region(T): for head / middle / tail, the re-weighted positions {first, last, count}
-- (0-based token positions, inclusive); nil for the other kinds.
function W:region(T)
  is_self("region", self)
  T = check_T(T, "weighting:region")
  if not self._region then return nil end
  local a, b = self._region(T)
  return { first = a, last = b, count = b - a + 1 }
end

function W:describe()
  is_self("describe", self)
  local parts = {}
  if self._describe then
    parts[1] = self._describe(self)
  else
    for _, k in ipairs(self._order) do
      parts[#parts + 1] = k .. "=" .. fmt(self.params[k])
    end
  end
  if self.normalize then parts[#parts + 1] = "normalize" end
  return self.kind .. "(" .. table.concat(parts, ", ") .. ")"
end
MT.__tostring = function(self) return self:describe() end

-- config(): a plain table that weighting.make turns back into an equal weighting.
function W:config()
  is_self("config", self)
  local c = { kind = self.kind, normalize = self.normalize }
  for k, v in pairs(self.params) do c[k] = v end
  return c
end

-- ---------------------------------------------------------------------------------------
-- Constructors
-- ---------------------------------------------------------------------------------------
local function ones(T)
  local v = {}
  for i = 1, T do v[i] = 1.0 end
  return v
end

-- uniform{normalize = false}: every weight 1 (the ordinary mean cross-entropy).
function M.uniform(args)
  local p = parse("weighting.uniform", args, { { "normalize", "boolean", false } })
  return new("uniform", p, ones, {})
end

-- A weighting that sets `factor` on the 0-based positions a..b returned by region(T).
local function regional(kind, default_fraction, region, args)
  local who = "weighting." .. kind
  local p = parse(who, args, {
    { "fraction", "fraction", default_fraction }, { "factor", "weight", 0.5 }, { "normalize", "boolean", false } })
  local f, factor = p.fraction, p.factor
  local w = new(kind, p, function(T)
    local v = ones(T)
    local a, b = region(T, f)
    for pos = a, b do v[pos + 1] = factor end
    return v
  end, { "fraction", "factor" })
  w._region = function(T) return region(T, f) end
  return w
end

-- head{fraction = 0.1, factor = 0.5, normalize = false}: positions 0 .. n(T,f)-1 get factor.
function M.head(args)
  return regional("head", 0.1, function(T, f) return 0, count(T, f) - 1 end, args)
end

-- tail{fraction = 0.1, factor = 0.5, normalize = false}: positions T-n(T,f) .. T-1 get factor.
function M.tail(args)
  return regional("tail", 0.1, function(T, f) return T - count(T, f), T - 1 end, args)
end

-- middle{fraction = 0.8, factor = 0.5, normalize = false}: positions strictly between a head
-- and a tail of (1 - f)/2 each get factor.
function M.middle(args)
  return regional("middle", 0.8, function(T, f)
    local e = tonumber(("%.12g"):format((1 - f) / 2))
    local n = e == 0 and 0 or count(T, e)
    local b = T - 1 - n
    if b < n - 1 then b = n - 1 end   -- empty (last = first - 1) when 2n >= T
    return n, b
  end, args)
end

-- ramp{from, to, normalize = false}: linear in the position, w at token position t is
-- from + (to - from) * t / (T - 1) (exactly `from` at 0 and `to` at T-1; T = 1 gives `from`).
function M.ramp(args)
  local p = parse("weighting.ramp", args, {
    { "from", "weight", required = true }, { "to", "weight", required = true }, { "normalize", "boolean", false } })
  local a, b = p.from, p.to
  return new("ramp", p, function(T)
    local v = {}
    if T == 1 then v[1] = a + 0.0; return v end
    for i = 1, T do
      local x = (i - 1) / (T - 1)
      v[i] = a * (1 - x) + b * x
    end
    return v
  end, { "from", "to" })
end

-- custom(f [, opts]): f(pos, T) gives the weight of 0-based token position pos (0..T-1).
-- custom(array [, opts]) / custom{w1, w2, ..., normalize = b}: a fixed vector; its length must
-- equal T when vector(T) is asked for. custom{weights = array | function, normalize = b} also
-- works. opts = {normalize = bool, name = "text for describe"}.
function M.custom(spec, opts)
  local who = "weighting.custom"
  local normalize, name = false, nil
  local function take_opts(o, allow_array)
    for k, v in pairs(o) do
      if k == "normalize" then
        if type(v) ~= "boolean" then fail(who, "'normalize' must be true or false (got %s)", show(v)) end
        normalize = v
      elseif k == "name" then
        if type(v) ~= "string" then fail(who, "'name' must be a string (got %s)", show(v)) end
        name = v
      elseif not (allow_array and math.type(k) == "integer") and k ~= "weights" then
        fail(who, "unknown field '%s' (fields: weights, normalize, name)", tostring(k))
      end
    end
  end
  if opts ~= nil then
    if type(opts) ~= "table" then fail(who, "options must be a table (got %s)", show(opts)) end
    take_opts(opts, false)
    if opts.weights ~= nil then fail(who, "unknown field 'weights' in options") end
  end
  if type(spec) == "table" and getmetatable(spec) == nil then
    if spec.weights ~= nil then
      if #spec > 0 then fail(who, "give the weights as a list or as 'weights', not both") end
      take_opts(spec, false)
      spec = spec.weights
    else
      take_opts(spec, true)
    end
  end
  if type(spec) == "function" then
    local f = spec
    local w = new("custom", { normalize = normalize }, function(T)
      local v = {}
      for pos = 0, T - 1 do
        local x = f(pos, T)
        if not (isnum(x) and x >= 0) then
          error(("weighting.custom: function returned %s for position %d (0-based) of T = %d (expected a finite number >= 0)")
            :format(show(x), pos, T), 0)
        end
        v[pos + 1] = x
      end
      return v
    end, {})
    w._describe = function() return name or "function" end
    w.config = function(self) return { kind = "custom", describe = self:describe(), normalize = self.normalize } end
    return w
  end
  if type(spec) == "table" and getmetatable(spec) == nil then
    local n = #spec
    if n == 0 then fail(who, "expected a function(pos, T) or a non-empty list of weights (got an empty table)") end
    local arr = {}
    for i = 1, n do
      local x = spec[i]
      if not (isnum(x) and x >= 0) then
        fail(who, "weight %d (position %d, 0-based) must be a finite number >= 0 (got %s)", i, i - 1, show(x))
      end
      arr[i] = x
    end
    local w = new("custom", { normalize = normalize }, function(T)
      local v = {}
      for i = 1, #arr do v[i] = arr[i] end
      return v
    end, {})
    w._describe = function() return name or (n .. " weights") end
    w.config = function(self) return { kind = "custom", weights = { table.unpack(arr) }, normalize = self.normalize } end
    return w
  end
  fail(who, "expected a function(pos, T) or a list of weights (got %s)", show(spec))
end

M.kinds = { uniform = M.uniform, head = M.head, middle = M.middle, tail = M.tail, ramp = M.ramp, custom = M.custom }

-- make(spec): a weighting from a weighting (returned as is), nil ("uniform"), a kind name
-- ("head" = head{} with defaults), a function or list (custom), or a config table
-- {kind = "head", fraction = 0.1, factor = 0.5, normalize = true} as w:config() writes and
-- YAML reads.
function M.make(spec)
  if getmetatable(spec) == MT then return spec end
  if spec == nil then return M.uniform() end
  local ty = type(spec)
  local function kind_ctor(kind)
    local ctor = M.kinds[kind]
    if not ctor or kind == "custom" and ty == "string" then
      fail("weighting", "unknown weighting %s (kinds: uniform, head, middle, tail, ramp, custom)", show(kind))
    end
    return ctor
  end
  if ty == "string" then return kind_ctor(spec)() end
  if ty == "function" then return M.custom(spec) end
  if ty == "table" and spec.kind ~= nil then
    local ctor = kind_ctor(spec.kind)
    local args = {}
    for k, v in pairs(spec) do if k ~= "kind" then args[k] = v end end
    if spec.kind == "custom" then
      if args.weights == nil then
        fail("weighting", "a custom weighting from a config needs 'weights' (a list; functions cannot be stored)")
      end
      args.describe = nil
    end
    return ctor(args)
  end
  if ty == "table" and #spec > 0 then return M.custom(spec) end
  fail("weighting", "expected a weighting, a kind name, a function(pos, T), a list of weights or a table with 'kind' (got %s)", show(spec))
end

function M.is(x) return getmetatable(x) == MT end

return M
