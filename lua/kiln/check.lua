-- kiln.check — argument checks for the library's public functions. Each raises an error
-- that names the function, the argument and what was expected, e.g.
--   kiln.grow.width: argument 'small' must be a kiln.Model, got number
-- and returns the value (converted where said), so a check reads as an assignment:
--   local n = check.integer("kiln.schedule:sample", "n", n, 1, check.MAX_SAMPLES)
--
-- `who` is the function's full name ("kiln.grow.width", "kiln.schedule:sample"); `arg` is the
-- argument's name (a string) or position (a number: "argument #2").
local M = {}

-- Documented limits on counts the caller chooses (each one allocates or loops that many times).
M.MAX_POSITIONS = 1048576      -- context length: weighting vectors, per-position tables
M.MAX_SAMPLES = 10000000       -- points of a sampled curve (schedule:sample)
M.MAX_ACCUMULATE = 65536       -- micro-batches per optimizer step
M.MAX_BATCH = 1048576          -- rows of a batch

local floor, huge, mtype = math.floor, math.huge, math.type

-- A value as a message shows it: its type, and numbers and short strings themselves.
local function describe(v)
  local ty = type(v)
  if ty == "number" then
    if v ~= v then return "nan" end
    if v == huge then return "inf" elseif v == -huge then return "-inf" end
    if mtype(v) == "integer" then return tostring(v) end
    return ("%.17g"):format(v)
  end
  if ty == "string" then
    if #v > 40 then return ("a string of %d bytes"):format(#v) end
    return ("%q"):format(v)
  end
  local mt = getmetatable(v)
  if type(mt) == "table" and type(rawget(mt, "__name")) == "string" then return mt.__name end
  return ty
end
M.describe = describe

local function argname(arg)
  if type(arg) == "number" then return "argument #" .. arg end
  return "argument '" .. tostring(arg) .. "'"
end

-- The library's own use of these functions: `who` and the other control arguments must be
-- what they say, or the check itself reports the mistake.
local function own(fname, who, name, v, ty)
  if type(who) ~= "string" then
    error(("kiln.check.%s: argument 'who' must be a string, got %s"):format(fname, type(who)), 0)
  end
  if name and type(v) ~= ty then
    error(("kiln.check.%s: argument '%s' must be a %s, got %s"):format(fname, name, ty, type(v)), 0)
  end
end

-- The metatable name of a userdata or table value (kiln.Model, kiln.schedule, ...), or nil.
local function class_of(v)
  local mt = getmetatable(v)
  return type(mt) == "table" and rawget(mt, "__name") or nil
end
M.class_of = class_of

-- What a message says was given: a number itself, anything else its class or type.
local function given(v)
  if type(v) == "number" then return describe(v) end
  return class_of(v) or type(v)
end

-- Raises "who: argument 'name' must be <expected>, got <number or type>".
function M.fail(who, arg, expected, v)
  own("fail", who, "expected", expected, "string")
  error(("%s: %s must be %s, got %s"):format(who, argname(arg), expected, given(v)), 0)
end

-- Raises "who: <message>" (formatted).
function M.error(who, fmt, ...)
  own("error", who, "fmt", fmt, "string")
  local ok, msg = pcall(string.format, fmt, ...)
  if not ok then error(("kiln.check.error: the format %q does not fit its arguments"):format(fmt), 0) end
  error(who .. ": " .. msg, 0)
end

-- Whether v is of kind `k`: a Lua type name, "integer", "callable", "any", or a class name
-- (a metatable __name such as "kiln.Model").
local function is_kind(v, k)
  if k == "any" then return v ~= nil end
  if k == "integer" then return mtype(v) == "integer" or (type(v) == "number" and v == floor(v) and v > -2^63 and v < 2^63) end
  if k == "callable" then
    if type(v) == "function" then return true end
    local mt = getmetatable(v)
    return type(mt) == "table" and rawget(mt, "__call") ~= nil
  end
  if k:find(".", 1, true) then return class_of(v) == k end
  if k == "table" then return type(v) == "table" and class_of(v) == nil end   -- a plain table
  return type(v) == k
end

-- A cheap method of each binding class that fails on a closed object: a check for the class
-- also refuses a closed one, so the error names the caller rather than the inner call.
local PROBE = { ["kiln.Model"] = "num_params", ["kiln.Tensor"] = "numel", ["kiln.Dataset"] = "vocab",
                ["kiln.AdamW"] = "hparams", ["kiln.Batch"] = "size" }

local function is_closed(v, k)
  local probe = PROBE[k]
  if not probe then return false end
  local ok, f = pcall(function() return v[probe] end)
  return not (ok and type(f) == "function" and pcall(f, v))
end

local kind_text = {
  table = "a table", number = "a number", integer = "an integer", string = "a string",
  ["function"] = "a function", callable = "a function", boolean = "true or false", ["nil"] = "nil",
  userdata = "a userdata", any = "a value",
}

