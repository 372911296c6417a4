-- experiments/continual/warmup_length.lua — see warmup_length.yaml for the arms and common.yaml for the shared
-- settings; the protocol, tables and plots are in common.lua.
--   kiln experiments/continual/warmup_length.lua [quick=true] [key=value ...]
local here = (arg and arg[0] and arg[0]:match("^(.*)/[^/]*$")) or "experiments/continual"
local common = dofile(here .. "/common.lua")
common.main("warmup_length", arg)
