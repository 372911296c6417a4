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
  threads = N, seed = { min = 0 }, tokenizer = setup.tokenizer_rule,
  ["model.n_layer"] = P, ["model.n_head"] = P, ["model.n_embd"] = P, ["model.context"] = P,
  ["train.steps"] = P, ["train.batch"] = P, ["train.lr"] = R, ["train.warmup"] = N,
  ["train.floor_frac"] = F, ["train.weight_decay"] = { min = 0 }, ["train.eval_every"] = P,
  ["train.eval_windows"] = P, ["ema.decay"] = { min = 0, max = 0.999999 },
})
local data, V = setup.open_data("averaging", cfg.tokenizer, cfg.data, "it builds data/ from Debian packages, see docs/data.md")
setup.report_data("averaging", cfg, data, V)
local tc, T = cfg.train, cfg.model.context
local schedules = {
  constant = kiln.schedule.warmup { steps = tc.warmup, peak = tc.lr },
  cosine = kiln.schedule.cosine { peak = tc.lr, steps = tc.steps, warmup = tc.warmup, floor_frac = tc.floor_frac },
}
util.mkdir(cfg.out)
local t0, results = kiln.clock(), {}
for _, name in ipairs { "constant", "cosine" } do
  print(("== %s schedule, EMA decay %s -> %s/%s"):format(name, util.num(cfg.ema.decay), cfg.out, name))
  results[name] = kiln.train {
    model = { vocab_size = V, block_size = T, n_layer = cfg.model.n_layer, n_head = cfg.model.n_head,
              n_embd = cfg.model.n_embd, seed = cfg.seed },
    optimizer = { lr = tc.lr, weight_decay = tc.weight_decay }, data = data.train, steps = tc.steps,
    batch = tc.batch, context = T, schedule = schedules[name], seed = cfg.seed,
    eval = { every = tc.eval_every, sets = { val = data.val }, windows = tc.eval_windows },
    ema = { decay = cfg.ema.decay }, run_dir = cfg.out .. "/" .. name, restart = cfg.restart,
    log_every = tc.eval_every,
  }
end

-- One row per evaluation: raw and averaged loss of both runs.
local curves = {}
for _, name in ipairs { "constant", "cosine" } do curves[name] = util.read_csv(cfg.out .. "/" .. name .. "/metrics.csv") end
local function column(csv, col)
  local idx
  for i, h in ipairs(csv.header) do if h == col then idx = i end end
  local out = {}
  for _, row in ipairs(csv.rows) do if row[idx] ~= nil and row[idx] ~= "" then out[row[1]] = row[idx] end end
  return out
end
local c_raw, c_avg = column(curves.constant, "val_loss"), column(curves.constant, "val_avg_loss")
local k_raw, k_avg = column(curves.cosine, "val_loss"), column(curves.cosine, "val_avg_loss")
local steps = {}
for s in pairs(c_raw) do steps[#steps + 1] = s end
table.sort(steps)
local md = { ("# Weight averaging along a run%s\n\n"):format(cfg.quick and " (quick setting)" or ""),
  ("Model %d layers, d %d, context %d; %d steps of %d x %d tokens; peak LR %s, %d warmup steps; cosine to %s of the peak; EMA decay %s; validation loss (%s) on %d windows of %s; seed %d; %.0f s.\n\n"):format(
    cfg.model.n_layer, cfg.model.n_embd, T, tc.steps, tc.batch, T, util.num(tc.lr), tc.warmup, util.num(tc.floor_frac),
    util.num(cfg.ema.decay), setup.loss_unit(cfg.tokenizer), tc.eval_windows, cfg.data.val, cfg.seed, kiln.clock() - t0),
  "| step | constant: raw | constant: EMA | cosine: raw | cosine: EMA |\n|---|---|---|---|---|\n" }
local function f(x) return x and ("%.4f"):format(x) or "" end
for _, s in ipairs(steps) do
  md[#md + 1] = ("| %d | %s | %s | %s | %s |\n"):format(s, f(c_raw[s]), f(c_avg[s]), f(k_raw[s]), f(k_avg[s]))
end
local text = table.concat(md)
util.write_atomic(cfg.out .. "/results.md", text)
print(text)
