-- position_law.lua — how well the per-position law fits a trained model when the noise is
-- small: each checkpoint is evaluated on every window of each set (or `windows` of them), and
-- the reciprocal law L_i = a0/(1 + a1·i) + a2 and the power law a + b·i^(−c) are fitted to its
-- per-position losses, beside the noise ceiling 1 − Σ SE_i² / Σ (L_i − mean L)² (the R² the
-- true curve itself would get under the measured standard errors). The checkpoints of a run's
-- evaluations are noisier (fewer windows); this measures the law at full evaluation.
--
--   kiln experiments/position_law.lua CKPT [CKPT ...] [sets.NAME=FILE ...] [windows=all]
--                                     [context=0] [out=FILE.md] [threads=0]
-- (sets: val, austen and prose in bpe8k tokens by default; sets.NAME="" drops one)
--
-- context = 0 takes each checkpoint's block size. The sets must be in the checkpoint's tokens
-- (a .bin made with its tokenizer, or text for a byte-level model).
local kiln = require "kiln"
local util = require "kiln.util"
local tsl = require "kiln.tsl"

local cfg, ckpts = kiln.config.resolve({
  sets = { val = "data/techdocs/bpe8k/val.bin", austen = "data/austen/bpe8k/val.bin", prose = "data/prose/bpe8k/val.bin" },
  windows = "all", context = 0, out = "", threads = 0,
}, arg, { positional = true, origin = "position_law", rules = {
  context = { min = 0 }, threads = { min = 0 },
  windows = { check = function(v)
    if v == "all" or (math.tointeger(tonumber(v)) or 0) >= 1 then return nil end
    return 'a positive whole number or "all"'
  end },
} })
if #ckpts == 0 then kiln.config.fail("position_law: give one or more checkpoints (CKPT.safetensors)") end
if cfg.threads > 0 then kiln.set_threads(cfg.threads) end
local windows = cfg.windows == "all" and "all" or math.tointeger(tonumber(cfg.windows))
local set_names, datasets = {}, {}
for _, name in ipairs(util.sorted_keys(cfg.sets)) do
  if cfg.sets[name] ~= "" then set_names[#set_names + 1], datasets[name] = name, kiln.dataset(cfg.sets[name]) end
end
if #set_names == 0 then kiln.config.fail("position_law: no evaluation set left (sets.NAME=FILE)") end

local function f(x, d) return (x == nil or x ~= x) and "nan" or ("%." .. (d or 4) .. "f"):format(x) end

-- One checkpoint on one set: the evaluation and both laws' fits.
local function measure(model, T, name)
  local e = kiln.evaluate(model, datasets[name], T, { windows = windows })
  local rec = tsl.fit_positions(e.positions)
  local ok, pw = pcall(tsl.fit_positions, e.positions, { law = "power" })
  local ceiling = tsl.noise_ceiling(e.positions, e.positions_se)
  local se2 = 0
  for _, s in ipairs(e.positions_se) do se2 = se2 + s * s end
  return { n = e.n, loss = e.loss, first = e.positions[1], last = e.positions[T], rms_se = math.sqrt(se2 / T),
           r2 = rec.r2, ceiling = ceiling, power_r2 = ok and pw.r2 or 0 / 0, rec = rec, pw = ok and pw or nil }
end

local md = { "# The per-position law at full evaluation", "",
  ("Windows per set: %s. R²: the reciprocal law a0/(1 + a1·i) + a2; power: a + b·i^(−c); ceiling: 1 − Σ SE_i² / SS_tot; " ..
   "gap = ceiling − R² (≤ 0: the law is as good as the noise allows). rms SE: the root mean square of the per-position " ..
   "standard errors."):format(tostring(windows)), "",
  "| checkpoint | set | windows | loss | L_1 | L_T | rms SE | R² | ceiling | gap | power R² | a0 | a1 | a2 |",
  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" }
local t0 = kiln.clock()
for _, path in ipairs(ckpts) do
  local model = kiln.load(path, { tokenizer = false })
  local T = cfg.context > 0 and cfg.context or model:config().block_size
  for _, name in ipairs(set_names) do
    local r = measure(model, T, name)
    md[#md + 1] = ("| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |"):format(path, name, r.n,
      f(r.loss), f(r.first), f(r.last), f(r.rms_se), f(r.r2), f(r.ceiling), f(r.ceiling - r.r2), f(r.power_r2),
      f(r.rec.a0), f(r.rec.a1), f(r.rec.a2))
    io.write(md[#md], "\n")
  end
end
md[#md + 1] = ""
md[#md + 1] = ("%d checkpoint(s), %.0f s, %d threads."):format(#ckpts, kiln.clock() - t0, kiln.get_threads())
local text = table.concat(md, "\n") .. "\n"
if cfg.out ~= "" then util.write_atomic(cfg.out, text) end
print(text)
