-- kiln.train.options — kiln.train's options checked and resolved into a plan: the model and
-- optimizer, batch geometry, budget, data mixture, evaluation and checkpoint steps, schedule
-- and weighting. Nothing is written and nothing is trained here; every mistake in the
-- options is found before a run directory is touched.
local kiln = require "kiln"
local util = require "kiln.util"
local check = require "kiln.check"
local schedule_mod = require "kiln.schedule"
local weighting_mod = require "kiln.weighting"

local M = {}

local WHO = "kiln.train"

M.KNOWN = {
  model = true, optimizer = true, data = true, steps = true, tokens = true, batch = true,
  context = true, accumulate = true, schedule = true, weighting = true, eval = true,
  checkpoint = true, run_dir = true, seed = true, log_every = true, config = true,
  quiet = true, on_step = true, on_eval = true, on_checkpoint = true, command = true,
  progress = true, state = true, resume = true, final_eval = true, restart = true, start = true,
  average = true, ema = true,
}

-- The one way kiln.train reports a mistake: "kiln.train: <message>".
function M.fail(fmt, ...) check.error(WHO, fmt, ...) end
local fail = M.fail

local function is_userdata_of(x, name)
  return type(x) == "userdata" and (getmetatable(x) or {}).__name == name
end

-- A list of {name=, dataset=, weight=} from the `data` option (weights summing to 1).
local function normalize_data(data)
  if is_userdata_of(data, "kiln.Dataset") then
    return { { name = "train", dataset = check.arg(WHO, "data", data, "kiln.Dataset"), weight = 1 } }
  end
  if type(data) ~= "table" or #data == 0 then
    fail("'data' must be a kiln.dataset or a list of {dataset = ..., weight = ...} (got %s)", type(data))
  end
  local out, total = {}, 0
  for i, d in ipairs(data) do
    check.arg(WHO, ("data[%d]"):format(i), d, "table")
    local ds = d.dataset or d[1]
    local w = d.weight or d[2] or 1
    if not is_userdata_of(ds, "kiln.Dataset") then fail("data[%d].dataset must be a kiln.dataset", i) end
    check.arg(WHO, ("data[%d].dataset"):format(i), ds, "kiln.Dataset")
    if not check.isfinite(w) or w < 0 then fail("data[%d].weight must be a finite number >= 0", i) end
    if d.name ~= nil and type(d.name) ~= "string" then fail("data[%d].name must be a string", i) end
    out[i] = { name = d.name or ("data" .. i), dataset = ds, weight = w }
    total = total + w
  end
  if total <= 0 then fail("the data weights sum to 0") end
  for _, d in ipairs(out) do d.weight = d.weight / total end
  return out
end

