-- kiln diff RUN_A RUN_B — two runs side by side: differing settings, status, final metrics
--
-- Every fingerprint setting that differs (with both values), then status, steps and the
-- final metrics of each.
local rundir = require "kiln.rundir"
local fingerprint = require "kiln.fingerprint"
local util = require "kiln.util"

local USAGE = "usage: kiln diff RUN_A RUN_B"

local function show(v)
  if v == nil then return "(absent)" end
  return type(v) == "number" and util.num(v) or tostring(v)
end

return function(...)
  local args = { ... }
  if #args ~= 2 then error(USAGE, 0) end
  local a, b = rundir.inspect(args[1]), rundir.inspect(args[2])
  local rows = { { "setting", args[1], args[2] } }
  if a.fingerprint and b.fingerprint then
    local diffs = fingerprint.diff(a.fingerprint, b.fingerprint)
    for _, d in ipairs(diffs) do rows[#rows + 1] = { d.key, show(d.old), show(d.new) } end
    if #diffs == 0 then rows[#rows + 1] = { "(fingerprints)", "identical", "identical" } end
  else
    rows[#rows + 1] = { "fingerprint", a.fingerprint and "present" or "(none: older run)",
                        b.fingerprint and "present" or "(none: older run)" }
  end
  rows[#rows + 1] = { "status", a.status, b.status }
  rows[#rows + 1] = { "steps", ("%d/%s"):format(a.steps_done, show(a.steps_planned)), ("%d/%s"):format(b.steps_done, show(b.steps_planned)) }
  local names, seen = {}, {}
  for _, info in ipairs { a, b } do
    for _, n in ipairs(info.eval_names) do if not seen[n] then seen[n] = true; names[#names + 1] = n end end
  end
  table.sort(names)
  for _, n in ipairs(names) do
    local function cell(info)
      local v = info.eval[n]
      if not v then return "-" end
      local se = info.eval_se and info.eval_se[n]
      return se and ("%.4f ± %.4f"):format(v, se) or ("%.4f"):format(v)
    end
    rows[#rows + 1] = { n .. "_loss", cell(a), cell(b) }
  end
  if a.final_loss or b.final_loss then rows[#rows + 1] = { "final_loss", show(a.final_loss), show(b.final_loss) } end
  rundir.print_table(rows)
end
