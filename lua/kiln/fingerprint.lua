-- kiln.fingerprint — a run's identity is what it computes. A fingerprint is a flat table of
-- named settings (strings, numbers, booleans) plus a digest over all of them:
--
--   model.<field>                 the model config
--   train.steps/batch/context/accumulate/seed
--   lr.steps, lr.sha256, lr.first, lr.max, lr.last
--                                 the learning rate at every step of the budget, so a schedule
--                                 written as a Lua function is identified by its values
--   weighting.sha256/min/max/normalize
--                                 the per-position weight vector ("uniform" when there is none)
--   data.<name>.path/bytes/sha256/weight, eval.<name>.path/bytes/sha256, eval.windows
--   optimizer.<field>             AdamW hyperparameters
--   start.path/sha256             the checkpoint a continuation starts from (when there is one)
--   tokenizer.sha256              the tokenizer of token data (when there is one)
--   average.<field>               weight averaging (kind, decay, every, start, warmup), if any
--
--   local fp = fingerprint.compute(spec)     -> {settings = {...}, digest = "hex"}
--   local diffs = fingerprint.diff(old, new) -> {{key=, old=, new=}, ...} (sorted by key)
--   fingerprint.describe(diffs)              -> "train.steps: 500 -> 700; lr.sha256: ..."
local kiln = require "kiln"
local check = require "kiln.check"
local util = require "kiln.util"

local M = {}

local function fail(fmt, ...) error("kiln.fingerprint: " .. fmt:format(...), 0) end

-- Exact text of a number (hexadecimal floats are exact and short to hash).
local function exact(x) return math.type(x) == "integer" and tostring(x) or ("%a"):format(x) end

local function hash_numbers(xs)
  local parts = {}
  for i = 1, #xs do parts[i] = exact(xs[i]) end
  return kiln.sha256(table.concat(parts, "\n"))
end

-- Files are identified by size and content hash (SHA-256 runs at about 1 GB/s here, so even
-- a large corpus costs little at each start; no cache: a file rewritten within the same second
-- must not keep its old identity).
local function file_identity(path)
  local ok, hex, bytes = pcall(kiln.sha256_file, path)
  if not ok then fail("cannot read data file '%s': %s", path, tostring(hex)) end
  return bytes, hex
end

local function add_table(settings, prefix, t)
  for _, k in ipairs(util.sorted_keys(t)) do
    local v = t[k]
    local tv = type(v)
    if tv == "number" or tv == "string" or tv == "boolean" then settings[prefix .. k] = v
    elseif tv == "table" then add_table(settings, prefix .. k .. ".", v) end
  end
end

local function add_lr(settings, lr)
  if type(lr) ~= "table" then fail("spec.lr must be the list of learning rates, one per step") end
  local maxv = -math.huge
  for i = 1, #lr do
    local x = lr[i]
    if type(x) ~= "number" or x ~= x then fail("spec.lr[%d] is %s, expected a number", i, x ~= x and "nan" or tostring(x)) end
    if x > maxv then maxv = x end
  end
  settings["lr.steps"] = #lr
  settings["lr.sha256"] = hash_numbers(lr)
  if #lr > 0 then settings["lr.first"], settings["lr.max"], settings["lr.last"] = lr[1], maxv, lr[#lr] end
end

local function add_weighting(settings, weights, normalize)
  if weights == nil then settings["weighting"] = "uniform"; return end
  local lo, hi = math.huge, -math.huge
  for i = 1, #weights do lo, hi = math.min(lo, weights[i]), math.max(hi, weights[i]) end
  settings["weighting.sha256"] = hash_numbers(weights)
  settings["weighting.min"], settings["weighting.max"] = lo, hi
  settings["weighting.normalize"] = normalize and true or false
end

local function add_files(settings, prefix, list, with_weight)
  for _, d in ipairs(list or {}) do
    local p = prefix .. d.name .. "."
    local size, h = file_identity(d.path)
    settings[p .. "path"], settings[p .. "bytes"], settings[p .. "sha256"] = d.path, size, h
    if with_weight then settings[p .. "weight"] = d.weight end
  end
end

-- The canonical text the digest covers: one "key=value" line per setting, sorted by key.
local function canonical(settings)
  local lines = {}
  for _, k in ipairs(util.sorted_keys(settings)) do
    local v = settings[k]
    lines[#lines + 1] = k .. "=" .. (type(v) == "number" and exact(v) or tostring(v))
  end
  return table.concat(lines, "\n")
end

function M.compute(spec)
  if type(spec) ~= "table" then fail("compute: argument 'spec' must be a table, got %s", type(spec)) end
  local s = {}
  add_table(s, "model.", spec.model or {})
  add_table(s, "train.", { steps = spec.steps, batch = spec.batch, context = spec.context,
                           accumulate = spec.accumulate, seed = spec.seed })
  add_lr(s, spec.lr or {})
  add_weighting(s, spec.weights, spec.normalize)
  add_files(s, "data.", spec.data, true)
  add_files(s, "eval.", spec.eval)
  if spec.eval_windows then s["eval.windows"] = spec.eval_windows end
  if spec.final_windows then s["eval.final_windows"] = spec.final_windows end
  add_table(s, "optimizer.", spec.optimizer or {})
  if spec.start then s["start.path"], s["start.sha256"] = spec.start.path, spec.start.sha256 end
  if spec.tokenizer then s["tokenizer.sha256"] = spec.tokenizer end
  if spec.average then add_table(s, "average.", spec.average) end
  return { settings = s, digest = kiln.sha256(canonical(s)) }
end

-- The settings that differ between two fingerprints (either may lack a key).
function M.diff(old, new)
  if type(old) ~= "table" or type(new) ~= "table" then fail("diff: arguments must be fingerprints") end
  local a, b = old.settings or old, new.settings or new
  local keys, seen = {}, {}
  for k in pairs(a) do keys[#keys + 1] = k; seen[k] = true end
  for k in pairs(b) do if not seen[k] then keys[#keys + 1] = k end end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do
    local x, y = a[k], b[k]
    local same = x == y
    if not same and type(x) == "number" and type(y) == "number" then same = exact(x) == exact(y) end
    if not same then out[#out + 1] = { key = k, old = x, new = y } end
  end
  return out
end

local function show(v)
  if v == nil then return "(absent)" end
  if type(v) == "string" and #v == 64 and v:match("^%x+$") then return v:sub(1, 12) .. "…" end
  return type(v) == "number" and util.num(v) or tostring(v)
end

function M.describe(diffs)
  check.list("kiln.fingerprint.describe", "diffs", diffs, "table")
  local parts = {}
  for _, d in ipairs(diffs) do parts[#parts + 1] = ("%s: %s -> %s"):format(d.key, show(d.old), show(d.new)) end
  return table.concat(parts, "; ")
end

return M
