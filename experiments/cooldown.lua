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
-- Writes OUT/constant/, OUT/cooldown-<step>/, OUT/cosine-<steps>/ (run directories) and
-- OUT/results.md, OUT/results.csv. Complete runs are not trained again.
local kiln = require "kiln"
local util = require "kiln.util"

local here = (arg and arg[0] or "experiments/cooldown.lua"):match("^(.*)/[^/]*$") or "."
local setup = dofile(here .. "/lib/setup.lua")
local P, N, R = setup.positive, setup.count, setup.rate
local cfg = setup.config(here, "cooldown", arg, {
  threads = N, tokenizer = setup.tokenizer_rule, shape = { one_of = kiln.cooldown.SHAPES },
  ["model.n_layer"] = P, ["model.n_head"] = P, ["model.n_embd"] = P, ["model.context"] = P,
  ["train.steps"] = P, ["train.batch"] = P, ["train.lr"] = R, ["train.warmup"] = N,
  ["train.weight_decay"] = { min = 0 }, ["train.clip"] = { min = 0 }, ["train.eval_windows"] = P,
  points = { above = 0, max = 1 }, cooldown_frac = { above = 0, max = 1 }, floor = { min = 0 },
})
local data, V = setup.open_data("cooldown", cfg.tokenizer, cfg.data, "it builds data/ from Debian packages, see docs/data.md")
setup.report_data("cooldown", cfg, data, V)
local tc, T = cfg.train, cfg.model.context

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

local function model() return { vocab_size = V, block_size = T, n_layer = cfg.model.n_layer, n_head = cfg.model.n_head,
                                 n_embd = cfg.model.n_embd, seed = cfg.seed } end

local function train(run_dir, steps, schedule, checkpoint_at)
  return kiln.train {
    model = model(), optimizer = { lr = tc.lr, weight_decay = tc.weight_decay, clip = tc.clip },
    data = data.train, steps = steps, batch = tc.batch, context = T, seed = cfg.seed, schedule = schedule,
    eval = { windows = tc.eval_windows, sets = { val = data.val } },
    checkpoint = checkpoint_at and { at = checkpoint_at } or nil,
    run_dir = run_dir, config = cfg, log_every = math.max(1, steps // 10), restart = cfg.restart,
  }
end

print(("cooldown suite: constant run of %d steps cooled down at %d points (%s, %s of the point), cosine runs of each " ..
       "length; %d threads -> %s"):format(tc.steps, #points, cfg.shape, util.num(cfg.cooldown_frac), kiln.get_threads(), cfg.out))
util.mkdir(cfg.out)

local t0 = kiln.clock()
local at_steps = {}
for i, pt in ipairs(points) do at_steps[i] = pt.at end
local constant = train(cfg.out .. "/constant", points[#points].at,
                       kiln.schedule.warmup { steps = tc.warmup, peak = tc.lr }, at_steps)
local wall = { constant = constant.wall_seconds, cooldown = 0, cosine = 0 }

local rows = {}
for _, pt in ipairs(points) do
  local total = pt.at + pt.length
  local cool = kiln.cooldown.fork { run = cfg.out .. "/constant", at = pt.at, length = pt.length, shape = cfg.shape,
                                    floor = cfg.floor, out = ("%s/cooldown-%d"):format(cfg.out, pt.at), restart = cfg.restart }
  local cos = train(("%s/cosine-%d"):format(cfg.out, total), total,
                    kiln.schedule.cosine { peak = tc.lr, floor = cfg.floor, steps = total, warmup = tc.warmup })
  wall.cooldown, wall.cosine = wall.cooldown + (cool.wall_seconds or 0), wall.cosine + (cos.wall_seconds or 0)
  rows[#rows + 1] = { at = pt.at, length = pt.length, total = total, cooled = cool.eval.val, cosine = cos.eval.val }
end

-- The whole curve: the constant run plus every cooldown, against every cosine run.
local curve_steps, cosine_steps = points[#points].at, 0
for _, r in ipairs(rows) do curve_steps, cosine_steps = curve_steps + r.length, cosine_steps + r.total end

local md = {
  "# Cooldowns from one constant-LR run vs cosine runs" .. (cfg.quick and " (quick setting)" or ""), "",
  ("Constant run: warmup %d steps to lr %s, then constant; cooldowns: %s to %s over %s of the point's steps; " ..
   "cosine runs: the same warmup and peak, to %s. Final validation loss (%s, %d windows of %d tokens)."):format(
    tc.warmup, util.num(tc.lr), cfg.shape, util.num(cfg.floor), util.num(cfg.cooldown_frac), util.num(cfg.floor),
    setup.loss_unit(cfg.tokenizer), tc.eval_windows, T), "",
  "| point | cooldown steps | total steps | cooled-down loss | cosine loss | cooled − cosine |",
  "|---:|---:|---:|---:|---:|---:|",
}
local csv = { util.csv_line { "point", "cooldown_steps", "total_steps", "cooled_loss", "cosine_loss", "difference" } }
for _, r in ipairs(rows) do
  md[#md + 1] = ("| %d | %d | %d | %.4f | %.4f | %+.4f |"):format(r.at, r.length, r.total, r.cooled, r.cosine, r.cooled - r.cosine)
  csv[#csv + 1] = util.csv_line { r.at, r.length, r.total, r.cooled, r.cosine, r.cooled - r.cosine }
end
md[#md + 1] = ""
md[#md + 1] = ("Compute for the whole curve: the constant run and its cooldowns take %d steps, separate cosine runs %d " ..
               "(%.2f×). Wall time: constant %.0f s, cooldowns %.0f s, cosine runs %.0f s; the suite %.0f s."):format(
  curve_steps, cosine_steps, cosine_steps / curve_steps, wall.constant or 0, wall.cooldown, wall.cosine, kiln.clock() - t0)
local text = table.concat(md, "\n") .. "\n"
util.write_atomic(cfg.out .. "/results.md", text)
util.write_atomic(cfg.out .. "/results.csv", table.concat(csv))
print()
io.write(text)
print(("tables: %s/results.md, %s/results.csv"):format(cfg.out, cfg.out))
