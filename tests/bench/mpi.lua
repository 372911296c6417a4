-- tests/bench/mpi.lua — data-parallel throughput on config M (6 layers, d 256, 8 heads,
-- T 256, global batch 16) and the cost of the gradient all-reduce. Not part of `make test`.
--
--   build/kiln tests/bench/mpi.lua threads=1                       one process, 1 thread
--   build/kiln tests/bench/mpi.lua threads=2                       one process, 2 threads
--   mpirun -np 2 build-mpi/kiln tests/bench/mpi.lua threads=1      2 ranks x 1 thread
--
-- Prints tokens/s (median over the steps, global tokens), the all-reduce time per step as
-- kiln.train measures it (including waiting for the slower rank), and the all-reduce of the
-- same buffer alone, after a barrier (the transfer itself), and a barrier alone (the handshake
-- that starts every kiln.mpi collective, see lua/l_mpi.c).
local kiln = require "kiln"
local o = { threads = 1, steps = 10, data = "data/austen/train.txt", batch = 16 }
for _, a in ipairs(arg or {}) do
  local k, v = a:match("^([%w_]+)=(.*)$")
  if not k or o[k] == nil then error("tests/bench/mpi.lua: expected threads=, steps=, data=, batch= (got " .. a .. ")", 0) end
  o[k] = tonumber(v) or v
end
kiln.set_threads(o.threads)
local mpi = kiln.mpi
local cfg = { vocab_size = 256, block_size = 256, n_layer = 6, n_head = 8, n_embd = 256, seed = 1 }
local s = kiln.train {
  model = cfg, optimizer = { lr = 1e-3 }, data = kiln.dataset(o.data), steps = o.steps,
  batch = o.batch, context = 256, seed = 1, quiet = true,
}
local g = s.model:flat_grads()
local times = {}
for i = 1, 20 do
  mpi.barrier()
  local t0 = kiln.clock()
  mpi.allreduce(g, "mean")
  times[i] = kiln.clock() - t0
end
table.sort(times)
local hand = {}
for i = 1, 1000 do
  mpi.barrier()
  local t0 = kiln.clock()
  mpi.barrier()
  hand[i] = kiln.clock() - t0
end
table.sort(hand)
local load = (io.open("/proc/loadavg") or { read = function() return "?" end }):read("l") or "?"
print(("config M, %d rank(s) x %d thread(s), batch %d: %d tokens/s; all-reduce in training %s ms/step; "
  .. "all-reduce alone %.1f ms (%d floats); barrier %.1f us; load %s"):format(
  mpi.size(), o.threads, o.batch, s.tokens_per_s,
  s.allreduce_ms and ("%.1f"):format(s.allreduce_ms) or "-",
  mpi.size() > 1 and times[10] * 1000 or 0, s.model:num_params(), mpi.size() > 1 and hand[500] * 1e6 or 0,
  load:match("^(%S+)")))
