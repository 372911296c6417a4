-- kiln.train — the training loop over the core's primitives, and the run directory it
-- writes (DESIGN §3.6):
--
--   run_dir/config.yaml     the resolved configuration, kiln version, the exact command
--   run_dir/metrics.csv     step, tokens, lr, loss, grad_norm, tokens_per_s, <set>_loss ...
--   run_dir/positions.csv   step, set, then the mean loss at each position 1..T
--   run_dir/checkpoints/    step_00000100.safetensors ... (model, AdamW moments, RNG state)
--   run_dir/summary.yaml    written at the end (final losses, per-position losses of the last
--                           evaluation, tokens/s); its presence marks the run complete
--
--   local result = kiln.train {
--     model = kiln.model{...} or {n_layer = 2, ...},   optimizer = {lr = 3e-4, ...} or kiln.adamw(m),
--     data = ds  or  { {dataset = ds1, weight = 0.7}, {dataset = ds2, weight = 0.3} },
--     steps = 1000  or  tokens = 5e6,     batch = 16, context = 256, accumulate = 1,
--     schedule = kiln.schedule.cosine{...}  (or a function, a number, a spec table),
--     weighting = kiln.weighting.head{...}  (or a spec table, or an array of T weights),
--     eval = { every = 100, at = {...}, sets = { val = ds_val, ood = ds_ood }, windows = 64 },
--     checkpoint = { every = 500, at = {...} },
--     run_dir = "runs/x", seed = 1, log_every = 10, config = {...}, quiet = false,
--     on_step = function(info) ... end,  on_eval = ...,  on_checkpoint = ...,
--   }
--
-- Under mpirun (kiln.mpi.size() > 1) the run is data parallel: each rank draws the global
-- batch's windows from the shared rng and keeps its B/size rows, the gradients are averaged
-- with one allreduce per step, every rank takes the same AdamW step, evaluation windows are
-- split over the ranks, and rank 0 alone writes the run directory and prints. Hooks run on
-- every rank with the same values.
--
-- A hook returning "stop" ends the run after that step (summary status "stopped"). A run
-- started again on a directory with checkpoints resumes from the newest one and gives the
-- same results as an uninterrupted run; one whose summary.yaml exists returns it at once.
local kiln = require "kiln"
local util = require "kiln.util"
local check = require "kiln.check"
local schedule_mod = require "kiln.schedule"
local weighting_mod = require "kiln.weighting"

local M = {}

local KNOWN = {
  model = true, optimizer = true, data = true, steps = true, tokens = true, batch = true,
  context = true, accumulate = true, schedule = true, weighting = true, eval = true,
  checkpoint = true, run_dir = true, seed = true, log_every = true, config = true,
  quiet = true, on_step = true, on_eval = true, on_checkpoint = true, command = true,
  progress = true, state = true, resume = true, final_eval = true,
}

local function fail(fmt, ...) error("kiln.train: " .. fmt:format(...), 0) end

local function is_userdata_of(x, name)
  return type(x) == "userdata" and (getmetatable(x) or {}).__name == name
end

-- A list of {name=, dataset=, weight=} from the `data` option.
local function normalize_data(data)
  if is_userdata_of(data, "kiln.Dataset") then
    return { { name = "train", dataset = check.arg("kiln.train", "data", data, "kiln.Dataset"), weight = 1 } }
  end
  if type(data) ~= "table" or #data == 0 then
    fail("'data' must be a kiln.dataset or a list of {dataset = ..., weight = ...} (got %s)", type(data))
  end
  local out, total = {}, 0
  for i, d in ipairs(data) do
    check.arg("kiln.train", ("data[%d]"):format(i), d, "table")
    local ds = d.dataset or d[1]
    local w = d.weight or d[2] or 1
    if not is_userdata_of(ds, "kiln.Dataset") then fail("data[%d].dataset must be a kiln.dataset", i) end
    check.arg("kiln.train", ("data[%d].dataset"):format(i), ds, "kiln.Dataset")
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
    return { { name = "val", dataset = check.arg("kiln.train", "eval.sets", sets, "kiln.Dataset") } }
  end
  if type(sets) ~= "table" then fail("eval.sets must be a table of name = kiln.dataset") end
  for _, name in ipairs(util.sorted_keys(sets)) do
    local ds = sets[name]
    if type(name) ~= "string" then fail("eval.sets keys must be names (strings)") end
    if not name:match("^[%w_]+$") then fail("eval set name '%s' must be letters, digits or _", name) end
    if not is_userdata_of(ds, "kiln.Dataset") then fail("eval.sets.%s must be a kiln.dataset", name) end
    check.arg("kiln.train", "eval.sets." .. name, ds, "kiln.Dataset")
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

