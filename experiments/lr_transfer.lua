-- lr_transfer.lua — does the best learning rate of a small μP model stay the best when a larger
-- model is warm-started from it? (docs/experiments.md, "LR transfer under warm-starting").
--
--   1. for every seed, sweep the LR of the small μP model (width model.base_width, which is
--      also the μP base width) and take its best LR (grid minimum refined by a parabola in
--      log2 LR);
--   2. for every larger width and every arm, sweep the same LRs: "cold" is a fresh μP init;
--      a warm arm grows the small model of the same seed, trained at its best grid LR, with
--      kiln.grow.width(small, shape, arm.grow) (shrink-perturb by default; HyperCloning
--      when kiln.grow supports it — probed at start, skipped with a message otherwise);
--   3. table: each arm's best LR per width and seed, and its shift from the small model's
--      best LR in octaves (log2 of the ratio), mean and spread over seeds; plots of loss vs LR.
--
--   kiln experiments/lr_transfer.lua [quick=true] [config=FILE.yaml] [key=value ...]
-- (settings: lr_transfer.yaml; layering: docs/guide.md, "Settings")
--
-- Writes <out>/seed<s>/small/lr<lr>/ and <out>/seed<s>/<arm>/d<width>/lr<lr>/ (kiln.train run
-- directories; a rerun skips finished runs; warm runs hold grown.safetensors with the growth
-- recipe), <out>/results.md, results.csv, <out>/lr_transfer_d<width>.png (+ .dat/.gp).
local kiln = require "kiln"
local util = require "kiln.util"
local ladder, grow, mup = kiln.ladder, kiln.grow, kiln.mup

local here = (arg and arg[0] or "experiments/lr_transfer.lua"):match("^(.*)/[^/]*$") or "."
local setup = dofile(here .. "/lib/setup.lua")
local P, N, R = setup.positive, setup.count, setup.rate
local cfg = setup.config(here, "lr_transfer", arg, {
  threads = N, ["model.base_width"] = P, ["model.widths"] = P, ["model.head_size"] = P, ["model.n_layer"] = P,
  ["model.context"] = P, ["mup.output_mult"] = R, ["mup.attn_mult"] = R, lrs = R, seeds = P,
  ["small.steps"] = P, ["big.steps"] = P, ["train.batch"] = P, ["train.warmup"] = N,
  ["train.weight_decay"] = { min = 0 }, ["train.clip"] = { min = 0 }, ["train.eval_windows"] = P,
  ["train.eval_last"] = P, ["train.eval_spacing"] = P,
})
local mc, tc, T = cfg.model, cfg.train, cfg.model.context
local fail = kiln.config.fail
for i, w in ipairs(mc.widths) do
  if w <= mc.base_width or w % mc.head_size ~= 0 then
    fail("lr_transfer: model.widths[%d] = %d must be larger than model.base_width %d and a multiple of model.head_size %d",
      i, w, mc.base_width, mc.head_size)
  end
end
if mc.base_width % mc.head_size ~= 0 then fail("lr_transfer: model.base_width %d is not a multiple of model.head_size %d", mc.base_width, mc.head_size) end
for i = 2, #cfg.lrs do
  if cfg.lrs[i] <= cfg.lrs[i - 1] then fail("lr_transfer: lrs must increase (%s after %s)", util.num(cfg.lrs[i]), util.num(cfg.lrs[i - 1])) end
end
for _, steps in ipairs { cfg.small.steps, cfg.big.steps } do
  if steps - (tc.eval_last - 1) * tc.eval_spacing < 1 then
    fail("lr_transfer: %d steps cannot hold train.eval_last = %d evaluations %d steps apart", steps, tc.eval_last, tc.eval_spacing)
  end
