#!/usr/bin/env kiln
-- Run directories: a run's identity is what it computes (fingerprint in config.yaml, changed
-- runs refused naming each setting, restart = true moves the old one aside), and a run
-- directory survives SIGKILL at chosen points, a full disk, stale temporary files and a
-- second process; numbers are written as the values used.
local t = dofile("tests/lua/tap.lua")
local kiln = require "kiln"
local util = require "kiln.util"
local dir = t.tmpdir()
local kiln_bin = (os.getenv("KILN_BUILD") or "build") .. "/kiln"
kiln.set_threads(1)
local read = util.read_file

-- The tiny run every case uses. KILL_STEP / KILL_CKPT (environment) make a child process
-- SIGKILL itself after that step / right after that checkpoint is written.
local common = [[
local kiln = require "kiln"
kiln.set_threads(1)
local function setup(seed, over)
  local o = {
    model = kiln.model { vocab_size = 256, block_size = 16, n_layer = 1, n_head = 2, n_embd = 16, seed = seed },
    optimizer = { lr = 3e-3, beta1 = 0.9, beta2 = 0.95, weight_decay = 0.1 },
    data = kiln.dataset("tests/data/tiny_en.txt"),
    steps = 12, batch = 4, context = 16, seed = seed, log_every = 2, quiet = true,
    schedule = kiln.schedule.cosine { peak = 3e-3, floor_frac = 0.1, steps = 12, warmup = 2 },
    eval = { every = 4, sets = { val = kiln.dataset("tests/data/tiny_en.txt"), ood = kiln.dataset("tests/data/tiny_other.txt") }, windows = 8 },
    checkpoint = { every = 4 },
  }
  for k, v in pairs(over or {}) do o[k] = v end
  if o.eval == false then o.eval = nil end
  local kill_step, kill_ckpt = tonumber(os.getenv("KILL_STEP")), tonumber(os.getenv("KILL_CKPT"))
  if kill_step then o.on_step = function(i) if i.step == kill_step then os.execute("kill -9 $PPID") end end end
  if kill_ckpt then o.on_checkpoint = function(i) if i.step == kill_ckpt then os.execute("kill -9 $PPID") end end end
  return o
end
]]
local function setup(seed, over) return load(common .. " return setup(...)")(seed, over) end
local function child(script, env, ...)
  local args = table.concat({ ... }, " ")
  local _, _, code = os.execute(("%s %s %s/%s %s 2>%s/stderr"):format(env or "", kiln_bin, dir, script, args, dir))
  return code, read(dir .. "/stderr") or ""
end
t.write(dir .. "/train.lua", common .. [[
local o = setup(tonumber(arg[2]) or 1)
o.run_dir = arg[1]
local s = kiln.train(o)
kiln.yaml.dump({ eval = s.eval, final_loss = s.final_loss, already = s.already_complete or false }, arg[1] .. ".result.yaml")
]])

-- The reference: one uninterrupted run.
local ref = dir .. "/ref"
local o = setup(1)
o.run_dir = ref
local s_ref = kiln.train(o)
local ref_summary = read(ref .. "/summary.yaml")

-- 1. Identity ---------------------------------------------------------------------------
local cfg_text = read(ref .. "/config.yaml")
local cfg = kiln.yaml.load(ref .. "/config.yaml")
t.ok(cfg.fingerprint and #cfg.fingerprint.digest == 64 and cfg.fingerprint.settings["train.steps"] == 12,
  "config.yaml holds the fingerprint: digest and settings")
t.ok(cfg_text:find("\n  beta1: 0.9\n", 1, true) and cfg_text:find("\n  beta2: 0.95\n", 1, true)
     and cfg_text:find("\n  weight_decay: 0.1\n", 1, true), "float32 hyperparameters written as 0.9, 0.95, 0.1")
t.eq(cfg.optimizer.lr, 3e-3, "lr: 0.003 (the shortest decimal of the float32 used)")

