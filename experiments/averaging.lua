-- averaging.lua — weight averaging along a run (docs/experiments.md, "Weight averaging"): the
-- same model, data and seed trained twice, with a constant LR (after warmup) and with a
-- cosine decay, each keeping an EMA of its weights inside the AdamW step. At every evaluation
-- the raw and the averaged weights are evaluated on the same windows. Hägele et al. 2024 report
-- that averaging along a constant-LR run approaches a cooled-down model; the table shows how
-- close the EMA of the constant run comes to the cosine run here.
--
--   kiln experiments/averaging.lua [quick=true] [config=FILE.yaml] [key=value ...]
local kiln = require "kiln"
local util = require "kiln.util"

local here = (arg and arg[0] or "experiments/averaging.lua"):match("^(.*)/[^/]*$") or "."
local setup = dofile(here .. "/lib/setup.lua")
local P, N, R, F = setup.positive, setup.count, setup.rate, setup.fraction
local cfg = setup.config(here, "averaging", arg, {
  threads = N, seeds = { min = 0 }, tokenizer = setup.tokenizer_rule,
  ["model.n_layer"] = P, ["model.n_head"] = P, ["model.n_embd"] = P, ["model.context"] = P,
  ["train.steps"] = P, ["train.batch"] = P, ["train.lr"] = R, ["train.warmup"] = N,
  ["train.floor_frac"] = F, ["train.weight_decay"] = { min = 0 }, ["train.eval_every"] = P,
  ["train.eval_windows"] = P, ["train.final_windows"] = P, ["ema.decay"] = { min = 0, max = 0.999999 },
})
local data, V = setup.open_data("averaging", cfg.tokenizer, cfg.data, "it builds data/ from Debian packages, see docs/data.md")
setup.report_data("averaging", cfg, data, V)
local tc, T = cfg.train, cfg.model.context
local stats = require "kiln.stats"
local evaluate = require "kiln.evaluate"
if type(cfg.seeds) ~= "table" or #cfg.seeds == 0 then kiln.config.fail("averaging: setting 'seeds' must be a list of seeds") end
local schedules = {
  constant = kiln.schedule.warmup { steps = tc.warmup, peak = tc.lr },
  cosine = kiln.schedule.cosine { peak = tc.lr, steps = tc.steps, warmup = tc.warmup, floor_frac = tc.floor_frac },
}
local RUNS = { "constant", "cosine" }
util.mkdir(cfg.out)
local t0, wall = kiln.clock(), {}
for _, seed in ipairs(cfg.seeds) do
  for _, name in ipairs(RUNS) do
    local run_dir = ("%s/seed%d/%s"):format(cfg.out, seed, name)
    print(("== seed %d, %s schedule, EMA decay %s -> %s"):format(seed, name, util.num(cfg.ema.decay), run_dir))
    local s = kiln.train {
      model = { vocab_size = V, block_size = T, n_layer = cfg.model.n_layer, n_head = cfg.model.n_head,
                n_embd = cfg.model.n_embd, seed = seed },
      optimizer = { lr = tc.lr, weight_decay = tc.weight_decay }, data = data.train, steps = tc.steps,
      batch = tc.batch, context = T, schedule = schedules[name], seed = seed,
      eval = { every = tc.eval_every, sets = { val = data.val }, windows = tc.eval_windows, final_windows = tc.final_windows },
      ema = { decay = cfg.ema.decay }, run_dir = run_dir, restart = cfg.restart, log_every = tc.eval_every,
      config = cfg,
    }
    wall[#wall + 1] = ("%.0f"):format(s.wall_seconds or 0)
  end
end

-- The mean over seeds of each run's raw and averaged validation loss at every evaluation.
local function column(csv, col)
  local idx
  for i, h in ipairs(csv.header) do if h == col then idx = i end end
  local out = {}
  for _, row in ipairs(csv.rows) do if row[idx] ~= nil and row[idx] ~= "" then out[row[1]] = row[idx] end end
  return out
end
local curves, steps = {}, nil
for _, name in ipairs(RUNS) do
  curves[name] = { raw = {}, avg = {} }
  for _, seed in ipairs(cfg.seeds) do
    local csv = util.read_csv(("%s/seed%d/%s/metrics.csv"):format(cfg.out, seed, name))
    local raw, avg = column(csv, "val_loss"), column(csv, "val_avg_loss")
    for st, v in pairs(raw) do curves[name].raw[st] = (curves[name].raw[st] or 0) + v / #cfg.seeds end
    for st, v in pairs(avg) do curves[name].avg[st] = (curves[name].avg[st] or 0) + v / #cfg.seeds end
    if not steps then
      steps = {}
      for st in pairs(raw) do steps[#steps + 1] = st end
      table.sort(steps)
    end
  end
end

-- Paired differences at the final evaluation: per seed the mean over the same windows.
local function windows(name, kind)
  local out = {}
  for i, seed in ipairs(cfg.seeds) do
    out[i] = evaluate.read_windows(("%s/seed%d/%s/windows/val_%sstep%08d.csv"):format(
      cfg.out, seed, name, kind == "avg" and "avg_" or "", tc.steps))
  end
  return out
end
local W = {}
for _, name in ipairs(RUNS) do W[name] = { raw = windows(name, "raw"), avg = windows(name, "avg") } end
local comparisons = {
  { "constant: EMA − raw", W.constant.avg, W.constant.raw },
  { "cosine: EMA − raw", W.cosine.avg, W.cosine.raw },
  { "constant EMA − cosine raw", W.constant.avg, W.cosine.raw },
  { "constant raw − cosine raw", W.constant.raw, W.cosine.raw },
}

local n = #cfg.seeds
local function f(x) return x and ("%.4f"):format(x) or "" end
local md = { ("# Weight averaging along a run%s\n\n"):format(cfg.quick and " (quick setting)" or ""),
  ("Model %d layers, d %d, context %d; %d steps of %d x %d tokens; peak LR %s, %d warmup steps; cosine to %s of the peak; EMA decay %s; validation loss (%s) on %d windows of %s (the final evaluation: %s); seeds %s; %.0f s (runs: %s s).\n\n"):format(
    cfg.model.n_layer, cfg.model.n_embd, T, tc.steps, tc.batch, T, util.num(tc.lr), tc.warmup, util.num(tc.floor_frac),
    util.num(cfg.ema.decay), setup.loss_unit(cfg.tokenizer), tc.eval_windows, cfg.data.val, tostring(tc.final_windows or tc.eval_windows),
    table.concat(cfg.seeds, ", "), kiln.clock() - t0, table.concat(wall, ", ")),
  ("Mean over %d seed%s:\n\n"):format(n, n == 1 and "" or "s"),
  "| step | constant: raw | constant: EMA | cosine: raw | cosine: EMA |\n|---|---|---|---|---|\n" }
for _, st in ipairs(steps) do
  md[#md + 1] = ("| %d | %s | %s | %s | %s |\n"):format(st, f(curves.constant.raw[st]), f(curves.constant.avg[st]),
    f(curves.cosine.raw[st]), f(curves.cosine.avg[st]))
end
md[#md + 1] = ("\nAt the final evaluation (step %d), paired on the same windows; 95%% interval %s:\n\n"):format(tc.steps,
  n >= 2 and ("Student t over the %d seeds' mean differences"):format(n) or "normal, over the windows of the one seed")
local head_cells = { "| difference | mean |" }
for _, seed in ipairs(cfg.seeds) do head_cells[#head_cells + 1] = (" seed %d |"):format(seed) end
head_cells[#head_cells + 1] = " 95% interval | verdict |"
md[#md + 1] = table.concat(head_cells) .. "\n|---|---|" .. ("---|"):rep(n) .. "---|---|\n"
local csv = { util.csv_line { "difference", "seed", "diff", "se_windows", "windows" } }
for _, c in ipairs(comparisons) do
  local d = stats.paired(c[2], c[3])
  local cells = { ("| %s | %+.4f |"):format(c[1], d.diff) }
  for i, ps in ipairs(d.per_seed) do
    cells[#cells + 1] = (" %+.4f ± %.4f |"):format(ps.diff, 1.96 * ps.se)
    csv[#csv + 1] = util.csv_line { c[1], cfg.seeds[i], ps.diff, ps.se, ps.windows }
  end
  cells[#cells + 1] = (" [%+.4f, %+.4f] | %s |"):format(d.lo, d.hi, stats.verdict(d))
  md[#md + 1] = table.concat(cells) .. "\n"
end
md[#md + 1] = "\n(Per seed: the mean difference over the windows ± 1.96 × its standard error over windows. Negative: the first is lower.)\n"
local text = table.concat(md)
util.write_atomic(cfg.out .. "/results.md", text)
util.write_atomic(cfg.out .. "/results.csv", table.concat(csv))
print(text)
