-- kiln plot DIR — plots of a run or suite directory into DIR/plots/
--
-- A run directory: loss curves, learning rate, per-position loss. A suite directory: each
-- evaluation set's loss, one line per run.
-- Data and gnuplot scripts are always written; PNGs when gnuplot is installed.
local util = require "kiln.util"
local plot = require "kiln.plot"

local function column(csv, name)
  for i, h in ipairs(csv.header) do if h == name then return i end end
  return nil
end

local function series_of(csv, xcol, ycol, name, points)
  local xi, yi = column(csv, xcol), column(csv, ycol)
  local s = { name = name or ycol, x = {}, y = {}, points = points }
  for _, r in ipairs(csv.rows) do
    if type(r[xi]) == "number" and type(r[yi]) == "number" then
      s.x[#s.x + 1] = r[xi]; s.y[#s.y + 1] = r[yi]
    end
  end
  return s
end

local function plot_run(dir, out, made)
  local m = util.read_csv(dir .. "/metrics.csv")
  if not m then error(("kiln plot: %s has no metrics.csv"):format(dir), 0) end
  local series = { series_of(m, "tokens", "loss_weighted", "train (weighted)"),
                   series_of(m, "tokens", "loss_unweighted", "train (unweighted)") }
  for _, h in ipairs(m.header) do
    local set = h:match("^(.+)_loss$")
    if set then series[#series + 1] = series_of(m, "tokens", h, set, true) end
  end
  made[#made + 1] = plot.lines { path = out .. "/loss", title = dir .. ": loss", xlabel = "tokens",
                                 ylabel = "loss (nats/token)", series = series }
  made[#made + 1] = plot.lines { path = out .. "/lr", title = dir .. ": learning rate", xlabel = "step",
                                 ylabel = "lr", series = { series_of(m, "step", "lr", "lr") } }
  local p = util.read_csv(dir .. "/positions.csv")
  if p and #p.rows > 0 then
    local by_set = {}
    for _, r in ipairs(p.rows) do
      by_set[r[2]] = by_set[r[2]] or {}
      table.insert(by_set[r[2]], r)
    end
    for _, set in ipairs(util.sorted_keys(by_set)) do
      local rows = by_set[set]
      local pick, n = {}, math.min(8, #rows)
      for k = 1, n do pick[#pick + 1] = rows[math.floor((k - 1) * (#rows - 1) / math.max(1, n - 1)) + 1] end
      local s = {}
      for _, r in ipairs(pick) do
        local x, y = {}, {}
        for i = 3, #r do x[#x + 1] = i - 2; y[#y + 1] = r[i] end
        s[#s + 1] = { name = "step " .. tostring(r[1]), x = x, y = y }
      end
      made[#made + 1] = plot.lines { path = out .. "/positions-" .. set, title = dir .. ": loss by position (" .. set .. ")",
                                     xlabel = "position", ylabel = "loss (nats/token)", logx = true, series = s }
    end
  end
end

local function plot_suite(dir, out, made)
  local runs = util.read_csv(dir .. "/runs.csv")
  local by_set = {}
  for _, r in ipairs(runs.rows) do
    local run_dir = ("%s/%s/seed%s"):format(dir, r[1], tostring(r[2]))
    local m = util.read_csv(run_dir .. "/metrics.csv")
    if m then
      for _, h in ipairs(m.header) do
        local set = h:match("^(.+)_loss$")
        if set then
          by_set[set] = by_set[set] or {}
          table.insert(by_set[set], series_of(m, "tokens", h, r[1] .. " seed " .. tostring(r[2]), true))
        end
      end
    end
  end
  for _, set in ipairs(util.sorted_keys(by_set)) do
    made[#made + 1] = plot.lines { path = out .. "/" .. set .. "_loss", title = dir .. ": " .. set .. " loss",
                                   xlabel = "tokens", ylabel = "loss (nats/token)", series = by_set[set] }
  end
end

return function(dir, ...)
  if not dir or dir == "-h" or dir == "--help" then
    print("usage: kiln plot RUN_OR_SUITE_DIR\n  writes DIR/plots/*.{dat,gp} and, with gnuplot, *.png")
    return
  end
  dir = dir:gsub("/+$", "")
  local out = dir .. "/plots"
  util.mkdir(out)
  local made = {}
  if util.exists(dir .. "/metrics.csv") then plot_run(dir, out, made)
  elseif util.exists(dir .. "/runs.csv") then plot_suite(dir, out, made)
  else error(("kiln plot: %s is neither a run directory (metrics.csv) nor a suite directory (runs.csv)"):format(dir), 0) end
  for _, m in ipairs(made) do print(m.png or (m.gp .. " (gnuplot not installed: run it on the .gp)")) end
end
