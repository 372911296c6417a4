-- kiln runs DIR — list the runs under DIR: status, steps, final losses, fingerprint
--
-- A run is every directory holding a config.yaml; steps are done of planned, losses the final
-- evaluation's, the fingerprint its digest.
--
--   status: complete / failed / stopped (from summary.yaml), running (its lock is held by a
--   live process), partial (checkpoints but no summary), new (nothing trained yet).
local kiln = require "kiln"
local rundir = require "kiln.rundir"

local USAGE = "usage: kiln runs DIR"

local function row_of(dir)
  local ok, info = pcall(rundir.inspect, dir)
  if not ok then
    local why = tostring(info):gsub("\n.*", "")
    return { dir, "unreadable", "-", #why > 70 and why:sub(1, 67) .. "..." or why, "-" }
  end
  local evals = {}
  for _, name in ipairs(info.eval_names) do evals[#evals + 1] = ("%s %.4f"):format(name, info.eval[name]) end
  return { dir, info.status, ("%d/%s"):format(info.steps_done, tostring(info.steps_planned or "?")),
           table.concat(evals, "  "), info.digest and info.digest:sub(1, 12) or "-" }
end

return function(...)
  local args = { ... }
  if #args ~= 1 or args[1] == "-h" or args[1] == "--help" then error(USAGE, 0) end
  local root = args[1]:gsub("/+$", "")
  local dirs = rundir.find(root)
  if #dirs == 0 then print(("no runs under %s (a run is a directory with a config.yaml)"):format(root)); return end
  local rows = { { "run", "status", "steps", "final eval", "fingerprint" } }
  for _, d in ipairs(dirs) do rows[#rows + 1] = row_of(d) end
  rundir.print_table(rows)
  if kiln.isatty(1) then print(("%d run%s"):format(#dirs, #dirs == 1 and "" or "s")) end
end
