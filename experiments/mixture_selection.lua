-- mixture_selection.lua — the temporal law's application (docs/experiments.md, "Temporal
-- scaling law"): choose a data mixture directly on the target model. Each candidate proportion of the upstream and
-- downstream corpora is trained for a short prefix of the full budget (with the full run's
-- warmup + cosine schedule); the temporal law fitted to that prefix predicts each candidate's
-- loss at the full budget; the candidate predicted best is the pick. The script then trains
-- every candidate to the end and reports whether the pick was right and by how much.
--
--   kiln experiments/mixture_selection.lua [config=FILE.yaml] [key=value ...]
--   e.g. steps=1000 prefix=0.3 weights=[0.9,0.7,0.5] out=runs/mix2
--
-- The target is the mean of the predicted final losses on both validation sets
-- (target=mean), or one set's (target=up / target=down). Corpora come from `make data`.
local kiln = require "kiln"
local util = require "kiln.util"
local tsl = require "kiln.tsl"

local here = (arg and arg[0] or "experiments/mixture_selection.lua"):match("^(.*)/[^/]*$") or "."
local setup = dofile(here .. "/lib/setup.lua")
local cfg = kiln.config.resolve({
  out = "runs/mixture_selection",
  upstream = "data/techdocs/train.txt", upstream_val = "data/techdocs/val.txt",
  downstream = "data/austen/train.txt", downstream_val = "data/austen/val.txt",
  tokenizer = "bytes",        -- bytes (V = 256), gpt2 or bpe8k: the token files `make data` built
  check_data = false,         -- true: open the data, print what would be read, and stop
  restart = false,            -- true: move each run directory's previous run aside and train it again
  weights = { 0.9, 0.7, 0.5, 0.3 },       -- upstream share of each candidate mixture
  steps = 1200, prefix = 0.3, batch = 32, context = 64, lr = 3e-3, warmup = 60, floor_frac = 0.1,
  n_layer = 2, n_head = 4, n_embd = 64, eval_windows = 512, evals = 40, target = "mean", seed = 1,
  forms = { a0 = "log", a1 = "hyperbolic", a2 = "cosine" },
}, arg, { rules = {
  weights = { min = 0, max = 1 }, steps = { min = 1 }, prefix = { above = 0, max = 1 }, batch = { min = 1 },
  context = { min = 1 }, lr = { above = 0 }, warmup = { min = 0 }, floor_frac = { min = 0, max = 1 },
  n_layer = { min = 1 }, n_head = { min = 1 }, n_embd = { min = 1 }, eval_windows = { min = 1 },
  evals = { min = 2 }, target = { one_of = { "mean", "up", "down" } }, tokenizer = setup.tokenizer_rule,
} })
local data, V = setup.open_data("mixture_selection", cfg.tokenizer, { upstream = cfg.upstream,
  upstream_val = cfg.upstream_val, downstream = cfg.downstream, downstream_val = cfg.downstream_val },
  "to build the corpora")
setup.report_data("mixture_selection", cfg, data, V)

