-- cooldown.lua — one constant-LR run cooled down at several points against cosine runs of
-- the same lengths trained from scratch (docs/experiments.md, "Cooldowns from a constant-LR
-- run"). The constant run (linear warmup, then the peak LR) saves a checkpoint at each point;
-- each point is cooled down (kiln.cooldown.fork) over cooldown_frac of its step count; a
-- cosine run with the same warmup and peak is trained for each total length (point +
-- cooldown). Its table: for each length, the cooled-down and cosine final validation loss,
-- their difference, and the steps each way of getting the whole curve costs.
--
--   kiln experiments/cooldown.lua [quick=true] [config=FILE.yaml] [key=value ...]
-- (settings: cooldown.yaml; layering: docs/guide.md, "Settings")
--
-- Writes OUT/seed<s>/{constant, cooldown-<step>, cosine-<steps>}/ (run directories) and
-- OUT/results.md, OUT/results.csv. Complete runs are not trained again.
local kiln = require "kiln"
local util = require "kiln.util"

local here = (arg and arg[0] or "experiments/cooldown.lua"):match("^(.*)/[^/]*$") or "."
local setup = dofile(here .. "/lib/setup.lua")
local P, N, R = setup.positive, setup.count, setup.rate
local cfg = setup.config(here, "cooldown", arg, {
  threads = N, tokenizer = setup.tokenizer_rule, shape = { one_of = kiln.cooldown.SHAPES }, seeds = { min = 0 },
  ["model.n_layer"] = P, ["model.n_head"] = P, ["model.n_embd"] = P, ["model.context"] = P,
  ["train.steps"] = P, ["train.batch"] = P, ["train.lr"] = R, ["train.warmup"] = N,
  ["train.weight_decay"] = { min = 0 }, ["train.clip"] = { min = 0 }, ["train.eval_windows"] = P,
  points = { above = 0, max = 1 }, cooldown_frac = { above = 0, max = 1 }, floor = { min = 0 },
  ema_decay = { min = 0, max = 0.999999 },
})
local data, V = setup.open_data("cooldown", cfg.tokenizer, cfg.data, "it builds data/ from Debian packages, see docs/data.md")
setup.report_data("cooldown", cfg, data, V)
local stats = require "kiln.stats"
local evaluate = require "kiln.evaluate"
local tc, T = cfg.train, cfg.model.context
if type(cfg.seeds) ~= "table" or #cfg.seeds == 0 then kiln.config.fail("cooldown: setting 'seeds' must be a list of seeds") end
local ema = cfg.ema_decay > 0 and { decay = cfg.ema_decay } or nil

-- The points as steps (distinct, after the warmup) and each one's cooldown length.
local points = {}
for _, f in ipairs(cfg.points) do
  local at = math.floor(f * tc.steps + 0.5)
  if at <= tc.warmup then
    kiln.config.fail("cooldown: point %s is step %d, inside the warmup (train.warmup = %d)", util.num(f), at, tc.warmup)
  end
  if not points[#points] or points[#points].at ~= at then
    points[#points + 1] = { at = at, length = math.max(1, math.floor(cfg.cooldown_frac * at + 0.5)) }
  end
end
table.sort(points, function(a, b) return a.at < b.at end)

local function train(run_dir, seed, steps, schedule, checkpoint_at)
  return kiln.train {
    model = { vocab_size = V, block_size = T, n_layer = cfg.model.n_layer, n_head = cfg.model.n_head,
              n_embd = cfg.model.n_embd, seed = seed },
    optimizer = { lr = tc.lr, weight_decay = tc.weight_decay, clip = tc.clip },
    data = data.train, steps = steps, batch = tc.batch, context = T, seed = seed, schedule = schedule,
    eval = { windows = tc.eval_windows, sets = { val = data.val } },
    checkpoint = checkpoint_at and { at = checkpoint_at } or nil, ema = checkpoint_at and ema or nil,
    run_dir = run_dir, config = cfg, log_every = math.max(1, steps // 10), restart = cfg.restart,
  }
end

print(("cooldown suite: constant run of %d steps cooled down at %d points (%s, %s of the point), cosine runs of each " ..
       "length; seeds %s; %d threads -> %s"):format(tc.steps, #points, cfg.shape, util.num(cfg.cooldown_frac),
       table.concat(cfg.seeds, ", "), kiln.get_threads(), cfg.out))
util.mkdir(cfg.out)

-- One seed's suite: the constant run, a cooldown from each point, a cosine run per length.
local wall = { constant = 0, cooldown = 0, cosine = 0 }
local function suite(seed)
  local dir = ("%s/seed%d"):format(cfg.out, seed)
  local at_steps = {}
  for i, pt in ipairs(points) do at_steps[i] = pt.at end
  local constant = train(dir .. "/constant", seed, points[#points].at,
                         kiln.schedule.warmup { steps = tc.warmup, peak = tc.lr }, at_steps)
  wall.constant = wall.constant + (constant.wall_seconds or 0)
  for _, pt in ipairs(points) do
    local total = pt.at + pt.length
    local cool = kiln.cooldown.fork { run = dir .. "/constant", at = pt.at, length = pt.length, shape = cfg.shape,
                                      floor = cfg.floor, out = ("%s/cooldown-%d"):format(dir, pt.at), restart = cfg.restart }
    local cos = train(("%s/cosine-%d"):format(dir, total), seed, total,
                      kiln.schedule.cosine { peak = tc.lr, floor = cfg.floor, steps = total, warmup = tc.warmup })
    wall.cooldown, wall.cosine = wall.cooldown + (cool.wall_seconds or 0), wall.cosine + (cos.wall_seconds or 0)
  end
end
local t0 = kiln.clock()
for _, seed in ipairs(cfg.seeds) do suite(seed) end

-- Per point, every seed's per-window losses of: the cooldown's end, the cosine run's end, and
-- (with an EMA) the constant run's raw and averaged weights at the point (the fork's step 0).
local function windows(seed, run, kind, step)
  return (evaluate.read_windows(("%s/seed%d/%s/windows/val_%sstep%08d.csv"):format(cfg.out, seed, run, kind, step)))
end
local rows, csv = {}, { util.csv_line { "point", "cooldown_steps", "total_steps", "seed", "cooled_loss", "cosine_loss",
                                        "point_raw_loss", "point_ema_loss", "cooled_ema_loss" } }
for _, pt in ipairs(points) do
  local total = pt.at + pt.length
  local w = { cooled = {}, cosine = {}, raw0 = {}, ema0 = {}, cooled_ema = {} }
  for i, seed in ipairs(cfg.seeds) do
    local cool, cos = ("cooldown-%d"):format(pt.at), ("cosine-%d"):format(total)
    w.cooled[i], w.cosine[i], w.raw0[i] = windows(seed, cool, "", pt.length), windows(seed, cos, "", total), windows(seed, cool, "", 0)
    if ema then w.ema0[i], w.cooled_ema[i] = windows(seed, cool, "avg_", 0), windows(seed, cool, "avg_", pt.length) end
    local m = function(x) return x and stats.mean(x) or nil end
    csv[#csv + 1] = util.csv_line { pt.at, pt.length, total, seed, m(w.cooled[i]), m(w.cosine[i]), m(w.raw0[i]),
                                    m(w.ema0[i]), m(w.cooled_ema[i]) }
  end
  local mean = function(ws) local a = {}; for i, x in ipairs(ws) do a[i] = stats.mean(x) end; return #a > 0 and stats.mean(a) or nil end
  rows[#rows + 1] = { pt = pt, total = total, cooled = mean(w.cooled), cosine = mean(w.cosine), raw0 = mean(w.raw0),
                      ema0 = ema and mean(w.ema0), cooled_ema = ema and mean(w.cooled_ema),
                      d_cos = stats.paired(w.cooled, w.cosine), d_ema = ema and stats.paired(w.ema0, w.cooled) }
end

-- The whole curve: the constant run plus every cooldown, against every cosine run.
local curve_steps, cosine_steps = points[#points].at, 0
for _, r in ipairs(rows) do curve_steps, cosine_steps = curve_steps + r.pt.length, cosine_steps + r.total end

local n = #cfg.seeds
local function ci(d) return ("%+.4f [%+.4f, %+.4f]"):format(d.diff, d.lo, d.hi) end
local md = {
  "# Cooldowns from one constant-LR run vs cosine runs" .. (cfg.quick and " (quick setting)" or ""), "",
  ("Constant run: warmup %d steps to lr %s, then constant; cooldowns: %s to %s over %s of the point's steps; " ..
   "cosine runs: the same warmup and peak, to %s. Final validation loss (%s, %d windows of %d tokens), mean over " ..
   "seeds %s; differences paired on the same windows, 95%% interval %s.%s"):format(
    tc.warmup, util.num(tc.lr), cfg.shape, util.num(cfg.floor), util.num(cfg.cooldown_frac), util.num(cfg.floor),
    setup.loss_unit(cfg.tokenizer), tc.eval_windows, T, table.concat(cfg.seeds, ", "),
    n >= 2 and ("Student t over the %d seeds"):format(n) or "normal over the windows of the one seed",
    ema and (" The constant run keeps an EMA of its weights (decay %s), carried into every cooldown."):format(util.num(cfg.ema_decay)) or ""), "",
  "| point | cooldown steps | total steps | constant at point | cooled-down loss | cosine loss | cooled − cosine | verdict |",
  "|---:|---:|---:|---:|---:|---:|---|---|",
}
for _, r in ipairs(rows) do
  md[#md + 1] = ("| %d | %d | %d | %.4f | %.4f | %.4f | %s | %s |"):format(r.pt.at, r.pt.length, r.total, r.raw0, r.cooled,
    r.cosine, ci(r.d_cos), stats.verdict(r.d_cos))
end
if ema then
  md[#md + 1] = ""
  md[#md + 1] = "The constant run's EMA at each point against the cooldown from that point (and the EMA kept through the cooldown):"
  md[#md + 1] = ""
  md[#md + 1] = "| point | constant raw | constant EMA | cooled-down | EMA − cooled-down | verdict | cooled-down EMA |"
  md[#md + 1] = "|---:|---:|---:|---:|---|---|---:|"
  for _, r in ipairs(rows) do
    md[#md + 1] = ("| %d | %.4f | %.4f | %.4f | %s | %s | %.4f |"):format(r.pt.at, r.raw0, r.ema0, r.cooled, ci(r.d_ema),
      stats.verdict(r.d_ema), r.cooled_ema)
  end
end
md[#md + 1] = ""
md[#md + 1] = ("Compute for the whole curve, per seed: the constant run and its cooldowns take %d steps, separate cosine runs %d " ..
               "(%.2f×). Wall time over all seeds: constant %.0f s, cooldowns %.0f s, cosine runs %.0f s; the suite %.0f s."):format(
  curve_steps, cosine_steps, cosine_steps / curve_steps, wall.constant, wall.cooldown, wall.cosine, kiln.clock() - t0)
local text = table.concat(md, "\n") .. "\n"
util.write_atomic(cfg.out .. "/results.md", text)
util.write_atomic(cfg.out .. "/results.csv", table.concat(csv))
print()
io.write(text)
print(("tables: %s/results.md, %s/results.csv"):format(cfg.out, cfg.out))
