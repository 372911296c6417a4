#!/usr/bin/env kiln
-- kiln.protocol on tiny data: an upstream phase and continuations run; a continuation's first
-- step starts from exactly the saved upstream weights (checked in a hook and by replaying the
-- first update by hand); its schedule matches its description at chosen steps; stopping
-- between phases or inside one and starting again gives byte-identical final checkpoints;
-- carried optimizer state equals the saved moments, reset state is zero.
local t = dofile("tests/lua/tap.lua")
local kiln = require "kiln"
local util = require "kiln.util"
local protocol = require "kiln.protocol"
local dir = t.tmpdir()
kiln.set_threads(1)

local EN, OTHER = "tests/data/tiny_en.txt", "tests/data/tiny_other.txt"
local PEAK, FLOOR, START = 3e-3, 3e-4, 3e-4

-- Every element of two tensors equal (float32 -> double is exact, so == is bitwise here).
local function same(a, b)
  local x, y = a:clone():view(a:numel()):totable(), b:clone():view(b:numel()):totable()
  if #x ~= #y then return false end
  for i = 1, #x do if x[i] ~= y[i] then return false end end
  return true
end
local function all_zero(a)
  for _, v in ipairs(a:clone():view(a:numel()):totable()) do if v ~= 0 then return false end end
  return true
end

local hooks = {}
local function build(d, extra)
  extra = extra or {}
  local P = protocol {
    dir = d, model = { n_layer = 1, n_head = 2, n_embd = 16, block_size = 16 },
    batch = 4, context = 16, seed = 7, quiet = true, checkpoint_every = 5,
    eval = { sets = { upstream = EN, downstream = OTHER }, every = 4, windows = 8 },
    on_phase_start = function(...) if hooks.start then hooks.start(...) end end,
    on_phase_end = function(...) if hooks.finish then hooks.finish(...) end end,
  }
  P:phase { name = "upstream", data = EN, steps = 12, checkpoints = { early = 0.5 },
            schedule = { kind = "cosine", peak = PEAK, warmup = 2, floor_frac = 0.1 } }
  -- 8 steps; warmup 25% of the budget (2 steps) from START, cosine to the floor at 75% (step 6)
  P:phase { name = "down", from = "upstream", data = OTHER, steps = 8, seed = 11,
            schedule = { kind = "rewarm", peak = PEAK, warmup_frac = 0.25, floor_frac = 0.1,
                         decay_frac = 0.75, start = START } }
  -- 4 steps of a 6-step (384-token) budget: the first part of a longer run
  P:phase { name = "reset", from = "upstream.early", data = OTHER, steps = 4, budget = 384, optimizer = "reset",
            schedule = { kind = "rewarm", peak = PEAK, floor_frac = 0.1 } }
  P:phase { name = "replay", from = "upstream", data = OTHER, replay = 0.5, steps = 4,
            schedule = { kind = "constant", lr = FLOOR } }
  for _, f in ipairs(extra) do f(P) end
  return P
end

-- 1. A whole protocol, with checks in the hooks. --------------------------------------------
local d1 = dir .. "/p1"
local upstream_opt, upstream_model
local checks = {}
local lrs = {}
hooks.finish = function(name, summary)
  if name == "upstream" then upstream_opt, upstream_model = summary.optimizer, summary.model end