-- check.arg(who, arg, v, "number|table", ...) -> v: v must be one of the kinds (separated by
-- "|"). Kinds as is_kind above; "?" in front ("?table") also allows nil.
function M.arg(who, arg, v, kinds)
  own("arg", who, "kinds", kinds, "string")
  local optional = kinds:sub(1, 1) == "?"
  if optional then
    if v == nil then return v end
    kinds = kinds:sub(2)
  end
  local texts = {}
  for k in kinds:gmatch("[^|]+") do
    if is_kind(v, k) then
      if is_closed(v, k) then error(("%s: %s is a closed %s"):format(who, argname(arg), k), 0) end
      return v
    end
    texts[#texts + 1] = kind_text[k] or ("a " .. k)
  end
  local expected = #texts == 1 and texts[1] or (table.concat(texts, ", ", 1, #texts - 1) .. " or " .. texts[#texts])
  error(("%s: %s must be %s, got %s"):format(who, argname(arg), expected, class_of(v) or type(v)), 0)
end

-- check.self(who, v, class): the receiver of a method (s:sample() called as s.sample(5)).
function M.self(who, v, class)
  own("self", who, "class", class, "string")
  if class_of(v) ~= class then
    error(("%s: called on %s, expected a %s (use value:method(...))"):format(who, class_of(v) or type(v), class), 0)
  end
  return v
end

local function isfinite(v) return type(v) == "number" and v == v and v ~= huge and v ~= -huge end
M.isfinite = isfinite

local function range_text(min, max)
  if min and max then return (" in %s..%s"):format(describe(min), describe(max)) end
  if min then return (" >= %s"):format(describe(min)) end
  if max then return (" <= %s"):format(describe(max)) end
  return ""
end

-- check.number(who, arg, v [, min [, max]]) -> v: a finite number within [min, max].
function M.number(who, arg, v, min, max)
  own("number", who)
  if not isfinite(v) or (min and v < min) or (max and v > max) then
    M.fail(who, arg, "a finite number" .. range_text(min, max), v)
  end
  return v
end

-- check.integer(who, arg, v [, min [, max]]) -> v as an integer: a whole number (2.0 is 2)
-- within [min, max].
function M.integer(who, arg, v, min, max)
  own("integer", who)
  local i = type(v) == "number" and math.tointeger(v) or nil
  if i == nil or (min and i < min) or (max and i > max) then
    M.fail(who, arg, "a whole number" .. range_text(min, max), v)
  end
  return i
end

-- check.count(who, arg, v, max): an integer in 1..max (a size something is allocated for).
function M.count(who, arg, v, max)
  own("count", who)
  return M.integer(who, arg, v, 1, max)
end

-- check.positive(who, arg, v): a finite number > 0.
function M.positive(who, arg, v)
  own("positive", who)
  if not (isfinite(v) and v > 0) then M.fail(who, arg, "a finite number > 0", v) end
  return v
end

-- check.finite(who, arg, v): a finite number.
function M.finite(who, arg, v)
  own("finite", who)
  if not isfinite(v) then M.fail(who, arg, "a finite number", v) end
  return v
end

-- check.string(who, arg, v [, nonempty]): a string (non-empty when asked).
function M.string(who, arg, v, nonempty)
  own("string", who)
  if type(v) ~= "string" or (nonempty and v == "") then
    M.fail(who, arg, nonempty and "a non-empty string" or "a string", v)
  end
  return v
end

-- check.list(who, arg, v, kind): a plain table whose entries 1..#v are all of kind `kind`
-- (nothing else in it is looked at).
function M.list(who, arg, v, kind)
  own("list", who, "kind", kind, "string")
  M.arg(who, arg, v, "table")
  for i = 1, #v do
    if not is_kind(v[i], kind) then
      error(("%s: %s[%d] must be %s, got %s"):format(who, argname(arg), i, kind_text[kind] or ("a " .. kind),
        given(v[i])), 0)
    end
  end
  return v
end

-- check.numbers(who, arg, v [, finite]): a list of numbers (finite ones when asked).
function M.numbers(who, arg, v, finite)
  own("numbers", who)
  M.arg(who, arg, v, "table")
  for i = 1, #v do
    local x = v[i]
    if type(x) ~= "number" or (finite and not isfinite(x)) then
      error(("%s: %s[%d] must be a %snumber, got %s"):format(who, argname(arg), i, finite and "finite " or "",
        given(x)), 0)
    end
  end
  return v
end

-- check.fields(who, arg, t, known): a plain table with no field outside `known` (a set or a
-- list of names). Returns t.
function M.fields(who, arg, t, known)
  own("fields", who, "known", known, "table")
  M.arg(who, arg, t, "table")
  local set = known
  if known[1] ~= nil then
    set = {}
    for _, k in ipairs(known) do set[k] = true end
  end
  for k in pairs(t) do
    if not set[k] then
      local names = {}
      for n in pairs(set) do names[#names + 1] = tostring(n) end
      table.sort(names)
      error(("%s: %s has an unknown field %s (fields: %s)"):format(who, argname(arg), describe(k),
        table.concat(names, ", ")), 0)
    end
  end
  return t
end

-- check.option(who, arg, v, {"a", "b"}): one of the given strings.
function M.option(who, arg, v, choices)
  own("option", who, "choices", choices, "table")
  for _, c in ipairs(choices) do if v == c then return v end end
  local quoted = {}
  for i, c in ipairs(choices) do quoted[i] = ("%q"):format(c) end
  M.fail(who, arg, "one of " .. table.concat(quoted, ", "), v)
end

-- check.call(who, f, ...): f(...)'s results; an error from f (a binding function given the
-- caller's options, say) is raised again as "who: message", without the position of the
-- library line that made the call.
function M.call(who, f, ...)
  own("call", who)
  if not is_kind(f, "callable") then error(("kiln.check.call: argument 'f' must be a function, got %s"):format(type(f)), 0) end
  local r = table.pack(pcall(f, ...))
  if r[1] then return table.unpack(r, 2, r.n) end
  local msg = r[2]
  if type(msg) == "string" then msg = msg:gsub("^%[?[^%s:]*%]?[^%s:]*:%d+: ", "") end
  error(who .. ": " .. tostring(msg), 0)
end

return M