end
local arms, names = {}, {}
for i, a in ipairs(cfg.arms) do
  if type(a) ~= "table" or type(a.name) ~= "string" or not a.name:match("^[%w_%-]+$") then
    fail("lr_transfer: arms[%d] needs a name of letters, digits, _ or -", i)
  end
  if names[a.name] then fail("lr_transfer: arms[%d]: the name '%s' is used twice", i, a.name) end
  if a.grow ~= nil and type(a.grow) ~= "table" then fail("lr_transfer: arms[%d].grow must be a table of kiln.grow.width options", i) end
  names[a.name] = true
  arms[#arms + 1] = { name = a.name, grow = a.grow }
end

local function model_config(width, seed)
  return { vocab_size = 256, block_size = T, n_layer = mc.n_layer, n_embd = width, n_head = width // mc.head_size,
           parametrization = "mup", base_width = mc.base_width, output_mult = cfg.mup.output_mult,
           attn_mult = cfg.mup.attn_mult, zero_query = cfg.mup.zero_query, seed = seed }
end
local function shape(width) return { n_embd = width, n_head = width // mc.head_size } end
local function grow_opts(arm, seed, from)
  local o = { seed = seed, from = from }
  for k, v in pairs(arm.grow) do o[k] = v end
  return o
end

-- Which warm arms kiln.grow.width accepts here: each is tried once on a small untrained model
-- (one layer, context 8) at every width, so an unsupported method is announced before any run.
for _, arm in ipairs(arms) do
  if arm.grow then
    local probe = kiln.model { vocab_size = 256, block_size = 8, n_layer = 1, n_embd = mc.base_width,
      n_head = mc.base_width // mc.head_size, parametrization = "mup", base_width = mc.base_width, seed = 1 }
    for _, w in ipairs(mc.widths) do
      local ok, err = pcall(grow.width, probe, shape(w), grow_opts(arm, 1))
      if not ok and not arm.skipped then
        arm.skipped = tostring(err)
        local opts = {}
        for _, k in ipairs(util.sorted_keys(arm.grow)) do opts[#opts + 1] = k .. " = " .. util.num(arm.grow[k]) end
        arm.skipped = ("kiln.grow.width here does not accept {%s}: %s"):format(table.concat(opts, ", "), arm.skipped)
        print(("arm '%s' skipped: %s"):format(arm.name, arm.skipped))
      end
    end
  end
end
local active = {}
for _, arm in ipairs(arms) do if not arm.skipped then active[#active + 1] = arm end end

local n_runs = #cfg.seeds * #cfg.lrs * (1 + #mc.widths * #active)
print(("LR transfer under warm-starting: small d=%d, larger %s; arms %s; %d LRs %s..%s; seeds %s; %d runs (small %d steps, larger %d steps, %d x %d tokens); %d threads -> %s"):format(
  mc.base_width, table.concat(mc.widths, ","), (function() local t = {} for i, a in ipairs(active) do t[i] = a.name end return table.concat(t, ",") end)(),
  #cfg.lrs, util.num(cfg.lrs[1]), util.num(cfg.lrs[#cfg.lrs]), table.concat(cfg.seeds, ","), n_runs,
  cfg.small.steps, cfg.big.steps, tc.batch, T, kiln.get_threads(), cfg.out))
if cfg.plan_only then return end
setup.require_data("lr_transfer", cfg, { "train", "val" })
local train_ds, val_ds = kiln.dataset(cfg.data.train), kiln.dataset(cfg.data.val)
util.mkdir(cfg.out)

local function lr_tag(lr) return (util.num(lr):gsub("%.", "p")) end

-- One run of `model` at `lr` in `dir`: its loss (mean of the last evaluations), NaN when it
-- diverged (recorded in <dir>/diverged and not retried).
local function run(dir, model, lr, steps, seed, extra)
  if setup.diverged(dir) then return { loss = 0 / 0, diverged = true } end
  local at = {}
  for k = tc.eval_last - 1, 0, -1 do at[#at + 1] = steps - k * tc.eval_spacing end
  local s = setup.train_or_diverged {
    model = model, optimizer = mup.optimizer(model, { lr = lr, weight_decay = tc.weight_decay, clip = tc.clip }),
    data = train_ds, steps = steps, batch = tc.batch, context = T, seed = seed,
    schedule = tc.warmup > 0 and kiln.schedule.warmup { steps = tc.warmup, peak = lr } or lr,
    eval = { at = at, sets = { val = val_ds }, windows = tc.eval_windows }, run_dir = dir,
    config = { experiment = cfg, grow = extra }, state = extra and { grow = extra } or nil, quiet = true,
  }
  if not s then return { loss = 0 / 0, diverged = true } end
  local ev = ladder.evals(dir)
  local sum, n = 0, math.min(tc.eval_last, #ev)
  for k = #ev - n + 1, #ev do sum = sum + ev[k].loss end
  return { loss = sum / n, wall = s.wall_seconds }
end

local function losses_of(rows)
  local ys = {}
  for i, r in ipairs(rows) do ys[i] = r.loss end
  return ys
end

local function show(r) return r.diverged and "diverged" or ("%.4f"):format(r.loss) end

local t0 = kiln.clock()
local res = {}   -- res[seed] = {small = rows, small_best =, [arm][width] = rows}
for _, seed in ipairs(cfg.seeds) do
  local sd = ("%s/seed%d"):format(cfg.out, seed)
  local r = { small = {} }
  for i, lr in ipairs(cfg.lrs) do
    r.small[i] = run(("%s/small/lr%s"):format(sd, lr_tag(lr)), kiln.model(model_config(mc.base_width, seed)), lr, cfg.small.steps, seed)
    print(("  seed %d small d=%-4d lr=%-7s %s"):format(seed, mc.base_width, util.num(lr), show(r.small[i])))
  end
  r.small_best = ladder.lr_optimum(cfg.lrs, losses_of(r.small))
  if not r.small_best then kiln.config.fail("lr_transfer: every small run of seed %d diverged; lower the lrs", seed) end
  local src_lr = r.small_best.grid_lr
  local src = ("%s/small/lr%s/checkpoints/step_%08d.safetensors"):format(sd, lr_tag(src_lr), cfg.small.steps)
  local small_model
  for _, arm in ipairs(active) do if arm.grow and not small_model then small_model = kiln.load(src) end end
  print(("  seed %d: small best lr %.3g (grid %s); warm starts grow from %s"):format(seed, r.small_best.lr, util.num(src_lr), src))
  for _, arm in ipairs(active) do
    r[arm.name] = {}
    for _, w in ipairs(mc.widths) do
      local rows = {}
      for i, lr in ipairs(cfg.lrs) do
        local dir = ("%s/%s/d%d/lr%s"):format(sd, arm.name, w, lr_tag(lr))
        local model, recipe
        if arm.grow then
          model, recipe = grow.width(small_model, shape(w), grow_opts(arm, seed, src))
          util.mkdir(dir)
          if not util.exists(dir .. "/grown.safetensors") then kiln.save(dir .. "/grown.safetensors", { model = model, meta = grow.meta(recipe) }) end
        else
          model = kiln.model(model_config(w, seed))
        end
        rows[i] = run(dir, model, lr, cfg.big.steps, seed, recipe)
        print(("  seed %d %-10s d=%-4d lr=%-7s %s"):format(seed, arm.name, w, util.num(lr), show(rows[i])))
      end
      r[arm.name][w] = { rows = rows, best = ladder.lr_optimum(cfg.lrs, losses_of(rows)) }
    end
  end
  res[seed] = r
end

-- Tables --------------------------------------------------------------------------------
local function best_cell(b)
  if not b then return "all diverged" end
  return ("%.3g%s"):format(b.lr, b.edge and " (edge)" or (b.refined and "" or " (grid)"))
end
local md = { ("# LR transfer under warm-starting%s\n"):format(cfg.quick and " (quick setting)" or ""),
  ("μP models (head size %d, %d layers, context %d, base width %d, attn_mult %s, output_mult %s). Small model d=%d: %d steps; larger models d=%s: %d steps; %d x %d tokens per step, %d warmup steps then constant LR, AdamW wd %s, clip %s, fresh optimizer. Loss of a run: mean validation loss (nats/byte, %d fixed windows of %s) of its last %d evaluations, %d steps apart. Warm arms grow the same seed's small model trained at its best grid LR. Best LR: grid minimum refined by a least-squares parabola in log2(LR) through it and its two neighbours (\"edge\": the minimum is at the end of the grid, no refinement). Shift = log2(best LR / the small model's best LR) of the same seed, in octaves.\n"):format(
    mc.head_size, mc.n_layer, T, mc.base_width, util.num(cfg.mup.attn_mult), util.num(cfg.mup.output_mult), mc.base_width,
    cfg.small.steps, table.concat(mc.widths, ","), cfg.big.steps, tc.batch, T, tc.warmup, util.num(tc.weight_decay),
    util.num(tc.clip), tc.eval_windows, cfg.data.val, tc.eval_last, tc.eval_spacing) }
for _, arm in ipairs(arms) do
  if arm.skipped then md[#md + 1] = ("Arm `%s` was skipped: %s.\n"):format(arm.name, arm.skipped) end
end
md[#md + 1] = "## Best LR and shift\n"
md[#md + 1] = "| arm | width | " .. (function() local t = {} for i, s in ipairs(cfg.seeds) do t[i] = ("best lr (seed %d) | shift (seed %d)"):format(s, s) end return table.concat(t, " | ") end)() .. " | shift mean | shift sd | shift range |"
md[#md + 1] = "|---|---|" .. ("---|---|"):rep(#cfg.seeds) .. "---|---|---|"
local csv = { util.csv_line { "seed", "arm", "width", "lr", "val_loss", "diverged", "best_lr", "shift_octaves" } }
local summary = {}
local function add_row(arm_name, width, get)
  local cells, shifts = {}, {}
  for _, seed in ipairs(cfg.seeds) do
    local b, base = get(res[seed]), res[seed].small_best
    local sh = (b and base) and (b.log2_lr - base.log2_lr) or nil
    shifts[#shifts + 1] = sh
    cells[#cells + 1] = ("%s | %s"):format(best_cell(b), sh and ("%+.2f"):format(sh) or "-")
  end
  local s = ladder.summary(shifts)
  summary[#summary + 1] = { arm = arm_name, width = width, shift = s }
  md[#md + 1] = ("| %s | %d | %s | %s | %s | %s |"):format(arm_name, width, table.concat(cells, " | "),
    s and ("%+.2f"):format(s.mean) or "-", s and ("%.2f"):format(s.sd) or "-",
    s and ("%+.2f .. %+.2f"):format(s.min, s.max) or "-")
end
add_row("small (reference)", mc.base_width, function(r) return r.small_best end)
for _, w in ipairs(mc.widths) do
  for _, arm in ipairs(active) do add_row(arm.name, w, function(r) return r[arm.name][w].best end) end
end

md[#md + 1] = "\n## Loss against LR (mean over seeds)\n"
md[#md + 1] = "| arm | width | " .. (function() local t = {} for i, lr in ipairs(cfg.lrs) do t[i] = util.num(lr) end return table.concat(t, " | ") end)() .. " |"
md[#md + 1] = "|---|---|" .. ("---|"):rep(#cfg.lrs)
local mean_curves = {}   -- mean_curves[width][arm] = ys
local function mean_row(label, width, get)
  local ys, cells = {}, {}
  for i = 1, #cfg.lrs do
    local vals = {}
    for _, seed in ipairs(cfg.seeds) do vals[#vals + 1] = get(res[seed])[i].loss end
    local s = ladder.summary(vals)
    ys[i] = s and #vals == s.n and s.mean or 0 / 0       -- a diverged seed makes the mean NaN
    cells[i] = ys[i] == ys[i] and ("%.4f"):format(ys[i]) or "div"
  end
  md[#md + 1] = ("| %s | %d | %s |"):format(label, width, table.concat(cells, " | "))
  return ys
end
local small_curve = mean_row("small", mc.base_width, function(r) return r.small end)
for _, w in ipairs(mc.widths) do
  mean_curves[w] = {}
  for _, arm in ipairs(active) do
    mean_curves[w][arm.name] = mean_row(arm.name, w, function(r) return r[arm.name][w].rows end)
  end
end
for _, seed in ipairs(cfg.seeds) do
  local r = res[seed]
  for i, lr in ipairs(cfg.lrs) do
    csv[#csv + 1] = util.csv_line { seed, "small", mc.base_width, lr, r.small[i].diverged and "" or r.small[i].loss,
      r.small[i].diverged and 1 or 0, r.small_best.lr, 0 }
  end
  for _, arm in ipairs(active) do
    for _, w in ipairs(mc.widths) do
      local x = r[arm.name][w]
      for i, lr in ipairs(cfg.lrs) do
        csv[#csv + 1] = util.csv_line { seed, arm.name, w, lr, x.rows[i].diverged and "" or x.rows[i].loss,
          x.rows[i].diverged and 1 or 0, x.best and x.best.lr, x.best and (x.best.log2_lr - r.small_best.log2_lr) }
      end
    end
  end
end
local train_wall = 0
for _, seed in ipairs(cfg.seeds) do
  for _, x in ipairs(res[seed].small) do train_wall = train_wall + (x.wall or 0) end
  for _, arm in ipairs(active) do
    for _, w in ipairs(mc.widths) do
      for _, x in ipairs(res[seed][arm.name][w].rows) do train_wall = train_wall + (x.wall or 0) end
    end
  end
end
md[#md + 1] = ("\nTraining time %.0f s (the runs' own wall times, also when a rerun skipped them); this invocation %.0f s.\n"):format(
  train_wall, kiln.clock() - t0)
local text = table.concat(md, "\n")
util.write_atomic(cfg.out .. "/results.md", text .. "\n")
util.write_atomic(cfg.out .. "/results.csv", table.concat(csv))
print("\n" .. text)

-- Plots: loss vs LR at each larger width, one line per arm, and the small model's --------
for _, w in ipairs(mc.widths) do
  local series = { { name = ("small d=%d"):format(mc.base_width), x = cfg.lrs, y = small_curve, points = true } }
  for _, arm in ipairs(active) do
    series[#series + 1] = { name = ("%s d=%d"):format(arm.name, w), x = cfg.lrs, y = mean_curves[w][arm.name], points = true }
  end
  local p = kiln.plot.lines { path = ("%s/lr_transfer_d%d"):format(cfg.out, w), series = series, logx = true,
    title = ("muP: loss vs LR, d=%d cold and warm-started from d=%d (mean over %d seeds)"):format(w, mc.base_width, #cfg.seeds),
    xlabel = "learning rate", ylabel = "val loss (nats/byte)" }
  print(("plot: %s"):format(p.png or p.gp))
end
