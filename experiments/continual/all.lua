-- experiments/continual/all.lua — the whole continual-pretraining study (warmup length, peak
-- LR with the constant and scratch baselines, re-warming on the same data, earlier
-- checkpoints) in one protocol directory, so shared phases (upstream, the 1x re-warm, scratch)
-- run once; writes each experiment's results.md/.csv, losses.dat/.gp/.png, and tables.md.
--   kiln experiments/continual/all.lua [quick=true] [key=value ...]
local here = (arg and arg[0] and arg[0]:match("^(.*)/[^/]*$")) or "experiments/continual"
local common = dofile(here .. "/common.lua")
common.main_all(arg)
