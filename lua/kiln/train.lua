-- kiln.train — the training loop over the core's primitives. Its parts: kiln.train.options
-- (the options checked and resolved into a plan), kiln.runlog (the run directory: identity,
-- lock, resume files, checked writes), kiln.train.sampler (the batches), and here the step,
-- evaluation, checkpoints, hooks and console. With run_dir it writes:
--
--   run_dir/config.yaml     the resolved configuration, kiln version, command, fingerprint
--   run_dir/metrics.csv     step, tokens, lr, loss_weighted, loss_unweighted, grad_norm, <set>_loss ...
--   run_dir/timing.csv      step, tokens_per_s, seconds (apart, so metrics.csv is reproducible)
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
--     restart = false, start = "path/to/start.safetensors",
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
-- same results as an uninterrupted run, provided its fingerprint is the same (else it is
-- refused, unless restart = true); one whose summary.yaml exists returns that summary.
local kiln = require "kiln"
local util = require "kiln.util"
local check = require "kiln.check"
local evaluate_mod = require "kiln.evaluate"
local options = require "kiln.train.options"
local runlog = require "kiln.runlog"
local sampler = require "kiln.train.sampler"

local M = {}
local fail = options.fail

-- Evaluate the model on a dataset's fixed windows: mean loss and the per-position means.
-- With fewer windows asked for than the list holds, they are spread evenly over the list
-- (windows 1, 1+s, 1+2s, ...), so a validation file's later documents count too.
-- kiln.evaluate returns, as a third value, the standard errors and per-window losses;
-- windows = nil or "all" evaluates every window. With split = true (a collective: every rank
-- must call it) each rank evaluates its share of the windows.
function M.evaluate(model, ds, T, windows, B, split)
  local who = "kiln.train.evaluate"
  check.arg(who, "model", model, "kiln.Model")
  check.arg(who, "dataset", ds, "kiln.Dataset")
  T = check.integer(who, "T", T, 1, check.MAX_POSITIONS)
  if windows ~= nil and windows ~= "all" then windows = check.integer(who, "windows", windows, 1) end
  if B ~= nil then B = check.integer(who, "batch", B, 1, check.MAX_BATCH) end
  check.arg(who, "split", split, "?boolean")
  local r = evaluate_mod.run(model, ds, T, { windows = windows, batch = B, split = split })
  return r.loss, r.positions, r
end

-- The run's state between its parts (one table, so each part is a function of it).
local function new_run(p, o)
  return {
    p = p, o = o, model = p.model, opt = p.opt, rng = kiln.rng(p.seed), state = o.state or {},
    step = 0, tokens = 0, status = "complete", stop_reason = nil, last = {}, last_eval = {},
    speeds = {}, ar_times = {}, last_good = nil, saved = {},
  }
end

local function call_hook(r, name, info)
  local h = r.o[name]
  if not h then return false end
  local ok, v = pcall(h, info)
  if not ok then fail("the %s hook failed at step %d: %s", name, info.step, tostring(v)) end
  if v == "stop" then r.status, r.stop_reason = "stopped", name; return true end
  return false
end

-- A non-finite loss, evaluation or parameter: stop, naming the newest checkpoint known to be
-- good (saved with finite parameters, before any non-finite value: none is saved after).
local function diverged(r, fmtstr, ...)
  r.status = "failed"
  local good = r.last_good or (r.log and r.log.checkpoint) or "none"
  local args = table.pack(...)
  args[args.n + 1] = good
  fail("diverged: " .. fmtstr .. "; stopped (last good checkpoint: %s)", table.unpack(args, 1, args.n + 1))
end

-- The averaged weights as a model checkpoint of their own (loadable as the model), written
-- before the checkpoint it belongs to, so a checkpoint never lacks its average.
function M.average_path(checkpoint)
  check.string("kiln.train.average_path", "checkpoint", checkpoint, true)
  return (checkpoint:gsub("%.safetensors$", ".average.safetensors"))
end
local average_path = M.average_path

local function save_average(r, path)
  r.opt:swap_average()
  local ok, err = pcall(kiln.save, average_path(path), { model = r.model, tokenizer = r.p.data[1].dataset:tokenizer(),
    meta = { average_count = r.opt:average().count } })
  r.opt:swap_average()
  if not ok then error(err, 0) end
end

-- An average written by save_average goes back into the optimizer, bit for bit.
local function load_average(r, apath, count)
  if count == 0 then return end
  r.opt:set_average_count(count)   -- first: there is no average to swap in before
  r.opt:swap_average()
  local ok, err = pcall(kiln.load, apath, { model = r.model })
  r.opt:swap_average()
  if not ok then error(err, 0) end
