-- mutransfer.lua — does the best learning rate stay put across widths? (docs/experiments.md,
-- "Warm-starting and μTransfer"). The same model at widths d, 2d, 4d (head size fixed, n_head
-- grows) trained with the same budget and schedule at every LR of a grid, under μP (kiln.mup.optimizer, base
-- width d) and under the standard parametrisation. Validation loss against LR, one line per
-- width: under μP the minima should line up, under SP they should drift to smaller LRs as
-- the width grows.
--
--   kiln experiments/mutransfer.lua [quick=true] [config=FILE.yaml] [key=value ...]
-- (settings: mutransfer.yaml; layering: docs/guide.md, "Settings")
--
-- Writes <out>/<param>/d<width>/lr<lr>/ (kiln.train run directories; a rerun skips finished
-- runs), <out>/results.md and results.csv, and <out>/mutransfer_<param>.png (+ .dat/.gp).
local kiln = require "kiln"
local util = require "kiln.util"

local here = (arg and arg[0] or "experiments/mutransfer.lua"):match("^(.*)/[^/]*$") or "."
local setup = dofile(here .. "/lib/setup.lua")
local P, N, R = setup.positive, setup.count, setup.rate
local cfg = setup.config(here, "mutransfer", arg, {
  threads = N, ["model.widths"] = P, ["model.head_size"] = P, ["model.n_layer"] = P, ["model.context"] = P,
  ["mup.base_width"] = P, parametrizations = { one_of = { "mup", "sp" } }, lrs = R,
  ["train.steps"] = P, ["train.batch"] = P, ["train.warmup"] = N, ["train.weight_decay"] = { min = 0 },
  ["train.clip"] = { min = 0 }, ["train.eval_windows"] = P, ["train.eval_last"] = P, ["train.eval_spacing"] = P,
  tokenizer = setup.tokenizer_rule,
})
local data, V = setup.open_data("mutransfer", cfg.tokenizer, cfg.data)
setup.report_data("mutransfer", cfg, data, V)
local unit = setup.loss_unit(cfg.tokenizer)

local train_ds, val_ds = data.train, data.val
local tc, mc, T = cfg.train, cfg.model, cfg.model.context
util.mkdir(cfg.out)

local function model_config(param, width) return setup.width_model(cfg, param, width, V) end

local function lr_tag(lr) return (util.num(lr):gsub("%.", "p")) end

