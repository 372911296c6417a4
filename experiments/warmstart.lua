-- warmstart.lua — warm-starting a wider model from a trained narrower one (docs/warmstart.md):
-- shrink, zero-pad, perturb (kiln.grow.width) under μP with the small model's global LR.
--
--   1. train the small μP model (width d, base width d) for small.steps;
--   2. grow a factor x wider model from it for every λ in `shrinks` (λ = 0 with σ = 1 is a
--      cold μP start of the big model: exactly its own init) and for the `extra` variants;
--   3. train every grown model with the same budget, schedule, LR, data order and a fresh
--      optimizer; evaluate on fixed validation windows along the way;
--   4. table: loss right after growth, final loss, tokens needed to reach the cold start's
--      final loss, the speed-up (cold tokens / warm tokens), and the speed-up counting the
--      small model's training at its cheaper per-token cost; plot: loss vs tokens.
--
--   kiln experiments/warmstart.lua [quick=true] [config=FILE.yaml] [key=value ...]
-- (settings: warmstart.yaml; layering: docs/guide.md, "Settings")
--
-- Also HyperCloning variants (grow.width method = "hyperclone", `hyperclone` in the settings).
--
-- Writes <out>/small/ and <out>/<variant>/ (kiln.train run directories; <variant>/grown.safetensors
-- is the model right after growth, its recipe in the metadata), <out>/results.md, results.csv,
-- <out>/warmstart.png (+ .dat/.gp).
local kiln = require "kiln"
local util = require "kiln.util"
local grow, mup = kiln.grow, kiln.mup

local here = (arg and arg[0] or "experiments/warmstart.lua"):match("^(.*)/[^/]*$") or "."
local setup = dofile(here .. "/lib/setup.lua")
local P, N, R = setup.positive, setup.count, setup.rate
local cfg = setup.config(here, "warmstart", arg, {
  threads = N, ["model.width"] = P, ["model.head_size"] = P, ["model.factor"] = P, ["model.n_layer"] = P,
  ["model.context"] = P, lr = R, ["small.steps"] = P, batch = P, warmup = N, weight_decay = { min = 0 },
  clip = { min = 0 }, ["big.steps"] = P, ["big.eval_every"] = P, ["big.eval_at"] = P, ["big.eval_windows"] = P,
  shrinks = setup.fraction, norm = { one_of = { "szp", "copy" } }, tokenizer = setup.tokenizer_rule,
})
local data, V = setup.open_data("warmstart", cfg.tokenizer, cfg.data)
setup.report_data("warmstart", cfg, data, V)
local unit = setup.loss_unit(cfg.tokenizer)

local train_ds, val_ds = data.train, data.val
local mc, T = cfg.model, cfg.model.context
util.mkdir(cfg.out)

