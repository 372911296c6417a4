#!/usr/bin/env kiln
-- kiln.evaluate and kiln.suite's comparison with a baseline: standard errors checked against
-- per-token losses computed directly, per-window files, and suites on synthetic per-window
-- losses with a known effect (the interval holds it) and with none (no difference claimed).
local t = dofile("tests/lua/tap.lua")
local kiln = require "kiln"
local util = require "kiln.util"
local stats = require "kiln.stats"
local dir = t.tmpdir()
kiln.set_threads(1)

-- 1. kiln.evaluate against the per-token losses of each window, one window at a time.
local T = 16
local model = kiln.model { vocab_size = 256, block_size = T, n_layer = 1, n_head = 2, n_embd = 16, seed = 3 }
local val = kiln.dataset("tests/data/tiny_other.txt")
local total = val:num_eval_windows(T)
local r = kiln.evaluate(model, val, T, { batch = 5 })
t.eq(r.n, total, "windows = \"all\" by default: every window of the list")
t.eq(#r.windows, total, "one loss per window")
local one = kiln.batch(1, T)
local win, pos, pos_sq = {}, {}, {}
for i = 1, T do pos[i], pos_sq[i] = 0, 0 end
for k = 1, total do
  val:eval_batch(one, k, k)
  model:forward(one)
  local ce = model:losses():totable()[1]
  local s = 0
  for i = 1, T do s, pos[i], pos_sq[i] = s + ce[i], pos[i] + ce[i], pos_sq[i] + ce[i] ^ 2 end
  win[k] = s / T
end
local worst = 0
for k = 1, total do worst = math.max(worst, math.abs(r.windows[k] - win[k])) end
t.ok(worst < 1e-5, ("window losses match the per-token losses (max diff %.2g)"):format(worst))
t.near(r.loss, stats.mean(win), 1e-5, "the loss is the mean of the window losses")
t.near(r.se, stats.se(win), 1e-6, "its standard error is sd(windows)/sqrt(n)")
local se3 = math.sqrt((pos_sq[3] - total * (pos[3] / total) ^ 2) / (total - 1) / total)
t.near(r.positions[3], pos[3] / total, 1e-5, "position 3's mean loss")
t.near(r.positions_se[3], se3, 1e-4 * se3 + 1e-6, "position 3's standard error over windows")
local r4 = kiln.evaluate(model, val, T, { windows = 4, batch = 3 })
t.eq(r4.n, 4, "windows = 4 evaluates 4")
local stride = total // 4
t.eq(r4.indices[2], 1 + stride, "spread evenly over the list")
t.near(r4.windows[2], win[1 + stride], 1e-5, "the second is window 1 + stride")
local mean, per, full = kiln.train.evaluate(model, val, T, "all", 5)
t.ok(mean == full.loss and per == full.positions, "kiln.train.evaluate returns the mean and positions of its third result")
t.near(full.se, r.se, 1e-9, "which is kiln.evaluate's")
t.err("kiln.evaluate: argument 'windows'", kiln.evaluate, model, val, T, { windows = 0 })
t.err('kiln.evaluate: argument \'options\' has an unknown field "window"', kiln.evaluate, model, val, T, { window = 3 })

local sT, qT, w3 = kiln.tensor(T), kiln.tensor(T), kiln.tensor(3)
val:eval_batch(one, total, total)
model:forward(one)
t.err("window_means has no room", model.add_loss_stats, model, sT, qT, w3, math.maxinteger)
t.err("window_means has no room", model.add_loss_stats, model, sT, qT, w3, 4)
t.err("sumsq: expected a contiguous vector", model.add_loss_stats, model, sT, kiln.tensor(T - 1))
t.eq(model:add_loss_stats(sT, qT, w3, 3), 1, "add_loss_stats: the last forward's row count")
t.near(w3:get(3), win[total], 1e-6, "and the window mean at the index given")

local wpath = dir .. "/w.csv"
kiln.evaluate.write_windows(wpath, r4)
local losses, idx = kiln.evaluate.read_windows(wpath)
t.ok(#losses == 4 and losses[2] == r4.windows[2] and idx[2] == r4.indices[2], "window files read back exactly")
t.write(dir .. "/bad.csv", "window,loss\n1,abc\n")
t.err("bad.csv: line 2: expected a window number and a finite loss", kiln.evaluate.read_windows, dir .. "/bad.csv")

-- 2. kiln.train keeps the final evaluation's windows, standard errors and positions_se.csv.
local run = dir .. "/run"
local s = kiln.train {
  model = model, optimizer = { lr = 3e-3 }, data = kiln.dataset("tests/data/tiny_en.txt"),
  steps = 4, batch = 4, context = T, seed = 1, quiet = true, run_dir = run,
  eval = { every = 2, windows = 3, final_windows = "all", sets = { val = val } },
}
t.eq(s.eval_windows.val, total, "final_windows = \"all\": the last evaluation covers the list")
t.ok(s.eval_se.val > 0 and #s.positions_se.val == T, "the summary has the loss's and each position's standard error")
local saved = kiln.evaluate.read_windows(run .. "/" .. s.windows_file.val)
t.eq(#saved, total, "the final per-window losses are saved")
t.near(stats.mean(saved), s.eval.val, 1e-6, "and average to the final loss")
t.eq(#kiln.evaluate.read_windows(run .. "/windows/val_step00000002.csv"), 3, "the step-2 evaluation used 3 windows")
local pcsv, secsv = util.read_csv(run .. "/positions.csv"), util.read_csv(run .. "/positions_se.csv")
t.eq(#secsv.rows, #pcsv.rows, "positions_se.csv has a row for each row of positions.csv")
t.eq(table.concat(secsv.header, ","), table.concat(pcsv.header, ","), "in the same layout")
t.eq(kiln.yaml.load(run .. "/summary.yaml").windows_file.val, "windows/val_step00000004.csv", "summary.yaml names the file")

-- 3. Suites with a baseline, on synthetic per-window losses.
local function normal(rng)
  local u1, u2 = rng:uniform(), rng:uniform()
  return math.sqrt(-2 * math.log(1 - u1)) * math.cos(2 * math.pi * u2)
end
local EFFECT = 0.01
-- Window w of seed s: a difficulty shared by every variant, a seed offset, window noise; the
-- "shifted" variant adds EFFECT, the "same" variant nothing.
local function fake_run(v, seed, run_dir)
  if v.name == "broken" and seed == 2 then error("kiln.train: diverged: step 3: the loss is nan", 0) end
  local rng = kiln.rng(1000 * seed + v.id)
  local base = kiln.rng(seed)
  local shift = (v.name == "shifted" and EFFECT or 0) + 0.003 * normal(rng)
  local w = {}
  for i = 1, 200 do w[i] = 3 + 0.5 * normal(base) + shift + 0.02 * normal(rng) end
  util.mkdir(run_dir)
  return { status = "complete", final_loss = 2 + shift, tokens_per_s = 1000 + seed, eval = { val = stats.mean(w) },
           window_losses = { val = w } }
end
local res = kiln.suite {
  dir = dir .. "/suite", quiet = true, seeds = { 1, 2, 3, 4, 5 }, baseline = "uniform",
  variants = { { name = "uniform", id = 1 }, { name = "shifted", id = 2 }, { name = "same", id = 3 }, { name = "broken", id = 4 } },
  run = fake_run,
}
local by = {}
for _, c in ipairs(res.comparisons) do by[c.variant] = c end
local sh = by.shifted
t.ok(sh and sh.d.lo <= EFFECT and EFFECT <= sh.d.hi, ("a known effect of %g: the 95%% CI [%.4f, %.4f] holds it"):format(EFFECT, sh.d.lo, sh.d.hi))
t.ok(sh.verdict:match("^worse by 0%.%d%d%d%d ± 0%.%d%d%d%d$") and sh.d.lo > 0, "and the verdict says worse: " .. sh.verdict)
t.eq(sh.n_seeds, 5, "over 5 seeds")
t.eq(by.same.verdict, "no detectable difference", "no effect: no detectable difference")
t.eq(by.broken.n_seeds, 4, "a failed run's seed is left out of the pairing")
t.eq(res.status, "failed", "and the suite says a run failed")
local rcsv = util.read_csv(dir .. "/suite/results.csv")
t.ok(not table.concat(rcsv.header, ","):find("tokens_per_s"), "tokens/s is not in the quality table")
local tcsv = util.read_csv(dir .. "/suite/timing.csv")
t.eq(table.concat(tcsv.header, ","), "variant,n,tokens_per_s_mean,tokens_per_s_std", "timing.csv holds it")
local ccsv = util.read_csv(dir .. "/suite/comparison.csv")
t.eq(#ccsv.rows, 3, "comparison.csv: one row per variant other than the baseline and set")
t.eq(ccsv.rows[1][10], sh.verdict, "with the verdict")
local md = util.read_file(dir .. "/suite/results.md")
t.ok(md:find("## Difference to uniform", 1, true) and md:find("| same | val | 5 | 200 |", 1, true), "results.md has the comparison table")
t.ok(md:find("## Timing", 1, true), "and a separate timing table")

t.err("kiln.suite: baseline 'nope' is not one of the variants", kiln.suite,
  { dir = dir .. "/s2", quiet = true, baseline = "nope", variants = { { name = "a", id = 1 } }, run = fake_run })
t.err("seed 1 has 200 windows for the variant and 3 for the baseline", kiln.suite,
  { dir = dir .. "/s3", quiet = true, baseline = "uniform", variants = { { name = "uniform", id = 1 }, { name = "same", id = 3 } },
    run = fake_run, windows = function(sum, v) return { val = v.name == "uniform" and { 1, 2, 3 } or sum.window_losses.val } end })

-- 4. A real suite of tiny runs: the comparison comes from the files kiln.train wrote, the
-- same when the suite is run again over its complete runs, and the plots have bands.
local function real_suite()
  return kiln.suite {
    dir = dir .. "/real", quiet = true, seeds = { 1, 2 }, baseline = "uniform",
    variants = { { name = "uniform" }, { name = "head", weighting = { kind = "head", fraction = 0.25, factor = 0.5 } } },
    run = function(v, seed, run_dir)
      return kiln.train {
        model = { vocab_size = 256, block_size = T, n_layer = 1, n_head = 2, n_embd = 16, seed = seed },
        optimizer = { lr = 3e-3 }, data = kiln.dataset("tests/data/tiny_en.txt"), weighting = v.weighting,
        steps = 4, batch = 4, context = T, seed = seed, quiet = true, run_dir = run_dir,
        eval = { every = 2, windows = 3, final_windows = "all", sets = { val = val } },
      }
    end,
  }
end
local first = real_suite()
local again = real_suite()
local c1, c2 = first.comparisons[1], again.comparisons[1]
t.ok(c1.d and c1.d.n_windows == 2 * total, "the real suite paired every window of both seeds")
t.ok(c2.d and c2.d.diff == c1.d.diff and c2.d.half == c1.d.half, "run again over complete runs: the same comparison, from the window files")
local files = kiln.suite.plot(first, { set = "val", path = dir .. "/real/plot_val", baseline = "uniform" })
local dat = util.read_file(files.loss.dat)
t.ok(dat:find("# uniform (2 seeds)", 1, true) and dat:find("\n2 [-%d.e]+ [-%d.e]+ [-%d.e]+\n"), "the loss plot has each variant's mean with a band")
local gp = util.read_file(files.loss.gp)
t.ok(gp:find("filledcurves", 1, true), "drawn as a shaded band")
local pdat = util.read_file(files.positions.dat)
local rows = 0
for _ in pdat:gmatch("\n%d+ [-%d.e]+ [-%d.e]+ [-%d.e]+") do rows = rows + 1 end
t.eq(rows, T, "the position plot: head - uniform at each of the T positions, with a band")
t.err("kiln.suite: plot: baseline 'x' is not a variant", kiln.suite.plot, first, { set = "val", path = dir .. "/p", baseline = "x" })
t.err("kiln.plot.lines: series 1 needs both 'lo' and 'hi'", kiln.plot.lines, { path = dir .. "/p", series = { { x = { 1 }, y = { 1 }, lo = { 1 } } } })
t.done()