-- Evaluate the model on a dataset's fixed windows: mean loss and the per-position means.
-- With fewer windows asked for than the list holds, they are spread evenly over the list
-- (windows 1, 1+s, 1+2s, ...), so a validation file's later documents count too.
-- With split = true (a collective: every rank must call it) each rank evaluates its share
-- of the windows and the sums are combined with kiln.mpi.allreduce.
function M.evaluate(model, ds, T, windows, B, split)
  local who = "kiln.train.evaluate"
  check.arg(who, "model", model, "kiln.Model")
  check.arg(who, "dataset", ds, "kiln.Dataset")
  T = check.integer(who, "T", T, 1, check.MAX_POSITIONS)
  if windows ~= nil then windows = check.integer(who, "windows", windows, 1) end
  if B ~= nil then B = check.integer(who, "batch", B, 1, check.MAX_BATCH) end
  check.arg(who, "split", split, "?boolean")
  B = B or 16
  local total = ds:num_eval_windows(T)
  if total < 1 then error(("%s: no evaluation window of %d tokens fits"):format(ds:path(), T + 1), 0) end
  local n = (windows and windows < total) and windows or total
  local stride = total // n
  local last = 1 + (n - 1) * stride
  local nranks = split and kiln.mpi.size() or 1
  local lo = 1
  if nranks > 1 then   -- this rank's windows: list entries j0+1 .. j1 of the n
    local r = kiln.mpi.rank()
    local j0, j1 = n * r // nranks, n * (r + 1) // nranks
    lo, last = 1 + j0 * stride, 1 + (j1 - 1) * stride
  end
  local batch, acc = kiln.batch(math.min(B, n), T), kiln.tensor(T)
  local rows, first = 0, lo
  while first <= last do
    local got = ds:eval_batch(batch, first, last, stride)
    model:forward(batch)
    model:add_position_losses(acc)
    rows, first = rows + got, first + got * stride
  end
  if nranks > 1 then kiln.mpi.allreduce(acc, "sum", "evaluation"); rows = kiln.mpi.allreduce(rows, "sum", "evaluation") end
  acc:scale(1 / rows)
  local per = acc:totable()
  local sum = 0
  for _, v in ipairs(per) do sum = sum + v end
  return sum / T, per
end

-- Simple serialisation of a flat table of strings/numbers/booleans for checkpoint meta.
local function encode_state(t)
  return kiln.yaml.encode(t or {})
end

local function newest_checkpoint(dir)
  local files = util.list_dir(dir .. "/checkpoints", "^step_%d+%.safetensors$")
  local best, best_step = nil, -1
  for _, f in ipairs(files) do
    local s = tonumber(f:match("^step_(%d+)"))
    if s > best_step then best, best_step = dir .. "/checkpoints/" .. f, s end
  end
  return best, best_step
end