local function normalize_sets(sets)
  local out = {}
  if sets == nil then return out end
  if is_userdata_of(sets, "kiln.Dataset") then
    return { { name = "val", dataset = check.arg(WHO, "eval.sets", sets, "kiln.Dataset") } }
  end
  if type(sets) ~= "table" then fail("eval.sets must be a table of name = kiln.dataset") end
  for _, name in ipairs(util.sorted_keys(sets)) do
    local ds = sets[name]
    if type(name) ~= "string" then fail("eval.sets keys must be names (strings)") end
    if not name:match("^[%w_]+$") then fail("eval set name '%s' must be letters, digits or _", name) end
    if not is_userdata_of(ds, "kiln.Dataset") then fail("eval.sets.%s must be a kiln.dataset", name) end
    check.arg(WHO, "eval.sets." .. name, ds, "kiln.Dataset")
    out[#out + 1] = { name = name, dataset = ds }
  end
  return out
end

-- A set of steps from {every = n, at = {...}} (step numbers count completed steps: eval at
-- step 100 happens after the 100th update).
local function step_set(spec, what, total)
  local set = {}
  if spec == nil then return set end
  if type(spec) ~= "table" then fail("'%s' must be a table like {every = 100, at = {...}}", what) end
  if spec.every ~= nil then
    if math.type(spec.every) ~= "integer" or spec.every < 1 then fail("%s.every must be a positive integer", what) end
    for s = spec.every, total, spec.every do set[s] = true end
  end
  for _, s in ipairs(spec.at or {}) do
    if math.type(s) ~= "integer" or s < 0 then fail("%s.at must hold step numbers (integers >= 0)", what) end
    if s <= total then set[s] = true end
  end
  return set
end

-- The types of the options that are not checked where they are used.
local function check_option_types(o)
  if o.log_every ~= nil then check.integer(WHO, "log_every", o.log_every, 1) end
  if o.seed ~= nil then check.integer(WHO, "seed", o.seed) end
  if o.run_dir ~= nil then check.string(WHO, "run_dir", o.run_dir, true) end
  for _, k in ipairs { "quiet", "progress", "final_eval", "restart" } do check.arg(WHO, k, o[k], "?boolean") end
  for _, k in ipairs { "on_step", "on_eval", "on_checkpoint" } do check.arg(WHO, k, o[k], "?callable") end
  check.arg(WHO, "config", o.config, "?table")
  check.arg(WHO, "state", o.state, "?table")
  check.arg(WHO, "command", o.command, "?string")
  if o.start ~= nil then check.string(WHO, "start", o.start, true) end
  if o.resume ~= nil and o.resume ~= true and o.resume ~= false then
    check.fail(WHO, "resume", "true or false (to start over on a changed run, use restart = true)", o.resume)
  end
  if o.steps ~= nil then check.integer(WHO, "steps", o.steps, 0) end
  if o.tokens ~= nil then check.positive(WHO, "tokens", o.tokens) end
  if o.eval ~= nil then
    check.fields(WHO, "eval", o.eval, { "every", "at", "sets", "windows", "final_windows", "batch" })
    for _, k in ipairs { "windows", "final_windows" } do
      local n = o.eval[k]
      if n ~= nil and n ~= "all" and (math.type(n) ~= "integer" or n < 1) then
        check.fail(WHO, "eval." .. k, 'a positive integer or "all"', n)
      end
    end
    if o.eval.batch ~= nil then check.integer(WHO, "eval.batch", o.eval.batch, 1, check.MAX_BATCH) end
  end
  if o.checkpoint ~= nil then check.fields(WHO, "checkpoint", o.checkpoint, { "every", "at" }) end
  for _, k in ipairs { "eval", "checkpoint" } do
    if o[k] ~= nil and o[k].at ~= nil then check.list(WHO, k .. ".at", o[k].at, "integer") end
  end
end

local function resolve_model(o)
  local model = o.model
  if type(model) == "table" then model = check.call("kiln.train: 'model'", kiln.model, model)
  elseif not is_userdata_of(model, "kiln.Model") then fail("'model' must be a kiln.model or a config table") end
  check.arg(WHO, "model", model, "kiln.Model")
  local opt = o.optimizer
  if opt == nil or type(opt) == "table" then opt = check.call("kiln.train: 'optimizer'", kiln.adamw, model, opt)
  elseif not is_userdata_of(opt, "kiln.AdamW") then fail("'optimizer' must be a kiln.adamw or a table of hyperparameters") end
  check.arg(WHO, "optimizer", opt, "kiln.AdamW")
  if opt:model() ~= model then fail("the optimizer belongs to another model") end
  return model, opt
end

-- Batch, context, accumulation, processes and the step budget.
local function resolve_geometry(o, p)
  local B, T, accum = o.batch or 16, o.context or p.mcfg.block_size, o.accumulate or 1
  if math.type(B) ~= "integer" or B < 1 or B > check.MAX_BATCH then
    fail("'batch' must be an integer in 1..%d (got %s)", check.MAX_BATCH, check.describe(B))
  end
  if math.type(T) ~= "integer" or T < 1 or T > p.mcfg.block_size then
    fail("'context' must be an integer in 1..%d (the model's block_size), got %s", p.mcfg.block_size, tostring(T))
  end
  if math.type(accum) ~= "integer" or accum < 1 or accum > check.MAX_ACCUMULATE then
    fail("'accumulate' must be an integer in 1..%d (got %s)", check.MAX_ACCUMULATE, check.describe(accum))
  end
  p.nranks, p.rank = kiln.mpi.size(), kiln.mpi.rank()
  if B % p.nranks ~= 0 then fail("'batch' (%d) must be a multiple of the number of processes (%d)", B, p.nranks) end
  p.B, p.T, p.accum, p.local_B = B, T, accum, B // p.nranks
  p.tokens_per_step = B * T * accum
  local steps = o.steps
  if steps == nil and o.tokens ~= nil then steps = math.ceil(o.tokens / p.tokens_per_step) end
  if math.type(steps) ~= "integer" or steps < 0 then fail("give 'steps' (a non-negative integer) or 'tokens'") end
  p.steps = steps
end

local function resolve_data(o, p)
  p.data = normalize_data(o.data)
  for _, d in ipairs(p.data) do
    d.dataset:check_vocab(p.mcfg.vocab_size)
    d.dataset:check_window(p.T)
  end
  p.eval_opts = o.eval or {}
  p.sets = normalize_sets(p.eval_opts.sets)
  for _, s in ipairs(p.sets) do s.dataset:check_window(p.T); s.dataset:check_vocab(p.mcfg.vocab_size) end
  p.eval_windows = p.eval_opts.windows or 64
  p.eval_steps = step_set(p.eval_opts, "eval", p.steps)
  if #p.sets > 0 and o.final_eval ~= false then p.eval_steps[p.steps] = true end
  p.ckpt_steps = step_set(o.checkpoint, "checkpoint", p.steps)
end

-- The schedule as a function of the 0-based step, and the weighting as a vector of T weights.
local function resolve_schedule_weighting(o, p)
  local base_lr = p.opt:hparams().lr
  p.sched = o.schedule ~= nil and check.call("kiln.train: 'schedule'", schedule_mod.make, o.schedule, "schedule")
            or schedule_mod.constant { lr = base_lr }
  p.normalize = false
  if o.weighting ~= nil then
    local w = check.call("kiln.train: 'weighting'", weighting_mod.make, o.weighting)
    local vec = check.call("kiln.train: 'weighting'", w.vector, w, p.T)
    if #vec ~= p.T then fail("weighting: expected %d weights (one per position), got %d", p.T, #vec) end
    p.weighting, p.weight_values = w, vec
    p.weights, p.normalize = kiln.tensor_from(vec), w.normalize and true or false
  end
end

-- The learning rate of every step of the budget, checked once before training: a schedule
-- that fails or gives a bad value is found before a run directory is touched.
local function resolve_lr(p)
  local lr = {}
  for step = 0, p.steps - 1 do
    local ok, v = pcall(p.sched, step)
    if not ok then fail("the schedule failed at step %d: %s", step, tostring(v)) end
    if type(v) ~= "number" or v ~= v or v < 0 or v == math.huge then
      fail("the schedule gave lr = %s at step %d (expected a finite number >= 0)", tostring(v), step)
    end
    lr[step + 1] = v
  end
  p.lr = lr
end

-- Weight averaging kept by the optimizer, fused into its step: average = {kind = "ema" |
-- "mean", decay = 0.999, every = 1, start = 1, warmup = false, from = nil}; ema = {...} is the
-- same with kind "ema". The averaged weights are evaluated beside the raw ones and saved with
-- every checkpoint (step_N.average.safetensors, a model checkpoint of its own). `from` names
-- such a file: a fresh run (one that starts from a checkpoint) continues that average, with
-- its count, instead of starting a new one.
local function resolve_average(o, p)
  if o.average ~= nil and o.ema ~= nil then fail("give 'average' or 'ema', not both") end
  local spec, name = o.average or o.ema, o.average and "average" or "ema"
  if spec == nil then return end
  check.fields(WHO, name, spec, { "kind", "decay", "every", "start", "warmup", "from" })
  local kind = spec.kind or "ema"
  if name == "ema" and kind ~= "ema" then fail("ema.kind must be \"ema\" (use average = {kind = ...} otherwise)") end
  if kind ~= "ema" and kind ~= "mean" then check.fail(WHO, name .. ".kind", '"ema" or "mean"', kind) end
  local a = { kind = kind, every = spec.every or 1, start = spec.start or 1, warmup = spec.warmup or false }
  check.integer(WHO, name .. ".every", a.every, 1)
  check.integer(WHO, name .. ".start", a.start, 1)
  check.arg(WHO, name .. ".warmup", a.warmup, "boolean")
  if kind == "ema" then
    a.decay = spec.decay or 0.999
    check.number(WHO, name .. ".decay", a.decay)
    if not (a.decay >= 0 and a.decay < 1) then check.fail(WHO, name .. ".decay", "a number in [0, 1)", a.decay) end
  elseif spec.decay ~= nil then
    fail("%s.decay applies to kind \"ema\" only", name)
  end
  check.call(WHO, p.opt.set_average, p.opt, a)
  p.average = a
  if spec.from ~= nil then
    check.string(WHO, name .. ".from", spec.from, true)
    if not util.exists(spec.from) then fail("%s.from: the weight average '%s' does not exist", name, spec.from) end
    local ok, info = pcall(kiln.checkpoint_info, spec.from)
    local count = ok and math.tointeger(tonumber(info.meta.average_count or ""))
    if not count or count < 0 then
      fail("%s.from: '%s' is not a weight average written by kiln.train (%s)", name, spec.from,
           ok and "its metadata has no average_count" or tostring(info))
    end
    p.average_from = { path = spec.from, count = count }
  end
end

-- resolve(o) -> plan: every option checked, converted and filled in with its default.
function M.resolve(o)
  if type(o) ~= "table" then error("kiln.train: expected a table of options", 3) end
  for k in pairs(o) do
    if not M.KNOWN[k] then
      fail("unknown option '%s' (known: %s)", tostring(k), table.concat(util.sorted_keys(M.KNOWN), ", "))
    end
  end
  check_option_types(o)
  local p = {}
  p.model, p.opt = resolve_model(o)
  p.mcfg = p.model:config()
  resolve_geometry(o, p)
  resolve_data(o, p)
  resolve_schedule_weighting(o, p)
  resolve_lr(p)
  resolve_average(o, p)
  p.log_every, p.seed = o.log_every or 10, o.seed or 1
  p.quiet = o.quiet or p.rank ~= 0
  p.run_dir = o.run_dir and (o.run_dir:gsub("(.)/+$", "%1"))
  p.progress = o.progress
  if p.progress == nil or p.rank ~= 0 then p.progress = not p.quiet and kiln.isatty(1) end
  p.restart, p.resume, p.start = o.restart or false, o.resume, o.start
  if p.start and not util.exists(p.start) then fail("start: checkpoint '%s' does not exist", p.start) end
  return p
end

return M
