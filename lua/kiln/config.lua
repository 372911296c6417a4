-- kiln.config — an experiment's settings, resolved the same way by every script and command.
-- Layers, each over the one before:
--
--   1. defaults        a Lua table or a YAML file (the experiment's <name>.yaml)
--   2. config=FILE     a YAML file of overrides; may appear anywhere on the command line
--   3. quick profile   the defaults' `quick_settings` block, when quick=true (from any layer)
--   4. key=value       the rest of the command line, in order (`train.steps=200` reaches
--                      into nested tables)
--
--   local cfg = kiln.config.resolve("experiments/reweighting.yaml", arg)
--   local cfg = kiln.config.resolve({ steps = 100, model = { n_layer = 2 } }, { "model.n_layer=4" },
--                                   { rules = { steps = { min = 1 } } })
--
-- Every layer is checked the same way: a key must exist in the defaults (a typo is an error
-- listing the close matches); a value must have the default's type (an integer for an
-- integer, a number for a number, a boolean, a list of the same kind of element, a table);
-- a string default takes any scalar. opts.rules adds ranges per dotted key. A value that
-- came from a file is reported with the file's name. Mistakes raise a settings error: the
-- kiln host prints its one line and no traceback (a traceback is for bugs).
local util = require "kiln.util"

local M = {}

local check = require "kiln.check"
local function yaml() return require("kiln").yaml end

-- Settings errors ---------------------------------------------------------------------------
-- A table error object the host recognises by its metatable's __name; tostring gives the
-- message, and concatenation works as with a string message.
local SettingsError = { __name = "kiln.settings_error" }
SettingsError.__index = SettingsError
SettingsError.__tostring = function(e) return e.message end
SettingsError.__concat = function(a, b) return tostring(a) .. tostring(b) end

-- Raise a settings error: fail("%s: bad", where). Also for experiments' own checks.
function M.fail(fmt, ...)
  check.arg("kiln.config.fail", "fmt", fmt, "string")
  if fmt == "" then check.fail("kiln.config.fail", "fmt", "a non-empty message", fmt) end
  error(setmetatable({ message = select("#", ...) > 0 and fmt:format(...) or fmt }, SettingsError), 0)
end

function M.is_error(e) return getmetatable(e) == SettingsError end

