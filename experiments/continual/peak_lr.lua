-- experiments/continual/peak_lr.lua — see peak_lr.yaml for the arms and common.yaml for the shared
-- settings; the protocol, tables and plots are in common.lua.
--   kiln experiments/continual/peak_lr.lua [quick=true] [key=value ...]
local here = (arg and arg[0] and arg[0]:match("^(.*)/[^/]*$")) or "experiments/continual"
local common = dofile(here .. "/common.lua")
common.main("peak_lr", arg)
