-- experiments/continual/same_data.lua — see same_data.yaml for the arms and common.yaml for the shared
-- settings; the protocol, tables and plots are in common.lua.
--   kiln experiments/continual/same_data.lua [quick=true] [key=value ...]
local here = (arg and arg[0] and arg[0]:match("^(.*)/[^/]*$")) or "experiments/continual"
local common = dofile(here .. "/common.lua")
common.main("same_data", arg)
