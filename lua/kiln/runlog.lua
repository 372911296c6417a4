-- kiln.runlog — the run directory kiln.train writes, and the rules that keep it whole:
--
--   * its identity is what it computes (kiln.fingerprint, in config.yaml): a start on a
--     directory whose fingerprint differs is refused, complete or not, naming each setting
--     with both values; restart = true moves the old run's files aside to <run_dir>.old-<n>/;
--   * one process at a time: the lock <run_dir>/lock is held for the run's duration;
--   * a start or resume removes the temporary files of dead writers and rebuilds metrics.csv,
--     positions.csv and timing.csv (header, then the rows up to the checkpoint resumed from);
--   * every write is checked: a full disk is an error naming the file;
--   * whole files (config.yaml, summary.yaml) go through the core's atomic writer.
local kiln = require "kiln"
local util = require "kiln.util"
local lfs = require "lfs"
local fingerprint = require "kiln.fingerprint"
local rundir = require "kiln.rundir"
local options = require "kiln.train.options"

local M = {}
local fail = options.fail

-- Text without the memory addresses Lua prints for functions ("function 0x55d0..."): they
-- change from one process to the next and say nothing about the run.
local function without_addresses(v)
  if type(v) == "string" then return (v:gsub("%s*0x%x+", "")) end
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = without_addresses(x) end
  return out
end

-- The optimizer's hyperparameters as the core holds them (float32), written as the shortest
-- decimals that give the same float32 (beta1: 0.9).
local function hparams_as_used(opt)
  local out = {}
  for k, v in pairs(opt:hparams()) do
    out[k] = (type(v) == "number" and math.type(v) == "float") and tonumber(util.num32(v)) or v
  end
  return out
end

-- The fingerprint of the run the plan describes.
function M.identity(p)
  local data, evals = {}, {}
  for i, d in ipairs(p.data) do data[i] = { name = d.name, path = d.dataset:path(), weight = d.weight } end
  for i, s in ipairs(p.sets) do evals[i] = { name = s.name, path = s.dataset:path() } end
  local start, average = nil, p.average
  if p.start then start = { path = p.start, sha256 = (kiln.sha256_file(p.start)) } end
  if p.average_from then   -- a continued average is part of what the run starts from
    average = util.copy(p.average)
    average.from, average.from_sha256 = p.average_from.path, (kiln.sha256_file(p.average_from.path))
  end
  local ok, fp = pcall(fingerprint.compute, {
    model = p.mcfg, steps = p.steps, batch = p.B, context = p.T, accumulate = p.accum, seed = p.seed,
    lr = p.lr, weights = p.weight_values, normalize = p.normalize, data = data, eval = evals,
    eval_windows = #p.sets > 0 and p.eval_windows or nil, optimizer = hparams_as_used(p.opt), start = start,
    average = average, final_windows = #p.sets > 0 and p.eval_opts.final_windows or nil,
  })
  if not ok then fail("%s", tostring(fp)) end
  return fp
end

local function config_table(p, o, fp)
  local data, evals = {}, {}
  for i, d in ipairs(p.data) do data[i] = { name = d.name, path = d.dataset:path(), weight = d.weight } end
  for _, s in ipairs(p.sets) do evals[s.name] = s.dataset:path() end
  local sched_config
  if p.sched.config then
    local ok, c = pcall(p.sched.config, p.sched)
    if ok and pcall(kiln.yaml.encode, c) then sched_config = without_addresses(c) end
  end
  return {
    kiln_version = kiln.version,
    -- how it was computed, which the fingerprint leaves out: the same run under another thread
    -- count or matrix multiply differs in the last bits
    runtime = { threads = kiln.get_threads(), gemm = kiln.gemm(), ranks = p.nranks },
    command = o.command or (arg and table.concat({ arg[0] or "?", table.unpack(arg) }, " ")) or "?",
    config = o.config or {},
    model = p.mcfg,
    train = { steps = p.steps, batch = p.B, context = p.T, accumulate = p.accum, seed = p.seed,
              tokens_per_step = p.tokens_per_step, start = p.start,
              schedule = without_addresses(p.sched:describe()), schedule_config = sched_config,
              weighting = p.weighting and without_addresses(p.weighting:describe()) or "uniform",
              data = data, eval_sets = evals },
    optimizer = hparams_as_used(p.opt),
    -- the checkpoint a continuation started from (also in the fingerprint)
    start = fp.settings["start.path"] and { path = fp.settings["start.path"], sha256 = fp.settings["start.sha256"] } or nil,
    fingerprint = { digest = fp.digest, settings = fp.settings },
  }