end
hooks.start = function(name, model, opt, info)
  local saved = kiln.model(model:config())
  local saved_opt = kiln.adamw(saved)
  if info.source then kiln.load(info.source, { model = saved, optimizer = saved_opt }) end
  local c = { weights_equal = same(model:flat_params(), saved:flat_params()), moments_equal = true,
              moments_zero = true, moments_live = true, t = opt.t, saved_t = saved_opt.t }
  for _, p in ipairs(model:params()) do
    local m, v = opt:moments(p.name)
    local sm, sv = saved_opt:moments(p.name)
    c.moments_equal = c.moments_equal and same(m, sm) and same(v, sv)
    c.moments_zero = c.moments_zero and all_zero(m) and all_zero(v)
    if name == "down" then
      local lm, lv = upstream_opt:moments(p.name)
      c.moments_live = c.moments_live and same(m, lm) and same(v, lv)
    end
  end
  if name == "down" then c.live_weights = same(model:flat_params(), upstream_model:flat_params()) end
  -- Replay the first update by hand from the saved checkpoint: same batch (the phase's seed),
  -- same lr (the schedule at step 0) -> must equal the phase's weights after its step 1.
  if name == "down" then
    local rng, batch = kiln.rng(11), kiln.batch(4, 16)
    kiln.dataset(OTHER):sample(batch, rng)
    saved:zero_grad(); saved:forward(batch); saved:backward()
    saved_opt:step { lr = START }
    c.after_first = saved:flat_params():clone()
  end
  checks[name] = c
end
local P1 = build(d1)
local r1 = P1:run {
  on_step = function(phase, info)
    lrs[phase] = lrs[phase] or {}
    lrs[phase][info.step - 1] = info.lr
    if phase == "down" and info.step == 1 then checks.down.first_step_equal = same(info.model:flat_params(), checks.down.after_first) end
  end,
}
t.eq(r1.status, "complete", "a protocol with an upstream phase and three continuations runs")
t.eq(table.concat(r1.order, ","), "upstream,down,reset,replay", "phases run in the order they were added")
for _, n in ipairs(r1.order) do
  t.ok(util.exists(d1 .. "/" .. n .. "/summary.yaml") and util.exists(d1 .. "/" .. n .. "/start.yaml"),
    n .. ": a complete kiln.train run directory with its start evaluation")
end
t.ok(util.exists(d1 .. "/protocol.yaml"), "protocol.yaml records the phases")
t.ok(util.exists(d1 .. "/upstream/checkpoints/step_00000006.safetensors"), "the named 'early' checkpoint (50% of 12 steps) exists")

-- The second phase starts from exactly the saved upstream weights.
t.ok(checks.down.weights_equal, "down: weights before its first step equal the saved upstream checkpoint (bitwise)")
t.ok(checks.down.live_weights, "down: ... and the upstream run's final in-memory weights")
t.ok(checks.down.first_step_equal, "down: its first update equals one replayed by hand from the checkpoint (bitwise)")

-- Carry vs reset.
t.ok(checks.down.moments_equal and checks.down.moments_live and not checks.down.moments_zero,
  "carry: the moments equal the saved ones (file and live optimizer), and are not zero")
t.eq(checks.down.t, 12, "carry: the optimizer's step count continues from the upstream's (12)")
t.ok(checks.reset.weights_equal, "reset: the weights equal the 'early' checkpoint")
t.ok(checks.reset.moments_zero, "reset: every moment is zero")
t.eq(checks.reset.t, 0, "reset: the step count is 0")
t.eq(checks.reset.saved_t, 6, "(the early checkpoint itself holds 6 steps of moments)")

-- The schedule applied matches its description at chosen steps.
local function cosine(k, W, n) return PEAK - (PEAK - FLOOR) * 0.5 * (1 - math.cos(math.pi * (k - W) / (n - W))) end
local want = { [0] = START, [1] = START + (PEAK - START) * 0.5, [2] = PEAK, [3] = cosine(3, 2, 6),
               [4] = cosine(4, 2, 6), [5] = cosine(5, 2, 6), [6] = FLOOR, [7] = FLOOR }
local ok_lr = true
for k = 0, 7 do
  if math.abs(lrs.down[k] - want[k]) > 1e-12 * PEAK then ok_lr = false; t.note(("step %d: lr %.17g want %.17g"):format(k, lrs.down[k], want[k])) end
end
t.ok(ok_lr, "down: warmup 2 steps from the start LR, peak at step 2, cosine to the floor at step 6, flat after")
t.near(lrs.down[4], (PEAK + FLOOR) / 2, 1e-15, "down: half way down the cosine at step 4")
t.eq(lrs.reset[0], PEAK, "reset: warmup 0% starts at the peak")
t.eq(lrs.reset[3], cosine(3, 0, 6), "reset: cosine over its 6-step budget, of which it runs 4")
t.eq(lrs.replay[2], FLOOR, "replay: a constant schedule")
local cfg = kiln.yaml.load(d1 .. "/replay/config.yaml")
t.eq(#cfg.train.data, 2, "replay: the phase trains on a mixture of the new and the upstream data")
t.near(cfg.train.data[2].weight, 0.5, 1e-12, "replay: upstream weight 0.5")
t.eq(cfg.train.schedule, "constant(lr=0.0003)", "config.yaml records the schedule's description")

-- Curves and summaries.
local curve = P1:curve("down")
t.eq(curve[1].tokens, 0, "a curve starts with the evaluation of the starting weights")
t.eq(#curve, 1 + 2, "... then the evaluations at steps 4 and 8")
t.eq(curve[1].upstream, P1:curve("upstream")[#P1:curve("upstream")].upstream,
  "the continuation's start equals the upstream phase's final evaluation")
local s = protocol.summarize({ { tokens = 0, upstream = 2 }, { tokens = 10, upstream = 2.5 }, { tokens = 20, upstream = 2.2 } },
  "upstream", { 5, 10, 15 })
t.ok(s.start == 2 and s.at[1] == 2 and s.at[2] == 2.5 and s.at[3] == 2.5 and s.final == 2.2,
  "summarize: the last value at or before each point, and the final")
t.ok(s.max_rise == 0.5 and s.max_rise_tokens == 10, "summarize: the largest rise above the start and where")

-- A complete protocol run again trains nothing.
local started = 0
hooks.start, hooks.finish = function() started = started + 1 end, nil
local again = build(d1):run()
t.ok(again.status == "complete" and started == 0, "running a complete protocol again skips every phase")

-- 2. Stop between phases, start again: same final checkpoints. --------------------------------
local function bytes(d, phase, step) return util.read_file(("%s/%s/checkpoints/step_%08d.safetensors"):format(d, phase, step)) end
local d2 = dir .. "/p2"
local r2 = build(d2):run { upto = "upstream" }
t.ok(r2.status == "complete" and #r2.order == 1 and not util.exists(d2 .. "/down"), "run{upto=...} stops after that phase")
build(d2):run()
for _, p in ipairs { { "down", 8 }, { "reset", 4 }, { "replay", 4 } } do
  t.ok(bytes(d1, p[1], p[2]) ~= nil and bytes(d1, p[1], p[2]) == bytes(d2, p[1], p[2]),
    p[1] .. ": stopped between phases and started again -> byte-identical final checkpoint")
end
local function metrics(d)
  local c = util.read_csv(d .. "/down/metrics.csv")
  local out = {}
  for _, r in ipairs(c.rows) do
    for i, h in ipairs(c.header) do if h ~= "tokens_per_s" then out[#out + 1] = tostring(r[i]) end end
  end
  return table.concat(out, ",")
end
t.eq(metrics(d2), metrics(d1), "down: the same metrics (apart from throughput)")

-- 3. Stop inside a continuation (a hook says "stop" at step 3), start again. -------------------
local d3 = dir .. "/p3"
local r3 = build(d3):run { on_step = function(phase, info) if phase == "down" and info.step == 3 then return "stop" end end }
t.eq(r3.status, "stopped", "a hook can stop the protocol inside a phase")
t.ok(not util.exists(d3 .. "/reset"), "later phases have not started")
build(d3):run()
t.ok(bytes(d1, "down", 8) == bytes(d3, "down", 8), "down: stopped at step 3 and resumed -> byte-identical final checkpoint")
t.ok(bytes(d1, "replay", 4) == bytes(d3, "replay", 4), "replay: also identical")

-- 4. Extending a phase, errors. ---------------------------------------------------------------
local Pe = build(dir .. "/p4")
Pe:phase { name = "reset", from = "upstream.early", data = OTHER, steps = 6, budget = 384, optimizer = "reset",
           schedule = { kind = "rewarm", peak = PEAK, floor_frac = 0.1 } }
t.eq(Pe.by_name.reset.steps, 6, "adding a phase again with more steps extends it")
t.err("added twice with different settings", function()
  Pe:phase { name = "reset", from = "upstream", data = OTHER, steps = 4, optimizer = "reset", schedule = { kind = "rewarm", peak = PEAK } }
end)
t.err("'from' names 'nope', which is neither an earlier phase %(upstream, down, reset, replay%) nor an existing checkpoint file or run directory", function() Pe:phase { name = "x", from = "nope", data = OTHER, steps = 2, schedule = { kind = "constant", lr = 1e-3 } } end)
t.err("no checkpoint named 'late'", function() Pe:phase { name = "x", from = "upstream.late", data = OTHER, steps = 2, schedule = { kind = "constant", lr = 1e-3 } } end)
t.err("'optimizer' must be", function() Pe:phase { name = "x", from = "upstream", optimizer = "keep", data = OTHER, steps = 2, schedule = { kind = "constant", lr = 1e-3 } } end)
t.err("unknown schedule field 'peek'", function() Pe:phase { name = "x", data = OTHER, steps = 2, schedule = { kind = "rewarm", peek = 1e-3 } } end)
t.err("unknown field 'tokenz'", function() Pe:phase { name = "x", data = OTHER, tokenz = 2, schedule = { kind = "constant", lr = 1e-3 } } end)
local Pm = build(dir .. "/p5")
t.err("does not exist %(run that phase first%)", function() Pm:run { only = { "down" } } end)

-- 5. Continuing from a checkpoint made outside the protocol. --------------------------------------
-- Another script trains a model of the protocol's shape for 3 steps and saves it with kiln.save
-- (with its AdamW moments and step = 3 in the metadata; and a weights-only copy).
local outside, bare = dir .. "/outside.safetensors", dir .. "/bare.safetensors"
do
  local script = dir .. "/make_outside.lua"
  t.write(script, ([[
local kiln = require "kiln"
kiln.set_threads(1)
local m = kiln.model { vocab_size = 256, n_layer = 1, n_head = 2, n_embd = 16, block_size = 16, seed = 5 }
local opt = kiln.adamw(m, { lr = 1e-3 })
local ds, rng, b = kiln.dataset(%q), kiln.rng(3), kiln.batch(4, 16)
for _ = 1, 3 do ds:sample(b, rng); m:zero_grad(); m:forward(b); m:backward(); opt:step() end
kiln.save(%q, { model = m, optimizer = opt, meta = { step = 3, made_by = "make_outside.lua" } })
kiln.save(%q, { model = m })
]]):format(OTHER, outside, bare))
  local kiln_bin = (os.getenv("KILN_BUILD") or "build") .. "/kiln"
  t.ok(os.execute(kiln_bin .. " " .. script), "another script saves a checkpoint with kiln.save")
end
local sched_src = kiln.schedule.cosine { peak = PEAK, floor = FLOOR, steps = 10, warmup = 2 }
local started, seen_lr = {}, {}
local function outside_protocol(d)
  return protocol {
    dir = d, model = { n_layer = 1, n_head = 2, n_embd = 16, block_size = 16 },
    batch = 4, context = 16, seed = 7, quiet = true,
    eval = { sets = { upstream = EN, downstream = OTHER }, at = { 0, 2 }, windows = 8 },
    on_phase_start = function(name, model)
      local saved = kiln.model(model:config())
      kiln.load(outside, { model = saved })
      started[name] = same(model:flat_params(), saved:flat_params())
    end,
    on_step = function(name, info) seen_lr[name] = seen_lr[name] or {}; seen_lr[name][info.step] = info.lr end,
  }
end
local d5 = dir .. "/p_outside"
local Po = outside_protocol(d5)
Po:phase { name = "cont", from = outside, data = EN, steps = 4, schedule = { kind = "rewarm", peak = PEAK, warmup = 1 } }
Po:phase { name = "resumed_schedule", from = outside, data = EN, steps = 4, schedule = sched_src, schedule_step = "source" }
Po:phase { name = "weights_only", from = bare, optimizer = "reset", data = EN, steps = 2, schedule = { kind = "constant", lr = FLOOR } }
local ro = Po:run()
t.eq(ro.status, "complete", "a protocol whose phases start from a checkpoint saved outside it runs")
t.ok(started.cont, "cont: the weights before its first step are the outside checkpoint's")
local cfg = kiln.yaml.load(d5 .. "/cont/config.yaml")
local sha = kiln.sha256_file(outside)
t.ok(cfg.start and cfg.start.path == outside and cfg.start.sha256 == sha,
  "config.yaml records the start checkpoint: its path and SHA-256 (" .. tostring(cfg.start and cfg.start.sha256) .. ")")
t.eq(kiln.yaml.load(d5 .. "/cont/start.yaml").sha256, sha, "start.yaml records the same SHA-256")
-- eval at step 0: the outside weights, evaluated before any update
local m0 = kiln.model { vocab_size = 256, n_layer = 1, n_head = 2, n_embd = 16, block_size = 16 }
kiln.load(outside, { model = m0 })
local want = require("kiln.train").evaluate(m0, kiln.dataset(EN), 16, 8, 4)
local mcsv = util.read_csv(d5 .. "/cont/metrics.csv")
local col = {}
for i, h in ipairs(mcsv.header) do col[h] = i end
local row0 = mcsv.rows[1]
t.ok(row0[1] == 0 and row0[col.tokens] == 0 and row0[col.upstream_loss] == want and type(row0[col.downstream_loss]) == "number",
  ("metrics.csv starts with the step-0 evaluation: upstream %s (the outside weights give %s)"):format(
    tostring(row0[col.upstream_loss]), tostring(want)))
local pcsv = util.read_csv(d5 .. "/cont/positions.csv")
t.ok(pcsv.rows[1][1] == 0 and pcsv.rows[2][1] == 0 and #pcsv.rows == 6,
  "positions.csv has step 0 for both sets, then steps 2 and 4 (" .. #pcsv.rows .. " rows)")
local curve = Po:curve("cont")
t.ok(curve[1].step == 0 and curve[2].step == 2 and curve[1].upstream == want, "the phase's curve has step 0 once, from the start weights")
-- schedule_step = "source": phase step s runs the schedule at 3 + s (the outside step was 3)
local lr_ok = true
for s = 1, 4 do lr_ok = lr_ok and seen_lr.resumed_schedule[s] == sched_src(3 + s - 1) end
t.ok(lr_ok, ("schedule_step = \"source\": update 1 uses the schedule at step 3 (%.6g = %.6g), and so on"):format(
  seen_lr.resumed_schedule[1], sched_src(3)))
t.ok(seen_lr.cont[1] == 0, "schedule_step = \"phase\" (default): the rewarm starts at the phase's step 0 (lr 0)")
t.eq(kiln.yaml.load(d5 .. "/weights_only/config.yaml").start.sha256, kiln.sha256_file(bare), "a weights-only start is recorded too")
-- a run directory: its newest checkpoint
local Pd = outside_protocol(dir .. "/p_dir")
Pd:phase { name = "from_dir", from = d1 .. "/upstream", data = OTHER, steps = 2, schedule = { kind = "constant", lr = FLOOR } }
t.eq(Pd.by_name.from_dir.from_file, d1 .. "/upstream/checkpoints/step_00000012.safetensors",
  "from = a run directory: its newest checkpoint")
util.mkdir(dir .. "/empty_run")
t.err("'from' is the directory '.*empty_run', which holds no checkpoint", function()
  Pd:phase { name = "e", from = dir .. "/empty_run", data = OTHER, steps = 2, schedule = { kind = "constant", lr = FLOOR } } end)
Pd:phase { name = "carry_bare", from = bare, data = OTHER, steps = 2, schedule = { kind = "constant", lr = FLOOR } }
t.err("phase carry_bare: cannot start from .*bare%.safetensors: .*has no optimizer state.*optimizer = \"reset\" starts from the weights alone",
  function() Pd:run { only = { "carry_bare" } } end)
t.err("'schedule_step' must be \"phase\"", function()
  Pd:phase { name = "s", from = bare, data = OTHER, steps = 2, schedule_step = "run", schedule = { kind = "constant", lr = FLOOR } } end)
Pd:phase { name = "src_bare", from = bare, optimizer = "reset", schedule_step = "source", data = OTHER, steps = 2,
           schedule = { kind = "constant", lr = FLOOR } }
t.err("schedule_step = \"source\" needs the source's step, but .*bare%.safetensors records none",
  function() Pd:run { only = { "src_bare" } } end)
-- kiln.train alone: eval.at = {0} evaluates before the first update; `start` is checked
do
  local m = kiln.model { vocab_size = 256, n_layer = 1, n_head = 2, n_embd = 16, block_size = 16, seed = 2 }
  local before = require("kiln.train").evaluate(m, kiln.dataset(EN), 16, 8, 4)
  local at0
  local sum = kiln.train { model = m, data = kiln.dataset(EN), steps = 2, batch = 4, context = 16, quiet = true,
    eval = { at = { 0 }, sets = { val = kiln.dataset(EN) }, windows = 8 },
    on_eval = function(info) if info.step == 0 then at0 = info.eval.val.loss end end }
  t.ok(at0 == before and sum.steps == 2, ("kiln.train: eval.at = {0} evaluates the starting weights (%.5f)"):format(at0 or 0 / 0))
  t.err("kiln%.train: argument 'start' must be a non%-empty string", kiln.train, { model = m, data = kiln.dataset(EN), steps = 1,
    batch = 4, context = 16, quiet = true, start = { path = "x" } })
end

-- Argument checks name the method and the argument.
t.err("kiln%.protocol:phase: called on string, expected a kiln%.protocol", function() Pe.phase("x", {}) end)
t.err("kiln%.protocol:phase: argument 'steps' must be a whole number >= 1, got 2147483648.5", function()
  Pe:phase { name = "x", data = OTHER, steps = 2 ^ 31 + 0.5, schedule = { kind = "constant", lr = 1e-3 } } end)
t.err("kiln%.protocol:steps_for: argument 'tokens' must be a finite number > 0, got nan", function() Pe:steps_for(0 / 0) end)
t.err("kiln%.protocol:run: argument 'opts' has an unknown field \"onyl\"", function() Pm:run { onyl = { "down" } } end)
t.err("kiln%.protocol: argument 'batch' must be a whole number in 1%.%.1048576, got 2147483648", protocol,
  { dir = dir .. "/p6", model = { n_layer = 1, n_head = 1, n_embd = 8 }, batch = 2 ^ 31, eval = { sets = { val = OTHER } } })
t.err("kiln%.protocol%.summarize: argument 'curve' must be a table, got number", protocol.summarize, 5, "val")

t.done()