-- Types ---------------------------------------------------------------------------------
local function is_list(v) return type(v) == "table" and (#v > 0 or next(v) == nil) end
local function is_map(v) return type(v) == "table" and #v == 0 and next(v) ~= nil end

local function describe_type(v)
  if type(v) == "number" then return math.type(v) == "integer" and "an integer" or "a number" end
  if type(v) == "table" then return is_list(v) and "a list" or "a table" end
  return "a " .. type(v)
end

local function show(v)
  if type(v) == "table" then return is_list(v) and "[...]" or "{...}" end
  if type(v) == "string" then return "'" .. v .. "'" end
  return util.num(v)
end

-- Every dotted key of a nested table (lists are leaves).
local function leaves(t, prefix, out)
  out = out or {}
  for _, k in ipairs(util.sorted_keys(t)) do
    local v, key = t[k], prefix and (prefix .. "." .. tostring(k)) or tostring(k)
    if is_map(v) then leaves(v, key, out) else out[#out + 1] = key end
  end
  return out
end
function M.leaves(t, prefix, out)
  check.arg("kiln.config.leaves", "t", t, "table")
  check.arg("kiln.config.leaves", "prefix", prefix, "?string")
  check.arg("kiln.config.leaves", "out", out, "?table")
  return leaves(t, prefix, out)
end

-- Edit distance, for "did you mean".
local function distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a:byte(i) == b:byte(j) and 0 or 1))
    end
    prev = cur
  end
  return prev[#b]
end

local function suggest(key, known)
  local best = {}
  for _, k in ipairs(known) do
    local d = distance(key, k)
    if d <= math.max(2, #key // 3) then best[#best + 1] = { k, d } end
  end
  table.sort(best, function(x, y) return x[2] < y[2] or (x[2] == y[2] and x[1] < y[1]) end)
  local names = {}
  for i = 1, math.min(3, #best) do names[i] = best[i][1] end
  return names
end

local function unknown(root, key, source)
  local known = leaves(root)
  local near = suggest(key, known)
  M.fail("%s: unknown setting '%s'%s", source, key,
    #near > 0 and (" (did you mean " .. table.concat(near, ", ") .. "?)") or
    (" (settings: " .. table.concat(known, ", ") .. ")"))
end

-- An integer-valued number as an integer, or nil.
local function as_integer(v)
  if math.type(v) == "integer" then return v end
  if type(v) == "number" and v == math.floor(v) and math.abs(v) < 2 ^ 53 then return math.tointeger(v) end
  return nil
end

-- `v` converted to the type of `old` (the default), or nil and what was expected.
local function conform(old, v)
  local t = type(old)
  if t == "string" then
    if type(v) == "string" then return v end
    if type(v) == "number" or type(v) == "boolean" then return util.num(v) end
    return nil, "a string"
  elseif t == "number" then
    if type(v) ~= "number" then return nil, describe_type(old) end
    if math.type(old) == "integer" then
      local i = as_integer(v)
      if not i then return nil, "an integer" end
      return i
    end
    return v
  elseif t == "boolean" then
    if type(v) ~= "boolean" then return nil, "a boolean (true or false)" end
    return v
  elseif is_list(old) then
    if not is_list(v) then return nil, "a list" end
    local proto = old[1]
    if proto == nil or type(proto) == "table" then return v end
    local out = {}
    for i, x in ipairs(v) do
      local c = conform(proto, x)
      if c == nil then return nil, "a list of " .. describe_type(proto):gsub("^an? ", "") .. "s" end
      out[i] = c
    end
    return out
  end
  return nil, describe_type(old)   -- a table of settings: set its keys one by one
end

-- A setting in opts.whole is a map of the user's own names (OOD sets by name, say), so it is
-- replaced as a whole rather than key by key; whole[key](v) returns the value to store, or
-- nil and what it expected. `key.name=v` adds or replaces one entry of it.
local function set_whole(state, key, v, source, text)
  local c, expected = state.whole[key](v)
  if c == nil then M.fail("%s: setting '%s' expects %s, got %s", source, key, expected, text or show(v)) end
  local node, parent, last = state.cfg, nil, nil
  for part in key:gmatch("[^.]+") do parent, last, node = node, part, node[part] end
  parent[last] = c
  state.source[key] = source
end

local function whole_entry(state, key, v, source, text)
  local parent, name = key:match("^(.*)%.([^.]+)$")
  if not (parent and state.whole[parent]) then return false end
  local node = state.cfg
  for part in parent:gmatch("[^.]+") do node = node[part] end
  local copy = util.copy(node)
  copy[name] = v
  set_whole(state, parent, copy, source, text and (name .. "=" .. text))
  return true
end

-- Set one dotted key from `source` (a file name, "command line", ...); `text` is what the
-- user wrote, for the message.
local function set_key(state, key, v, source, text)
  if state.whole[key] then return set_whole(state, key, v, source, text) end
  if whole_entry(state, key, v, source, text) then return end
  local node, parts = state.cfg, {}
  for part in key:gmatch("[^.]+") do parts[#parts + 1] = part end
  for i = 1, #parts - 1 do
    node = node[parts[i]]
    if not is_map(node) then unknown(state.cfg, key, source) end
  end
  local last = parts[#parts]
  local old = node[last]
  if old == nil then unknown(state.cfg, key, source) end
  local c, expected = conform(old, v)
  if c == nil then
    M.fail("%s: setting '%s' expects %s (like its default %s), got %s", source, key, expected,
      show(old), text or show(v))
  end
  node[last] = c
  state.source[key] = source
end

-- Lay the nested table `over` onto the settings, leaf by leaf, every value checked.
local function merge(state, over, source, prefix)
  if type(over) ~= "table" or (not is_map(over) and next(over) ~= nil) then
    M.fail("%s: expected a mapping of settings%s", source, prefix and (" under '" .. prefix .. "'") or "")
  end
  for _, k in ipairs(util.sorted_keys(over)) do
    local v, key = over[k], prefix and (prefix .. "." .. tostring(k)) or tostring(k)
    local here = state.cfg
    for part in key:gmatch("[^.]+") do here = type(here) == "table" and here[part] or nil end
    if state.whole[key] then set_key(state, key, v, source)
    elseif is_map(here) and type(v) == "table" and next(v) == nil then -- `model: {}` changes nothing
    elseif is_map(here) and type(v) == "table" and is_map(v) then merge(state, v, source, key)
    else set_key(state, key, v, source) end
  end
end

local function parse_value(text)
  local ok, v = pcall(function() return yaml().decode("v: " .. text).v end)
  if ok and v ~= nil then return v end
  return text
end

local function load_yaml(path, what)
  if not util.exists(path) then M.fail("%s: %s not found", what, path) end
  local ok, v = pcall(yaml().load, path)
  if not ok then M.fail("%s", tostring(v)) end   -- the reader names file, line and column
  if v == nil then v = {} end
  if type(v) ~= "table" then M.fail("%s: expected a mapping of settings, got %s", path, describe_type(v)) end
  return v
end

-- Apply one "key=value" to cfg (in place). `source` names where it came from.
function M.set(cfg, assignment, source)
  check.arg("kiln.config.set", "cfg", cfg, "table")
  check.arg("kiln.config.set", "assignment", assignment, "string")
  check.arg("kiln.config.set", "source", source, "?string")
  local key, text = assignment:match("^([%w_%.%-]+)=(.*)$")
  if not key then M.fail("%s: '%s' is not a key=value setting", source or "command line", assignment) end
  set_key({ cfg = cfg, source = {}, whole = {} }, key, parse_value(text), source or "command line", "'" .. text .. "'")
  return cfg
end

-- Ranges ----------------------------------------------------------------------------------
-- rules[key] = { min =, max =, above = (exclusive minimum), one_of = {...}, check = f(v) -> msg }
local function check_rule(state, key, rule)
  local node = state.cfg
  for part in key:gmatch("[^.]+") do node = type(node) == "table" and node[part] or nil end
  if node == nil then error(("config.resolve: rule for '%s', which the defaults do not have"):format(key), 3) end
  local values = is_list(node) and node or { node }
  local where = state.source[key] or state.origin
  for _, v in ipairs(values) do
    local bad
    if rule.min and v < rule.min then bad = ">= " .. util.num(rule.min)
    elseif rule.above and v <= rule.above then bad = "> " .. util.num(rule.above)
    elseif rule.max and v > rule.max then bad = "<= " .. util.num(rule.max)
    elseif rule.one_of then
      bad = "one of " .. table.concat(rule.one_of, ", ")
      for _, o in ipairs(rule.one_of) do if v == o then bad = nil end end
    elseif rule.check then bad = rule.check(v) end
    if bad then M.fail("%s: setting '%s' must be %s, got %s", where, key, bad, show(v)) end
  end
end

-- resolve(defaults, args [, opts]) -> settings [, positional]. defaults: a table or a YAML
-- path; args: an array of strings (usually the script's `arg`). opts.positional: keep
-- arguments without '=' (returned second) instead of refusing them. opts.rules: ranges.
-- opts.origin: what to call table defaults in messages (default "defaults"); opts.renamed:
-- {old = "new"} for settings that changed name.
function M.resolve(defaults, args, opts)
  local who = "kiln.config.resolve"
  check.arg(who, "defaults", defaults, "table|string")
  check.arg(who, "args", args, "?table")
  check.arg(who, "opts", opts, "?table")
  for i, a in ipairs(args or {}) do check.arg(who, ("args[%d]"):format(i), a, "string") end
  opts = opts or {}
  local cfg, origin
  if type(defaults) == "string" then
    cfg, origin = load_yaml(defaults, "settings"), defaults
  elseif type(defaults) == "table" then
    cfg, origin = util.copy(defaults), opts.origin or "defaults"
  else
    error("config.resolve: defaults must be a table or a YAML file path", 2)
  end
  for key, f in pairs(opts.whole or {}) do
    if type(f) ~= "function" then error(("config.resolve: opts.whole['%s'] must be a function"):format(key), 2) end
  end
  local state = { cfg = cfg, source = {}, origin = origin, whole = opts.whole or {} }
  local assignments, files, positional = {}, {}, {}
  for _, a in ipairs(args or {}) do
    local key, text = a:match("^([%w_%.%-]+)=(.*)$")
    if key == "config" then files[#files + 1] = text
    elseif key and (opts.renamed or {})[key] then
      M.fail("command line: setting '%s' is now '%s'", key, opts.renamed[key])
    elseif key then assignments[#assignments + 1] = { key = key, text = text }
    elseif opts.positional then positional[#positional + 1] = a
    else M.fail("command line: '%s' is not a key=value setting", a) end
  end
  for _, path in ipairs(files) do merge(state, load_yaml(path, "config="), path) end
  -- The quick profile sits between the files and the command line, so quick=true on the
  -- command line selects it and any explicit key=value still wins over it.
  local quick = cfg.quick
  for _, a in ipairs(assignments) do
    if a.key == "quick" then quick = parse_value(a.text) end
  end
  if quick == true and is_map(cfg.quick_settings) then
    merge(state, util.copy(cfg.quick_settings), origin .. ": quick_settings")
  end
  for _, a in ipairs(assignments) do
    set_key(state, a.key, parse_value(a.text), "command line", "'" .. a.text .. "'")
  end
  for _, key in ipairs(util.sorted_keys(opts.rules or {})) do check_rule(state, key, opts.rules[key]) end
  return cfg, positional
end

return M
