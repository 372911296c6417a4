-- kiln.rundir — reading run directories: finding them, their newest checkpoint, and what
-- state they are in. (kiln.train writes them; `kiln runs` and `kiln diff` read them.)
--
--   rundir.find(root)               -> sorted list of run directories under root (root too)
--   rundir.newest_checkpoint(dir)   -> path, step   (nil, -1 when there is none)
--   rundir.print_table(rows)       prints rows of strings as aligned columns
--   rundir.inspect(dir)             -> {status, steps_done, steps_planned, eval = {set = loss},
--                                       eval_names, eval_se, final_loss, fingerprint, digest}
local kiln = require "kiln"
local check = require "kiln.check"
local lfs = require "lfs"

local M = {}

local function fail(fmt, ...) error("kiln.rundir: " .. fmt:format(...), 0) end

local function is_dir(path) return lfs.attributes(path, "mode") == "directory" end
local function is_file(path) return lfs.attributes(path, "mode") == "file" end

function M.find(root)
  if type(root) ~= "string" then fail("find: argument 'root' must be a directory path, got %s", type(root)) end
  if not is_dir(root) then fail("find: '%s' is not a directory", root) end
  local out = {}
  local function walk(dir)
    if is_file(dir .. "/config.yaml") then out[#out + 1] = dir end
    local names = {}
    for name in lfs.dir(dir) do
      if name ~= "." and name ~= ".." and name ~= "checkpoints" then names[#names + 1] = name end
    end
    table.sort(names)
    for _, name in ipairs(names) do
      local p = dir .. "/" .. name
      if lfs.symlinkattributes(p, "mode") == "directory" then walk(p) end
    end
  end
  walk(root)
  return out
end

function M.newest_checkpoint(dir)
  check.string("kiln.rundir.newest_checkpoint", "dir", dir, true)
  local best, best_step = nil, -1
  local cdir = dir .. "/checkpoints"
  if not is_dir(cdir) then return nil, -1 end
  for name in lfs.dir(cdir) do
    local s = name:match("^step_(%d+)%.safetensors$")
    if s and tonumber(s) > best_step then best, best_step = cdir .. "/" .. name, tonumber(s) end
  end
  return best, best_step
end

local function load_yaml(path)
  if not is_file(path) then return nil end
  local ok, v = pcall(kiln.yaml.load, path)
  if not ok then fail("%s", v) end
  return v
end

-- Status from the files alone; "running" needs the lock file's pid to be alive.
local function status_of(dir, summary, ckpt)
  if summary then return summary.status or "complete" end
  local holder = kiln.lock_holder(dir .. "/lock")
  if holder then return "running (pid " .. holder .. ")" end
  return ckpt and "partial" or "new"
end

-- Print rows (lists of strings) as left-aligned columns, trailing blanks trimmed.
function M.print_table(rows)
  check.list("kiln.rundir.print_table", "rows", rows, "table")
  local width = {}
  for _, r in ipairs(rows) do
    for i, c in ipairs(r) do width[i] = math.max(width[i] or 0, utf8.len(c) or #c) end
  end
  for _, r in ipairs(rows) do
    local cells = {}
    for i, c in ipairs(r) do cells[i] = c .. string.rep(" ", width[i] - (utf8.len(c) or #c)) end
    print((table.concat(cells, "  "):gsub("%s+$", "")))
  end
end

function M.inspect(dir)
  if type(dir) ~= "string" then fail("inspect: argument 'dir' must be a run directory, got %s", type(dir)) end
  dir = dir:gsub("/+$", "")
  local config = load_yaml(dir .. "/config.yaml")
  if not config then fail("'%s' is not a run directory (no config.yaml)", dir) end
  local summary = load_yaml(dir .. "/summary.yaml")
  local ckpt, ckpt_step = M.newest_checkpoint(dir)
  local fp = config.fingerprint
  local info = {
    status = status_of(dir, summary, ckpt),
    steps_done = summary and summary.steps or math.max(ckpt_step, 0),
    steps_planned = config.train and config.train.steps,
    eval = summary and summary.eval or {},
    eval_se = summary and summary.eval_se or nil,
    final_loss = summary and summary.final_loss or nil,
    fingerprint = fp and fp.settings or nil,
    digest = fp and fp.digest or nil,
    eval_names = {},
  }
  for name in pairs(info.eval) do info.eval_names[#info.eval_names + 1] = name end
  table.sort(info.eval_names)
  return info
end

return M
