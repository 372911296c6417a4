-- temporal_scaling.lua — the temporal scaling law on two model sizes (docs/experiments.md, "Temporal scaling law"):
-- train each size with warmup + cosine, evaluate the per-position loss on an in-distribution
-- (techdocs) and an out-of-distribution (austen) set at many checkpoints (log-spaced early,
-- uniform later), then fit the temporal law and the three baselines on the first 10%, 20%
-- and 30% of the run and score their predictions of the later average loss.
--
--   kiln experiments/temporal_scaling.lua [config=FILE.yaml] [key=value ...]
-- (defaults: temporal_scaling.yaml; layering: docs/guide.md, "Settings")
--   e.g. steps=600 sizes.large.n_embd=128 out=runs/ts2
--
-- Writes OUT/<size>/ (a kiln.train run directory each, with tsl_<cut>.md and plots at the
-- 20% cut in tsl_plots/), and OUT/results.md, OUT/results.csv: one combined table.
-- A finished size is not trained again (its summary.yaml exists); delete it to retrain.
local kiln = require "kiln"
local util = require "kiln.util"
local tsl = require "kiln.tsl"

local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
local setup = dofile(here .. "/lib/setup.lua")
local P = { min = 1 }
local cfg = kiln.config.resolve(here .. "/temporal_scaling.yaml", arg, { rules = {
  steps = P, batch = P, context = P, lr = { above = 0 }, warmup = { min = 0 }, floor_frac = { min = 0, max = 1 },
  eval_windows = P, evals_log = P, evals_uniform = P, log_until = { above = 0, max = 1 },
  cuts = { above = 0, max = 1 }, threads = { min = 0 }, tokenizer = setup.tokenizer_rule,
} })
if cfg.threads > 0 then kiln.set_threads(cfg.threads) end

local data, V = setup.open_data("temporal_scaling", cfg.tokenizer, { train = cfg.train, id = cfg.id, ood = cfg.ood },
                                 "to build the corpora")
setup.report_data("temporal_scaling", cfg, data, V)