local again = kiln.train(setup(1, { run_dir = ref }))
t.ok(again.already_complete and again.eval.val == s_ref.eval.val, "the same run again: its summary, nothing trained")
t.err("holds a run with other settings %(.*train%.steps: 12 %-> 13", kiln.train, setup(1, { run_dir = ref, steps = 13 }))
t.err("holds a run with other settings %(.*weighting: uniform %-> %(absent%)",
  kiln.train, setup(1, { run_dir = ref, weighting = { kind = "head", fraction = 0.25, factor = 0.5 } }))
t.eq(read(ref .. "/summary.yaml"), ref_summary, "a refused rerun leaves the complete run alone")

-- A plain Lua function schedule: fingerprinted by its values, so a stopped run resumes.
local cos = kiln.schedule.cosine { peak = 3e-3, floor_frac = 0.1, steps = 12, warmup = 2 }
local fn = dir .. "/fn"
local stop6 = setup(1, { run_dir = fn, schedule = function(s) return cos(s) end })
stop6.on_step = function(i) if i.step == 6 then return "stop" end end
t.eq(kiln.train(stop6).status, "stopped", "a function-schedule run stopped at step 6")
t.ok(not read(fn .. "/config.yaml"):find("0x%x+"), "config.yaml holds no function address")
local s_fn = kiln.train(setup(1, { run_dir = fn, schedule = function(s) return cos(s) end }))
t.ok(s_fn.status == "complete" and s_fn.eval.val == s_ref.eval.val, "... and resumes to the uninterrupted result")
t.eq(read(fn .. "/metrics.csv"), read(ref .. "/metrics.csv"), "... with the same metrics.csv")
t.err("lr%.sha256: ", kiln.train, setup(1, { run_dir = fn, schedule = function(s) return cos(s) * 1.01 end }))

-- A custom weighting function changed between a stop and a restart.
local cw = dir .. "/cw"
local w1 = function(i, T) return 1 + i / T end
local first = setup(1, { run_dir = cw, weighting = w1 })
first.on_step = function(i) if i.step == 5 then return "stop" end end
kiln.train(first)
local err = select(2, pcall(kiln.train, setup(1, { run_dir = cw, weighting = function(i, T) return 1 + 100 * i / T end })))
t.ok(tostring(err):find("weighting.max: ", 1, true) and tostring(err):find("weighting.sha256: ", 1, true),
  "a changed weighting function is refused, naming the settings: " .. tostring(err):sub(1, 160))

-- restart = true moves the old run's files aside and starts over; other files stay.
local before = read(cw .. "/metrics.csv")
t.write(cw .. "/notes.txt", "the caller's own file")
local s_new = kiln.train(setup(1, { run_dir = cw, weighting = function(i, T) return 1 + 100 * i / T end, restart = true }))
t.ok(s_new.status == "complete" and s_new.steps == 12, "restart = true trains the new settings from step 0")
t.eq(read(cw .. ".old-1/metrics.csv"), before, "... after moving the old run's files to <run_dir>.old-1 intact")
t.ok(util.exists(cw .. ".old-1/checkpoints/step_00000005.safetensors") and read(cw .. "/notes.txt"),
  "... checkpoints with them; files kiln.train did not write stay")

local diff_out = t.sh(kiln_bin .. " diff " .. ref .. " " .. fn)
t.ok(diff_out:find("(fingerprints)  identical", 1, true), "kiln diff: a function schedule of the same values is the same run")
diff_out = t.sh(kiln_bin .. " diff " .. ref .. " " .. cw)
t.ok(diff_out:find("weighting.max", 1, true) and diff_out:find("weighting.sha256", 1, true),
  "kiln diff names the differing settings")

-- The step convention: row s holds the LR update s used (schedule(s - 1)), as float32.
local m = util.read_csv(ref .. "/metrics.csv")
local ok_lr = true
for _, row in ipairs(m.rows) do
  if row[3] ~= tonumber(util.num32(cos(row[1] - 1))) then ok_lr = false end
