-- kiln — the module researchers require. The C core's functions (tensors, models, AdamW,
-- datasets, checkpoints, YAML) come from `kiln.core`; the Lua library (schedules,
-- weightings, the training loop, suites, ...) loads on first use as `kiln.<name>`, so
-- `kiln.schedule.cosine{...}` works without a separate require.
local core = require "kiln.core"

local kiln = {}
for k, v in pairs(core) do kiln[k] = v end
kiln.core = core
-- Datasets open with their tokenizer (given, or the tokenizer.json beside a token file).
kiln.dataset = function(path, opts) return require("kiln.data").open(path, opts) end

-- kiln.try_load(path [, opts]) -> model, meta | nil, message  (kiln.load raises instead)
function kiln.try_load(path, opts)
  local ok, model, meta = pcall(kiln.load, path, opts)
  if ok then return model, meta end
  return nil, model
end

setmetatable(kiln, {
  __index = function(t, k)
    if type(k) ~= "string" or not k:match("^[%a_][%w_]*$") then return nil end
    local name = "kiln." .. k
    local ok, mod = pcall(require, name)
    if ok then
      rawset(t, k, mod)
      return mod
    end
    -- A module that exists but fails to load is an error worth seeing; a missing one is nil.
    if not tostring(mod):find("module '" .. name .. "' not found", 1, true) then error(mod, 2) end
    return nil
  end,
})

return kiln
