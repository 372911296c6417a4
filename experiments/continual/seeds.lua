-- experiments/continual/seeds.lua — the continual-pretraining tables of several runs of the
-- whole study side by side (other data orders: seed=2, ...), so that a difference between
-- arms can be read against the spread between runs.
--
--   kiln experiments/continual/seeds.lua runs/continual/all runs/continual/all-seed2 [> seeds.md]
--
-- Reads DIR/<experiment>/results.csv of every protocol directory (written by all.lua or
-- the experiment's own script) and prints, per experiment, each arm's final downstream
-- loss, final upstream loss and largest upstream rise in every run, their mean, and each
-- arm's difference to the experiment's reference arm in every run (a difference with the
-- same sign in every run is one the data order did not make).
local kiln = require "kiln"
local util = require "kiln.util"

local dirs = {}
for _, a in ipairs(arg) do
  if a:find("=", 1, true) then kiln.config.fail("seeds.lua: expected protocol directories, got '%s'", a) end
  dirs[#dirs + 1] = a
end
if #dirs < 2 then kiln.config.fail("seeds.lua: give two or more protocol directories (runs of all.lua with other seeds)") end

-- The arm every other arm of an experiment is compared with.
local reference = {
  warmup_length = "warmup 1%", peak_lr = "peak 1x", same_data = "same data, constant",
  early_checkpoints = "final, warmup 1%",
}
local order = { "warmup_length", "peak_lr", "same_data", "early_checkpoints" }
local metrics = { { "down_end", "down end" }, { "up_end", "up end" }, { "up_max_rise", "rise" } }

local function read(dir, exp)
  local path = dir .. "/" .. exp .. "/results.csv"
  if not util.exists(path) then return nil end
  local csv = util.read_csv(path)
  local col, by_arm, arms = {}, {}, {}
  for i, h in ipairs(csv.header) do col[h] = i end
  for _, name in ipairs { "arm", "down_end", "up_end", "up_max_rise" } do
    if not col[name] then kiln.config.fail("%s: no column '%s' (expected the results.csv of continual/common.lua)", path, name) end
  end
  for _, r in ipairs(csv.rows) do
    local arm = r[col.arm]
    arms[#arms + 1] = arm
    by_arm[arm] = { down_end = r[col.down_end], up_end = r[col.up_end], up_max_rise = r[col.up_max_rise] }
  end
  return { arms = arms, by_arm = by_arm }
end

local function cell(x, signed)
  if type(x) ~= "number" then return "n/a" end
  return (signed and "%+.4f" or "%.4f"):format(x)
end

-- The reference arm's label starts with `reference[exp]` (labels carry the LR, e.g. "peak 1x (0.003)").
local function find_reference(runs, exp)
  for _, arm in ipairs(runs[1].arms) do
    if arm:sub(1, #reference[exp]) == reference[exp] then return arm end
  end
end

local function mean_of(runs, arm, key)
  local xs = {}
  for _, r in ipairs(runs) do
    local v = r.by_arm[arm] and r.by_arm[arm][key]
    if type(v) ~= "number" then return nil end
    xs[#xs + 1] = v
  end
  return (util.mean_std(xs))
end

local function values_table(runs, exp)
  local head = { "arm" }
  for _, m in ipairs(metrics) do
    for i in ipairs(runs) do head[#head + 1] = ("%s, run %d"):format(m[2], i) end
    head[#head + 1] = m[2] .. ", mean"
  end
  local out = { "| " .. table.concat(head, " | ") .. " |", "|---" .. string.rep("|---:", #head - 1) .. "|" }
  for _, arm in ipairs(runs[1].arms) do
    local cells = { arm }
    for _, m in ipairs(metrics) do
      for _, r in ipairs(runs) do cells[#cells + 1] = cell(r.by_arm[arm] and r.by_arm[arm][m[1]], m[1] == "up_max_rise") end
      cells[#cells + 1] = cell(mean_of(runs, arm, m[1]), m[1] == "up_max_rise")
    end
    out[#out + 1] = "| " .. table.concat(cells, " | ") .. " |"
  end
  return table.concat(out, "\n")
end

local function sign_word(ds)
  local pos, neg = 0, 0
  for _, d in ipairs(ds) do if d > 0 then pos = pos + 1 elseif d < 0 then neg = neg + 1 end end
  if pos == #ds then return "higher in every run" elseif neg == #ds then return "lower in every run" end
  return "mixed"
end

local function difference_table(runs, exp, ref)
  local head = { "arm − " .. ref }
  for _, key in ipairs { "down end", "up end" } do
    for i in ipairs(runs) do head[#head + 1] = ("%s, run %d"):format(key, i) end
    head[#head + 1] = key .. ": sign"
  end
  local out = { "| " .. table.concat(head, " | ") .. " |", "|---" .. string.rep("|---:", #head - 1) .. "|" }
  for _, arm in ipairs(runs[1].arms) do
    if arm ~= ref then
      local cells = { arm }
      for _, key in ipairs { "down_end", "up_end" } do
        local ds = {}
        for _, r in ipairs(runs) do
          local a, b = r.by_arm[arm] and r.by_arm[arm][key], r.by_arm[ref] and r.by_arm[ref][key]
          local d = (type(a) == "number" and type(b) == "number") and a - b or nil
          cells[#cells + 1] = cell(d, true)
          if d then ds[#ds + 1] = d end
        end
        cells[#cells + 1] = #ds == #runs and sign_word(ds) or "n/a"
      end
      out[#out + 1] = "| " .. table.concat(cells, " | ") .. " |"
    end
  end
  return table.concat(out, "\n")
end

local parts = { ("Runs: %s. Losses at the end of each arm; rise = the largest upstream rise over the arm's evaluations.\n")
  :format(table.concat((function() local t = {} for i, d in ipairs(dirs) do t[i] = ("%d = `%s`"):format(i, d) end return t end)(), ", ")) }
for _, exp in ipairs(order) do
  local runs = {}
  for _, d in ipairs(dirs) do runs[#runs + 1] = read(d, exp) end
  if #runs == #dirs then
    parts[#parts + 1] = ("### %s\n\n%s\n"):format(exp, values_table(runs, exp))
    local ref = find_reference(runs, exp)
    if ref then parts[#parts + 1] = difference_table(runs, exp, ref) .. "\n" end
  elseif #runs > 0 then
    parts[#parts + 1] = ("### %s\n\nnot in every run (%d of %d have %s/results.csv)\n"):format(exp, #runs, #dirs, exp)
  end
end
if #parts == 1 then kiln.config.fail("seeds.lua: none of the four experiments has results in every directory given") end
print(table.concat(parts, "\n"))
