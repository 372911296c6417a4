-- kiln.config — an experiment's settings: defaults from a Lua table or a YAML file, then
-- `key=value` overrides from the command line (dotted keys reach into nested tables:
-- `train.steps=200`). The resolved table is what a run records in config.yaml.
--
--   local cfg = kiln.config.resolve("experiments/reweighting.yaml", arg)
--   local cfg = kiln.config.resolve({ steps = 100, model = { n_layer = 2 } }, { "model.n_layer=4" })
--
-- Rules: an override must name a setting that exists in the defaults (a typo is an error
-- that lists the close matches); its value is read as YAML (`3e-4` a number, `true` a
-- boolean, `[1, 2]` a list, anything else a string) and must have the default's type
-- (numbers for numbers, ...), except where the default is the string "" or nil-like `~`.
-- `config=path.yaml` as the first override layers another YAML file over the defaults.
local util = require "kiln.util"

local M = {}

local function yaml() return require("kiln").yaml end

local function describe_type(v)
  if type(v) == "number" then return math.type(v) == "integer" and "an integer" or "a number" end
  if type(v) == "table" then return #v > 0 and "a list" or "a table" end
  return "a " .. type(v)
end

-- Every dotted key of a nested table (lists are leaves).
local function leaves(t, prefix, out)
  out = out or {}
  for _, k in ipairs(util.sorted_keys(t)) do
    local v, key = t[k], prefix and (prefix .. "." .. tostring(k)) or tostring(k)
    if type(v) == "table" and #v == 0 and next(v) ~= nil then leaves(v, key, out) else out[#out + 1] = key end
  end
  return out
end
M.leaves = leaves

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

local function unknown(cfg, key, source)
  local known = leaves(cfg)
  local near = suggest(key, known)
  error(("%s: unknown setting '%s'%s"):format(source or "override", key,
    #near > 0 and (" (did you mean " .. table.concat(near, ", ") .. "?)") or
    (" (settings: " .. table.concat(known, ", ") .. ")")), 0)
end

local function parse_value(text)
  local ok, v = pcall(function() return yaml().decode("v: " .. text).v end)
  if ok and v ~= nil then return v end
  return text
end

-- Apply one "key=value" to cfg (in place). `source` names where it came from.
function M.set(cfg, assignment, source)
  local key, text = assignment:match("^([%w_%.%-]+)=(.*)$")
  if not key then
    error(("%s: '%s' is not a key=value setting"):format(source or "override", assignment), 0)
  end
  local node, parts = cfg, {}
  for part in key:gmatch("[^.]+") do parts[#parts + 1] = part end
  for i = 1, #parts - 1 do
    local nxt = node[parts[i]]
    if type(nxt) ~= "table" then
      unknown(cfg, key, source)
    end
    node = nxt
  end
  local last = parts[#parts]
  local old = node[last]
  if old == nil then
    unknown(cfg, key, source)
  end
  local v = parse_value(text)
  if type(old) == "number" and type(v) ~= "number" or
     type(old) == "boolean" and type(v) ~= "boolean" or
     type(old) == "table" and type(v) ~= "table" then
    error(("%s: setting '%s' expects %s (like its default %s), got '%s'"):format(
      source or "override", key, describe_type(old), util.num(type(old) == "table" and "[...]" or old), text), 0)
  end
  if type(old) == "number" and math.type(old) == "integer" and math.type(v) ~= "integer" then
    if v == math.floor(v) then v = math.tointeger(v) else
      error(("%s: setting '%s' expects an integer, got '%s'"):format(source or "override", key, text), 0)
    end
  end
  if type(old) == "string" and type(v) ~= "string" then v = text end
  node[last] = v
  return cfg
end

-- Layer `over` onto `base` (both nested tables), refusing keys base does not have.
local function merge(base, over, source, prefix)
  for k, v in pairs(over) do
    local key = prefix and (prefix .. "." .. tostring(k)) or tostring(k)
    if base[k] == nil then
      error(("%s: unknown setting '%s'"):format(source, key), 0)
    end
    if type(v) == "table" and type(base[k]) == "table" and #v == 0 and next(v) ~= nil then
      merge(base[k], v, source, key)
    else
      base[k] = v
    end
  end
end

-- resolve(defaults, args [, opts]) -> a new table. defaults: a table or a YAML path; args:
-- an array of "key=value" strings (usually the script's `arg`). Arguments without '='
-- are refused unless opts.positional is true (then returned as a second value).
function M.resolve(defaults, args, opts)
  opts = opts or {}
  local cfg
  if type(defaults) == "string" then
    cfg = yaml().load(defaults)
  elseif type(defaults) == "table" then
    cfg = util.copy(defaults)
  else
    error("config.resolve: defaults must be a table or a YAML file path", 2)
  end
  local positional = {}
  for i, a in ipairs(args or {}) do
    if i == 1 and a:match("^config=") then
      local path = a:sub(8)
      merge(cfg, yaml().load(path), path)
    elseif a:find("=", 1, true) then
      M.set(cfg, a, "command line")
    elseif opts.positional then
      positional[#positional + 1] = a
    else
      error(("command line: '%s' is not a key=value setting"):format(a), 0)
    end
  end
  return cfg, positional
end

return M