end

local function save_checkpoint(r, step)
  local p = r.p
  if not p.run_dir then return nil end
  local flat = r.model:flat_params()
  local bad = flat:first_nonfinite()
  if bad then
    diverged(r, "step %d: parameter %d of the model is %s, not saved as a checkpoint", step, bad, util.num(flat:get(bad)))
  end
  local path = ("%s/checkpoints/step_%08d.safetensors"):format(p.run_dir, step)
  if p.rank == 0 and p.average then save_average(r, path) end
  if p.rank == 0 then
    kiln.save(path, { model = r.model, optimizer = r.opt, tokenizer = p.data[1].dataset:tokenizer(), meta = {
      step = step, tokens = r.tokens, rng = r.rng:state(), lua_state = kiln.yaml.encode(r.state),
      last_step = kiln.yaml.encode(r.last), average_count = p.average and r.opt:average().count or nil } })
  end
  if p.nranks > 1 then kiln.mpi.barrier("checkpoint") end   -- the file exists on return, on every rank
  r.saved[step], r.last_good = true, path
  return path
end

-- The averaged weights (optimizer-kept EMA or mean), evaluated on every set: swapped into the
-- model, evaluated, swapped back (bit-exact both ways). Before the first averaged step there
-- is no average yet: nil. The same windows as the raw weights' evaluation, so the two are
-- paired window by window (windows/<set>_avg_step<N>.csv).
local function eval_average(r, step, windows, write_rows)
  if r.opt:average().count == 0 then return nil end
  local p, out = r.p, {}
  r.opt:swap_average()
  local ok, err = pcall(function()
    for _, s in ipairs(p.sets) do
      local mean, _, e = M.evaluate(r.model, s.dataset, p.T, windows, p.eval_opts.batch or p.local_B, p.nranks > 1)
      out[s.name] = mean
      if write_rows and r.log and r.log.positions then
        evaluate_mod.write_windows(("%s/windows/%s_avg_step%08d.csv"):format(p.run_dir, s.name, step), e)
      end
    end
  end)
  r.opt:swap_average()
  if not ok then error(err, 0) end
  for name, loss in pairs(out) do
    if loss ~= loss or loss == math.huge or loss == -math.huge then
      diverged(r, "step %d: the averaged weights' evaluation loss on '%s' is %s", step, name, util.num(loss))
    end
  end
  return out
end

