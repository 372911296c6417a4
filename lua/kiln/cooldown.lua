-- kiln.cooldown — fork a cooldown from a checkpoint of a run trained at a constant LR (or in
-- the stable phase of warmup-stable-decay): the model and AdamW moments come from the
-- checkpoint, the LR decays from the run's LR at that step to a floor over `length` steps,
-- and everything else (data, batch geometry, optimizer hyperparameters, evaluation sets and
-- windows) is read back from the run's config.yaml. The fork is a run directory of its own,
-- trained by kiln.train with `start` = the checkpoint, so its fingerprint records the
-- checkpoint's path and SHA-256.
--
--   local s = kiln.cooldown.fork { run = "runs/const", at = 2000, length = 400, shape = "1-sqrt" }
--   s.eval.val, s.cooldown.start_lr, s.cooldown.out
local kiln = require "kiln"
local util = require "kiln.util"
local check = require "kiln.check"
local schedule = require "kiln.schedule"
local lfs = require "lfs"

local M = {}
local WHO = "kiln.cooldown.fork"

local function fail(fmt, ...) check.error(WHO, fmt, ...) end

-- The shapes, as the fraction of the way from the floor to the start LR after s of L steps,
-- and the kiln.schedule.wsd shape that computes the same thing.
M.SHAPES = { "linear", "cosine", "1-sqrt" }
local WSD_SHAPE = { linear = "linear", cosine = "cosine", ["1-sqrt"] = "sqrt" }

function M.factor(shape, s, L)
  check.string("kiln.cooldown.factor", "shape", shape)
  check.number("kiln.cooldown.factor", "s", s)
  check.number("kiln.cooldown.factor", "L", L)
  if s >= L then return 0 end
  if shape == "linear" then return 1 - s / L end
  if shape == "cosine" then return 0.5 * (1 + math.cos(math.pi * s / L)) end
  if shape == "1-sqrt" then return 1 - math.sqrt(s / L) end
  check.fail("kiln.cooldown.factor", "shape", "one of " .. table.concat(M.SHAPES, ", "), shape)
end

