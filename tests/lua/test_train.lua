#!/usr/bin/env kiln
-- kiln.train, kiln.suite and kiln.config end to end on tiny data: run directories, exact
-- resume after a crash, suites that finish with the same results after being killed, and
-- errors that leave existing runs untouched.
local t = dofile("tests/lua/tap.lua")
local kiln = require "kiln"
local util = require "kiln.util"
local dir = t.tmpdir()
local kiln_bin = (os.getenv("KILN_BUILD") or "build") .. "/kiln"
kiln.set_threads(1)

local function read(p) return util.read_file(p) end
local write = t.write

-- A tiny training setup shared by the in-process and subprocess runs.
local common = [[
local kiln = require "kiln"
kiln.set_threads(1)
local function setup(seed, weighting)
  local model = kiln.model { vocab_size = 256, block_size = 16, n_layer = 1, n_head = 2, n_embd = 16, seed = seed }
  return {
    model = model, optimizer = { lr = 3e-3 },
    data = kiln.dataset("tests/data/tiny_en.txt"),
    steps = 12, batch = 4, context = 16, seed = seed, log_every = 2, quiet = true,
    schedule = kiln.schedule.cosine { peak = 3e-3, floor_frac = 0.1, steps = 12, warmup = 2 },
    weighting = weighting,
    eval = { every = 4, sets = { val = kiln.dataset("tests/data/tiny_en.txt"), ood = kiln.dataset("tests/data/tiny_other.txt") }, windows = 8 },
    checkpoint = { every = 4 },
  }
end
]]

-- 1. A run directory with everything docs/design.md §3.6 lists.
local run1 = dir .. "/run1"
local o = load(common .. " return setup(1)")()
o.run_dir = run1
local s = kiln.train(o)
t.eq(s.status, "complete", "a run completes")
t.eq(s.steps, 12, "it ran the requested steps")
for _, f in ipairs { "config.yaml", "metrics.csv", "positions.csv", "summary.yaml", "checkpoints/step_00000012.safetensors" } do
  t.ok(util.exists(run1 .. "/" .. f), "run directory has " .. f)
