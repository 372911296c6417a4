-- tests/bench/mpi.lua — data-parallel throughput and how much of the gradient all-reduce the
-- backward hides. Not part of `make test`.
--
--   build/kiln tests/bench/mpi.lua cfg=M                                   1 process
--   mpirun -np 2 build-mpi/kiln tests/bench/mpi.lua cfg=M                  2 ranks
--   options: cfg=M|L threads=1 steps=4 (per mode) bucket_mb=4 data=data/austen/train.txt
--
-- A hand-written training step (zero_grad, forward, backward, gradient all-reduce, AdamW, as
-- kiln.train does) on config M (6 layers, d 256, 8 heads, T 256, global batch 16) or L (8,
-- 512, 8, 512, global batch 8); each rank takes batch / ranks rows. On several ranks the
-- steps alternate between two modes, so that both see the same load:
--   blocking   model:backward, then kiln.mpi.allreduce(grads, "mean") of the whole buffer
--   bucketed   kiln.mpi.backward(model, 1, "mean"): buckets reduced during the backward
-- Prints, per mode, the median step time (with every step's) and global tokens/s. For
-- blocking: the all-reduce time in the step, which includes waiting for the slower rank. For
-- bucketed: the wait after the backward, the handshake at the backward's first range (where
-- the ranks now wait for each other) and the time spent in MPI during the backward
-- (starting and testing buckets: Open MPI moves the data inside those calls). Then, per
-- mode, the time from the moment the last rank finished its backward to the reduced
-- gradient (the reduction that is left when nobody is computing any more: the share of it
-- that bucketing removes is the share hidden behind the backward), the all-reduce of the
-- whole buffer alone after a barrier, and a barrier alone (the handshake that starts every
-- kiln.mpi collective, see lua/l_mpi.c).
local kiln = require "kiln"
local o = { cfg = "M", threads = 1, steps = 4, bucket_mb = 4, data = "data/austen/train.txt" }
for _, a in ipairs(arg or {}) do
  local k, v = a:match("^([%w_]+)=(.*)$")
  if not k or o[k] == nil then
    error("tests/bench/mpi.lua: expected cfg=, threads=, steps=, bucket_mb=, data= (got " .. a .. ")", 0)
  end
  o[k] = tonumber(v) or v
end
local configs = {
  M = { model = { vocab_size = 256, block_size = 256, n_layer = 6, n_head = 8, n_embd = 256, seed = 1 }, batch = 16 },
  L = { model = { vocab_size = 256, block_size = 512, n_layer = 8, n_head = 8, n_embd = 512, seed = 1 }, batch = 8 },
}
local c = configs[o.cfg] or error("tests/bench/mpi.lua: cfg must be M or L (got " .. tostring(o.cfg) .. ")", 0)
kiln.set_threads(o.threads)
local mpi = kiln.mpi
local nranks = mpi.size()
mpi.set_bucket_size(o.bucket_mb * 2 ^ 20)
local T = c.model.block_size
local model = kiln.model(c.model)
local opt = kiln.adamw(model, { lr = 1e-4 })
local ds = kiln.dataset(o.data)
local rng = kiln.rng(1 + mpi.rank())
local batch = kiln.batch(c.batch // nranks, T)
local grads = model:flat_grads()
local hp = { lr = 1e-4 }

local function step(mode)
  ds:sample(batch, rng)
  local t0 = kiln.clock()
  model:zero_grad()
  local loss = model:forward(batch)
  local comm, shake, poll, backward_end, reduced
  if mode == "bucketed" then
    comm, _, shake, poll = mpi.backward(model, 1, "mean", "grads")
    reduced = kiln.clock()
    backward_end = reduced - comm
  else
    model:backward()
    backward_end = kiln.clock()
    if nranks > 1 then
      mpi.allreduce(grads, "mean", "grads")
      reduced = kiln.clock()
      comm = reduced - backward_end
    end
  end
  mpi.allreduce(loss, "mean", "loss")
  opt:step(hp)
  local dt = kiln.clock() - t0
  -- The time from the last rank's end of backward to the last rank's reduced gradient: the
  -- reduction left over once every rank is done, without the wait for the slower rank
  -- (the ranks share CLOCK_MONOTONIC on one machine; outside the timed step).
  local tail
  if nranks > 1 then
    local last = -math.huge
    for _, v in ipairs(mpi.allgather(("%.9f"):format(backward_end), "clock")) do last = math.max(last, tonumber(v)) end
    tail = mpi.allreduce(reduced - last, "max", "tail")   -- until every rank has its gradient
  end
  return dt, comm, shake, poll, tail
end

local function median(t)
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  local n = #s
  if n == 0 then return nil end
  return n % 2 == 1 and s[(n + 1) / 2] or (s[n / 2] + s[n / 2 + 1]) / 2
end

local modes = nranks > 1 and { "blocking", "bucketed" } or { "one process" }
local times, comms, shakes, polls, tails = {}, {}, {}, {}, {}
for _, m in ipairs(modes) do times[m], comms[m], tails[m] = {}, {}, {} end
step(modes[1])   -- warm-up: first touch of the arena and the optimizer state
for _ = 1, o.steps do
  for _, m in ipairs(modes) do
    local dt, comm, shake, poll, tail = step(m)
    times[m][#times[m] + 1] = dt
    comms[m][#comms[m] + 1] = comm
    tails[m][#tails[m] + 1] = tail
    if shake then shakes[#shakes + 1], polls[#polls + 1] = shake, poll end
  end
end

local alone = {}
if nranks > 1 then
  for i = 1, 10 do
    mpi.barrier()
    local t0 = kiln.clock()
    mpi.allreduce(grads, "mean")
    alone[i] = kiln.clock() - t0
  end
end
local hand = {}
if nranks > 1 then
  for i = 1, 1000 do
    mpi.barrier()
    local t0 = kiln.clock()
    mpi.barrier()   -- the handshake alone, which starts every kiln.mpi collective
    hand[i] = kiln.clock() - t0
  end
end
local load = (io.open("/proc/loadavg") or { read = function() return "?" end }):read("l") or "?"
local tokens = c.batch * T
print(("config %s, %d rank(s) x %d thread(s), global batch %d, %d floats of gradient, bucket %g MB, load %s"):format(
  o.cfg, nranks, o.threads, c.batch, model:num_params(), o.bucket_mb, load:match("^(%S+ %S+ %S+)")))
for _, m in ipairs(modes) do
  local st = median(times[m])
  local line = ("  %-11s step %.0f ms (runs: %s)  %.0f tokens/s"):format(m, st * 1000,
    table.concat((function() local r = {} for i, v in ipairs(times[m]) do r[i] = ("%.0f"):format(v * 1000) end return r end)(), " "),
    tokens / st)
  if m == "blocking" then line = line .. ("  all-reduce %.1f ms"):format(median(comms[m]) * 1000) end
  if m == "bucketed" then
    line = line .. ("  wait after backward %.1f ms, handshake %.1f ms, polls %.1f ms"):format(
      median(comms[m]) * 1000, median(shakes) * 1000, median(polls) * 1000)
  end
  print(line)
end
if nranks > 1 then
  local tb, tk = median(tails.blocking), median(tails.bucketed)
  print(("  after the last rank's backward: blocking %.1f ms, bucketed %.1f ms: hidden %.0f%%; all-reduce alone %.1f ms; barrier %.1f us"):format(
    tb * 1000, tk * 1000, 100 * (1 - tk / tb), median(alone) * 1000, median(hand) * 1e6))
end
