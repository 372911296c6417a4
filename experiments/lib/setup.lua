-- setup.lua — the opening the experiment scripts share (mutransfer, warmstart, reweighting):
-- settings from <name>.yaml beside the script and the command line, the quick setting, the
-- thread count, and a clear stop when the data is missing. Load it relative to the script:
--
--   local here = (arg and arg[0] or "experiments/x.lua"):match("^(.*)/[^/]*$") or "."
--   local setup = dofile(here .. "/lib/setup.lua")
local kiln = require "kiln"
local util = require "kiln.util"

local M = {}

-- The settings of experiment `name` from <here>/<name>.yaml and the command line `args`.
-- With quick=true: the yaml's quick_settings laid over its defaults, then the command line
-- again so explicit overrides still win, and "-quick" appended to out. Sets the thread count
-- when threads > 0.
function M.config(here, name, args)
  local yaml_path = here .. "/" .. name .. ".yaml"
  local cfg = kiln.config.resolve(yaml_path, args)
  if cfg.quick then
    local base = kiln.yaml.load(yaml_path)
    local function overlay(dst, src)
      for k, v in pairs(src) do
        if type(v) == "table" and #v == 0 and type(dst[k]) == "table" then overlay(dst[k], v) else dst[k] = v end
      end
    end
    overlay(base, base.quick_settings)
    cfg = kiln.config.resolve(base, args)
    cfg.out = cfg.out .. "-quick"
  end
  if cfg.threads > 0 then kiln.set_threads(cfg.threads) end
  return cfg
end

-- Stops (naming the experiment and the file) at the first of cfg.data[role] for `roles`
-- that does not exist. `hint` goes in the parentheses after "run `make data` first".
function M.require_data(name, cfg, roles, hint)
  for _, role in ipairs(roles) do
    if not util.exists(cfg.data[role]) then
      error(("%s: %s is missing; run `make data` first (%s)")
        :format(name, cfg.data[role], hint or "see docs/data.md"), 0)
    end
  end
end

return M