end

-- The first free <run_dir>.old-<n>.
local function aside_name(dir)
  local n = 1
  while lfs.attributes(("%s.old-%d"):format(dir, n)) do n = n + 1 end
  return ("%s.old-%d"):format(dir, n)
end

-- The files kiln.train writes in a run directory (other files, such as a caller's start
-- checkpoint prepared there, stay where they are).
M.OWN = { "config.yaml", "metrics.csv", "timing.csv", "positions.csv", "positions_se.csv", "windows", "summary.yaml", "checkpoints" }

-- restart: the previous run's files move to <run_dir>.old-<n>/.
local function move_aside(dir, quiet)
  local present = {}
  for _, name in ipairs(M.OWN) do
    if lfs.attributes(dir .. "/" .. name) then present[#present + 1] = name end
  end
  if #present == 0 then return end
  local to = aside_name(dir)
  local ok, err = lfs.mkdir(to)
  if not ok then fail("restart: cannot create %s: %s", to, tostring(err)) end
  for _, name in ipairs(present) do
    local rok, rerr = os.rename(dir .. "/" .. name, to .. "/" .. name)
    if not rok then fail("restart: cannot move %s/%s to %s: %s", dir, name, to, tostring(rerr)) end
  end
  if not quiet then print(("%s: restart: the previous run's files moved to %s"):format(dir, to)) end
end

-- Whether the directory may hold this run; with restart, the old run is moved aside first.
local function check_identity(p, fp, quiet)
  local dir = p.run_dir
  if not util.is_dir(dir) then return end
  local holder = kiln.lock_holder(dir .. "/lock")
  if holder then fail("%s is in use by process %d (its lock file is held)", dir, holder) end
  if p.restart then return move_aside(dir, quiet) end
  if not util.exists(dir .. "/config.yaml") then return end
  local ok, cfg = pcall(kiln.yaml.load, dir .. "/config.yaml")
  if not ok then fail("%s/config.yaml cannot be read (%s); restart = true moves it aside", dir, tostring(cfg)) end
  if type(cfg) ~= "table" or cfg.fingerprint == nil then
    fail("%s/config.yaml has no fingerprint (written by an older kiln): restart = true moves it aside and starts over", dir)
  end
  local diffs = fingerprint.diff(cfg.fingerprint, fp)
  if #diffs > 0 then
    fail("%s holds a run with other settings (%s); use another run_dir, or restart = true to move it aside and start over",
      dir, fingerprint.describe(diffs))
  end
end

-- Keep the CSV rows whose first field (step) is <= step under a freshly written header: a
-- resumed run rewrites what came after its checkpoint, and a file killed before its header
-- reached the disk gets one.
local function rebuild_csv(path, header, step)
  local out = { util.csv_line(header) }
  local text = util.read_file(path)
  if text then
    local first = true
    for line in text:gmatch("[^\n]*\n") do
      if not first then
        local s = math.tointeger(tonumber(line:match("^([^,]*)")))
        if s and s <= step then out[#out + 1] = line end
      end
      first = false
    end
  end
  util.write_atomic(path, table.concat(out))
end

-- A CSV file opened for appending whose every write is checked.
local function appender(path)
  local f, err = io.open(path, "ab")
  if not f then fail("cannot open '%s' for appending: %s", path, tostring(err)) end
  return {
    path = path,
    line = function(self, fields, n)   -- n: the field count when fields has nil holes
      local ok, werr = pcall(util.checked_write, f, self.path, util.csv_line(fields, n))
      if not ok then fail("%s", tostring(werr)) end
    end,
    close = function(self)
      local ok, cerr = f:close()
      if not ok then fail("cannot write '%s': %s", self.path, tostring(cerr)) end
    end,
  }
end

M.METRICS = { "step", "tokens", "lr", "loss_weighted", "loss_unweighted", "grad_norm" }
-- The CSV files a run appends to (each rebuilt up to the checkpoint when resuming).
M.FILES = { "metrics", "positions", "positions_se", "timing" }

function M.headers(p)
  local metrics = { table.unpack(M.METRICS) }
  for _, s in ipairs(p.sets) do metrics[#metrics + 1] = s.name .. "_loss" end
  if p.average then
    for _, s in ipairs(p.sets) do metrics[#metrics + 1] = s.name .. "_avg_loss" end
  end
  local positions = { "step", "set" }
  for i = 1, p.T do positions[#positions + 1] = "pos" .. i end
  return { metrics = metrics, positions = positions, positions_se = positions,
           timing = { "step", "tokens_per_s", "seconds" } }
end

-- Open the run directory for training. Returns a log object, or (nil, summary) when the
-- directory holds this run complete. The log's fields: checkpoint (the path to resume from,
-- or nil), checkpoint_step, and the appenders metrics, positions, timing (rank 0 only).
function M.open(p, o)
  local dir = p.run_dir
  local fp = M.identity(p)
  if p.rank == 0 then check_identity(p, fp, p.quiet) end
  if p.nranks > 1 then kiln.mpi.barrier("run directory") end   -- moved aside before anyone looks
  if util.exists(dir .. "/summary.yaml") then
    local summary = kiln.yaml.load(dir .. "/summary.yaml")
    if not p.quiet then
      print(("%s: already complete (%s), same fingerprint: its summary is returned, nothing is trained"):format(
        dir, summary.status or "?"))
    end
    summary.already_complete = true
    return nil, summary
  end
  local log = setmetatable({ dir = dir, rank = p.rank }, { __close = function(l) M.close(l) end })
  local ckpt, ckpt_step = rundir.newest_checkpoint(dir)
  if ckpt and p.resume == false then
    fail("%s has checkpoints (newest %s); resume = false would overwrite them: use a new run_dir", dir, ckpt)
  end
  log.checkpoint, log.checkpoint_step = ckpt, ckpt_step
  if p.rank ~= 0 then return log end
  local ok, err = pcall(util.mkdir, dir .. "/checkpoints")
  if not ok then fail("%s", err) end
  local lok, lock = pcall(kiln.lock, dir .. "/lock")
  if not lok then fail("%s: %s", dir, tostring(lock)) end
  log.lock = lock
  kiln.remove_stale_temps(dir)
  kiln.remove_stale_temps(dir .. "/checkpoints")
  if not util.exists(dir .. "/config.yaml") then
    util.write_atomic(dir .. "/config.yaml", kiln.yaml.encode(config_table(p, o, fp)))
  end
  local h = M.headers(p)
  if #p.sets > 0 then util.mkdir(dir .. "/windows") end
  for _, name in ipairs(M.FILES) do
    local path = ("%s/%s.csv"):format(dir, name)
    rebuild_csv(path, h[name], ckpt and ckpt_step or -1)
    log[name] = appender(path)
  end
  return log
end

-- Close the files and release the lock. The log is a to-be-closed value, so an error in
-- training releases the lock too.
function M.close(log)
  if not log or log.closed then return end
  log.closed = true
  for _, name in ipairs(M.FILES) do
    if log[name] then pcall(log[name].close, log[name]) end
  end
  if log.lock then log.lock:close() end
end

-- The end of a run: the CSV files closed (a failed close is an error naming the file), then
-- summary.yaml when given, all before the lock is released.
function M.finish(log, summary)
  for _, name in ipairs(M.FILES) do
    if log[name] then log[name]:close(); log[name] = nil end
  end
  if summary and log.rank == 0 then util.write_atomic(log.dir .. "/summary.yaml", kiln.yaml.encode(summary)) end
  M.close(log)
end

return M
