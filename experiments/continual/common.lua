-- experiments/continual/common.lua — the shared parts of the continual-pretraining study
-- (Gupta et al. 2023, "how to (re)warm your model"; docs/experiments.md, "Continual
-- pretraining"): settings, the protocol
-- with its upstream phase, the four experiments' arms, and the tables and plots.
--
-- Every experiment script is `common.main("<name>", arg)`; all.lua is `common.main_all(arg)`.
-- Settings: common.yaml and <name>.yaml are the defaults; then config=FILE.yaml, the
-- `quick_settings` block with quick=true (the same arms in minutes), and key=value, as
-- kiln.config layers them for every experiment. out= is the protocol directory, exactly.
--
-- Scale mapping: our continuation budget `budget_tokens` plays the paper's 297B tokens, so a
-- paper token count x maps to x / 297 * budget_tokens; upstream_tokens plays Pythia's 300B.
-- Peaks are multiples of the upstream peak (the paper's 1.5e-4 / 3e-4 / 6e-4 around 3e-4).
local kiln = require "kiln"
local util = require "kiln.util"
local protocol = require "kiln.protocol"

local M = {}
local here = (arg and arg[0] and arg[0]:match("^(.*)/[^/]*$")) or "experiments/continual"
M.here = here
local data_setup = dofile(here .. "/../lib/setup.lua")

local PAPER_BUDGET_B = 297

local function deep_merge(base, over)
  for k, v in pairs(over) do
    if type(v) == "table" and type(base[k]) == "table" and #v == 0 and next(v) ~= nil then deep_merge(base[k], v)
    else base[k] = v end
  end
  return base
end

local P, F = { min = 1 }, { min = 0, max = 1 }
M.rules = {
  threads = { min = 0 }, context = P, batch = P, upstream_tokens = P, budget_tokens = P,
  upstream_peak = { above = 0 }, upstream_warmup_frac = F, floor_frac = F, decay_frac = F,
  window_frac = { above = 0, max = 1 }, replay = F, checkpoint_every = P,
  optimizer = { one_of = { "carry", "reset" } }, ["eval.windows"] = P, ["eval.points_window"] = P,
  ["eval.points_rest"] = P, ["eval.points_upstream"] = P, tokenizer = data_setup.tokenizer_rule,
}

-- The file of corpus folder `dir`'s split ("train" / "val") under the tokenizer setting.
function M.file(cfg, dir, split) return data_setup.token_file(dir .. "/" .. split .. ".txt", cfg.tokenizer) end

-- Settings for one experiment (or "all"): defaults from common.yaml + <name>.yaml, then
-- kiln.config's layers (config=FILE, quick profile, key=value).
function M.settings(name, args)
  local defaults = kiln.yaml.load(here .. "/common.yaml")
  local names = name == "all" and { "warmup_length", "peak_lr", "same_data", "early_checkpoints", "all" } or { name }
  for _, n in ipairs(names) do
    local path = here .. "/" .. n .. ".yaml"
    if util.exists(path) then
      local y = kiln.yaml.load(path) or {}
      if name == "all" and n ~= "all" then defaults[n] = y else deep_merge(defaults, y) end
    end
  end
  if defaults.out == "" then defaults.out = "runs/continual/" .. name end
  if type(defaults.quick_settings) == "table" and defaults.quick_settings.out == nil then
    defaults.quick_settings.out = defaults.out .. "-quick"
  end
  return kiln.config.resolve(defaults, args, { rules = M.rules, renamed = { dir = "out" }, origin = here .. "/common.yaml and " .. name .. ".yaml" })
end

-- Paper tokens (in billions, of its 297B budget) -> our continuation tokens.
function M.paper_tokens(cfg, b) return b / PAPER_BUDGET_B * cfg.budget_tokens end

local function steps_for(cfg, tokens) return math.ceil(tokens / (cfg.batch * cfg.context) - 1e-9) end

-- The protocol with its upstream phase; evaluation dense over the short window, sparser after.
function M.protocol(cfg, dir)
  local budget_steps = steps_for(cfg, cfg.budget_tokens)
  local window_steps = steps_for(cfg, cfg.budget_tokens * cfg.window_frac)
  local at, seen = {}, {}
  local function add(s) if s >= 1 and not seen[s] then seen[s] = true; at[#at + 1] = s end end
  for i = 1, cfg.eval.points_window do add(math.floor(i * window_steps / cfg.eval.points_window + 0.5)) end
  for i = 1, cfg.eval.points_rest do
    add(window_steps + math.floor(i * (budget_steps - window_steps) / cfg.eval.points_rest + 0.5))
  end
  -- the upstream phase is evaluated at the same relative points
  local up_steps = steps_for(cfg, cfg.upstream_tokens)
  for i = 1, cfg.eval.points_upstream do add(math.floor(i * up_steps / cfg.eval.points_upstream + 0.5)) end
  table.sort(at)
  local m = util.copy(cfg.model)
  m.block_size = cfg.context
  local P = protocol {
    dir = dir, model = m, batch = cfg.batch, context = cfg.context, seed = cfg.seed,
    optimizer = cfg.optimizer_hparams,
    eval = { sets = { upstream = M.file(cfg, cfg.upstream, "val"), downstream = M.file(cfg, cfg.downstream, "val"),
                      ood = M.file(cfg, cfg.ood, "val") }, at = at, windows = cfg.eval.windows },
    checkpoint_every = cfg.checkpoint_every, quiet = cfg.quiet, log_every = 100,
  }
  local ck = {}
  for k, v in pairs(cfg.checkpoints) do ck[k] = v end
  P:phase { name = "upstream", data = M.file(cfg, cfg.upstream, "train"), tokens = cfg.upstream_tokens,
            schedule = { kind = "cosine", peak = cfg.upstream_peak, warmup_frac = cfg.upstream_warmup_frac,
                         floor_frac = cfg.floor_frac },
            checkpoints = ck }
  return P
end

local function tag(x)   -- 0.5 -> "0p5", 1 -> "1", 0.005 -> "0p5" (percent handled by caller)
  local s = util.num(x):gsub("%.", "p")
  return s
end

-- Add one continuation phase; returns {phase = name, upto = tokens}.
--   a = { src = "final"|"early"|"middle"|"scratch", data = "down"|"same", warmup = frac,
--         mult = peak multiple | nil, constant = true, full = true (whole budget) }
function M.arm(P, cfg, a)
  local short = not a.full
  local tokens = short and cfg.budget_tokens * cfg.window_frac or cfg.budget_tokens
  local data_path = M.file(cfg, a.data == "same" and cfg.upstream or cfg.downstream, "train")
  local name, sched
  if a.constant then
    name = ("%s_const_%s"):format(a.src, a.data)
    sched = { kind = "constant", lr = cfg.upstream_peak * cfg.floor_frac }
  else
    name = ("%s_w%s_p%sx_%s"):format(a.src, tag(a.warmup * 100), tag(a.mult), a.data)
    sched = { kind = a.src == "scratch" and "cosine" or "rewarm", peak = cfg.upstream_peak * a.mult,
              warmup_frac = a.warmup, floor_frac = cfg.floor_frac, decay_frac = cfg.decay_frac }
  end
  -- start_from (a checkpoint file or run directory) stands in for the upstream final checkpoint
  local final = cfg.start_from ~= "" and cfg.start_from or "upstream"
  local from = a.src ~= "scratch" and (a.src == "final" and final or ("upstream." .. a.src)) or nil
  P:phase { name = name, from = from, data = data_path, tokens = tokens, budget = cfg.budget_tokens,
            schedule = sched, optimizer = cfg.optimizer, replay = cfg.replay > 0 and cfg.replay or nil }
  return { phase = name, upto = tokens }
end

local function pct(x) return util.num(x * 100) .. "%" end

-- The four experiments: each adds its phases and returns its arms (label + phase + cut).
M.define = {}

function M.define.warmup_length(P, cfg)
  local e = cfg.warmup_length or cfg
  local arms = {}
  for _, w in ipairs(e.warmups) do
    local a = M.arm(P, cfg, { src = "final", data = "down", warmup = w, mult = e.peak_mult })
    a.label = "warmup " .. pct(w)
    arms[#arms + 1] = a
  end
  return { title = "Warmup length (peak " .. util.num(e.peak_mult) .. "x upstream, from the final checkpoint)",
           arms = arms, points_B = e.points_B }
end

function M.define.peak_lr(P, cfg)
  local e = cfg.peak_lr or cfg
  local arms = {}
  for _, m in ipairs(e.peak_mults) do
    local a = M.arm(P, cfg, { src = "final", data = "down", warmup = e.warmup, mult = m, full = true })
    a.label = ("peak %sx (%.3g)"):format(util.num(m), m * cfg.upstream_peak)
    arms[#arms + 1] = a
  end
  if e.constant then
    local a = M.arm(P, cfg, { src = "final", data = "down", constant = true, full = true })
    a.label = ("constant %.3g"):format(cfg.upstream_peak * cfg.floor_frac)
    arms[#arms + 1] = a
  end
  if e.scratch then
    local a = M.arm(P, cfg, { src = "scratch", data = "down", warmup = e.warmup, mult = 1, full = true })
    a.label = "scratch"
    a.scratch = true
    arms[#arms + 1] = a
  end
  return { title = "Peak learning rate (warmup " .. pct(e.warmup) .. ", whole budget)", arms = arms, points_B = e.points_B }
end

function M.define.same_data(P, cfg)
  local e = cfg.same_data or cfg
  local arms = {}
  for _, m in ipairs(e.peak_mults) do
    local a = M.arm(P, cfg, { src = "final", data = "same", warmup = e.warmup, mult = m })
    a.label = ("same data, peak %sx"):format(util.num(m))
    arms[#arms + 1] = a
  end
  if e.constant then
    local a = M.arm(P, cfg, { src = "final", data = "same", constant = true })
    a.label = ("same data, constant %.3g"):format(cfg.upstream_peak * cfg.floor_frac)
    arms[#arms + 1] = a
  end
  return { title = "Re-warming on the upstream data itself", arms = arms, points_B = e.points_B }
end

function M.define.early_checkpoints(P, cfg)
  local e = cfg.early_checkpoints or cfg
  local arms = {}
  for _, src in ipairs(e.sources) do
    for _, w in ipairs(e.warmups) do
      local a = M.arm(P, cfg, { src = src, data = "down", warmup = w, mult = e.peak_mult })
      a.label = ("%s, warmup %s"):format(src, pct(w))
      arms[#arms + 1] = a
    end
  end
  if e.scratch then
    local a = M.arm(P, cfg, { src = "scratch", data = "down", warmup = 0.01, mult = e.peak_mult })
    a.label = "scratch"
    a.scratch = true
    arms[#arms + 1] = a
  end
  return { title = "Earlier upstream checkpoints", arms = arms, points_B = e.points_B }
end

M.order = { "warmup_length", "peak_lr", "same_data", "early_checkpoints" }

local function f4(x) return x and ("%.4f"):format(x) or "–" end
local function mtok(x) return x and ("%.2fM"):format(x / 1e6) or "–" end

-- The results table of one experiment (Markdown) and its CSV, .dat/.gp plots (PNG when
-- gnuplot exists). Returns the Markdown text and per-arm rows.
function M.report(P, cfg, exp, name, outdir)
  util.mkdir(outdir)
  local points = {}
  for i, b in ipairs(exp.points_B) do points[i] = M.paper_tokens(cfg, b) end
  local rows = {}
  for _, a in ipairs(exp.arms) do
    local curve = P:curve(a.phase, a.upto)
    local down = protocol.summarize(curve, "downstream", points)
    local up = protocol.summarize(curve, "upstream", points)
    local ood = protocol.summarize(curve, "ood", points)
    rows[#rows + 1] = { arm = a, curve = curve, down = down, up = up, ood = ood }
  end
  local head = { "arm" }
  for _, b in ipairs(exp.points_B) do head[#head + 1] = ("down @%sB"):format(util.num(b)) end
  head[#head + 1] = "down end"
  head[#head + 1] = "up start"
  for _, b in ipairs(exp.points_B) do head[#head + 1] = ("up @%sB"):format(util.num(b)) end
  head[#head + 1] = "up end"
  head[#head + 1] = "max up rise"
  head[#head + 1] = "at"
  head[#head + 1] = "OOD end"
  local md = { ("### %s\n\n"):format(exp.title),
    ("Losses in " .. data_setup.loss_unit(cfg.tokenizer) .. " on the validation sets; `@xB` = the paper's x billion of 297B tokens = %s of our %s-token budget. " ..
     "Rise = max over evaluations of (upstream loss − its value at the start of the phase), and the continuation tokens where it happened.\n\n")
      :format(table.concat((function() local t = {} for i, b in ipairs(exp.points_B) do t[i] = util.num(b) .. "B→" .. mtok(points[i]) end return t end)(), ", "),
              mtok(cfg.budget_tokens)),
    "| " .. table.concat(head, " | ") .. " |\n", "|" .. string.rep("---|", #head) .. "\n" }
  local csv = { util.csv_line({ "arm", "phase", "tokens", "down_end", "up_start", "up_end", "up_max_rise", "up_max_rise_tokens", "ood_end" }) }
  for _, r in ipairs(rows) do
    local cells = { r.arm.label }
    for i in ipairs(points) do cells[#cells + 1] = f4(r.down.at[i]) end
    cells[#cells + 1] = f4(r.down.final)
    cells[#cells + 1] = r.arm.scratch and "(init)" or f4(r.up.start)
    for i in ipairs(points) do cells[#cells + 1] = f4(r.up.at[i]) end
    cells[#cells + 1] = f4(r.up.final)
    cells[#cells + 1] = r.arm.scratch and "n/a" or (r.up.max_rise and ("%+.4f"):format(r.up.max_rise) or "–")
    cells[#cells + 1] = r.arm.scratch and "" or mtok(r.up.max_rise_tokens)
    cells[#cells + 1] = f4(r.ood.final)
    md[#md + 1] = "| " .. table.concat(cells, " | ") .. " |\n"
    csv[#csv + 1] = util.csv_line({ r.arm.label, r.arm.phase, r.down.final_tokens, r.down.final, r.up.start, r.up.final,
      r.arm.scratch and "" or r.up.max_rise, r.arm.scratch and "" or r.up.max_rise_tokens, r.ood.final }, 9)
  end
  local text = table.concat(md)
  util.write_atomic(outdir .. "/results.md", text)
  util.write_atomic(outdir .. "/results.csv", table.concat(csv))
  M.plot(rows, exp, name, outdir, data_setup.loss_unit(cfg.tokenizer))
  return text, rows
end

-- losses.dat: one block per arm (tokens in millions, downstream, upstream, ood); losses.gp
-- draws both losses against continuation tokens, one line per arm.
function M.plot(rows, exp, name, outdir, unit)
  local dat = {}
  for i, r in ipairs(rows) do
    dat[#dat + 1] = ("# %d %s (phase %s)\n# Mtokens downstream upstream ood\n"):format(i - 1, r.arm.label, r.arm.phase)
    for _, p in ipairs(r.curve) do
      -- scratch starts at the random init (loss ~5.5): leave its first point out of the plot
      if not (r.arm.scratch and p.tokens == 0) then
        dat[#dat + 1] = ("%.6f %s %s %s\n"):format(p.tokens / 1e6, util.num(p.downstream or 0 / 0),
          util.num(p.upstream or 0 / 0), util.num(p.ood or 0 / 0))
      end
    end
    dat[#dat + 1] = "\n\n"
  end
  util.write_atomic(outdir .. "/losses.dat", table.concat(dat))
  -- y ranges: every non-scratch point, plus scratch's last value (scratch starts far above)
  local function yrange(col, axis)
    local lo, hi = math.huge, -math.huge
    for _, r in ipairs(rows) do
      for i, p in ipairs(r.curve) do
        local v = p[col]
        if v and (not r.arm.scratch or i == #r.curve) then lo, hi = math.min(lo, v), math.max(hi, v) end
      end
    end
    if lo > hi then return "set autoscale " .. (axis or "y") end
    local pad = 0.08 * math.max(hi - lo, 0.05)
    return ("set %srange [%.4f:%.4f]"):format(axis or "y", lo - pad, hi + 2 * pad)
  end
  local function plots(using)
    local t = {}
    for i, r in ipairs(rows) do
      t[i] = ("'losses.dat' index %d using %s with linespoints pt 7 ps 0.4 title %q"):format(i - 1, using, r.arm.label)
    end
    return "plot " .. table.concat(t, ", \\\n     ")
  end
  local gp = table.concat({
    "# gnuplot losses.gp (run in this directory) -> losses.png",
    "# losses.dat: one block per arm; columns: continuation tokens (M), downstream, upstream, OOD loss",
    "set terminal pngcairo size 1800,540 font ',10'",
    "set output 'losses.png'",
    "set multiplot layout 1,3 title " .. ("%q"):format(exp.title),
    "set grid", "set key top right font ',9'", "set xlabel 'continuation tokens (M)'",
    "set ylabel 'downstream val loss (" .. unit .. ")'", "set title 'downstream (learning)'",
    yrange("downstream"), plots("1:2"),
    "set ylabel 'upstream val loss (" .. unit .. ")'", "set title 'upstream (forgetting)'",
    yrange("upstream"), plots("1:3"),
    "set xlabel 'upstream val loss'", "set ylabel 'downstream val loss'",
    "set title 'downstream vs upstream (the trade-off)'", yrange("upstream", "x"), yrange("downstream"),
    plots("3:2"),
    "unset multiplot", "" }, "\n")
  util.write_atomic(outdir .. "/losses.gp", gp)
  if os.execute("command -v gnuplot >/dev/null 2>&1") then
    os.execute(("cd %s && gnuplot losses.gp"):format(util.shell_quote(outdir)))
  end
end

-- Threads, and the data: every file the protocol reads must exist and share one tokenizer;
-- the model's vocab_size becomes at least that tokenizer's size.
function M.setup(cfg)
  kiln.set_threads(cfg.threads)
  local files = {}
  for _, role in ipairs { "upstream", "downstream" } do
    files[role .. "_train"] = cfg[role] .. "/train.txt"
    files[role .. "_val"] = cfg[role] .. "/val.txt"
  end
  files.ood_val = cfg.ood .. "/val.txt"
  local sets, V = data_setup.open_data("continual", cfg.tokenizer, files, "see docs/data.md")
  cfg.model.vocab_size = math.max(cfg.model.vocab_size or 0, V)
  data_setup.report_data("continual", cfg, sets, cfg.model.vocab_size)
end

-- The phases to run: all of them, but with start_from set the upstream phase only when an
-- arm starts from one of its checkpoints or replays its data.
function M.phases_to_run(P, cfg)
  if cfg.start_from == "" then return nil end
  local only, need_upstream = {}, cfg.replay > 0
  for _, ph in ipairs(P.phases) do
    if ph.name ~= "upstream" then
      only[#only + 1] = ph.name
      if ph.from and not ph.from_file then need_upstream = true end
    end
  end
  if need_upstream then table.insert(only, 1, "upstream") end
  return only
end

function M.main(name, args)
  local cfg = M.settings(name, args)
  M.setup(cfg)
  local dir = cfg.out
  local P = M.protocol(cfg, dir)
  local exp = M.define[name](P, cfg)
  local r = P:run { command = table.concat({ arg[0], table.unpack(args) }, " "), only = M.phases_to_run(P, cfg) }
  if r.status ~= "complete" then print("stopped: " .. r.status); return end
  local text = M.report(P, cfg, exp, name, dir .. "/" .. name)
  print(text)
  print(("tables and plots: %s/%s/"):format(dir, name))
end

function M.main_all(args)
  local cfg = M.settings("all", args)
  M.setup(cfg)
  local dir = cfg.out
  local P = M.protocol(cfg, dir)
  local exps = {}
  for _, n in ipairs(M.order) do exps[n] = M.define[n](P, cfg) end
  local t0 = kiln.clock()
  local r = P:run { command = table.concat({ arg[0], table.unpack(args) }, " "), only = M.phases_to_run(P, cfg) }
  if r.status ~= "complete" then print("stopped: " .. r.status); return end
  local parts = { ("## Continual-pretraining study: measured tables\n\nSettings: %s; upstream %s tokens of %s, continuation budget %s tokens of %s (OOD %s); model %s; batch %d x context %d; data-order seed %d; upstream peak %s; optimizer state %s.\n\n")
    :format(cfg.quick and "quick" or "default", mtok(cfg.upstream_tokens), cfg.upstream, mtok(cfg.budget_tokens), cfg.downstream,
            cfg.ood, (kiln.yaml.encode(cfg.model):gsub("\n$", ""):gsub("\n", ", ")), cfg.batch, cfg.context, cfg.seed, util.num(cfg.upstream_peak), cfg.optimizer) }
  local up = P:curve("upstream")
  parts[#parts + 1] = ("Upstream phase: upstream val loss %s at the end; named checkpoints %s.\n\n"):format(
    f4(up[#up] and up[#up].upstream), kiln.yaml.encode(P.by_name.upstream.checkpoints):gsub("\n$", ""):gsub("\n", ", "))
  for _, n in ipairs(M.order) do
    parts[#parts + 1] = M.report(P, cfg, exps[n], n, dir .. "/" .. n)
    parts[#parts + 1] = ("\nPlot: `%s/%s/losses.png`\n\n"):format(dir, n)
  end
  local text = table.concat(parts)
  util.write_atomic(dir .. "/tables.md", text)
  print(text)
  print(("wall time of this invocation: %.0f s; tables: %s/tables.md"):format(kiln.clock() - t0, dir))
end

return M
