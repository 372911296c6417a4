-- kiln fit RUN_DIR [key=value ...] — fit the temporal scaling law to a run, predict its loss
--
-- kiln fit RUN_DIR [fit_until=STEP|FRACTION] [fit_from=STEP] [set=NAME] [a0=log] [a1=hyperbolic]
--                  [a2=cosine] [unit=1e6] [plots=true] [variants=true] [match_schedule=true] [laws=false]
--
-- Fits the temporal scaling law to a run's per-position evaluations (positions.csv) on the
-- checkpoints up to fit_until (an integer step, or a fraction of the planned steps written
-- with a decimal point: 0.2, 1.0; by default the first 20% of the evaluations from fit_from
-- on, at least 4, and the choice is printed), predicts the average loss at every later
-- checkpoint, and
-- compares with the power-law, reciprocal and logarithmic baselines fitted to the average
-- loss on the same checkpoints. Prints the table; writes RUN_DIR/tsl.md, RUN_DIR/tsl.csv and
-- RUN_DIR/tsl_plots/ (NAME.dat + NAME.gp always, NAME.png when gnuplot is installed).
-- laws=true adds kiln.laws.compare's table (schedule-aware laws, automatic forms, ARE) as
-- RUN_DIR/laws.md.
local kiln = require "kiln"
local util = require "kiln.util"
local tsl = require "kiln.tsl"

local USAGE = "usage: kiln fit RUN_DIR [fit_until=STEP|FRACTION] [fit_from=STEP] [set=NAME] [a0=FORM] [a1=FORM] [a2=FORM] " ..
              "[unit=1e6] [plots=true] [variants=true] [match_schedule=true] [laws=false]\n  forms: " .. table.concat(util.sorted_keys(tsl.forms), ", ")

-- "300" is step 300; "0.2" (a decimal point or exponent) is a fraction of the planned steps.
local function step_or_fraction(text, what)
  if text == nil or text == "" then return nil end
  local v = tonumber(text)
  if not v then kiln.config.fail("kiln fit: %s must be a step or a fraction (got '%s')", what, text) end
  if tostring(text):find("[%.eE]") then return v + 0.0 end
  return math.tointeger(v) or v
end

return function(...)
  local args = { ... }
  -- An empty form means "the default, if it suits the run's schedule" (tsl.matched_form).
  local opts, positional = kiln.config.resolve({
    fit_until = "", fit_from = "", set = "", a0 = "", a1 = "", a2 = "", unit = 1e6, plots = true,
    variants = true, match_schedule = true, laws = false,
  }, args, { positional = true })
  local function form(p) return opts[p] ~= "" and opts[p] or nil end
  if #positional ~= 1 then kiln.config.fail("kiln fit: give one run directory\n%s", USAGE) end
  local dir = positional[1]:gsub("/+$", "")
  local eopts = {
    fit_until = step_or_fraction(tostring(opts.fit_until), "fit_until"),
    fit_from = step_or_fraction(opts.fit_from, "fit_from"),
    forms = { a0 = form("a0"), a1 = form("a1"), a2 = form("a2") },
    unit = opts.unit, match_schedule = opts.match_schedule,
    sets = opts.set ~= "" and { opts.set } or nil,
  }
  if opts.variants then
    -- One schedule-free alternative, so a reader sees what the LR-aware form buys.
    eopts.variants = { temporal_power = { a0 = "power", a1 = "power", a2 = "power" } }
  end
  local result = tsl.evaluate(dir, eopts)
  local run = result.run
  local header = {
    ("# Temporal scaling law: %s"):format(dir), "",
    ("Per-position law L_i = a0/(1 + a1*i) + a2 fitted at each checkpoint (i = 1..%d); parameter laws in t = tokens / %g; " ..
      "LR from %s (peak at step %s, decay ends at step %s). fit_until = %s, fit_from = %s."):format(
      run.T, opts.unit, run.lr_source or "nowhere (LR-aware forms unavailable)", tostring(run.peak_step),
      tostring(run.decay_end), tostring(eopts.fit_until or "chosen from the evaluations"),
      tostring(eopts.fit_from or "the LR peak")),
    "", "R², MSE and MAPE are measured on the held-out checkpoints after the cut, against the measured average loss.", "",
  }
  for _, note in ipairs(result.notes) do header[#header + 1] = "note: " .. note end
  if #result.notes > 0 then header[#header + 1] = "" end
  local md = table.concat(header, "\n") .. result.markdown
  print(md)
  util.write_atomic(dir .. "/tsl.md", md .. "\n")
  util.write_atomic(dir .. "/tsl.csv", result.csv)
  local written = { dir .. "/tsl.md", dir .. "/tsl.csv" }
  if opts.plots then
    local files = tsl.plot(result, dir .. "/tsl_plots")
    for _, f in ipairs(files) do written[#written + 1] = f end
    if not tsl.has_gnuplot() then print("note: gnuplot is not installed; the plots' .dat and .gp files are written, no images") end
  end
  if opts.laws then
    local cmp = require("kiln.laws").compare(run, { cut = eopts.fit_until or 0.2, fit_from = eopts.fit_from, forms = eopts.forms,
                                                    unit = opts.unit, sets = eopts.sets })
    print(cmp.markdown)
    util.write_atomic(dir .. "/laws.md", cmp.markdown .. "\n")
    written[#written + 1] = dir .. "/laws.md"
  end
  print("wrote " .. table.concat(written, ", "))
end