-- Keep only the CSV lines whose first field (step) is <= step: a resumed run rewrites
-- what came after its checkpoint, so the files end up as an uninterrupted run's.
local function truncate_csv(path, step)
  local text = util.read_file(path)
  if not text then return end
  local out, header = {}, true
  for line in text:gmatch("[^\n]*\n") do
    if header then out[#out + 1] = line; header = false
    else
      local s = tonumber(line:match("^([^,]*)"))
      if s and s <= step then out[#out + 1] = line end
    end
  end
  util.write_atomic(path, table.concat(out))
end

local function format_eta(seconds)
  if seconds ~= seconds or seconds == math.huge then return "?" end
  seconds = math.floor(seconds + 0.5)
  if seconds >= 3600 then return ("%dh%02dm"):format(seconds // 3600, seconds % 3600 // 60) end
  if seconds >= 60 then return ("%dm%02ds"):format(seconds // 60, seconds % 60) end
  return ("%ds"):format(seconds)
end

-- The types of the options that are not checked where they are used.
local function check_option_types(o)
  local who = "kiln.train"
  if o.log_every ~= nil then check.integer(who, "log_every", o.log_every, 1) end
  if o.seed ~= nil then check.integer(who, "seed", o.seed) end
  if o.run_dir ~= nil then check.string(who, "run_dir", o.run_dir, true) end
  for _, k in ipairs { "quiet", "progress", "final_eval" } do check.arg(who, k, o[k], "?boolean") end
  for _, k in ipairs { "on_step", "on_eval", "on_checkpoint" } do check.arg(who, k, o[k], "?callable") end
  check.arg(who, "config", o.config, "?table")
  check.arg(who, "state", o.state, "?table")
  check.arg(who, "command", o.command, "?string")
  if o.resume ~= nil and o.resume ~= true and o.resume ~= false and o.resume ~= "force" then
    check.fail(who, "resume", 'true, false or "force"', o.resume)
  end
  if o.steps ~= nil then check.integer(who, "steps", o.steps, 0) end
  if o.tokens ~= nil then check.positive(who, "tokens", o.tokens) end
  if o.eval ~= nil then
    check.fields(who, "eval", o.eval, { "every", "at", "sets", "windows", "batch" })
    if o.eval.windows ~= nil then check.integer(who, "eval.windows", o.eval.windows, 1) end
    if o.eval.batch ~= nil then check.integer(who, "eval.batch", o.eval.batch, 1, check.MAX_BATCH) end
  end
  if o.checkpoint ~= nil then check.fields(who, "checkpoint", o.checkpoint, { "every", "at" }) end
  for _, k in ipairs { "eval", "checkpoint" } do
    if o[k] ~= nil and o[k].at ~= nil then check.list(who, k .. ".at", o[k].at, "integer") end
  end
end

function M.run(o)
  if type(o) ~= "table" then error("kiln.train: expected a table of options", 2) end
  for k in pairs(o) do
    if not KNOWN[k] then
      local names = util.sorted_keys(KNOWN)
      fail("unknown option '%s' (known: %s)", tostring(k), table.concat(names, ", "))
    end
  end

  check_option_types(o)

  -- Model and optimizer ----------------------------------------------------------------
  local model = o.model
  if type(model) == "table" then model = check.call("kiln.train: 'model'", kiln.model, model)
  elseif not is_userdata_of(model, "kiln.Model") then fail("'model' must be a kiln.model or a config table") end
  check.arg("kiln.train", "model", model, "kiln.Model")
  local mcfg = model:config()
  local opt = o.optimizer
  if opt == nil or type(opt) == "table" then opt = check.call("kiln.train: 'optimizer'", kiln.adamw, model, opt)
  elseif not is_userdata_of(opt, "kiln.AdamW") then fail("'optimizer' must be a kiln.adamw or a table of hyperparameters") end
  check.arg("kiln.train", "optimizer", opt, "kiln.AdamW")
  if opt:model() ~= model then fail("the optimizer belongs to another model") end

  -- Shapes and budget --------------------------------------------------------------------
  local B = o.batch or 16
  local T = o.context or mcfg.block_size
  local accum = o.accumulate or 1
  if math.type(B) ~= "integer" or B < 1 or B > check.MAX_BATCH then
    fail("'batch' must be an integer in 1..%d (got %s)", check.MAX_BATCH, check.describe(B))
  end
  if math.type(T) ~= "integer" or T < 1 or T > mcfg.block_size then
    fail("'context' must be an integer in 1..%d (the model's block_size), got %s", mcfg.block_size, tostring(T))
  end
  if math.type(accum) ~= "integer" or accum < 1 or accum > check.MAX_ACCUMULATE then
    fail("'accumulate' must be an integer in 1..%d (got %s)", check.MAX_ACCUMULATE, check.describe(accum))
  end
  local mpi = kiln.mpi
  local nranks, rank = mpi.size(), mpi.rank()
  local _ <close> = mpi.guard("kiln.train")   -- an error here reaches the other ranks at once
  if B % nranks ~= 0 then fail("'batch' (%d) must be a multiple of the number of processes (%d)", B, nranks) end
  local local_B = B // nranks
  local tokens_per_step = B * T * accum
  local steps = o.steps
  if steps == nil and o.tokens ~= nil then
    if type(o.tokens) ~= "number" or o.tokens <= 0 then fail("'tokens' must be a positive number") end
    steps = math.ceil(o.tokens / tokens_per_step)
  end
  if math.type(steps) ~= "integer" or steps < 0 then fail("give 'steps' (a non-negative integer) or 'tokens'") end

  local data = normalize_data(o.data)
  for _, d in ipairs(data) do
    d.dataset:check_vocab(mcfg.vocab_size)
    d.dataset:check_window(T)
  end
  local eval_opts = o.eval or {}
  local sets = normalize_sets(eval_opts.sets)
  for _, s in ipairs(sets) do s.dataset:check_window(T); s.dataset:check_vocab(mcfg.vocab_size) end
  local eval_steps = step_set(eval_opts, "eval", steps)
  if #sets > 0 and o.final_eval ~= false then eval_steps[steps] = true end
  local ckpt_steps = step_set(o.checkpoint, "checkpoint", steps)

  -- Schedule and weighting -------------------------------------------------------------
  local base_lr = opt:hparams().lr
  local sched = o.schedule ~= nil and check.call("kiln.train: 'schedule'", schedule_mod.make, o.schedule, "schedule")
                or function() return base_lr end
  local weights, normalize = nil, false
  if o.weighting ~= nil then
    local w = check.call("kiln.train: 'weighting'", weighting_mod.make, o.weighting)
    local vec = check.call("kiln.train: 'weighting'", w.vector, w, T)
    if #vec ~= T then fail("weighting: expected %d weights (one per position), got %d", T, #vec) end
    weights, normalize = kiln.tensor_from(vec), w.normalize and true or false
  end

  local log_every = o.log_every or 10
  local quiet = o.quiet or rank ~= 0
  local run_dir = o.run_dir
  local seed = o.seed or 1
  local progress = o.progress
  if progress == nil or rank ~= 0 then progress = not quiet and kiln.isatty(1) end

  -- Run directory: validate before writing anything -------------------------------------
  local config_text
  if run_dir then
    local config = {
      kiln_version = kiln.version,
      command = o.command or (arg and table.concat({ arg[0] or "?", table.unpack(arg) }, " ")) or "?",
      config = o.config or {},
      model = mcfg,
      train = { steps = steps, batch = B, context = T, accumulate = accum, seed = seed,
                tokens_per_step = tokens_per_step,
                schedule = type(sched) == "table" and sched.describe and sched:describe() or "function",
                -- The exact schedule (for LR-aware temporal-law forms), when it can be written.
                schedule_config = (function()
                  if type(sched) ~= "table" or not sched.config then return nil end
                  local ok, c = pcall(sched.config, sched)
                  if ok and pcall(kiln.yaml.encode, c) then return c end
                end)(),
                weighting = o.weighting and weighting_mod.make(o.weighting):describe() or "uniform",
                data = (function()
                  local t = {}
                  for i, d in ipairs(data) do t[i] = { name = d.name, path = d.dataset:path(), weight = d.weight } end
                  return t
                end)(),
                eval_sets = (function()
                  local t = {}
                  for _, s in ipairs(sets) do t[s.name] = s.dataset:path() end
                  return t
                end)() },
      optimizer = opt:hparams(),
    }
    config_text = kiln.yaml.encode(config)
    if util.exists(run_dir .. "/summary.yaml") then
      local summary = kiln.yaml.load(run_dir .. "/summary.yaml")
      if not quiet then print(("%s: already complete (%s)"):format(run_dir, summary.status or "?")) end
      summary.already_complete = true
      return summary
    end
    local old = util.read_file(run_dir .. "/config.yaml")
    if old then
      -- The command line may differ between a run and its resumption; the rest may not.
      local strip = function(s) return (("\n" .. s):gsub("\ncommand: [^\n]*", "")) end
      if strip(old) ~= strip(config_text) and o.resume ~= "force" then
        fail("%s holds a run with another configuration (compare its config.yaml); use a new run_dir", run_dir)
      end
    end
  end

  -- Start or resume ----------------------------------------------------------------------
  local rng = kiln.rng(seed)
  local start_step, tokens_seen = 0, 0
  local state = o.state or {}
  if run_dir then
    if rank == 0 then util.mkdir(run_dir .. "/checkpoints") end
    local ckpt, ckpt_step = newest_checkpoint(run_dir)
    if ckpt and o.resume == false then
      fail("%s has checkpoints (newest %s); resume = false would overwrite them: use a new run_dir", run_dir, ckpt)
    end
    if ckpt then
      local _, meta = kiln.load(ckpt, { model = model, optimizer = opt })
      rng:set_state(meta.rng)
      start_step = tonumber(meta.step)
      tokens_seen = tonumber(meta.tokens)
      if meta.lua_state then state = kiln.yaml.decode(meta.lua_state) end
      if rank == 0 then
        truncate_csv(run_dir .. "/metrics.csv", ckpt_step)
        truncate_csv(run_dir .. "/positions.csv", ckpt_step)
      end
      if not quiet then print(("%s: resuming from step %d (%s)"):format(run_dir, start_step, ckpt)) end
    elseif rank == 0 then
      -- A start with no checkpoint yet: rows a previous attempt logged before dying are
      -- dropped, so they are not written twice.
      truncate_csv(run_dir .. "/metrics.csv", -1)
      truncate_csv(run_dir .. "/positions.csv", -1)
      if not util.exists(run_dir .. "/config.yaml") then util.write_atomic(run_dir .. "/config.yaml", config_text) end
    end
  end

  local metrics_f, positions_f
  local set_names = {}
  for i, s in ipairs(sets) do set_names[i] = s.name end
  if run_dir and rank == 0 then
    local mpath, ppath = run_dir .. "/metrics.csv", run_dir .. "/positions.csv"
    local fresh_m, fresh_p = not util.exists(mpath), not util.exists(ppath)
    metrics_f = assert(io.open(mpath, "ab"))
    positions_f = assert(io.open(ppath, "ab"))
    if fresh_m then
      local header = { "step", "tokens", "lr", "loss", "grad_norm", "tokens_per_s" }
      for _, n in ipairs(set_names) do header[#header + 1] = n .. "_loss" end
      metrics_f:write(util.csv_line(header))
    end
    if fresh_p then
      local header = { "step", "set" }
      for i = 1, T do header[#header + 1] = "pos" .. i end
      positions_f:write(util.csv_line(header))
    end
  end

  local batch = kiln.batch(local_B, T)
  model:reserve(local_B, T)
  local grads, ar_times = model:flat_grads(), {}
  -- Every rank starts from rank 0's weights (a model built with another seed elsewhere
  -- would otherwise train apart without a word).
  if nranks > 1 then mpi.broadcast(model:flat_params(), 0, "initial weights") end
  local history, last_eval = {}, {}
  local status, stop_reason = "complete", nil
  local last_loss, last_norm, last_lr = nil, nil, nil
  local speeds = {}

  local function call_hook(name, info)
    local h = o[name]
    if not h then return false end
    local ok, r = pcall(h, info)
    if not ok then fail("the %s hook failed at step %d: %s", name, info.step, tostring(r)) end
    if r == "stop" then status, stop_reason = "stopped", name; return true end
    return false
  end

  -- The newest checkpoint known to be good: saved with finite parameters, and before any
  -- non-finite loss or evaluation (the run stops at the first one, so none is saved after).
  local last_good = nil
  local function diverged(fmtstr, ...)
    status = "failed"
    local good = last_good or (run_dir and start_step > 0 and newest_checkpoint(run_dir)) or "none"
    local args = table.pack(...)
    args[args.n + 1] = good
    fail("diverged: " .. fmtstr .. "; stopped (last good checkpoint: %s)", table.unpack(args, 1, args.n + 1))
  end

  local function save_checkpoint(step)
    if not run_dir then return nil end
    local bad = model:flat_params():first_nonfinite()
    if bad then
      diverged("step %d: parameter %d of the model is %s, not saved as a checkpoint", step, bad,
        util.num(model:flat_params():get(bad)))
    end
    local path = ("%s/checkpoints/step_%08d.safetensors"):format(run_dir, step)
    if rank == 0 then
      kiln.save(path, { model = model, optimizer = opt, tokenizer = data[1].dataset:tokenizer(), meta = {
        step = step, tokens = tokens_seen, rng = rng:state(), lua_state = encode_state(state) } })
    end
    if nranks > 1 then mpi.barrier("checkpoint") end   -- the file exists on return, on every rank
    return path
  end

  local function do_eval(step)
    local row = {}
    for _, s in ipairs(sets) do
      local mean, per = M.evaluate(model, s.dataset, T, eval_opts.windows or 64, eval_opts.batch or local_B, nranks > 1)
      if mean ~= mean or mean == math.huge or mean == -math.huge then
        diverged("step %d: the evaluation loss on '%s' is %s", step, s.name, util.num(mean))
      end
      row[s.name] = { loss = mean, positions = per }
      if positions_f then
        local fields = { step, s.name }
        for i = 1, T do fields[#fields + 1] = per[i] end
        positions_f:write(util.csv_line(fields))
      end
    end
    if positions_f then positions_f:flush() end
    last_eval = row
    return row
  end

  -- Draw rows first .. first+count-1 of the global batch from ds. Every rank draws all B
  -- rows from the shared rng, so the batch is the single-process one, and keeps its own
  -- rows lo..hi; the others go to a scratch batch.
  local lo, hi = rank * local_B + 1, (rank + 1) * local_B
  local scratch = nranks > 1 and kiln.batch(local_B, T) or nil
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

  -- Sample a batch from the mixture: each row picks its dataset with the run's rng.
  local counts = {}
  local function fill_batch()
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

  -- Median tokens/s over the last n steps, through one reused scratch table.
  local scratch = {}
  local function recent_speed(n)
    local first = math.max(1, #speeds - n + 1)
    for i = #scratch, 1, -1 do scratch[i] = nil end
    for i = first, #speeds do scratch[#scratch + 1] = speeds[i] end
    return util.median(scratch)
  end
  local has_hooks = o.on_step or o.on_eval or o.on_checkpoint
  local step_hp = { lr = 0 }     -- opt:step's argument, reused every step
  local last_progress = -math.huge

  local t_start = kiln.clock()
  local t_last, tokens_last = t_start, 0
  local last_ckpt = nil
  local step = start_step
  while step < steps do
    local sched_ok, lr = pcall(sched, step)
    if not sched_ok then fail("the schedule failed at step %d: %s", step, tostring(lr)) end
    if type(lr) ~= "number" or lr ~= lr or lr < 0 then
      fail("the schedule gave lr = %s at step %d (expected a number >= 0)", tostring(lr), step)
    end
    local t0 = kiln.clock()
    model:zero_grad()
    local loss = 0
    for micro = 1, accum do
      fill_batch()
      local l = model:forward(batch, weights, normalize)
      if l ~= l or l == math.huge or l == -math.huge then
        diverged("step %d: the loss is %s, before the update", step, util.num(l))
      end
      if nranks > 1 and micro == accum then
        -- the global batch's mean gradient, reduced during the last backward; the wait after it
        ar_times[#ar_times + 1] = mpi.backward(model, 1 / accum, "mean", "grads")
      else
        model:backward(1 / accum)
      end
      loss = loss + l / accum
    end
    if nranks > 1 then loss = mpi.allreduce(loss, "mean", "loss") end
    step_hp.lr = lr
    local ok, norm = pcall(opt.step, opt, step_hp)
    if not ok then diverged("step %d: %s, before the update", step, tostring(norm)) end
    step = step + 1
    tokens_seen = tokens_seen + tokens_per_step
    local dt = kiln.clock() - t0
    speeds[#speeds + 1] = tokens_per_step / dt
    last_loss, last_norm, last_lr = loss, norm, lr

    local evaluated = eval_steps[step] and #sets > 0
    local eval_row = evaluated and do_eval(step) or nil
    -- Hooks get a fresh table each step (they may keep it); without hooks none is built.
    local info = has_hooks and { step = step, tokens = tokens_seen, loss = loss, lr = lr, grad_norm = norm,
                                 model = model, optimizer = opt, state = state, steps = steps,
                                 eval = eval_row } or nil
    if metrics_f and (step % log_every == 0 or evaluated or step == steps) then
      local now = kiln.clock()
      local tps = (tokens_seen - tokens_last) > 0 and (now - t_last) > 0 and recent_speed(log_every) or nil
      local fields = { step, tokens_seen, lr, loss, norm, tps and math.floor(tps + 0.5) or nil }
      for _, n in ipairs(set_names) do fields[#fields + 1] = evaluated and eval_row[n].loss or nil end
      metrics_f:write(util.csv_line(fields))
      metrics_f:flush()
      t_last, tokens_last = now, tokens_seen
    end
    if not quiet then
      local now = kiln.clock()
      -- The live line is redrawn at most 5 times a second; plain lines every log_every steps.
      if progress and (now - last_progress >= 0.2 or step == steps or evaluated) then
        last_progress = now
        local tps = recent_speed(20) or 0
        local eta = (steps - step) * tokens_per_step / math.max(tps, 1e-9)
        io.write(("\r\27[Kstep %d/%d  loss %.4f  lr %.2e  %.0f tok/s  ETA %s"):format(
          step, steps, loss, lr, tps, format_eta(eta)))
        io.stdout:flush()
      elseif not progress and (step % log_every == 0 or step == steps) then
        print(("step %d/%d  loss %.4f  lr %.2e  grad %.3f  %.0f tok/s"):format(
          step, steps, loss, lr, norm, recent_speed(20) or 0))
      end
      if evaluated then
        local parts = {}
        for _, n in ipairs(set_names) do parts[#parts + 1] = ("%s %.4f"):format(n, eval_row[n].loss) end
        if progress then io.write("\n") end
        print(("eval @ %d: %s"):format(step, table.concat(parts, "  ")))
      end
    end
    local stop = info and call_hook("on_step", info) or false
    if evaluated and info then stop = call_hook("on_eval", info) or stop end
    if ckpt_steps[step] or (stop and run_dir) then
      last_ckpt = save_checkpoint(step)
      last_good = last_ckpt or last_good
      if info then
        info.checkpoint = last_ckpt
        stop = call_hook("on_checkpoint", info) or stop
      end
    end
    if stop then break end
  end
  if progress and not quiet then io.write("\n") end
  if metrics_f then metrics_f:close(); positions_f:close() end

  local summary = {
    status = status, steps = step, tokens = tokens_seen, final_loss = last_loss,
    final_lr = last_lr, final_grad_norm = last_norm,
    tokens_per_s = util.median(speeds) and math.floor(util.median(speeds) + 0.5) or nil,
    wall_seconds = kiln.clock() - t_start, eval = {},
  }
  if stop_reason then summary.stopped_by = stop_reason end
  if nranks > 1 then
    summary.processes = nranks
    summary.allreduce_ms = util.median(ar_times) and util.median(ar_times) * 1000 or nil
  end
  summary.positions = {}
  for name, r in pairs(last_eval) do
    summary.eval[name] = r.loss
    summary.positions[name] = r.positions
  end
  if run_dir and status == "complete" then
    if not ckpt_steps[step] then save_checkpoint(step) end
    if rank == 0 then util.write_atomic(run_dir .. "/summary.yaml", kiln.yaml.encode(summary)) end
  end
  if nranks > 1 then mpi.barrier("end of kiln.train") end   -- rank 0's files are complete when any rank returns
  summary.model, summary.optimizer, summary.state = model, opt, state
  return summary
end

-- is_divergence(err): whether an error raised by kiln.train is a run stopped by a
-- non-finite loss, evaluation or parameter (a result of the experiment, not a mistake in it).
function M.is_divergence(err)
  return type(err) == "string" and err:find("kiln.train: diverged: ", 1, true) ~= nil
end

return setmetatable(M, { __call = function(_, o) return M.run(o) end })
