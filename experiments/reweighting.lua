-- reweighting.lua — the position re-weighting ablation of the temporal-scaling-law paper
-- (docs/experiments.md, "Position re-weighting ablation"): the same model trained with
-- uniform loss weights and with the head 10%, middle 80% or tail 10% of positions down-weighted ×0.5, several seeds each, identical data
-- order across variants (the data order depends only on the seed). Its table: final
-- validation loss in distribution (techdocs) and out of distribution (austen), the
-- in-distribution loss over the head / middle / tail position ranges separately, bits per
-- byte, and tokens/s.
--
--   kiln experiments/reweighting.lua [quick=true] [config=FILE.yaml] [key=value ...]
-- (settings: reweighting.yaml; layering: docs/guide.md, "Settings")
local kiln = require "kiln"

local here = (arg and arg[0] or "experiments/reweighting.lua"):match("^(.*)/[^/]*$") or "."
local setup = dofile(here .. "/lib/setup.lua")
local P, N, R, F = setup.positive, setup.count, setup.rate, setup.fraction
local cfg = setup.config(here, "reweighting", arg, {
  threads = N, seeds = N, parallel = { one_of = { "data", "runs" } }, tokenizer = setup.tokenizer_rule,
  ["model.n_layer"] = P, ["model.n_head"] = P, ["model.n_embd"] = P, ["model.context"] = P,
  ["train.steps"] = P, ["train.batch"] = P, ["train.lr"] = R, ["train.warmup"] = N,
  ["train.floor_frac"] = F, ["train.weight_decay"] = { min = 0 }, ["train.clip"] = { min = 0 },
  ["train.eval_every"] = P, ["train.eval_windows"] = P, ["weighting.factor"] = { min = 0 },
  ["train.final_windows"] = { check = function(v)   -- a string setting: "all" or digits
    local n = math.tointeger(tonumber(v))
    if v ~= "all" and not (n and n >= 1) then return '"all" or a positive integer' end
  end },
  variants = { one_of = { "uniform", "head", "middle", "tail", "head_unnorm", "middle_unnorm", "tail_unnorm" } },
  ["weighting.head_fraction"] = F, ["weighting.middle_fraction"] = F, ["weighting.tail_fraction"] = F,
})
local data, V = setup.open_data("reweighting", cfg.tokenizer, cfg.data,
                                 "it builds data/ from Debian packages, see docs/data.md")
setup.report_data("reweighting", cfg, data, V)
local train_ds, val_ds, ood_ds = data.train, data.val, data.ood
-- Losses are per token; bits per byte divide by the validation text's bytes per token.
local val_bytes_per_token = setup.bytes_per_token(cfg.data.val, val_ds)

local T = cfg.model.context
local w = cfg.weighting
-- The arms: uniform, and head / middle / tail down-weighted with weighting.normalize as set;
-- an "_unnorm" arm is the same weighting without normalisation (the literal "× 0.5").
local function arm(name)
  if name == "uniform" then return { name = name } end
  local kind = name:gsub("_unnorm$", "")
  return { name = name, weighting = { kind = kind, fraction = w[kind .. "_fraction"], factor = w.factor,
                                      normalize = w.normalize and kind == name } }
