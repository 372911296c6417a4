-- setup.lua — the opening the experiment scripts share (mutransfer, warmstart, reweighting):
-- settings from <name>.yaml beside the script, config=FILE, the quick profile and the
-- command line (kiln.config's layering), the thread count, and a clear stop when the data
-- is missing. Load it relative to the script:
--
--   local here = (arg and arg[0] or "experiments/x.lua"):match("^(.*)/[^/]*$") or "."
--   local setup = dofile(here .. "/lib/setup.lua")
local kiln = require "kiln"
local util = require "kiln.util"

local M = {}

-- The settings of experiment `name`: <here>/<name>.yaml < config=FILE < its quick_settings
-- (with quick=true) < key=value. `rules` are kiln.config ranges. Sets the thread count when
-- threads > 0.
function M.config(here, name, args, rules)
  local cfg = kiln.config.resolve(here .. "/" .. name .. ".yaml", args, { rules = rules })
  if cfg.threads > 0 then kiln.set_threads(cfg.threads) end
  return cfg
end

-- Stops (naming the experiment and the file) at the first of cfg.data[role] for `roles`
-- that does not exist. `hint` goes in the parentheses after "run `make data` first".
function M.require_data(name, cfg, roles, hint)
  for _, role in ipairs(roles) do
    if not util.exists(cfg.data[role]) then
      kiln.config.fail("%s: %s is missing; run `make data` first (%s)", name, cfg.data[role], hint or "see docs/data.md")
    end
  end
end

-- Ranges shared by the scripts' settings.
M.positive = { min = 1 }          -- counts: steps, batch sizes, windows, widths
M.count = { min = 0 }             -- may be 0: warmup steps, threads
M.rate = { above = 0 }            -- learning rates
M.fraction = { min = 0, max = 1 }

return M