end
local metrics = util.read_csv(run1 .. "/metrics.csv")
t.eq(table.concat(metrics.header, ","), "step,tokens,lr,loss_weighted,loss_unweighted,grad_norm,ood_loss,val_loss", "metrics.csv columns")
t.eq(#metrics.rows, 6, "a metrics row every 2 steps")
local positions = util.read_csv(run1 .. "/positions.csv")
t.eq(#positions.header, 2 + 16, "positions.csv: step, set, then one column per position")
t.eq(#positions.rows, 2 * 3, "per-position rows for 2 sets at 3 evaluations")
local cfg = kiln.yaml.load(run1 .. "/config.yaml")
t.eq(cfg.train.steps, 12, "config.yaml records the resolved settings")
t.ok(cfg.kiln_version == kiln.version and cfg.command, "config.yaml records the version and command")
t.ok(cfg.runtime and cfg.runtime.threads == kiln.get_threads() and cfg.runtime.gemm == kiln.gemm()
     and cfg.runtime.ranks == 1, "config.yaml records the thread count, matrix multiply and ranks")
t.near(s.eval.val, metrics.rows[6][8], 1e-12, "summary and metrics agree on the final val loss")

-- Starting it again does nothing: the summary marks it complete.
local again = kiln.train(load(common .. " local o = setup(1); o.run_dir = ... return o")(run1))
t.ok(again.already_complete, "a complete run is not trained again")

-- 2. A crash half way, then a restart, gives the same files as the uninterrupted run.
write(dir .. "/crash.lua", common .. [[
local run_dir, crash_at = arg[1], tonumber(arg[2])
local o = setup(1)
o.run_dir = run_dir
o.on_step = function(info) if info.step == crash_at then os.exit(3) end end
kiln.train(o)
]])
local run2 = dir .. "/run2"
local rc = select(3, os.execute(kiln_bin .. " " .. dir .. "/crash.lua " .. run2 .. " 7"))
t.eq(rc, 3, "the first attempt died at step 7")
t.ok(not util.exists(run2 .. "/summary.yaml"), "no summary after a crash")
os.execute(kiln_bin .. " " .. dir .. "/crash.lua " .. run2 .. " 0")
-- Timings live in timing.csv, so metrics.csv compares byte for byte.
t.eq(read(run2 .. "/metrics.csv"), read(run1 .. "/metrics.csv"), "resumed metrics.csv equals the uninterrupted one, byte for byte")
t.eq(read(run2 .. "/positions.csv"), read(run1 .. "/positions.csv"), "resumed positions.csv equals the uninterrupted one")
t.eq(read(run2 .. "/checkpoints/step_00000012.safetensors"), read(run1 .. "/checkpoints/step_00000012.safetensors"),
  "resumed final checkpoint is byte-identical")

-- A crash before the first checkpoint: the restart drops the rows logged before it.
local run2b = dir .. "/run2b"
os.execute(kiln_bin .. " " .. dir .. "/crash.lua " .. run2b .. " 3")
t.ok(util.read_csv(run2b .. "/metrics.csv") and #util.read_csv(run2b .. "/metrics.csv").rows == 1, "the dead attempt had logged a row")
os.execute(kiln_bin .. " " .. dir .. "/crash.lua " .. run2b .. " 0")
t.eq(read(run2b .. "/metrics.csv"), read(run1 .. "/metrics.csv"), "restart without a checkpoint: no duplicated rows")
local nores = load(common .. " local o = setup(1); o.run_dir = ...; o.resume = false return o")(run2b)
os.remove(run2b .. "/summary.yaml")
t.err("resume = false would overwrite them", kiln.train, nores)
t.ok(kiln.yaml.load(run1 .. "/config.yaml").train.schedule_config.kind == "cosine", "config.yaml records the exact schedule")

-- 3. A suite of 2 variants x 2 seeds, killed during its third run and started again.
write(dir .. "/suite.lua", common .. [[
local suite_dir, crash_run, crash_step = arg[1], tonumber(arg[2]), tonumber(arg[3])
local n = 0
kiln.suite {
  dir = suite_dir, seeds = { 1, 2 }, quiet = true,
  variants = { { name = "uniform" }, { name = "head", weighting = { kind = "head", fraction = 0.25, factor = 0.5 } } },
  run = function(v, seed, run_dir)
    n = n + 1
    local o = setup(seed, v.weighting)
    o.run_dir = run_dir
    if n == crash_run then o.on_step = function(i) if i.step == crash_step then os.exit(5) end end end
    return kiln.train(o)
  end,
  report = function(s) return { val = s.eval.val, ood = s.eval.ood, final = s.final_loss } end,
  columns = { "val", "ood", "final" },
}
]])
os.execute(kiln_bin .. " " .. dir .. "/suite.lua " .. dir .. "/suiteA 0 0")
local rcs = select(3, os.execute(kiln_bin .. " " .. dir .. "/suite.lua " .. dir .. "/suiteB 3 6"))
t.eq(rcs, 5, "the interrupted suite died in its third run")
t.ok(util.exists(dir .. "/suiteB/uniform/seed2/summary.yaml") and not util.exists(dir .. "/suiteB/head/seed1/summary.yaml"),
  "two runs were complete, the third was not")
os.execute(kiln_bin .. " " .. dir .. "/suite.lua " .. dir .. "/suiteB 0 0")
local ra, rb = read(dir .. "/suiteA/results.csv"), read(dir .. "/suiteB/results.csv")
t.ok(ra and #ra > 0, "the suite wrote results.csv")
t.eq(rb, ra, "killed-and-restarted suite: the same results.csv as the uninterrupted one")
t.eq(read(dir .. "/suiteB/runs.csv"), read(dir .. "/suiteA/runs.csv"), "and the same runs.csv")
t.ok(read(dir .. "/suiteA/results.md"):find("| head |", 1, true), "results.md has a row per variant")
local res = util.read_csv(dir .. "/suiteA/results.csv")
t.eq(table.concat(res.header, ","), "variant,n,val_mean,val_std,ood_mean,ood_std,final_mean,final_std", "results.csv columns")
t.eq(res.rows[1][2], 2, "two seeds per variant")

-- 4. Errors that leave existing runs untouched.
local snapshot = {}
for _, f in ipairs { "config.yaml", "metrics.csv", "positions.csv", "summary.yaml" } do snapshot[f] = read(run1 .. "/" .. f) end
os.remove(run1 .. "/summary.yaml")   -- make it resumable, so a bad start would touch it
write(run1 .. "/summary.yaml", snapshot["summary.yaml"])
local bad = load(common .. " local o = setup(1); o.run_dir = ... ; o.weighting = { 1, 2, 3 } return o")(run1 .. "x")
t.err("expected 16 weights %(one per position%), got 3", kiln.train, bad)
t.ok(not util.exists(run1 .. "x"), "a run that fails to start creates no directory")
local other = load(common .. " local o = setup(1); o.run_dir = ...; o.steps = 13 return o")(run2)
os.remove(run2 .. "/summary.yaml")
t.err("holds a run with other settings %(.*train%.steps: 12 %-> 13", kiln.train, other)
t.err("unknown option 'stepz'", kiln.train, { stepz = 3 })
for f, text in pairs(snapshot) do t.eq(read(run1 .. "/" .. f), text, "existing " .. f .. " untouched") end

-- A NaN loss stops the run naming the step, and the last good checkpoint stays intact.
local run3 = dir .. "/run3"
local o3 = load(common .. " return setup(2)")()
o3.run_dir = run3
o3.on_step = function(info)
  if info.step == 5 then info.model:param("transformer.ln_f.weight"):fill(0 / 0) end
end
local ckpt4_before
o3.on_checkpoint = function(info) if info.step == 4 then ckpt4_before = read(info.checkpoint) end end
t.err("step 5: the loss is %-?nan", kiln.train, o3)
t.eq(read(run3 .. "/checkpoints/step_00000004.safetensors"), ckpt4_before, "the last good checkpoint is intact")
t.ok(not util.exists(run3 .. "/summary.yaml"), "a failed run writes no summary")

-- A hook can stop the run.
local o4 = load(common .. " return setup(3)")()
o4.on_step = function(info) if info.step == 3 then return "stop" end end
local s4 = kiln.train(o4)
t.ok(s4.status == "stopped" and s4.steps == 3, "on_step returning 'stop' ends the run after that step")

-- Gradient accumulation: 2 micro-batches of 2 windows give the step of one batch of 4. The
-- sampler draws windows one after another from the same generator, so both see the same 4
-- windows; what differs is only the float summation order of the mean loss and gradient.
-- Three steps, so the AdamW moments carry the accumulated gradients forward too.
local function run_steps(batch, accum)
  local oo = load(common .. " return setup(4)")()
  oo.steps, oo.batch, oo.accumulate, oo.eval, oo.checkpoint = 3, batch, accum, nil, nil
  oo.schedule = 3e-3
  return kiln.train(oo), oo.model
end
-- The largest |a - b| over all parameters of two models of the same config.
local function max_param_diff(a, b)
  local worst = 0
  for _, p in ipairs(a:params()) do
    local st = a:param(p.name):clone():add(b:param(p.name), -1):stats()
    worst = math.max(worst, math.abs(st.min), math.abs(st.max))
  end
  return worst
end
local s_big, m_big = run_steps(4, 1)
local s_acc, m_acc = run_steps(2, 2)
local s_small, m_small = run_steps(2, 1)
local fresh = load(common .. " return setup(4)")().model
-- Tolerances: float32 sums in another order differ by a few ulps of the loss (~4) and of
-- the gradients; three AdamW steps of lr 3e-3 move each weight by up to ~1e-2.
local LOSS_TOL, PARAM_TOL = 1e-5, 1e-5
t.near(s_acc.final_loss, s_big.final_loss, LOSS_TOL, "2 x batch 2 accumulated: the same final loss as batch 4")
t.ok(max_param_diff(m_acc, m_big) <= PARAM_TOL,
  ("... and the same parameters (max |diff| %.2g <= %g)"):format(max_param_diff(m_acc, m_big), PARAM_TOL))
t.ok(max_param_diff(m_big, fresh) > 100 * PARAM_TOL, "the steps moved the parameters (the comparison can fail)")
t.ok(max_param_diff(m_small, m_big) > 100 * PARAM_TOL and math.abs(s_small.final_loss - s_big.final_loss) > LOSS_TOL,
  "batch 2 without accumulation ends elsewhere: the tolerance tells the cases apart")
t.eq(s_acc.tokens, s_big.tokens, "accumulated steps count all their tokens")

-- `kiln plot` on a run and on a suite: data and gnuplot scripts always, PNGs with gnuplot.
local plot_out = io.popen(kiln_bin .. " plot " .. run1 .. " 2>&1"):read("a")
t.ok(util.exists(run1 .. "/plots/loss.dat") and util.exists(run1 .. "/plots/loss.gp") and
     util.exists(run1 .. "/plots/positions-val.gp"), "kiln plot writes a run's data and gnuplot scripts")
local dat = read(run1 .. "/plots/loss.dat")
t.ok(dat and select(2, dat:gsub("\n%d", "")) >= 6, "the loss data has the logged points")
os.execute(kiln_bin .. " plot " .. dir .. "/suiteA >/dev/null 2>&1")
t.ok(util.exists(dir .. "/suiteA/plots/val_loss.gp"), "kiln plot on a suite writes one plot per evaluation set")
if kiln.plot.available() then t.ok(util.exists(run1 .. "/plots/loss.png"), "with gnuplot, PNGs too")
else t.skip("gnuplot not installed") end
t.ok(io.popen(kiln_bin .. " plot /nonexistent 2>&1"):read("a"):find("neither a run directory", 1, true),
  "kiln plot names a directory that is not a run")

-- eval.windows = "all": every evaluation covers each set's whole list of windows, and the
-- run's fingerprint records "all".
do
  local ds = kiln.dataset("tests/data/tiny_other.txt")
  local run = dir .. "/all_windows"
  local s_all = kiln.train { model = { vocab_size = 256, block_size = 16, n_layer = 1, n_head = 2, n_embd = 16, seed = 1 },
    optimizer = { lr = 3e-3 }, data = ds, steps = 4, batch = 2, context = 16, seed = 1, quiet = true, run_dir = run,
    eval = { every = 2, sets = { val = ds }, windows = "all" } }
  local total = ds:num_eval_windows(16)
  t.ok(total > 64, ("tiny_other.txt has %d windows of 17 tokens (more than the default 64)"):format(total))
  t.eq(s_all.eval_windows.val, total, 'eval.windows = "all" evaluates every window of the set')
  local wcsv = util.read_csv(run .. "/windows/val_step00000002.csv")
  t.eq(#wcsv.rows, total, "... at every evaluation: its per-window file has one row per window")
  t.eq(kiln.yaml.load(run .. "/config.yaml").fingerprint.settings["eval.windows"], "all",
    'the fingerprint in config.yaml records eval.windows "all"')
  t.err('eval%.windows.*a positive integer or "all"', kiln.train, { model = { vocab_size = 256, block_size = 16, n_layer = 1,
    n_head = 2, n_embd = 16 }, optimizer = { lr = 1e-3 }, data = ds, steps = 1, batch = 2, context = 16, quiet = true,
    eval = { every = 1, sets = { val = ds }, windows = "every" } })
end

-- 5. kiln.config: defaults, YAML, overrides.
local defaults = { steps = 100, lr = 3e-4, model = { n_layer = 2, n_embd = 64 }, name = "x", quick = false }
local c = kiln.config.resolve(defaults, { "steps=200", "model.n_layer=4", "lr=1e-3", "quick=true", "name=run 7" })
t.ok(c.steps == 200 and math.type(c.steps) == "integer" and c.model.n_layer == 4 and c.lr == 1e-3 and c.quick == true and c.name == "run 7",
  "dotted key=value overrides with types")
t.eq(defaults.steps, 100, "resolve does not modify the defaults")
t.err("unknown setting 'model.n_layers' %(did you mean model.n_layer", kiln.config.resolve, defaults, { "model.n_layers=3" })
t.err("setting 'steps' expects an integer", kiln.config.resolve, defaults, { "steps=abc" })
t.err("'oops' is not a key=value setting", kiln.config.resolve, defaults, { "oops" })
write(dir .. "/bad.yaml", "train:\n  steps: 3\n bad: [1, 2\n")
t.err("bad.yaml:%d+:%d+", kiln.config.resolve, dir .. "/bad.yaml", {})
write(dir .. "/good.yaml", "train:\n  steps: 3\n  lr: 0.001\n")
local g = kiln.config.resolve(dir .. "/good.yaml", { "train.steps=5" })
t.ok(g.train.steps == 5 and g.train.lr == 0.001, "YAML defaults with an override")

t.done()