end
t.ok(ok_lr and #m.rows == 6, "metrics.csv: row s has lr = schedule(s - 1), the LR that update used")
t.ok(math.abs(m.rows[6][4] - m.rows[6][5]) < 1e-5, "uniform weights: weighted and unweighted train loss agree")
local mw = util.read_csv(cw .. "/metrics.csv")
t.ok(math.abs(mw.rows[6][4] - mw.rows[6][5]) > 1e-3, "a non-uniform weighting: the two columns differ")
t.eq(table.concat(util.read_csv(ref .. "/timing.csv").header, ","), "step,tokens_per_s,seconds", "timings in timing.csv")

-- A start checkpoint is part of the identity.
local st = dir .. "/start.safetensors"
kiln.save(st, { model = kiln.model { vocab_size = 256, block_size = 16, n_layer = 1, n_head = 2, n_embd = 16, seed = 9 } })
local cont = dir .. "/cont"
local s_cont = kiln.train(setup(1, { run_dir = cont, start = st, steps = 4, checkpoint = { every = 2 },
  schedule = 1e-3, eval = false }))
t.eq(kiln.yaml.load(cont .. "/config.yaml").fingerprint.settings["start.sha256"], (kiln.sha256_file(st)), "start: its hash in the fingerprint")
t.ok(s_cont.status == "complete", "a continuation from a start checkpoint trains")
kiln.save(st, { model = kiln.model { vocab_size = 256, block_size = 16, n_layer = 1, n_head = 2, n_embd = 16, seed = 10 } })
t.err("start%.sha256: ", kiln.train, setup(1, { run_dir = cont, start = st, steps = 4, checkpoint = { every = 2 }, schedule = 1e-3, eval = false }))

-- 2. Kills -------------------------------------------------------------------------------
-- SIGKILL at step 7, debris of a checkpoint write by a dead process, then a restart.
local k1 = dir .. "/k1"
local code = child("train.lua", "KILL_STEP=7", k1)
t.ok(code ~= 0 and not util.exists(k1 .. "/summary.yaml"), "killed at step 7 (SIGKILL)")
local dead = tonumber((t.sh("sh -c 'echo $$'")))
local debris = ("%s/checkpoints/step_00000008.safetensors.tmp.%d"):format(k1, dead)
t.write(debris, "half a checkpoint")
child("train.lua", "", k1)
t.ok(not util.exists(debris), "the dead writer's temporary checkpoint is removed on resume")
t.eq(read(k1 .. "/metrics.csv"), read(ref .. "/metrics.csv"), "metrics.csv byte-identical to the uninterrupted run")
t.eq(read(k1 .. "/positions.csv"), read(ref .. "/positions.csv"), "positions.csv byte-identical")
t.eq(read(k1 .. "/summary.yaml"):gsub("tokens_per_s: %d+\n", ""):gsub("wall_seconds: [^\n]+\n", ""),
     ref_summary:gsub("tokens_per_s: %d+\n", ""):gsub("wall_seconds: [^\n]+\n", ""), "summary.yaml the same apart from timings")

-- Killed before the first CSV row reached the disk (files left empty), resumed: headers rebuilt.
local k2 = dir .. "/k2"
child("train.lua", "KILL_STEP=1", k2)
t.write(k2 .. "/metrics.csv", "")
t.write(k2 .. "/positions.csv", "")
child("train.lua", "", k2)
t.eq(read(k2 .. "/metrics.csv"), read(ref .. "/metrics.csv"), "empty CSVs after a kill: header and rows rebuilt on resume")
t.eq(read(k2 .. "/positions.csv"), read(ref .. "/positions.csv"), "... positions.csv too")

-- Killed after the final checkpoint, before summary.yaml: the resumed run evaluates again.
local k3 = dir .. "/k3"
code = child("train.lua", "KILL_CKPT=12", k3)
t.ok(code ~= 0 and util.exists(k3 .. "/checkpoints/step_00000012.safetensors") and not util.exists(k3 .. "/summary.yaml"),
  "killed after the final checkpoint, before the summary")
child("train.lua", "", k3)
local s3 = kiln.yaml.load(k3 .. "/summary.yaml")
t.ok(s3.eval.val == s_ref.eval.val and s3.eval.ood == s_ref.eval.ood, "the resumed summary has the final evaluation (not eval: {})")
t.eq(s3.final_loss, s_ref.final_loss, "... and the final training loss")
t.eq(read(k3 .. "/positions.csv"), read(ref .. "/positions.csv"), "... and no duplicated position rows")

-- Two processes on one run directory: the second is refused, naming the holder.
local k4 = dir .. "/k4"
util.mkdir(k4)
local lock = kiln.lock(k4 .. "/lock")
local me = tonumber((t.sh("echo $PPID")))
local c4, err4 = child("train.lua", "", k4)
t.ok(c4 ~= 0 and err4:find("in use by process " .. me, 1, true), "a second process is refused with the holder's pid")
util.write_atomic(k4 .. "/config.yaml", "train: {steps: 12}\n")
t.ok(t.sh(kiln_bin .. " runs " .. k4):find("running (pid " .. me .. ")", 1, true), "kiln runs shows the holder as running")
-- A directory named like the command (experiments write runs/) does not shadow it.
util.mkdir(dir .. "/cwd/runs")
t.ok(t.sh(("cd %s/cwd && %s runs %s"):format(dir, kiln_bin:sub(1, 1) == "/" and kiln_bin or (os.getenv("PWD") .. "/" .. kiln_bin), k4))
       :find("running (pid " .. me .. ")", 1, true), "kiln runs works in a directory that holds a runs/ directory")
os.remove(k4 .. "/config.yaml")
lock:close()
t.eq(child("train.lua", "", k4), 0, "once the lock is free the run trains")
t.eq(kiln.lock_holder(k4 .. "/lock"), nil, "and releases its lock at the end")

-- A full disk (the file size limit, SIGXFSZ ignored): the failed append names the file.
local k5 = dir .. "/k5"
t.write(dir .. "/big.lua", common .. [[
local o = setup(1, { steps = 400, log_every = 1, eval = { every = 1, windows = 2,
  sets = { val = kiln.dataset("tests/data/tiny_en.txt") } }, checkpoint = {} })
o.run_dir = arg[1]
kiln.train(o)
]])
local c5, err5 = child("big.lua", "trap '' XFSZ; ulimit -f 64;", k5)
t.ok(c5 ~= 0 and err5:find("cannot write '" .. k5 .. "/[a-z_]+%.csv'") and err5:find("File too large", 1, true),
  "a full disk is an error naming the file: " .. (err5:match("[^\n]*cannot write[^\n]*") or err5:sub(1, 200)))
local f = io.open("/dev/full", "wb")
t.err("cannot write '/dev/full': No space left on device", util.checked_write, f, "/dev/full", ("x"):rep(10000))
f:close()

-- 3. A suite killed at chosen points: results.csv byte for byte.
t.write(dir .. "/suite.lua", common .. [[
local suite_dir, kill_run = arg[1], tonumber(arg[2])
local n = 0
kiln.suite {
  dir = suite_dir, seeds = { 1, 2 }, quiet = true,
  variants = { { name = "uniform" }, { name = "head", weighting = { kind = "head", fraction = 0.25, factor = 0.5 } } },
  run = function(v, seed, run_dir)
    n = n + 1
    local o = setup(seed, { weighting = v.weighting, run_dir = run_dir })
    if n == kill_run then o.on_checkpoint = function(i) if i.step == 12 then os.execute("kill -9 $PPID") end end end
    if kill_run > 0 and n == kill_run + 1 then o.on_step = function(i) if i.step == 5 then os.execute("kill -9 $PPID") end end end
    return kiln.train(o)
  end,
  report = function(s) return { val = s.eval.val, ood = s.eval.ood, final = s.final_loss } end,
  columns = { "val", "ood", "final" },
}
]])
child("suite.lua", "", dir .. "/sA", 0)
t.ok(child("suite.lua", "", dir .. "/sB", 2) ~= 0, "suite killed after run 2's final checkpoint")
t.ok(child("suite.lua", "", dir .. "/sB", 2) ~= 0, "... restarted, killed again at step 5 of run 3")
t.eq(child("suite.lua", "", dir .. "/sB", 0), 0, "... and finished")
t.eq(read(dir .. "/sB/results.csv"), read(dir .. "/sA/results.csv"), "results.csv byte-identical to the uninterrupted suite")
t.eq(read(dir .. "/sB/runs.csv"), read(dir .. "/sA/runs.csv"), "runs.csv too")
t.done()