end
local variants = {}
for _, name in ipairs(cfg.variants) do variants[#variants + 1] = arm(name) end
local has_uniform = false
for _, v in ipairs(variants) do has_uniform = has_uniform or v.name == "uniform" end

-- Position ranges for the table: the same head / middle / tail split the weightings use.
local ranges = {}
ranges.head, ranges.middle, ranges.tail = kiln.weighting.split(T, w.head_fraction)

local tc = cfg.train
if tc.final_windows ~= "all" then tc.final_windows = math.tointeger(tonumber(tc.final_windows)) end

local function range_mean(per, r)
  local s = 0
  for i = r.first + 1, r.last + 1 do s = s + per[i] end   -- positions are 0-based in ranges
  return s / r.count
end

print(("re-weighting ablation: %d variants x %d seeds, %d steps of %d x %d tokens, %d threads -> %s"):format(
  #variants, #cfg.seeds, tc.steps, tc.batch, T, kiln.get_threads(), cfg.out))
-- The comparison with uniform rests on the final evaluation: say how many windows it reads.
local function n_final(ds)
  local total = ds:num_eval_windows(T)
  return tc.final_windows == "all" and total or math.min(tc.final_windows, total), total
end
print(("evaluation: every %d steps on %d windows; final evaluation on %d of %d windows (id), %d of %d (ood), %d tokens each"):format(
  tc.eval_every, tc.eval_windows, select(1, n_final(val_ds)), select(2, n_final(val_ds)),
  select(1, n_final(ood_ds)), select(2, n_final(ood_ds)), T))

local results = kiln.suite {
  dir = cfg.out,
  title = "Position re-weighting ablation" .. (cfg.quick and " (quick setting)" or ""),
  variants = variants,
  seeds = cfg.seeds,
  baseline = has_uniform and "uniform" or nil,   -- a subset without uniform trains, and compares later
  digits = 5,   -- differences and standard errors are of the order of 1e-4 nats
  parallel = cfg.parallel,
  run = function(v, seed, run_dir)
    return kiln.train {
      model = { vocab_size = V, block_size = T, n_layer = cfg.model.n_layer, n_head = cfg.model.n_head,
                n_embd = cfg.model.n_embd, seed = seed },
      optimizer = { lr = tc.lr, weight_decay = tc.weight_decay, clip = tc.clip },
      data = train_ds, steps = tc.steps, batch = tc.batch, context = T, seed = seed,
      schedule = kiln.schedule.cosine { peak = tc.lr, floor_frac = tc.floor_frac, steps = tc.steps, warmup = tc.warmup },
      weighting = v.weighting,
      eval = { every = tc.eval_every, windows = tc.eval_windows, final_windows = tc.final_windows,
               sets = { id = val_ds, ood = ood_ds } },
      run_dir = run_dir, config = cfg, log_every = math.max(1, tc.steps // 10), restart = cfg.restart,
    }
  end,
  report = function(s)
    local per = s.positions.id
    return {
      id_loss = s.eval.id, ood_loss = s.eval.ood,
      head_loss = range_mean(per, ranges.head), middle_loss = range_mean(per, ranges.middle),
      tail_loss = range_mean(per, ranges.tail),
      id_bpb = s.eval.id / math.log(2) / val_bytes_per_token, id_se = s.eval_se.id, ood_se = s.eval_se.ood,
      tokens_per_s = s.tokens_per_s, wall_seconds = s.wall_seconds,
    }
  end,
  columns = { "id_loss", "ood_loss", "head_loss", "middle_loss", "tail_loss", "id_bpb", "id_se", "ood_se",
              "tokens_per_s", "wall_seconds" },
}
local plots = {}
for _, set in ipairs { "id", "ood" } do
  local files = kiln.suite.plot(results, { set = set, path = cfg.out .. "/plot_" .. set,
                                           baseline = has_uniform and "uniform" or nil })
  plots[#plots + 1] = files.loss.dat
  if files.positions then plots[#plots + 1] = files.positions.dat end
end

print()
io.write(results.table)
print(("\nhead = positions 1..%d, middle = %d..%d, tail = %d..%d of %d (1-based); losses in nats per %s."):format(
  ranges.head.count, ranges.middle.first + 1, ranges.middle.last + 1, ranges.tail.first + 1, ranges.tail.last + 1, T,
  cfg.tokenizer == "bytes" and "byte" or (cfg.tokenizer .. " token")))
print(("tables: %s/results.md, %s/results.csv, %s/comparison.csv, %s/timing.csv; per run: %s/runs.csv"):format(
  cfg.out, cfg.out, cfg.out, cfg.out, cfg.out))
print("plots (with .gp, and .png when gnuplot is installed): " .. table.concat(plots, " "))
