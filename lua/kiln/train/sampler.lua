-- kiln.train.sampler — the training batches: each row picks its dataset from the mixture with
-- the run's rng, then a random window of it. Under mpirun every rank draws all B rows from the
-- shared rng, so the global batch is the single-process one, and keeps its own rows; the
-- others go to a scratch batch. Nothing is allocated per step.
local kiln = require "kiln"

local M = {}

-- new(p, batch, rng) -> fill(): fills `batch` with this rank's rows of the next global batch.
function M.new(p, batch, rng)
  local data, B, local_B = p.data, p.B, p.local_B
  local nranks = p.nranks
  local lo, hi = p.rank * local_B + 1, (p.rank + 1) * local_B
  local scratch = nranks > 1 and kiln.batch(local_B, p.T) or nil

  -- Draw rows first .. first+count-1 of the global batch from ds.
  local function draw(ds, first, count)
    local row, last = first, first + count - 1
    while row <= last do
      local n
      if row < lo then
        n = math.min(lo - 1, last, row + local_B - 1) - row + 1
        ds:sample(scratch, rng, 1, n)
      elseif row <= hi then
        n = math.min(hi, last) - row + 1
        ds:sample(batch, rng, row - lo + 1, n)
      else
        n = math.min(last, row + local_B - 1) - row + 1
        ds:sample(scratch, rng, 1, n)
      end
      row = row + n
    end
  end

  local counts = {}
  return function()
    if #data == 1 then
      if nranks > 1 then draw(data[1].dataset, 1, B) else data[1].dataset:sample(batch, rng) end
      return
    end
    for i = 1, #data do counts[i] = 0 end
    for _ = 1, B do
      local u, acc, pick = rng:uniform(), 0, #data
      for i, d in ipairs(data) do
        acc = acc + d.weight
        if u < acc then pick = i; break end
      end
      counts[pick] = counts[pick] + 1
    end
    local row = 1
    for i, d in ipairs(data) do
      if counts[i] > 0 then draw(d.dataset, row, counts[i]); row = row + counts[i] end
    end
  end
end

return M