-- Evaluate every set at `step`; with write_rows, log the per-position losses.
local function position_row(step, name, values, T)
  local fields = { step, name }
  for i = 1, T do fields[#fields + 1] = values[i] end
  return fields
end

-- eval.windows windows (default 64) at every evaluation, eval.final_windows at the last step.
-- Each set's standard errors go to positions_se.csv, its per-window losses to
-- windows/<set>_step<N>.csv (the averaged weights' to windows/<set>_avg_step<N>.csv).
local function do_eval(r, step, write_rows)
  local p = r.p
  local row = {}
  local windows = p.eval_windows
  if step == p.steps and p.eval_opts.final_windows ~= nil then windows = p.eval_opts.final_windows end
  for _, s in ipairs(p.sets) do
    local mean, per, e = M.evaluate(r.model, s.dataset, p.T, windows, p.eval_opts.batch or p.local_B, p.nranks > 1)
    if mean ~= mean or mean == math.huge or mean == -math.huge then
      diverged(r, "step %d: the evaluation loss on '%s' is %s", step, s.name, util.num(mean))
    end
    row[s.name] = { loss = mean, positions = per, se = e.se, positions_se = e.positions_se, n_windows = e.n,
                    windows = e.windows, windows_file = ("windows/%s_step%08d.csv"):format(s.name, step) }
    if write_rows and r.log and r.log.positions then
      r.log.positions:line(position_row(step, s.name, per, p.T))
      if e.se then r.log.positions_se:line(position_row(step, s.name, e.positions_se, p.T)) end
      evaluate_mod.write_windows(p.run_dir .. "/" .. row[s.name].windows_file, e)
    end
  end
  r.last_eval = row
  r.last_eval_avg = p.average and eval_average(r, step, windows, write_rows) or nil
  return row
end

-- Resume from the run directory's newest checkpoint, if any.
local function resume(r)
  local log, p = r.log, r.p
  if not (log and log.checkpoint) then
    if p.start then kiln.load(p.start, { model = r.model }) end
    if p.average_from then load_average(r, p.average_from.path, p.average_from.count) end
    return
  end
  local _, meta = kiln.load(log.checkpoint, { model = r.model, optimizer = r.opt })
  r.rng:set_state(meta.rng)
  r.step, r.tokens = tonumber(meta.step), tonumber(meta.tokens)
  if meta.lua_state then r.state = kiln.yaml.decode(meta.lua_state) end
  if meta.last_step then r.last = kiln.yaml.decode(meta.last_step) end
  local count = p.average and math.tointeger(tonumber(meta.average_count or "0")) or 0
  if count > 0 then
    local apath = average_path(log.checkpoint)
    if not util.exists(apath) then
      fail("%s: the weight average saved with this checkpoint is missing (%s)", log.checkpoint, apath)
    end
    load_average(r, apath, count)
  end
  r.saved[r.step], r.last_good = true, log.checkpoint
  if not p.quiet then print(("%s: resuming from step %d (%s)"):format(p.run_dir, r.step, log.checkpoint)) end
end

-- One optimizer step at r.step (0-based): the LR the schedule gives for it, `accumulate`
-- micro-batches, the update. Sets r.last = {lr, loss_weighted, loss_unweighted, grad_norm}.
local function train_step(r, k)
  local p, model = r.p, r.model
  local lr = p.lr[r.step + 1]
  model:zero_grad()
  local loss = 0
  for micro = 1, p.accum do
    k.fill()
    local l = model:forward(k.batch, p.weights, p.normalize)
    if l ~= l or l == math.huge or l == -math.huge then
      diverged(r, "step %d: the loss is %s, before the update", r.step, util.num(l))
    end
    model:add_position_losses(k.pos_acc)   -- the unweighted loss, from the same forward
    if p.nranks > 1 and micro == p.accum then
      -- the global batch's mean gradient, reduced in buckets during the last backward;
      -- what is recorded is the wait after it
      r.ar_times[#r.ar_times + 1] = kiln.mpi.backward(model, 1 / p.accum, "mean", "grads")
    else
      model:backward(1 / p.accum)
    end
    loss = loss + l / p.accum
  end
  local unweighted = k.pos_acc:sum() / (p.local_B * p.T * p.accum)
  k.pos_acc:fill(0)
  if p.nranks > 1 then   -- the global batch's mean losses, on every rank
    loss = kiln.mpi.allreduce(loss, "mean", "loss")
    unweighted = kiln.mpi.allreduce(unweighted, "mean", "loss")
  end
  k.hp.lr = lr
  local ok, norm = pcall(r.opt.step, r.opt, k.hp)
  if not ok then diverged(r, "step %d: %s, before the update", r.step, tostring(norm)) end
  r.step, r.tokens = r.step + 1, r.tokens + p.tokens_per_step
  local last = r.last
  last.lr, last.loss_weighted, last.loss_unweighted, last.grad_norm = lr, loss, unweighted, norm
end

-- Median tokens/s over the last n steps, through one reused scratch table.
local function recent_speed(r, n)
  local speeds, scratch = r.speeds, r.speed_scratch
  for i = #scratch, 1, -1 do scratch[i] = nil end
  for i = math.max(1, #speeds - n + 1), #speeds do scratch[#scratch + 1] = speeds[i] end
  return util.median(scratch)
end

-- The metrics row of step s (after s updates): lr is the LR that update used, schedule(s - 1).
-- Timings go to timing.csv, so metrics.csv of a resumed run is byte for byte the same.
local function log_metrics(r, evaluated, eval_row)
  local p, log, last = r.p, r.log, r.last
  if not (log and log.metrics) then return end
  local step = r.step
  if not (step % p.log_every == 0 or evaluated or step == p.steps) then return end
  local fields = { step, r.tokens, util.num32(last.lr), last.loss_weighted, last.loss_unweighted, last.grad_norm }
  for _, s in ipairs(p.sets) do fields[#fields + 1] = evaluated and eval_row[s.name].loss or nil end
  if p.average then
    local avg = evaluated and r.last_eval_avg or {}
    for i, s in ipairs(p.sets) do fields[6 + #p.sets + i] = avg[s.name] end
  end
  log.metrics:line(fields, 6 + #p.sets * (p.average and 2 or 1))
  local now = kiln.clock()
  local tps = r.tokens > r.tokens_last and recent_speed(r, p.log_every) or nil
  log.timing:line({ step, tps and math.floor(tps + 0.5) or nil, ("%.3f"):format(now - r.t_start) })
  r.tokens_last = r.tokens
end

local function format_eta(seconds)
  if seconds ~= seconds or seconds == math.huge then return "?" end
  seconds = math.floor(seconds + 0.5)
  if seconds >= 3600 then return ("%dh%02dm"):format(seconds // 3600, seconds % 3600 // 60) end
  if seconds >= 60 then return ("%dm%02ds"):format(seconds // 60, seconds % 60) end
  return ("%ds"):format(seconds)
end

-- The console: a live line on a terminal (at most 5 redraws a second), else a plain line every
-- log_every steps; the evaluation losses when there are some.
local function print_progress(r, evaluated, eval_row)
  local p, last, step = r.p, r.last, r.step
  if p.quiet then return end
  local now = kiln.clock()
  if p.progress and (now - r.last_progress >= 0.2 or step == p.steps or evaluated) then
    r.last_progress = now
    local tps = recent_speed(r, 20) or 0
    local eta = (p.steps - step) * p.tokens_per_step / math.max(tps, 1e-9)
    io.write(("\r\27[Kstep %d/%d  loss %.4f  lr %.2e  %.0f tok/s  ETA %s"):format(
      step, p.steps, last.loss_weighted, last.lr, tps, format_eta(eta)))
    io.stdout:flush()
  elseif not p.progress and (step % p.log_every == 0 or step == p.steps) then
    print(("step %d/%d  loss %.4f  lr %.2e  grad %.3f  %.0f tok/s"):format(
      step, p.steps, last.loss_weighted, last.lr, last.grad_norm, recent_speed(r, 20) or 0))
  end
  if evaluated then
    local parts = {}
    for _, s in ipairs(p.sets) do
      local e = eval_row[s.name]
      parts[#parts + 1] = e.se and ("%s %.4f ± %.4f (%d windows)"):format(s.name, e.loss, e.se, e.n_windows)
                          or ("%s %.4f"):format(s.name, e.loss)
    end
    if p.progress then io.write("\n") end
    print(("eval @ %d: %s"):format(step, table.concat(parts, "  ")))
  end
end

-- The hooks after a step and the checkpoint (when due or stopping); true when a hook stopped.
local function after_step(r, evaluated, eval_row)
  local p, o, last = r.p, r.o, r.last
  if not (o.on_step or o.on_eval or o.on_checkpoint) then
    if p.ckpt_steps[r.step] then save_checkpoint(r, r.step) end
    return false
  end
  -- Hooks get a fresh table each step (they may keep it).
  local info = { step = r.step, tokens = r.tokens, loss = last.loss_weighted, loss_unweighted = last.loss_unweighted,
                 lr = last.lr, grad_norm = last.grad_norm, model = r.model, optimizer = r.opt, state = r.state,
                 steps = p.steps, eval = eval_row }
  local stop = call_hook(r, "on_step", info)
  if evaluated then stop = call_hook(r, "on_eval", info) or stop end
  if p.ckpt_steps[r.step] or (stop and p.run_dir) then
    info.checkpoint = save_checkpoint(r, r.step)
    stop = call_hook(r, "on_checkpoint", info) or stop
  end
  return stop
end

-- The buffers of the step, made once: no allocation inside the loop.
local function step_kit(r)
  local p = r.p
  local batch = kiln.batch(p.local_B, p.T)
  r.model:reserve(p.local_B, p.T)
  return { batch = batch, fill = sampler.new(p, batch, r.rng), pos_acc = kiln.tensor(p.T),
           hp = { lr = 0 } }
end

-- eval.at = {0}: the starting weights, before any update (what forgetting is measured
-- against): a metrics row with no LR or training loss, positions, on_eval with step 0. A
-- resumed run has it already. Returns true when the hook stopped the run.
local function eval_at_start(r)
  local p = r.p
  if r.step ~= 0 or not p.eval_steps[0] or #p.sets == 0 then return false end
  local row = do_eval(r, 0, true)
  local fields, parts = { 0, r.tokens, nil, nil, nil, nil }, {}
  for i, s in ipairs(p.sets) do
    fields[6 + i] = row[s.name].loss
    parts[i] = ("%s %.4f"):format(s.name, row[s.name].loss)
  end
  local avg = p.average and r.last_eval_avg or {}   -- a continued average (average.from) has one
  for i, s in ipairs(p.sets) do fields[6 + #p.sets + i] = avg[s.name] end
  if r.log and r.log.metrics then r.log.metrics:line(fields, 6 + #p.sets * (p.average and 2 or 1)) end
  if not p.quiet then print(("eval @ 0: %s"):format(table.concat(parts, "  "))) end
  return call_hook(r, "on_eval", { step = 0, tokens = r.tokens, model = r.model, optimizer = r.opt,
                                   state = r.state, steps = p.steps, eval = row })
end

local function train_loop(r)
  local p = r.p
  local k = step_kit(r)
  -- Every rank starts from rank 0's weights (a model built with another seed elsewhere
  -- would otherwise train apart without a word).
  if p.nranks > 1 then kiln.mpi.broadcast(r.model:flat_params(), 0, "initial weights") end
  r.t_start, r.tokens_last, r.last_progress, r.speed_scratch = kiln.clock(), r.tokens, -math.huge, {}
  if eval_at_start(r) then return end
  while r.step < p.steps do
    local t0 = kiln.clock()
    train_step(r, k)
    r.speeds[#r.speeds + 1] = p.tokens_per_step / (kiln.clock() - t0)
    local evaluated = p.eval_steps[r.step] and #p.sets > 0
    local eval_row = evaluated and do_eval(r, r.step, true) or nil
    log_metrics(r, evaluated, eval_row)
    print_progress(r, evaluated, eval_row)
    if after_step(r, evaluated, eval_row) then break end
  end
  if p.progress and not p.quiet then io.write("\n") end
end

local function summary_of(r)
  local p, last = r.p, r.last
  local median = util.median(r.speeds)
  local summary = {
    status = r.status, steps = r.step, tokens = r.tokens, final_loss = last.loss_weighted,
    final_loss_unweighted = last.loss_unweighted, final_lr = last.lr and tonumber(util.num32(last.lr)),
    final_grad_norm = last.grad_norm, tokens_per_s = median and math.floor(median + 0.5) or nil,
    wall_seconds = kiln.clock() - (r.t_start or kiln.clock()), eval = {}, positions = {},
  }
  if r.stop_reason then summary.stopped_by = r.stop_reason end
  if p.nranks > 1 then
    summary.processes = p.nranks
    summary.allreduce_ms = util.median(r.ar_times) and util.median(r.ar_times) * 1000 or nil
  end
  -- the last evaluation's standard errors (over windows), window counts and the files of its
  -- per-window losses (relative to run_dir); the losses themselves in memory only
  summary.eval_se, summary.eval_windows, summary.positions_se, summary.windows_file = {}, {}, {}, {}
  local window_losses = {}
  for name, e in pairs(r.last_eval) do
    summary.eval[name] = e.loss
    summary.positions[name] = e.positions
    summary.eval_se[name], summary.positions_se[name], summary.eval_windows[name] = e.se, e.positions_se, e.n_windows
    summary.windows_file[name] = p.run_dir and e.windows_file or nil
    window_losses[name] = e.windows
  end
  r.window_losses = window_losses
  if p.average then summary.eval_average = r.last_eval_avg or {} end
  return summary
end

-- The end of a complete run: the final checkpoint (unless saved), and when a resumed run
-- starts at its final step (killed after the checkpoint, before the summary) the final
-- evaluation again from that checkpoint, so the summary is the uninterrupted run's.
local function finish(r)
  local p = r.p
  if r.status ~= "complete" then return end
  if p.eval_steps[r.step] and #p.sets > 0 and next(r.last_eval) == nil then do_eval(r, r.step, false) end
  if p.run_dir and not r.saved[r.step] then save_checkpoint(r, r.step) end
end

function M.run(o)
  local _ <close> = kiln.mpi.guard("kiln.train")   -- an error here reaches the other ranks at once
  local p = options.resolve(o)
  local r = new_run(p, o)
  local log, done
  if p.run_dir then
    log, done = runlog.open(p, o)
    if done then return done end
  end
  local _log <close> = log   -- the lock is released and the files closed however the run ends
  r.log = log
  resume(r)
  train_loop(r)
  finish(r)
  local summary = summary_of(r)
  if log then runlog.finish(log, r.status == "complete" and summary or nil) end
  if p.nranks > 1 then kiln.mpi.barrier("end of kiln.train") end   -- rank 0's files are complete when any rank returns
  summary.model, summary.optimizer, summary.state = r.model, r.opt, r.state
  summary.window_losses = r.window_losses   -- in memory only: the files hold them on disk
  return summary
end

-- is_divergence(err): whether an error raised by kiln.train is a run stopped by a
-- non-finite loss, evaluation or parameter (a result of the experiment, not a mistake in it).
function M.is_divergence(err)
  return type(err) == "string" and err:find("kiln.train: diverged: ", 1, true) ~= nil
end

return setmetatable(M, { __call = function(_, o) return M.run(o) end })