local small_cfg = {
  vocab_size = V, block_size = T, n_layer = mc.n_layer, n_embd = mc.width, n_head = mc.width // mc.head_size,
  parametrization = "mup", base_width = mc.width, output_mult = cfg.mup.output_mult,
  attn_mult = cfg.mup.attn_mult, zero_query = cfg.mup.zero_query, seed = cfg.seed,
}
local big_shape = mup.widen({ n_embd = mc.width, n_head = mc.width // mc.head_size }, mc.factor)

local function schedule(steps)
  return cfg.warmup > 0 and kiln.schedule.warmup { steps = cfg.warmup, peak = cfg.lr } or cfg.lr
end

-- 1. the small model ---------------------------------------------------------------------
local small_dir = cfg.out .. "/small"
local small_model = kiln.model(small_cfg)
print(("warm-start: small d=%d trained %d steps; big d=%d (x%s), %d steps each; lr %s; %d threads -> %s"):format(
  mc.width, cfg.small.steps, big_shape.n_embd, util.num(mc.factor), cfg.big.steps, util.num(cfg.lr), kiln.get_threads(), cfg.out))
local s_small = kiln.train {
  model = small_model, optimizer = mup.optimizer(small_model, { lr = cfg.lr, weight_decay = cfg.weight_decay, clip = cfg.clip }),
  data = train_ds, steps = cfg.small.steps, batch = cfg.batch, context = T, seed = cfg.seed,
  schedule = schedule(cfg.small.steps), eval = { sets = { val = val_ds }, windows = cfg.big.eval_windows },
  run_dir = small_dir, config = cfg, quiet = true, restart = cfg.restart,
}
local small_ckpt = ("%s/checkpoints/step_%08d.safetensors"):format(small_dir, cfg.small.steps)
small_model = kiln.load(small_ckpt)          -- also when the run was already complete
local small_tokens = cfg.small.steps * cfg.batch * T
print(("  small: val loss %.4f after %d tokens (%s)"):format(s_small.eval.val, small_tokens, small_ckpt))

-- 2-3. grown models ------------------------------------------------------------------------
local variants = {}
local function variant_name(shrink, perturb)
  return ("shrink%s_%s"):format(util.num(shrink):gsub("%.", "p"), tostring(perturb):gsub("%.", "p"))
end
for _, l in ipairs(cfg.shrinks) do variants[#variants + 1] = { shrink = l, perturb = cfg.perturb } end
for _, e in ipairs(cfg.extra or {}) do variants[#variants + 1] = { shrink = e.shrink, perturb = e.perturb } end
-- HyperCloning: function-preserving growth, with or without its paired noise (SNR in dB)
for _, h in ipairs(cfg.hyperclone or {}) do
  local noise = type(h) == "table" and h.noise or nil
  if noise ~= nil and noise ~= false and type(noise) ~= "number" then
    error(("warmstart: hyperclone entry: noise must be a number of dB or false (got %s)"):format(tostring(noise)), 0)
  end
  variants[#variants + 1] = { hyperclone = true, noise = noise or nil }
end
for _, v in ipairs(variants) do
  v.name = v.hyperclone and ("hyperclone" .. (v.noise and ("_snr%s"):format(util.num(v.noise):gsub("%.", "p")) or ""))
           or variant_name(v.shrink, v.perturb)
  v.cold = not v.hyperclone and v.shrink == 0 and (v.perturb == "mup_init" or v.perturb == 1)
end
-- the no-growth control: the small model itself trained on with the same protocol
if cfg.continue_small then variants[#variants + 1] = { name = "small_continued", continued = true } end

local n_small = select(2, small_model:num_params())
local n_big

local function run_variant(v)
  local dir = cfg.out .. "/" .. v.name
  local big, recipe
  if v.continued then
    big, recipe = kiln.load(small_ckpt), { op = "none", from = small_ckpt }
  elseif v.hyperclone then
    big, recipe = grow.width(small_model, big_shape, { method = "hyperclone", noise = v.noise, seed = cfg.seed, from = small_ckpt })
    n_big = select(2, big:num_params())
  else
    big, recipe = grow.width(small_model, big_shape,
      { shrink = v.shrink, perturb = v.perturb, seed = cfg.seed, norm = cfg.norm, from = small_ckpt })
    n_big = select(2, big:num_params())
  end
  util.mkdir(dir)
  local grown = dir .. "/grown.safetensors"
  if not v.continued and not util.exists(grown) then kiln.save(grown, { model = big, meta = grow.meta(recipe) }) end
  local loss0 = kiln.train.evaluate(big, val_ds, T, cfg.big.eval_windows)
  local curve = { { tokens = 0, loss = loss0 } }
  local s = kiln.train {
    model = big, optimizer = mup.optimizer(big, { lr = cfg.lr, weight_decay = cfg.weight_decay, clip = cfg.clip }),
    data = train_ds, steps = cfg.big.steps, batch = cfg.batch, context = T, seed = cfg.seed,
    schedule = schedule(cfg.big.steps),
    eval = { every = cfg.big.eval_every, at = cfg.big.eval_at, sets = { val = val_ds }, windows = cfg.big.eval_windows },
    run_dir = dir, config = { experiment = cfg, grow = recipe }, state = { grow = recipe }, quiet = true,
    restart = cfg.restart,
  }
  -- the curve from metrics.csv (also when the run had finished before)
  local csv = util.read_csv(dir .. "/metrics.csv")
  local col = {}
  for i, h in ipairs(csv.header) do col[h] = i end
  for _, row in ipairs(csv.rows) do
    local vl = tonumber(row[col.val_loss])
    if vl then curve[#curve + 1] = { tokens = tonumber(row[col.tokens]), loss = vl } end
  end
  v.loss0, v.final, v.curve, v.wall, v.recipe = loss0, s.eval.val, curve, s.wall_seconds, recipe
  local szp = not (v.continued or v.hyperclone)
  print(("  %-22s λ=%-4s σ=%-5s  loss after growth %.4f  final %.4f"):format(v.name,
    szp and util.num(v.shrink) or "-", szp and util.num(recipe.sigma) or "-", loss0, s.eval.val))
end
for _, v in ipairs(variants) do run_variant(v) end

-- 4. speed-ups -----------------------------------------------------------------------------
local cold
for _, v in ipairs(variants) do if v.cold then cold = v end end
-- tokens at which a curve first reaches `target` (linear between evaluations), or nil
local function tokens_to(curve, target)
  for k, p in ipairs(curve) do
    if p.loss <= target then
      if k == 1 then return 0 end
      local q = curve[k - 1]
      return q.tokens + (p.tokens - q.tokens) * (q.loss - target) / (q.loss - p.loss)
    end
  end
  return nil
end

local md = { ("# Warm-starting a %sx wider μP model%s\n"):format(util.num(mc.factor), cfg.quick and " (quick setting)" or ""),
  ("Small model d=%d (%d params without position embeddings), trained %d tokens to val loss %.4f. Big model d=%d (%d params), every variant trained %d tokens (%d steps of %d x %d), %d warmup steps then constant LR %s (the same global μP LR as the small model), AdamW wd %s, fresh optimizer; validation loss (%s) on %d fixed windows of %s. Growth: kiln.grow.width, norm = %s.\n"):format(
    mc.width, n_small, small_tokens, s_small.eval.val, big_shape.n_embd, n_big, cfg.big.steps * cfg.batch * T,
    cfg.big.steps, cfg.batch, T, cfg.warmup, util.num(cfg.lr), util.num(cfg.weight_decay), unit, cfg.big.eval_windows,
    val_ds:path(), cfg.norm) }
local csv = { util.csv_line { "variant", "shrink", "sigma", "loss_after_growth", "final_loss", "tokens_to_target", "speedup", "speedup_with_small_cost", "tokens_to_control_final" } }
-- a second target for variants that start below the cold start's final loss (function-
-- preserving growth): the no-growth control's final loss, i.e. "did growing beat continuing"
local control
for _, v in ipairs(variants) do if v.continued then control = v end end
if cold then
  local target = cold.final
  local t_cold = tokens_to(cold.curve, target)
  md[#md + 1] = ("Target: the cold start's final loss %.4f, which it first reaches after %d tokens. Speed-up = %d / (tokens the variant needs). \"Incl. small model\" adds the small model's %d training tokens at its per-token cost (x %.3f by the 6N rule); the no-growth control's own tokens are counted at that cost too. \"Loss after growth\" is the validation loss before the first step. \"Tokens to control's final\": big-model tokens until the no-growth control's final loss (%s) is reached.\n"):format(
    target, math.floor(t_cold + 0.5), math.floor(t_cold + 0.5), small_tokens, n_small / n_big,
    control and ("%.4f"):format(control.final) or "no control run")
  md[#md + 1] = "| variant | λ (shrink) | σ (perturb) | loss after growth | final loss | tokens to target | speed-up | speed-up incl. small model | tokens to control's final |"
  md[#md + 1] = "|---|---|---|---|---|---|---|---|---|"
  for _, v in ipairs(variants) do
    local tt = tokens_to(v.curve, target)
    -- the control's tokens are small-model tokens: counted at the small model's cost
    local cost = v.continued and n_small / n_big or 1
    local su = tt and (tt > 0 and t_cold / (tt * cost) or math.huge) or nil
    local su2 = v.cold and su or (tt and t_cold / (tt * cost + small_tokens * n_small / n_big)) or nil
    v.tokens_to_target, v.speedup, v.speedup_total = tt, su, su2
    local function f(x, fmt) if not x then return "not reached" end; if x == math.huge then return "inf" end; return fmt:format(x) end
    local szp = not (v.continued or v.hyperclone)
    local tc = control and tokens_to(v.curve, control.final)
    md[#md + 1] = ("| %s%s | %s | %s | %.4f | %.4f | %s | %s | %s | %s |"):format(v.name,
      v.cold and " (cold)" or v.continued and " (no growth, d=" .. mc.width .. ")" or "",
      szp and util.num(v.shrink) or "-", szp and util.num(v.recipe.sigma) or "-", v.loss0, v.final,
      f(tt, "%.0f"), f(su, "%.2fx"), f(su2, "%.2fx"), control and f(tc, "%.0f") or "-")
    csv[#csv + 1] = util.csv_line({ v.name, v.shrink, v.recipe.sigma, v.loss0, v.final, tt, su ~= math.huge and su or nil, su2, tc }, 9)
  end
else
  md[#md + 1] = "(no cold variant with shrink 0 and perturb mup_init: no speed-up column)"
end
local text = table.concat(md, "\n")
util.write_atomic(cfg.out .. "/results.md", text .. "\n")
util.write_atomic(cfg.out .. "/results.csv", table.concat(csv))
print("\n" .. text)

local series = {}
for _, v in ipairs(variants) do
  local xs, ys = {}, {}
  for i, p in ipairs(v.curve) do xs[i], ys[i] = p.tokens, p.loss end
  series[#series + 1] = { name = v.continued and ("small d=%d continued (no growth)"):format(mc.width) or
                            v.hyperclone and v.name or
                            ("lambda=%s sigma=%s%s"):format(util.num(v.shrink), util.num(v.recipe.sigma), v.cold and " (cold)" or ""),
                          x = xs, y = ys, points = true }
end
local p = kiln.plot.lines { path = cfg.out .. "/warmstart", series = series,
  title = ("warm-start d=%d -> d=%d (muP, lr %s)"):format(mc.width, big_shape.n_embd, util.num(cfg.lr)),
  xlabel = "tokens (big model)", ylabel = "val loss (" .. unit .. ")" }
print(("plot: %s"):format(p.png or p.gp))