local up, down = data.upstream, data.downstream
local sets = { up = data.upstream_val, down = data.downstream_val }
local prefix_steps = math.floor(cfg.prefix * cfg.steps + 0.5)
-- Dense evaluations inside the prefix (log-spaced), sparser after it.
local at, seen = {}, {}
for k = 0, cfg.evals - 1 do
  local s = math.floor(5 * (prefix_steps / 5) ^ (k / (cfg.evals - 1)) + 0.5)
  if not seen[s] then seen[s] = true; at[#at + 1] = s end
end
for k = 1, 10 do
  local s = math.floor(prefix_steps + k * (cfg.steps - prefix_steps) / 10 + 0.5)
  if not seen[s] then seen[s] = true; at[#at + 1] = s end
end

local restarted = {}   -- run directories restarted by this process (restart=true)
local function train(w, stop_at)
  local run_dir = ("%s/up%g"):format(cfg.out, w)
  local o = {
    model = { vocab_size = V, block_size = cfg.context, n_layer = cfg.n_layer, n_head = cfg.n_head, n_embd = cfg.n_embd, seed = cfg.seed },
    optimizer = { lr = cfg.lr }, steps = cfg.steps, batch = cfg.batch, context = cfg.context, seed = cfg.seed,
    data = { { name = "up", dataset = up, weight = w }, { name = "down", dataset = down, weight = 1 - w } },
    schedule = kiln.schedule.cosine { peak = cfg.lr, floor_frac = cfg.floor_frac, steps = cfg.steps, warmup = cfg.warmup },
    eval = { at = at, sets = sets, windows = cfg.eval_windows }, run_dir = run_dir, log_every = 100, config = cfg,
    checkpoint = { at = { prefix_steps } }, quiet = true,
    restart = cfg.restart and not restarted[run_dir],   -- once: a later call continues the same run
  }
  if stop_at then o.on_step = function(info) if info.step >= stop_at then return "stop" end end end
  kiln.train(o)
  restarted[run_dir] = true
  return run_dir
end

local function target_of(values)
  if cfg.target == "mean" then return 0.5 * (values.up + values.down) end
  return values[cfg.target]
end

-- 1. Prefixes and predictions.
local cands = {}
for _, w in ipairs(cfg.weights) do
  print(("== upstream share %g: training the prefix (%d of %d steps)"):format(w, prefix_steps, cfg.steps))
  local run_dir = train(w, prefix_steps)
  local run = tsl.read_run(run_dir)
  local pred = {}
  for _, set in ipairs { "up", "down" } do
    local m = tsl.fit_temporal(run, { set = set, fit_until = prefix_steps, forms = cfg.forms })
    pred[set] = tsl.predict(m, cfg.steps).loss
  end
  cands[#cands + 1] = { w = w, dir = run_dir, pred = pred, pred_target = target_of(pred) }
end
table.sort(cands, function(a, b) return a.pred_target < b.pred_target end)
local pick = cands[1]
print(("predicted best: upstream share %g (predicted target loss %.4f)"):format(pick.w, pick.pred_target))

-- 2. Train every candidate to the end (each resumes from its prefix checkpoint).
for _, c in ipairs(cands) do
  print(("== upstream share %g: training to the end"):format(c.w))
  train(c.w)
  local summary = kiln.yaml.load(c.dir .. "/summary.yaml")
  c.true_vals = { up = summary.eval.up, down = summary.eval.down }
  c.true_target = target_of(c.true_vals)
end
local best = cands[1]
for _, c in ipairs(cands) do if c.true_target < best.true_target then best = c end end

local md = { "# Mixture selection with the temporal scaling law", "",
  ("Prefix %d of %d steps (%g); target = %s of the validation losses; forms a0 %s, a1 %s, a2 %s."):format(
    prefix_steps, cfg.steps, cfg.prefix, cfg.target, cfg.forms.a0, cfg.forms.a1, cfg.forms.a2), "",
  "| upstream share | predicted up | predicted down | predicted target | true up | true down | true target |",
  "|---:|---:|---:|---:|---:|---:|---:|" }
table.sort(cands, function(a, b) return a.w > b.w end)
for _, c in ipairs(cands) do
  md[#md + 1] = ("| %g | %.4f | %.4f | %.4f | %.4f | %.4f | %.4f |"):format(c.w, c.pred.up, c.pred.down, c.pred_target,
    c.true_vals.up, c.true_vals.down, c.true_target)
end
md[#md + 1] = ""
md[#md + 1] = ("Pick: %g; truly best: %g. %s (regret: the pick's true target loss is %.4f above the best's)."):format(
  pick.w, best.w, pick.w == best.w and "The pick was right" or "The pick was wrong", pick.true_target - best.true_target)
local text = table.concat(md, "\n") .. "\n"
util.write_atomic(cfg.out .. "/results.md", text)
print(text)