-- The steps of the run's checkpoints (model checkpoints, not their weight averages), sorted.
function M.checkpoints(run)
  check.string("kiln.cooldown.checkpoints", "run", run, true)
  local steps, dir = {}, run .. "/checkpoints"
  if not util.is_dir(dir) then return steps end
  for name in lfs.dir(dir) do
    local s = name:match("^step_(%d+)%.safetensors$")
    if s then steps[#steps + 1] = math.tointeger(tonumber(s)) end
  end
  table.sort(steps)
  return steps
end

function M.checkpoint_path(run, at)
  check.string("kiln.cooldown.checkpoint_path", "run", run, true)
  check.integer("kiln.cooldown.checkpoint_path", "at", at, 0)
  return ("%s/checkpoints/step_%08d.safetensors"):format(run, at)
end

local function find_checkpoint(run, at)
  local path = M.checkpoint_path(run, at)
  if util.exists(path) then return path end
  local have = {}
  for i, s in ipairs(M.checkpoints(run)) do have[i] = tostring(s) end
  fail("at = %d: %s does not exist (checkpoints of %s: %s)", at, path, run,
       #have > 0 and ("steps " .. table.concat(have, ", ")) or "none")
end

-- Whether schedule config `c` holds its LR constant from step `at` on (before any decay):
-- a constant schedule, warmup-then-constant past its warmup, WSD in its stable phase.
local function stable_at(c, at)
  if c.kind == "constant" then return true end
  if c.kind == "warmup" then return at >= c.steps, ("the warmup ends at step %d"):format(c.steps) end
  if c.kind == "wsd" then
    local W, S = c.warmup or 0, c.stable
    return at >= W and at <= W + S, ("its stable phase is steps %d..%d"):format(W, W + S)
  end
  return false, "only constant, warmup and wsd schedules have a constant phase"
end

-- The LR of the run's update `at` (0-based: the first update after the checkpoint), from the
-- schedule config when config.yaml has one, else from metrics.csv's lr column.
local function start_lr(run, cfg, at, force)
  local sc = cfg.train and cfg.train.schedule_config
  if type(sc) == "table" and schedule.kinds[sc.kind] then   -- a Lua function's config cannot be rebuilt
    local sched = schedule.make(sc, WHO .. ": " .. run .. "/config.yaml train.schedule_config")
    local ok, why = stable_at(sc, at)
    if not ok and not force then
      fail("at = %d: the run's schedule %s is not constant at step %d (%s); a cooldown starts from a constant LR " ..
           "(force = true forks anyway)", at, sched:describe(), at, why)
    end
    return sched(at), ("the schedule %s at step %d"):format(sched:describe(), at)
  end
  return M.lr_from_metrics(run, at, force)
end

-- The LR from metrics.csv: the newest logged row at or before step `at` (row s holds the
-- LR of update s - 1), refused (unless force) when it is below the largest LR logged so far,
-- i.e. the run was already decaying.
function M.lr_from_metrics(run, at, force)
  check.string("kiln.cooldown.lr_from_metrics", "run", run, true)
  check.integer("kiln.cooldown.lr_from_metrics", "at", at, 0)
  check.arg("kiln.cooldown.lr_from_metrics", "force", force, "?boolean")
  local path = run .. "/metrics.csv"
  local csv, err = util.read_csv(path)
  if not csv then fail("%s/config.yaml has no schedule config to rebuild and %s cannot be read (%s)", run, path, tostring(err)) end
  local col
  for i, h in ipairs(csv.header) do if h == "lr" then col = i end end
  if not col then fail("%s has no lr column", path) end
  local best, best_step, peak = nil, nil, 0
  for _, row in ipairs(csv.rows) do
    local s, lr = row[1], row[col]
    if type(s) == "number" and type(lr) == "number" and s <= at then
      best, best_step, peak = lr, s, math.max(peak, lr)
    end
  end
  if not best then fail("at = %d: %s has no lr value at or before step %d", at, path, at) end
  if best < peak and not force then
    fail("at = %d: %s shows the LR decaying (%s at step %d, below the peak %s); a cooldown starts from a constant LR " ..
         "(force = true forks anyway)", at, path, util.num(best), best_step, util.num(peak))
  end
  return best, ("%s's lr column at step %d (config.yaml has no schedule config it can rebuild)"):format(path, best_step)
end

-- A file named in the run's config.yaml, which must still exist.
local function open_file(run, field, path)
  if type(path) ~= "string" or not util.exists(path) then
    fail("%s/config.yaml %s: the file '%s' does not exist (paths are relative to the directory the run was started in)",
         run, field, tostring(path))
  end
  return kiln.dataset(path)
end

-- The run's training data and evaluation sets as kiln.train options.
local function data_of(run, cfg)
  local data = {}
  for i, d in ipairs(cfg.train.data or {}) do
    data[i] = { name = d.name, weight = d.weight, dataset = open_file(run, ("train.data[%d].path"):format(i), d.path) }
  end
  if #data == 0 then fail("%s/config.yaml has no train.data", run) end
  local sets = {}
  for name, path in pairs(cfg.train.eval_sets or {}) do sets[name] = open_file(run, "train.eval_sets." .. name, path) end
  return data, sets
end

local function read_config(run)
  local path = run .. "/config.yaml"
  if not util.exists(path) then fail("run = '%s' is not a run directory (no config.yaml)", run) end
  local cfg = kiln.yaml.load(path)
  if type(cfg) ~= "table" or type(cfg.train) ~= "table" or type(cfg.optimizer) ~= "table" then
    fail("%s lacks the train or optimizer section", path)
  end
  local w = cfg.train.weighting
  return cfg, (w ~= nil and w ~= "uniform") and tostring(w) or nil
end

local KNOWN = { run = true, at = true, length = true, shape = true, out = true, floor = true, eval_every = true,
                restart = true, force = true, seed = true, quiet = true, log_every = true, checkpoint_every = true,
                weighting = true, command = true, on_step = true, on_eval = true, average = true }

local function check_options(o)
  check.arg(WHO, "options", o, "table")
  for k in pairs(o) do
    if not KNOWN[k] then fail("unknown option '%s' (known: %s)", tostring(k), table.concat(util.sorted_keys(KNOWN), ", ")) end
  end
  check.string(WHO, "run", o.run, true)
  check.integer(WHO, "at", o.at, 0)
  check.integer(WHO, "length", o.length, 1)
  local shape_ok = false
  for _, s in ipairs(M.SHAPES) do shape_ok = shape_ok or o.shape == s end
  if not shape_ok then check.fail(WHO, "shape", "one of " .. table.concat(M.SHAPES, ", "), o.shape) end
  if o.out ~= nil then check.string(WHO, "out", o.out, true) end
  if o.floor ~= nil then check.number(WHO, "floor", o.floor, 0) end
  if o.eval_every ~= nil then check.integer(WHO, "eval_every", o.eval_every, 0) end
  if o.checkpoint_every ~= nil then check.integer(WHO, "checkpoint_every", o.checkpoint_every, 0) end
  if o.log_every ~= nil then check.integer(WHO, "log_every", o.log_every, 1) end
  if o.seed ~= nil then check.integer(WHO, "seed", o.seed) end
  for _, k in ipairs { "restart", "force", "quiet" } do check.arg(WHO, k, o[k], "?boolean") end
  if o.average ~= nil and o.average ~= false and type(o.average) ~= "table" then
    check.fail(WHO, "average", "false or a table of kiln.train's average options", o.average)
  end
  for _, k in ipairs { "on_step", "on_eval" } do check.arg(WHO, k, o[k], "?callable") end
end

-- The model and optimizer at the checkpoint: weights, AdamW moments and step count. A μP
-- model gets μP's per-tensor LR and decay scales (kiln.mup.optimizer's defaults): the scales
-- are not in config.yaml, and a μP run without them would be a different run.
local function model_at(path, hp)
  local model = kiln.load(path, { tokenizer = false })
  local opt = model:config().parametrization == "mup" and kiln.mup.optimizer(model, hp) or kiln.adamw(model, hp)
  kiln.load(path, { model = model, optimizer = opt, tokenizer = false })
  return model, opt
end

-- The fork's weight averaging: by default the run's own (its settings from the fingerprint),
-- continued from the average saved with the checkpoint; `false` keeps none; a table is a new
-- average of its own (kiln.train's `average` option).
local function average_of(o, cfg, ckpt)
  if o.average ~= nil then return o.average or nil end
  local s = cfg.fingerprint and cfg.fingerprint.settings or {}
  if s["average.kind"] == nil then return nil end
  local a = { kind = s["average.kind"], decay = s["average.decay"], every = s["average.every"],
              start = s["average.start"], warmup = s["average.warmup"] }
  local apath = kiln.train.average_path(ckpt)
  if util.exists(apath) then a.from = apath end   -- none yet if the run had not averaged a step
  return a
end

-- The fork's description and kiln.train's options, everything checked before anything runs.
local function plan(o)
  check_options(o)
  local run = o.run:gsub("(.)/+$", "%1")
  local ckpt = find_checkpoint(run, o.at)
  local cfg, weighting = read_config(run)
  if weighting and o.weighting == nil then
    fail("%s was trained with the weighting %s, which config.yaml cannot rebuild: pass weighting = the same one", run, weighting)
  end
  local lr0, source = start_lr(run, cfg, o.at, o.force)
  local floor = o.floor or 0
  if floor > lr0 then fail("floor = %s is above the LR the cooldown starts from (%s)", util.num(floor), util.num(lr0)) end
  local info = { run = run, at = o.at, length = o.length, shape = o.shape, floor = floor, start_lr = lr0,
                 lr_source = source, seed = o.seed or ((cfg.train.seed or 1) + o.at), checkpoint = ckpt,
                 out = o.out or ("%s-cooldown-%d-%d-%s"):format(run, o.at, o.length, o.shape) }
  local data, sets = data_of(run, cfg)
  local model, opt = model_at(ckpt, cfg.optimizer)
  local settings = cfg.fingerprint and cfg.fingerprint.settings or {}
  local eval_every, ckpt_every = o.eval_every or 0, o.checkpoint_every or 0
  return info, {
    model = model, optimizer = opt, data = data, steps = o.length, batch = cfg.train.batch,
    context = cfg.train.context, accumulate = cfg.train.accumulate, seed = info.seed, weighting = o.weighting,
    schedule = schedule.wsd { peak = lr0, warmup = 0, stable = 0, decay = o.length, floor = floor, shape = WSD_SHAPE[o.shape] },
    start = ckpt, run_dir = info.out, restart = o.restart, quiet = o.quiet,
    eval = { at = { 0 }, every = eval_every > 0 and eval_every or nil, windows = settings["eval.windows"], sets = sets },
    checkpoint = ckpt_every > 0 and { every = ckpt_every } or nil,
    log_every = o.log_every or 1, command = o.command, config = { cooldown = info },
    on_step = o.on_step, on_eval = o.on_eval, average = average_of(o, cfg, ckpt),
  }
end

-- fork{run =, at =, length =, shape =, out =, floor = 0, eval_every = 0, seed = run seed + at,
--      restart = false, force = false, quiet = false, log_every = 1, checkpoint_every = 0,
--      weighting = nil, average = the run's (continued) | false | {...},
--      on_step, on_eval (kiln.train's hooks)}
--      -> kiln.train's summary, with summary.cooldown describing the fork
function M.fork(o)
  local info, train_options = plan(o)
  if not o.quiet then print(("%s: cooldown from %s, LR %s -> %s over %d steps (%s); LR from %s; seed %d"):format(
    info.out, info.checkpoint, util.num(info.start_lr), util.num(info.floor), info.length, info.shape, info.lr_source,
    info.seed)) end
  local summary = kiln.train(train_options)
  summary.cooldown = info
  return summary
end

return M