-- One run; a diverged run (NaN loss) is recorded as such and not retried.
local function run(param, width, lr)
  local dir = ("%s/%s/d%d/lr%s"):format(cfg.out, param, width, lr_tag(lr))
  if setup.diverged(dir) then return { loss = 0 / 0, diverged = true } end
  local model = kiln.model(model_config(param, width))
  local opt = kiln.mup.optimizer(model, { lr = lr, weight_decay = tc.weight_decay, clip = tc.clip })
  local at = {}
  for k = tc.eval_last - 1, 0, -1 do at[#at + 1] = tc.steps - k * tc.eval_spacing end
  local s = setup.train_or_diverged {
    model = model, optimizer = opt, data = train_ds, steps = tc.steps, batch = tc.batch, context = T,
    seed = tc.seed, schedule = tc.warmup > 0 and kiln.schedule.warmup { steps = tc.warmup, peak = lr } or lr,
    eval = { at = at, sets = { val = val_ds }, windows = tc.eval_windows }, run_dir = dir, config = cfg, quiet = true, restart = cfg.restart,
  }
  if not s then return { loss = 0 / 0, diverged = true } end
  -- mean over the last evaluations (from metrics.csv, also when the run had finished before)
  local csv = util.read_csv(dir .. "/metrics.csv")
  local col, losses = {}, {}
  for i, h in ipairs(csv.header) do col[h] = i end
  for _, row in ipairs(csv.rows) do
    if type(row[col.val_loss]) == "number" then losses[#losses + 1] = row[col.val_loss] end
  end
  local sum, n = 0, math.min(tc.eval_last, #losses)
  for k = #losses - n + 1, #losses do sum = sum + losses[k] end
  return { loss = sum / n, last = s.eval.val, tokens_per_s = s.tokens_per_s, wall = s.wall_seconds }
end

print(("μTransfer sweep: %s x widths %s x %d LRs, %d steps of %d x %d tokens, %d threads -> %s"):format(
  table.concat(cfg.parametrizations, "/"), table.concat(mc.widths, ","), #cfg.lrs, tc.steps, tc.batch, T,
  kiln.get_threads(), cfg.out))
local t0 = kiln.clock()
local results = {}          -- results[param][width][i] = {loss=...}
for _, param in ipairs(cfg.parametrizations) do
  results[param] = {}
  for _, width in ipairs(mc.widths) do
    results[param][width] = {}
    for i, lr in ipairs(cfg.lrs) do
      local r = run(param, width, lr)
      results[param][width][i] = r
      print(("  %-3s d=%-4d lr=%-7s val loss %s%s"):format(param, width, util.num(lr),
        r.diverged and "diverged" or ("%.4f"):format(r.loss), r.wall and ("  (%.0f s)"):format(r.wall) or ""))
    end
  end
end

-- The best LR of a width: the grid minimum, refined by a parabola in log(lr) through it and
-- its two neighbours when both exist (a finer estimate than the grid spacing).
local function best_lr(rows)
  local bi
  for i, r in ipairs(rows) do
    if r.loss == r.loss and (not bi or r.loss < rows[bi].loss) then bi = i end
  end
  if not bi then return nil end
  local lr = cfg.lrs[bi]
  if bi > 1 and bi < #rows and rows[bi - 1].loss == rows[bi - 1].loss and rows[bi + 1].loss == rows[bi + 1].loss then
    local x0, x1, x2 = math.log(cfg.lrs[bi - 1]), math.log(cfg.lrs[bi]), math.log(cfg.lrs[bi + 1])
    local y0, y1, y2 = rows[bi - 1].loss, rows[bi].loss, rows[bi + 1].loss
    local den = (x0 - x1) * (x0 - x2) * (x1 - x2)
    local a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / den
    local b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / den
    if a > 0 then
      local xv = -b / (2 * a)
      if xv >= x0 and xv <= x2 then lr = math.exp(xv) end
    end
  end
  return cfg.lrs[bi], lr, rows[bi].loss
end

-- Tables --------------------------------------------------------------------------------
local md = { ("# μTransfer sweep%s\n"):format(cfg.quick and " (quick setting)" or ""),
  ("Validation loss (%s, %d windows of %d tokens of %s; mean of the last %d evaluations, %d steps apart) after %d steps of %d x %d tokens, %d warmup steps then constant LR; AdamW wd %s, clip %s; μP base width %d, attn_mult %s, output_mult %s.\n"):format(
    unit, tc.eval_windows, T, val_ds:path(), tc.eval_last, tc.eval_spacing, tc.steps, tc.batch, T, tc.warmup, util.num(tc.weight_decay), util.num(tc.clip),
    cfg.mup.base_width, util.num(cfg.mup.attn_mult), util.num(cfg.mup.output_mult)) }
local head = { "| param | width |" }
local sep = { "|---|---|" }
for _, lr in ipairs(cfg.lrs) do head[#head + 1] = (" %s |"):format(util.num(lr)); sep[#sep + 1] = "---|" end
head[#head + 1] = " best (grid) | best (parabola) |"
sep[#sep + 1] = "---|---|"
md[#md + 1] = table.concat(head) .. "\n" .. table.concat(sep)
local csv = { util.csv_line { "param", "width", "lr", "val_loss", "diverged" } }
local summary = {}
for _, param in ipairs(cfg.parametrizations) do
  summary[param] = {}
  for _, width in ipairs(mc.widths) do
    local rows = results[param][width]
    local grid, fine = best_lr(rows)
    summary[param][width] = { grid = grid, fine = fine }
    local line = { ("| %s | %d |"):format(param, width) }
    for i, r in ipairs(rows) do
      line[#line + 1] = r.diverged and " div |" or ((cfg.lrs[i] == grid) and (" **%.4f** |"):format(r.loss) or (" %.4f |"):format(r.loss))
      csv[#csv + 1] = util.csv_line { param, width, cfg.lrs[i], r.diverged and "" or r.loss, r.diverged and 1 or 0 }
    end
    line[#line + 1] = (" %s | %s |"):format(grid and util.num(grid) or "-", fine and ("%.3g"):format(fine) or "-")
    md[#md + 1] = table.concat(line)
  end
end
md[#md + 1] = "\nShift of the best LR from the base width to the widest (log2 of the ratio, parabola estimate; 0 = no shift):\n"
for _, param in ipairs(cfg.parametrizations) do
  local w0, w1 = mc.widths[1], mc.widths[#mc.widths]
  local a, b = summary[param][w0].fine, summary[param][w1].fine
  md[#md + 1] = ("- %s: d=%d -> d=%d: %s"):format(param, w0, w1, (a and b) and ("%+.2f"):format(math.log(b / a, 2)) or "n/a")
end
md[#md + 1] = ("\nWall time %.0f s.\n"):format(kiln.clock() - t0)
local text = table.concat(md, "\n")
util.write_atomic(cfg.out .. "/results.md", text .. "\n")
util.write_atomic(cfg.out .. "/results.csv", table.concat(csv))
print("\n" .. text)

-- Plots: loss vs LR, one line per width, one plot per parametrisation --------------------
for _, param in ipairs(cfg.parametrizations) do
  local series = {}
  for _, width in ipairs(mc.widths) do
    local ys = {}
    for i, r in ipairs(results[param][width]) do ys[i] = r.loss end
    series[#series + 1] = { name = ("d=%d"):format(width), x = cfg.lrs, y = ys, points = true }
  end
  local p = kiln.plot.lines { path = ("%s/mutransfer_%s"):format(cfg.out, param), series = series, logx = true,
    title = ("%s: validation loss vs learning rate"):format(param == "mup" and "muP" or "SP"),
    xlabel = "learning rate", ylabel = "val loss (" .. unit .. ")" }
  print(("plot: %s"):format(p.png or p.gp))
end
