-- kiln.protocol — a continual-pretraining protocol as a value: an upstream pretraining phase
-- with named intermediate checkpoints, then continuation phases that each start from a named
-- checkpoint (weights; optimizer moments carried or reset), train on their own data or
-- mixture (optionally replaying upstream data) under their own schedule, and evaluate on the
-- same sets (upstream, downstream, OOD) at the same steps, so learning and forgetting are
-- read off one table.
--
--   local P = kiln.protocol {
--     dir = "runs/continual", model = { n_layer = 2, n_head = 4, n_embd = 64, block_size = 64 },
--     optimizer = { beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1, clip = 1.0 },
--     batch = 16, context = 64, seed = 1,
--     eval = { sets = { upstream = "data/techdocs/val.txt", downstream = ..., ood = ... },
--              every = 50, at = { 10, 20 }, windows = 64 },
--     checkpoint_every = 500,                       -- resume points inside a phase
--   }
--   P:phase { name = "upstream", data = "data/techdocs/train.txt", tokens = 4e6,
--             schedule = { kind = "cosine", peak = 3e-3, warmup_frac = 0.01, floor_frac = 0.1 },
--             checkpoints = { early = 0.07, middle = 0.19 } }      -- fractions of the phase, or steps
--   P:phase { name = "rewarm", from = "upstream",                   -- its final checkpoint
--             data = "data/techdocs2/train.txt", replay = 0.05,    -- 5% upstream data (optional)
--             tokens = 4e6, budget = 4e6, optimizer = "carry",     -- or "reset"
--             schedule = { kind = "rewarm", peak = 3e-3, warmup_frac = 0.01, floor_frac = 0.1,
--                          decay_frac = 240 / 297 } }
--   P:phase { name = "from_early", from = "upstream.early", ... }
--   P:phase { name = "scratch", data = ..., ... }                   -- no `from`: fresh init
--   P:phase { name = "elsewhere", from = "runs/other",              -- a run dir's newest checkpoint,
--             data = ..., schedule = ..., schedule_step = "source" } -- or a .safetensors file
--   local r = P:run()         -- r.phases[name] = {dir, summary, start, curve}; r.status
--
-- Layout: dir/protocol.yaml (every phase's resolved description), dir/<phase>/ = a kiln.train
-- run directory (config.yaml, metrics.csv, checkpoints/, summary.yaml), and
-- dir/<phase>/start.yaml = the evaluation of the starting weights (continuation token 0).
-- Phases run in the order they were added. A complete phase (summary.yaml) is skipped; an
-- interrupted one resumes from its newest checkpoint (kiln.train's exact resume); a phase that
-- has not started loads its source checkpoint again. So a protocol stopped anywhere and run
-- again gives the same files, byte for byte, as one run straight through.
--
-- A `from` that is not a phase of this protocol is a checkpoint file or a run directory (its
-- newest checkpoint, chosen when the phase is added). Every continuation records the file it
-- started from and its SHA-256 (kiln.train's `start`, in config.yaml; and start.yaml).
--
-- Schedules run on the phase's own 0-based step (schedule_step = "phase"), or, with
-- schedule_step = "source", on the source checkpoint's step plus the phase's (a schedule laid
-- out over a whole run, continued where the source left it). A schedule spec is one of
--   { kind = "rewarm" | "cosine", peak =, floor = | floor_frac =, warmup = (steps) | warmup_frac =,
--     decay_frac = 1, start = 0 }
--       linear warmup start -> peak over W = round(warmup_frac * budget_steps) steps, then a
--       cosine to the floor reached at round(decay_frac * budget_steps), flat afterwards. The
--       warmup fraction is of the phase's *budget* (the paper's "% of the downstream tokens"),
--       not of the decay. "rewarm" and "cosine" are the same shape (kiln.schedule.rewarm with
--       from = 0 / kiln.schedule.cosine); the name records intent.
--   { kind = "constant", lr = }
--   a kiln.schedule value or a function of the step (used as is).
-- `budget` (tokens, default `tokens`) is the length the schedule is laid out over; `tokens`
-- is how far the phase trains. A phase with tokens < budget is the first part of the longer
-- run (the paper's "first 50B tokens of a 297B schedule").
local kiln = require "kiln"
local util = require "kiln.util"
local check = require "kiln.check"
local schedule = require "kiln.schedule"
local train = require "kiln.train"

local M = {}
local P = {}
P.__index = P
P.__name = "kiln.protocol"

local function fail(fmt, ...) error("kiln.protocol: " .. fmt:format(...), 0) end

-- The receiver of a method: P:phase{...}, not P.phase{...}.
local function me(name, self) return check.self("kiln.protocol:" .. name, self, "kiln.protocol") end

local function is_dataset(x) return type(x) == "userdata" and (getmetatable(x) or {}).__name == "kiln.Dataset" end

local dataset_cache = {}
local function dataset(x, what)
  if is_dataset(x) then return check.arg("kiln.protocol", what, x, "kiln.Dataset") end
  if type(x) == "string" then
    if not dataset_cache[x] then
      if not util.exists(x) then fail("%s: no such file '%s'", what, x) end
      dataset_cache[x] = check.call("kiln.protocol: " .. what, kiln.dataset, x)
    end
    return dataset_cache[x]
  end
  fail("%s must be a kiln.dataset or a file path (got %s)", what, type(x))
end

local PAPER_OPT = { beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1, clip = 1.0 }

local KNOWN = { dir = true, model = true, optimizer = true, batch = true, context = true, seed = true,
                eval = true, checkpoint_every = true, quiet = true, log_every = true,
                on_step = true, on_eval = true, on_phase_start = true, on_phase_end = true }

-- kiln.protocol{...} -> a protocol (no phases yet).
function M.new(o)
  if type(o) ~= "table" then fail("expected a table of options") end
  for k in pairs(o) do
    if not KNOWN[k] then fail("unknown option '%s' (known: %s)", tostring(k), table.concat(util.sorted_keys(KNOWN), ", ")) end
  end
  if type(o.dir) ~= "string" or o.dir == "" then fail("'dir' (the protocol's directory) is required") end
  if type(o.model) ~= "table" then fail("'model' must be a model config table (kiln.model's fields)") end
  local who = "kiln.protocol"
  check.arg(who, "optimizer", o.optimizer, "?table")
  if o.batch ~= nil then check.integer(who, "batch", o.batch, 1, check.MAX_BATCH) end
  if o.context ~= nil then check.integer(who, "context", o.context, 1, check.MAX_POSITIONS) end
  if o.model.block_size ~= nil then check.integer(who, "model.block_size", o.model.block_size, 1, check.MAX_POSITIONS) end
  if o.seed ~= nil then check.integer(who, "seed", o.seed) end
  if o.checkpoint_every ~= nil then check.integer(who, "checkpoint_every", o.checkpoint_every, 1) end
  if o.log_every ~= nil then check.integer(who, "log_every", o.log_every, 1) end
  check.arg(who, "quiet", o.quiet, "?boolean")
  for _, h in ipairs { "on_step", "on_eval", "on_phase_start", "on_phase_end" } do check.arg(who, h, o[h], "?callable") end
  check.fields(who, "eval", o.eval or {}, { "sets", "every", "at", "windows" })
  if (o.eval or {}).sets ~= nil then check.arg(who, "eval.sets", o.eval.sets, "table") end
  if (o.eval or {}).every ~= nil then check.integer(who, "eval.every", o.eval.every, 1) end
  if (o.eval or {}).at ~= nil then check.list(who, "eval.at", o.eval.at, "integer") end
  if (o.eval or {}).windows ~= nil then check.integer(who, "eval.windows", o.eval.windows, 1) end
  for k, v in pairs((o.eval or {}).sets or {}) do
    if type(k) ~= "string" then check.error(who, "eval.sets must map names (strings) to datasets, got a %s key", type(k)) end
    if not is_dataset(v) then check.arg(who, "eval.sets." .. k, v, "string") end
  end
  local model = util.copy(o.model)
  model.vocab_size = model.vocab_size or 256
  model.seed = model.seed or 1
  local context = o.context or model.block_size or 256
  model.block_size = model.block_size or context
  local opt = {}
  for k, v in pairs(PAPER_OPT) do opt[k] = v end
  for k, v in pairs(o.optimizer or {}) do opt[k] = v end
  opt.lr = opt.lr or 1e-3      -- unused: every phase has a schedule
  local ev = o.eval or {}
  local sets = {}
  for name, ds in pairs(ev.sets or {}) do sets[name] = dataset(ds, "eval.sets." .. tostring(name)) end
  if next(sets) == nil then fail("eval.sets must name at least one validation set (upstream, downstream, ...)") end
  local self = setmetatable({
    dir = o.dir, model = model, optimizer = opt, batch = o.batch or 16, context = context,
    seed = o.seed or 1, sets = sets,
    eval = { every = ev.every, at = ev.at, windows = ev.windows or 64 },
    checkpoint_every = o.checkpoint_every, quiet = o.quiet, log_every = o.log_every or 50,
    hooks = { on_step = o.on_step, on_eval = o.on_eval, on_phase_start = o.on_phase_start,
              on_phase_end = o.on_phase_end },
    phases = {}, by_name = {},
  }, P)
  self.tokens_per_step = self.batch * self.context
  return self
end

-- Steps for a token count (whole steps, rounded up).
function P:steps_for(tokens)
  me("steps_for", self)
  check.positive("kiln.protocol:steps_for", "tokens", tokens)
  return math.ceil(tokens / self.tokens_per_step - 1e-9)
end

-- The schedule a phase spec describes, on the phase's own steps.
local function build_schedule(spec, budget_steps, who)
  if schedule.is(spec) or type(spec) == "function" then return schedule.make(spec, who) end
  if type(spec) ~= "table" then fail("%s: 'schedule' must be a table with 'kind', a schedule or a function", who) end
  local kind = spec.kind
  if kind == "constant" then
    if type(spec.lr) ~= "number" then fail("%s: a constant schedule needs 'lr'", who) end
    return schedule.constant { lr = spec.lr }
  end
  if kind ~= "rewarm" and kind ~= "cosine" then
    fail("%s: schedule kind must be 'rewarm', 'cosine' or 'constant' (got %s)", who, tostring(kind))
  end
  for k in pairs(spec) do
    if not ({ kind = 1, peak = 1, floor = 1, floor_frac = 1, warmup = 1, warmup_frac = 1, decay_frac = 1, start = 1 })[k] then
      fail("%s: unknown schedule field '%s'", who, tostring(k))
    end
  end
  if type(spec.peak) ~= "number" then fail("%s: the schedule needs 'peak'", who) end
  local cw = "kiln.protocol:phase"
  for _, k in ipairs { "peak", "floor", "floor_frac", "warmup_frac", "decay_frac", "start" } do
    if spec[k] ~= nil then check.number(cw, "schedule." .. k, spec[k], 0) end
  end
  if spec.warmup ~= nil then check.integer(cw, "schedule.warmup", spec.warmup, 0) end
  if spec.warmup ~= nil and spec.warmup_frac ~= nil then fail("%s: give 'warmup' or 'warmup_frac', not both", who) end
  local W = spec.warmup or math.floor((spec.warmup_frac or 0) * budget_steps + 0.5)
  local decay = math.floor((spec.decay_frac or 1) * budget_steps + 0.5)
  if decay <= W then fail("%s: the decay ends (step %d) before the warmup does (%d)", who, decay, W) end
  local floor = spec.floor
  if floor == nil then floor = (spec.floor_frac or 0) * spec.peak end
  local start = spec.start or 0
  if kind == "cosine" then
    return schedule.cosine { peak = spec.peak, floor = floor, steps = decay, warmup = W, start = start }
  end
  return schedule.rewarm { from = 0, warmup = W, peak = spec.peak, floor = floor, steps = decay,
                           before = schedule.constant { lr = start } }
end

local PHASE_KNOWN = { name = true, from = true, data = true, replay = true, tokens = true, steps = true,
                      budget = true, schedule = true, optimizer = true, checkpoints = true, seed = true,
                      schedule_step = true }

-- The checkpoint a `from` outside the protocol names: the file itself, or a run directory's
-- newest checkpoint (the highest step_*.safetensors in DIR/checkpoints, else in DIR).
local function outside_checkpoint(path, who)
  if not util.is_dir(path) then return path end
  for _, sub in ipairs { path .. "/checkpoints", path } do
    local files = util.list_dir(sub, "^step_%d+%.safetensors$")
    if #files > 0 then return sub .. "/" .. files[#files] end
  end
  fail("%s: 'from' is the directory '%s', which holds no checkpoint (step_*.safetensors in it or in its checkpoints/)", who, path)
end

-- A plain description of a phase (for protocol.yaml and for comparing two specs).
local function describe_phase(ph)
  local data = {}
  for i, d in ipairs(ph.data) do data[i] = { path = d.dataset:path(), weight = d.weight } end
  local ck = {}
  for name, step in pairs(ph.checkpoints) do ck[name] = step end
  -- Settings at their defaults are left out, so descriptions written before they existed
  -- still compare equal.
  return { name = ph.name, from = ph.from or "scratch", data = data, steps = ph.steps,
           budget_steps = ph.budget_steps, tokens = ph.steps * ph.tpstep, schedule = ph.schedule:describe(),
           optimizer = ph.optimizer, checkpoints = ck, seed = ph.seed, from_file = ph.from_file,
           schedule_step = ph.schedule_step ~= "phase" and ph.schedule_step or nil }
end

-- P:phase{...}: add a phase (see the header). Returns the protocol. A phase added again
-- under the same name with the same description except a longer `tokens` extends it (so
-- studies that need the first part of a run and the whole of it share one run).
function P:phase(o)
  me("phase", self)
  if type(o) ~= "table" then fail("phase: expected a table") end
  local cw = "kiln.protocol:phase"
  if o.tokens ~= nil then check.positive(cw, "tokens", o.tokens) end
  if o.steps ~= nil then check.integer(cw, "steps", o.steps, 1) end
  if o.budget ~= nil then check.positive(cw, "budget", o.budget) end
  if o.replay ~= nil then check.number(cw, "replay", o.replay, 0) end
  if o.seed ~= nil then check.integer(cw, "seed", o.seed) end
  check.arg(cw, "checkpoints", o.checkpoints, "?table")
  if type(o.data) == "table" and not is_dataset(o.data) then
    for i, d in ipairs(o.data) do
      check.arg(cw, ("data[%d]"):format(i), d, "table")
      local w = d.weight or d[2]
      if w ~= nil then check.number(cw, ("data[%d].weight"):format(i), w, 0) end
    end
  end
  for k in pairs(o) do
    if not PHASE_KNOWN[k] then fail("phase: unknown field '%s' (known: %s)", tostring(k), table.concat(util.sorted_keys(PHASE_KNOWN), ", ")) end
  end
  local name = o.name
  if type(name) ~= "string" or not name:match("^[%w_%-]+$") then
    fail("phase: 'name' must be letters, digits, '_' or '-' (got %s)", tostring(name))
  end
  local who = "phase " .. name
  local steps = o.steps
  if steps == nil then
    if type(o.tokens) ~= "number" or o.tokens <= 0 then fail("%s: give 'tokens' or 'steps'", who) end
    steps = self:steps_for(o.tokens)
  end
  if math.type(steps) ~= "integer" or steps < 1 then fail("%s: 'steps' must be a positive integer", who) end
  local budget_steps = o.budget and self:steps_for(o.budget) or steps
  if budget_steps < steps then budget_steps = steps end
  -- Data: a dataset, a path, or a mixture list; replay mixes in the first phase's data.
  local data = {}
  if type(o.data) == "table" and not is_dataset(o.data) then
    for i, d in ipairs(o.data) do
      data[i] = { dataset = dataset(d.dataset or d[1], who .. ": data[" .. i .. "]"), weight = d.weight or d[2] or 1 }
    end
  else
    data[1] = { dataset = dataset(o.data, who .. ": data"), weight = 1 }
  end
  if #data == 0 then fail("%s: 'data' is empty", who) end
  if o.replay and o.replay > 0 then
    local up = self.phases[1]
    if not up then fail("%s: 'replay' needs an earlier phase whose data to replay", who) end
    if o.replay >= 1 then fail("%s: 'replay' is the fraction of upstream data, in [0, 1)", who) end
    local total = 0
    for _, d in ipairs(data) do total = total + d.weight end
    for _, d in ipairs(data) do d.weight = d.weight / total * (1 - o.replay) end
    for _, d in ipairs(up.data) do data[#data + 1] = { dataset = d.dataset, weight = d.weight * o.replay } end
  end
  for i, d in ipairs(data) do d.name = ("data%d"):format(i) end
  -- Source checkpoint: "phase" (its final) or "phase.checkpoint" of this protocol, else a
  -- checkpoint file or a run directory (its newest checkpoint, chosen now).
  local from, from_file = o.from, nil
  if from ~= nil then
    if type(from) ~= "string" or from == "" then
      fail("%s: 'from' must be \"phase\", \"phase.checkpoint\", a checkpoint file or a run directory", who)
    end
    local src, ck = from:match("^([%w_%-]+)%.([%w_%-]+)$")
    src = src or from
    local sp = self.by_name[src]
    if sp then
      if ck and ck ~= "final" and not sp.checkpoints[ck] then
        fail("%s: phase '%s' has no checkpoint named '%s'", who, src, ck)
      end
    elseif util.exists(from) then
      from_file = outside_checkpoint(from, who)
    else
      local names = {}
      for _, p in ipairs(self.phases) do names[#names + 1] = p.name end
      fail("%s: 'from' names '%s', which is neither an earlier phase (%s) nor an existing checkpoint file or run directory",
        who, from, #names > 0 and table.concat(names, ", ") or "none yet")
    end
  end
  local schedule_step = o.schedule_step or "phase"
  if schedule_step ~= "phase" and schedule_step ~= "source" then
    fail("%s: 'schedule_step' must be \"phase\" (the schedule starts at 0 with the phase) or \"source\" " ..
      "(it continues from the source checkpoint's step), got %s", who, check.describe(schedule_step))
  end
  local optimizer = o.optimizer or "carry"
  if optimizer ~= "carry" and optimizer ~= "reset" then fail("%s: 'optimizer' must be \"carry\" or \"reset\"", who) end
  if from == nil then optimizer = "fresh" end
  local sched = build_schedule(o.schedule, budget_steps, who)
  local checkpoints = {}
  for ck, v in pairs(o.checkpoints or {}) do
    if ck == "final" or not tostring(ck):match("^[%w_%-]+$") then fail("%s: bad checkpoint name '%s'", who, tostring(ck)) end
    local s = v
    if math.type(v) ~= "integer" then
      if type(v) ~= "number" or v <= 0 or v > 1 then fail("%s: checkpoint '%s' must be a step or a fraction in (0, 1]", who, ck) end
      s = math.max(1, math.floor(v * steps + 0.5))
    end
    if s < 1 or s > steps then fail("%s: checkpoint '%s' at step %d is outside 1..%d", who, ck, s, steps) end
    checkpoints[ck] = s
  end
  local seed = o.seed or (#self.phases == 0 and self.seed or self.seed + 1)
  local ph = { name = name, from = from, from_file = from_file, data = data, steps = steps, budget_steps = budget_steps,
               schedule = sched, schedule_spec = o.schedule, schedule_step = schedule_step, optimizer = optimizer,
               checkpoints = checkpoints, seed = seed, tpstep = self.tokens_per_step }
  local old = self.by_name[name]
  if old then
    local a, b = describe_phase(old), describe_phase(ph)
    a.steps, b.steps, a.tokens, b.tokens = nil, nil, nil, nil
    local sa = kiln.yaml.encode(a):gsub("\nbudget_steps: [^\n]*", "")
    local sb = kiln.yaml.encode(b):gsub("\nbudget_steps: [^\n]*", "")
    if sa ~= sb or old.schedule:describe() ~= ph.schedule:describe() then
      fail("%s: added twice with different settings", who)
    end
    old.steps = math.max(old.steps, ph.steps)
    return self
  end
  self.phases[#self.phases + 1] = ph
  self.by_name[name] = ph
  return self
end

-- A phase's schedule under schedule_step = "source": the step it is asked for is the source
-- checkpoint's step plus the phase's own (so a continuation picks up a schedule laid out over
-- the whole run where its source left it). The source's step is kiln.train's `step` metadata,
-- else the carried optimizer's step count.
local function source_schedule(ph, meta, opt, source_path)
  local offset = math.tointeger(tonumber(meta and meta.step))
  if offset == nil and ph.optimizer == "carry" then offset = opt.t end
  if offset == nil then
    fail("phase %s: schedule_step = \"source\" needs the source's step, but %s records none (no 'step' metadata, " ..
      "optimizer not carried); use schedule_step = \"phase\"", ph.name, source_path)
  end
  local base = ph.schedule
  return schedule.from(function(s) return base(s + offset) end,
    { describe = ("%s from step %d"):format(base:describe(), offset) })
end

function P:phase_dir(name)
  me("phase_dir", self)
  check.string("kiln.protocol:phase_dir", "name", name, true)
  return self.dir .. "/" .. name
end

-- The file of a named checkpoint ("phase" = its final, or "phase.name").
function P:checkpoint_path(ref)
  me("checkpoint_path", self)
  check.string("kiln.protocol:checkpoint_path", "ref", ref, true)
  local src, ck = ref:match("^([%w_%-]+)%.([%w_%-]+)$")
  src = src or ref
  local sp = self.by_name[src]
  if not sp then fail("no phase named '%s'", src) end
  local step = (ck == nil or ck == "final") and sp.steps or sp.checkpoints[ck]
  if not step then fail("phase '%s' has no checkpoint named '%s'", src, ck) end
  return ("%s/checkpoints/step_%08d.safetensors"):format(self:phase_dir(src), step), step
end

-- The phase's evaluation steps (the protocol's every/at, within the phase).
function P:eval_spec()
  me("eval_spec", self)
  local at = {}
  for _, s in ipairs(self.eval.at or {}) do at[#at + 1] = s end
  return { every = self.eval.every, at = at, sets = self.sets, windows = self.eval.windows }
end

-- Evaluate a model on every set: { name = loss }.
function P:evaluate(model)
  me("evaluate", self)
  check.arg("kiln.protocol:evaluate", "model", model, "kiln.Model")
  local out = {}
  for _, name in ipairs(util.sorted_keys(self.sets)) do
    out[name] = train.evaluate(model, self.sets[name], self.context, self.eval.windows, self.batch)
  end
  return out
end

-- A phase's learning curves: a list of { step, tokens, <set> = loss } from start.yaml (step 0)
-- and the evaluated rows of metrics.csv, in step order. `upto_tokens` cuts it.
function P:curve(name, upto_tokens)
  me("curve", self)
  check.string("kiln.protocol:curve", "name", name)
  if upto_tokens ~= nil then check.number("kiln.protocol:curve", "upto_tokens", upto_tokens) end
  local ph = self.by_name[name]
  if not ph then fail("no phase named '%s'", tostring(name)) end
  local dir = self:phase_dir(name)
  local out = {}
  if util.exists(dir .. "/start.yaml") then
    local s = kiln.yaml.load(dir .. "/start.yaml")
    local row = { step = 0, tokens = 0 }
    for k, v in pairs(s.eval or {}) do row[k] = v end
    out[1] = row
  end
  local csv = util.read_csv(dir .. "/metrics.csv")
  if csv then
    local col = {}
    for i, h in ipairs(csv.header) do col[h] = i end
    for _, r in ipairs(csv.rows) do
      local row, any = { step = r[col.step], tokens = r[col.tokens] }, false
      for set in pairs(self.sets) do
        local v = r[col[set .. "_loss"]]
        if type(v) == "number" then row[set] = v; any = true end
      end
      local dup = row.step == 0 and out[1] and out[1].step == 0   -- eval.at = {0}: start.yaml has it
      if any and not dup and (not upto_tokens or row.tokens <= upto_tokens + 1e-9) then out[#out + 1] = row end
    end
  end
  return out
end

-- What a curve says about one set: values at fixed token points (the last evaluation at or
-- before each point), at the end, the start value, and the largest rise above the start and
-- where it happened (for forgetting: the upstream set).
function M.summarize(curve, set, points)
  local who = "kiln.protocol.summarize"
  check.list(who, "curve", curve, "table")
  for i, row in ipairs(curve) do check.number(who, ("curve[%d].tokens"):format(i), row.tokens) end
  if set == nil then check.fail(who, "set", "a set name", set) end
  if points ~= nil then check.numbers(who, "points", points) end
  local r = { at = {} }
  if #curve == 0 then return r end
  local start = curve[1].tokens == 0 and curve[1][set] or nil
  r.start = start
  for i, p in ipairs(points or {}) do
    local v
    for _, row in ipairs(curve) do
      if row.tokens <= p + 1e-9 and row[set] then v = row[set] end
    end
    r.at[i] = v
  end
  for i = #curve, 1, -1 do if curve[i][set] then r.final = curve[i][set]; r.final_tokens = curve[i].tokens; break end end
  if start then
    local best, where = -math.huge, nil
    for _, row in ipairs(curve) do
      if row.tokens > 0 and row[set] and row[set] - start > best then best, where = row[set] - start, row.tokens end
    end
    if where then r.max_rise, r.max_rise_tokens = best, where end
  end
  return r
end

-- Run the phases in order (or only those named in opts.only, or up to and including
-- opts.upto). Returns { status = "complete" | "stopped", phases = { name = {...} }, order }.
function P:run(opts)
  me("run", self)
  local who = "kiln.protocol:run"
  opts = check.fields(who, "opts", opts or {}, { "upto", "only", "on_step", "command" })
  check.arg(who, "opts.upto", opts.upto, "?string")
  if opts.only ~= nil then check.list(who, "opts.only", opts.only, "string") end
  check.arg(who, "opts.on_step", opts.on_step, "?callable")
  check.arg(who, "opts.command", opts.command, "?string")
  util.mkdir(self.dir)
  local desc = { batch = self.batch, context = self.context, seed = self.seed, model = self.model,
                 optimizer = self.optimizer, eval_windows = self.eval.windows, phases = {} }
  desc.eval_sets = {}
  for name, ds in pairs(self.sets) do desc.eval_sets[name] = ds:path() end
  for i, ph in ipairs(self.phases) do desc.phases[i] = describe_phase(ph) end
  util.write_atomic(self.dir .. "/protocol.yaml", kiln.yaml.encode(desc))
  local only
  if opts.only then only = {}; for _, n in ipairs(opts.only) do only[n] = true end end
  local result = { status = "complete", phases = {}, order = {} }
  for _, ph in ipairs(self.phases) do
    if not only or only[ph.name] then
      local r = self:run_phase(ph, opts)
      result.phases[ph.name] = r
      result.order[#result.order + 1] = ph.name
      if r.summary.status ~= "complete" then result.status = r.summary.status; break end
    end
    if opts.upto == ph.name then break end
  end
  return result
end

function P:run_phase(ph, opts)
  me("run_phase", self)
  local who = "kiln.protocol:run_phase"
  if type(ph) ~= "table" or self.by_name[ph.name] ~= ph then
    check.fail(who, "ph", "a phase of this protocol (from P.phases)", ph)
  end
  opts = check.arg(who, "opts", opts, "?table") or {}
  local dir = self:phase_dir(ph.name)
  local quiet = self.quiet
  if util.exists(dir .. "/summary.yaml") then
    if not quiet then print(("== %s: complete"):format(ph.name)) end
    local start = util.exists(dir .. "/start.yaml") and kiln.yaml.load(dir .. "/start.yaml") or nil
    return { name = ph.name, dir = dir, summary = kiln.yaml.load(dir .. "/summary.yaml"), start = start,
             curve = self:curve(ph.name) }
  end
  -- The starting point: the source checkpoint (weights; moments too when carried), or a fresh
  -- model. kiln.train replaces it with the phase's own newest checkpoint when resuming.
  local model = kiln.model(self.model)
  local opt = kiln.adamw(model, self.optimizer)
  local source_path, start, sched = nil, nil, ph.schedule
  if ph.from then
    source_path = ph.from_file or self:checkpoint_path(ph.from)
    if not util.exists(source_path) then
      fail("phase %s starts from %s, but %s does not exist (%s)", ph.name, ph.from, source_path,
        ph.from_file and "it was there when the phase was added" or "run that phase first")
    end
    start = { path = source_path, sha256 = (kiln.sha256_file(source_path)) }
    local ok, _, meta = pcall(kiln.load, source_path, { model = model, optimizer = ph.optimizer == "carry" and opt or nil })
    if not ok then
      local why = tostring(_)
      fail("phase %s: cannot start from %s: %s%s", ph.name, source_path, why,
        why:find("no optimizer state", 1, true) and " (optimizer = \"reset\" starts from the weights alone)" or "")
    end
    if ph.schedule_step == "source" then sched = source_schedule(ph, meta, opt, source_path) end
  end
  if not quiet then
    print(("== %s: %d steps (%d tokens) from %s, optimizer %s, %s"):format(ph.name, ph.steps,
      ph.steps * self.tokens_per_step, ph.from_file or ph.from or "scratch", ph.optimizer, sched:describe()))
  end
  local hooks = self.hooks
  if hooks.on_phase_start then hooks.on_phase_start(ph.name, model, opt, { source = source_path, phase = ph }) end
  util.mkdir(dir)
  if not util.exists(dir .. "/start.yaml") then
    util.write_atomic(dir .. "/start.yaml", kiln.yaml.encode({ source = source_path or "scratch",
      sha256 = start and start.sha256 or nil, eval = self:evaluate(model) }))
  end
  local ck = { at = {} }
  for _, s in pairs(ph.checkpoints) do ck.at[#ck.at + 1] = s end
  table.sort(ck.at)
  ck.every = self.checkpoint_every
  local wrap = function(h)
    if not h then return nil end
    return function(info) return h(ph.name, info) end
  end
  local data = {}
  for i, d in ipairs(ph.data) do data[i] = { name = d.name, dataset = d.dataset, weight = d.weight } end
  local summary = check.call("kiln.protocol: phase " .. ph.name, train.run, {
    model = model, optimizer = opt, data = data, steps = ph.steps, batch = self.batch,
    context = self.context, schedule = sched, eval = self:eval_spec(), checkpoint = ck, start = source_path,
    run_dir = dir, seed = ph.seed, log_every = self.log_every, quiet = quiet,
    config = { protocol = self.dir, phase = describe_phase(ph), source = source_path or "scratch" },
    command = opts.command or "kiln.protocol",
    on_step = wrap(opts.on_step or hooks.on_step), on_eval = wrap(hooks.on_eval),
  })
  if hooks.on_phase_end then hooks.on_phase_end(ph.name, summary) end
  return { name = ph.name, dir = dir, summary = summary, start = kiln.yaml.load(dir .. "/start.yaml"),
           curve = self:curve(ph.name) }
end

M.Protocol = P
return setmetatable(M, { __call = function(_, o) return M.new(o) end })