-- Evaluation steps: log-spaced early, uniform over the whole run.
local function eval_steps(steps)
  local set, out = {}, {}
  local hi = math.max(11, math.floor(cfg.log_until * steps))
  for k = 0, cfg.evals_log - 1 do
    set[math.floor(10 * (hi / 10) ^ (k / math.max(1, cfg.evals_log - 1)) + 0.5)] = true
  end
  for k = 1, cfg.evals_uniform do set[math.floor(k * steps / cfg.evals_uniform + 0.5)] = true end
  for s in pairs(set) do if s >= 1 and s <= steps then out[#out + 1] = s end end
  table.sort(out)
  return out
end

local function fit_from()
  if cfg.fit_from == "" then return nil end
  return math.tointeger(tonumber(cfg.fit_from)) or tonumber(cfg.fit_from)
end

local train_ds = data.train
local sets = { val = data.id, ood = data.ood }
local at = eval_steps(cfg.steps)
print(("temporal_scaling: %d evaluations per run (steps %d..%d), %d windows of %d tokens per set; %d threads"):format(
  #at, at[1], at[#at], cfg.eval_windows, cfg.context, kiln.get_threads()))
util.mkdir(cfg.out)

local rows, notes = {}, {}
local size_names = util.sorted_keys(cfg.sizes)
table.sort(size_names, function(a, b)   -- smaller models first
  local A, B = cfg.sizes[a], cfg.sizes[b]
  return A.n_layer * A.n_embd ^ 2 < B.n_layer * B.n_embd ^ 2
end)
for _, size in ipairs(size_names) do
  local mc = cfg.sizes[size]
  local run_dir = cfg.out .. "/" .. size
  local model = kiln.model { vocab_size = V, block_size = cfg.context, n_layer = mc.n_layer, n_head = mc.n_head,
                             n_embd = mc.n_embd, seed = cfg.seed }
  local n_params = model:num_params()
  print(("== %s: %d layers, d=%d, %d parameters -> %s"):format(size, mc.n_layer, mc.n_embd, n_params, run_dir))
  local summary = kiln.train {
    model = model, optimizer = { lr = cfg.lr }, data = train_ds, steps = cfg.steps, batch = cfg.batch,
    context = cfg.context, seed = cfg.seed, run_dir = run_dir, log_every = 50, config = cfg,
    schedule = kiln.schedule.cosine { peak = cfg.lr, floor_frac = cfg.floor_frac, steps = cfg.steps, warmup = cfg.warmup },
    eval = { at = at, sets = sets, windows = cfg.eval_windows },
    checkpoint = { every = cfg.steps }, restart = cfg.restart,
  }
  notes[#notes + 1] = ("- %s: %d layers, d=%d, %d parameters; %d steps x %d tokens; final train loss %.4f; %.0f tokens/s; %.0f s"):format(
    size, mc.n_layer, mc.n_embd, n_params, cfg.steps, cfg.batch * cfg.context, summary.final_loss or 0 / 0,
    summary.tokens_per_s or 0 / 0, summary.wall_seconds or 0 / 0)
  local run = tsl.read_run(run_dir)
  for _, cut in ipairs(cfg.cuts) do
    local r = tsl.evaluate(run, { fit_until = cut, fit_from = fit_from(), forms = cfg.forms,
                                  variants = { temporal_power = { a0 = "power", a1 = "power", a2 = "power" } } })
    util.write_atomic(("%s/tsl_%g.md"):format(run_dir, cut), r.markdown .. "\n")
    for _, row in ipairs(r.rows) do
      row.size, row.cut, row.params = size, cut, n_params
      rows[#rows + 1] = row
    end
    for _, info in ipairs(r.sets) do
      local pr = info.position_r2
      if cut == cfg.cuts[1] then
        notes[#notes + 1] = ("- %s / %s: per-position fits from step %d: R² min %.4f, median %.4f, %d of %d checkpoints >= 0.95"):format(
          size, info.set, info.fit_from, pr.min, pr.median, pr.n_above, pr.n)
      end
    end
    if math.abs(cut - 0.2) < 1e-9 then tsl.plot(r, run_dir .. "/tsl_plots") end
  end
end

-- One combined table.
local function f(x, d) if x == nil then return "" end; if x ~= x then return "nan" end; return ("%." .. (d or 4) .. "f"):format(x) end
local md = { "# Temporal scaling law vs baselines", "",
  ("Fit on checkpoints from the LR peak (or fit_from) to the cut; score the predicted average loss on every later checkpoint. " ..
   "Forms: a0 %s, a1 %s, a2 %s; temporal_power: all three power laws (no schedule knowledge)."):format(cfg.forms.a0, cfg.forms.a1, cfg.forms.a2),
  "", table.concat(notes, "\n"), "",
  "| size | cut | set | method | n fit | n test | R² | MSE | MAPE % | final err % |",
  "|---|---:|---|---|---:|---:|---:|---:|---:|---:|" }
for _, r in ipairs(rows) do
  md[#md + 1] = ("| %s | %g | %s | %s | %d | %d | %s | %s | %s | %s |"):format(r.size, r.cut, r.set, r.method, r.n_fit, r.n_test,
    f(r.r2), r.mse and ("%.3g"):format(r.mse) or "", f(r.mape, 2), f(r.final_err, 2))
end
-- Which method wins (lowest MSE) per size, cut and set.
md[#md + 1] = ""
md[#md + 1] = "Best by held-out MSE:"
local best = {}
for _, r in ipairs(rows) do
  local k = ("%s cut %g %s"):format(r.size, r.cut, r.set)
  if r.mse and r.mse == r.mse and (not best[k] or r.mse < best[k].mse) then best[k] = r end
end
for _, k in ipairs(util.sorted_keys(best)) do md[#md + 1] = ("- %s: %s (MSE %.3g)"):format(k, best[k].method, best[k].mse) end
local text = table.concat(md, "\n") .. "\n"
util.write_atomic(cfg.out .. "/results.md", text)
util.write_atomic(cfg.out .. "/results.csv", tsl.csv({ rows = rows }, { "size", "params", "cut" }))
print(text)
print("wrote " .. cfg.out .. "/results.md, " .. cfg.out .. "/results.csv")
