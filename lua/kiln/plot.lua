-- kiln.plot — line plots through gnuplot. The data (.dat) and the script (.gp) are always
-- written next to each other, so a plot can be redrawn or restyled by hand; the PNG is drawn
-- when gnuplot is installed.
--
--   kiln.plot.lines {
--     path = "runs/x/loss",            -- writes loss.dat, loss.gp and (with gnuplot) loss.png
--     title = "loss", xlabel = "tokens", ylabel = "nats/byte", logx = false, logy = false,
--     series = { { name = "train", x = {...}, y = {...} }, { name = "val", x = ..., y = ..., points = true } },
--     vlines = { { x = 1e6, label = "cut" } },
--   }  -> { dat = ..., gp = ..., png = ... or nil }
--
-- A series with `lo` and `hi` (lists as long as x) is drawn as its line over a shaded band
-- from lo to hi in the same colour (a confidence interval, say).
local util = require "kiln.util"
local check = require "kiln.check"

local M = {}

local have_gnuplot
function M.available()
  if have_gnuplot == nil then
    have_gnuplot = os.execute("command -v gnuplot >/dev/null 2>&1") == true
  end
  return have_gnuplot
end

local function esc(s) return (tostring(s):gsub('\\', '\\\\'):gsub('"', '\\"')) end

function M.lines(o)
  if type(o) ~= "table" or type(o.path) ~= "string" then error("kiln.plot.lines: 'path' (without extension) is required", 2) end
  if type(o.series) ~= "table" or #o.series == 0 then error("kiln.plot.lines: 'series' must be a non-empty list", 2) end
  local who = "kiln.plot.lines"
  check.fields(who, "options", o, { "path", "series", "title", "xlabel", "ylabel", "logx", "logy", "vlines", "yrange" })
  for _, k in ipairs { "title", "xlabel", "ylabel" } do check.arg(who, k, o[k], "?string|number") end
  for i, s in ipairs(o.series) do
    check.arg(who, ("series[%d]"):format(i), s, "table")
    check.numbers(who, ("series[%d].x"):format(i), s.x)
    check.arg(who, ("series[%d].y"):format(i), s.y, "table")
    if (s.lo == nil) ~= (s.hi == nil) then
      error(("kiln.plot.lines: series %d needs both 'lo' and 'hi' for a band, or neither"):format(i), 2)
    end
    if s.lo ~= nil then
      check.arg(who, ("series[%d].lo"):format(i), s.lo, "table")
      check.arg(who, ("series[%d].hi"):format(i), s.hi, "table")
      if #s.lo ~= #s.x or #s.hi ~= #s.x then
        error(("kiln.plot.lines: series %d has %d x, %d lo and %d hi values"):format(i, #s.x, #s.lo, #s.hi), 2)
      end
    end
  end
  if o.yrange ~= nil then
    check.numbers(who, "yrange", o.yrange)
    if #o.yrange ~= 2 or not (o.yrange[1] < o.yrange[2]) then check.fail(who, "yrange", "{lo, hi} with lo < hi", o.yrange) end
  end
  if o.vlines ~= nil then
    check.list(who, "vlines", o.vlines, "table")
    for i, v in ipairs(o.vlines) do check.number(who, ("vlines[%d].x"):format(i), v.x) end
  end
  local dat, gp, png = o.path .. ".dat", o.path .. ".gp", o.path .. ".png"
  local base = dat:match("([^/]+)$")
  local blocks = {}
  for i, s in ipairs(o.series) do
    if #s.x ~= #s.y then error(("kiln.plot.lines: series %d has %d x and %d y values"):format(i, #s.x, #s.y), 2) end
    local lines = { "# " .. tostring(s.name or ("series " .. i)) }
    for k = 1, #s.x do
      local y = s.y[k]
      if type(y) == "number" and y == y then
        local line = util.num(s.x[k]) .. " " .. util.num(y)
        if s.lo then
          local lo, hi = s.lo[k], s.hi[k]
          -- A point without an interval (one seed) gets a zero-width band.
          if type(lo) ~= "number" or lo ~= lo or type(hi) ~= "number" or hi ~= hi then lo, hi = y, y end
          line = line .. " " .. util.num(lo) .. " " .. util.num(hi)
        end
        lines[#lines + 1] = line
      end
    end
    blocks[#blocks + 1] = table.concat(lines, "\n")
  end
  util.write_atomic(dat, table.concat(blocks, "\n\n\n") .. "\n")

  local g = {
    "set terminal pngcairo size 960,600 noenhanced",
    ('set output "%s"'):format(esc(png:match("([^/]+)$"))),
    ('set title "%s"'):format(esc(o.title or "")),
    ('set xlabel "%s"'):format(esc(o.xlabel or "")),
    ('set ylabel "%s"'):format(esc(o.ylabel or "")),
    "set key outside right", "set grid",
  }
  if o.logx then g[#g + 1] = "set logscale x" end
  if o.logy then g[#g + 1] = "set logscale y" end
  if o.yrange then   -- {lo, hi}: keeps a wild series (a degenerate fit) from squashing the axis
    g[#g + 1] = ("set yrange [%s:%s]"):format(util.num(o.yrange[1]), util.num(o.yrange[2]))
  end
  for _, v in ipairs(o.vlines or {}) do
    g[#g + 1] = ("set arrow from %s, graph 0 to %s, graph 1 nohead dashtype 2"):format(util.num(v.x), util.num(v.x))
    if v.label then g[#g + 1] = ('set label "%s" at %s, graph 0.95'):format(esc(v.label), util.num(v.x)) end
  end
  local parts = {}
  for i, s in ipairs(o.series) do
    if s.lo then
      parts[#parts + 1] = ('"%s" index %d using 1:3:4 with filledcurves fs transparent solid 0.2 noborder lc %d notitle'):format(
        esc(base), i - 1, i)
    end
    parts[#parts + 1] = ('"%s" index %d using 1:2 with %s lc %d title "%s"'):format(
      esc(base), i - 1, s.points and "linespoints pt 7 ps 0.6" or "lines lw 2", i, esc(s.name or ("series " .. i)))
  end
  g[#g + 1] = "plot " .. table.concat(parts, ", \\\n     ")
  util.write_atomic(gp, table.concat(g, "\n") .. "\n")

  local out = { dat = dat, gp = gp }
  if M.available() then
    local dir = gp:match("^(.*)/[^/]*$") or "."
    local ok = os.execute(("cd %s && gnuplot %s 2>/dev/null"):format(util.shell_quote(dir), util.shell_quote(gp:match("([^/]+)$"))))
    if ok then out.png = png end
  end
  return out
end

return M
