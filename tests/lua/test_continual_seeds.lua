#!/usr/bin/env kiln
-- experiments/continual/seeds.lua on hand-made results.csv files of two runs: the values of
-- every run and their mean, the differences to the reference arm with their sign over runs,
-- an experiment missing from one run named as such, and bad arguments refused in one line.
local t = dofile("tests/lua/tap.lua")
local dir = t.tmpdir()
local kiln_bin = (os.getenv("KILN_BUILD") or "build") .. "/kiln"

local head = "arm,phase,tokens,down_end,up_start,up_end,up_max_rise,up_max_rise_tokens,ood_end\n"
local function results(run, exp, rows)
  os.execute(("mkdir -p %s/%s/%s"):format(dir, run, exp))
  t.write(("%s/%s/%s/results.csv"):format(dir, run, exp), head .. table.concat(rows, "\n") .. "\n")
end
results("r1", "peak_lr", {
  "peak 0.5x (0.0015),p05,3000000,1.60,1.50,1.80,0.20,100000,2.3",
  "peak 1x (0.003),p1,3000000,1.58,1.50,1.84,0.40,100000,2.3",
  "scratch,scratch,3000000,1.70,,1.95,,,2.3" })
results("r2", "peak_lr", {
  "peak 0.5x (0.0015),p05,3000000,1.62,1.52,1.81,0.22,100000,2.3",
  "peak 1x (0.003),p1,3000000,1.57,1.52,1.86,0.42,100000,2.3",
  "scratch,scratch,3000000,1.50,,1.96,,,2.3" })
results("r1", "same_data", { "same data, constant 0.0003,c,500000,2.1,1.5,1.5,0.0,1000,2.3" })

local out, code = t.sh(("%s experiments/continual/seeds.lua %s/r1 %s/r2"):format(kiln_bin, dir, dir))
t.eq(code, 0, "two runs are read" .. (code == 0 and "" or (": " .. out)))
local function row(prefix)
  for line in out:gmatch("[^\n]+") do if line:sub(1, #prefix + 2) == "| " .. prefix then return line end end
end
local half = row("peak 0.5x (0.0015) |")
t.ok(half and half:find("| 1.6000 | 1.6200 | 1.6100 |", 1, true), "down end of each run and their mean: " .. tostring(half))
t.ok(half and half:find("| +0.2000 | +0.2200 | +0.2100 |", 1, true), "the rise, signed, and its mean")
local diff = out:match("| arm − peak 1x %(0.003%).-\n(.-)\n\n")
t.ok(diff and diff:find("| peak 0.5x (0.0015) | +0.0200 | +0.0500 | higher in every run | -0.0400 | -0.0500 | lower in every run |", 1, true),
  "differences to the reference arm per run, with the sign over runs: " .. tostring(diff))
t.ok(diff and diff:find("| scratch | +0.1200 | -0.0700 | mixed |", 1, true), "a difference whose sign changes is 'mixed'")
t.ok(out:find("same_data\n\nnot in every run (1 of 2 have same_data/results.csv)", 1, true),
  "an experiment one run lacks is named, not half-reported")
t.ok(not out:find("### warmup_length", 1, true), "an experiment no run has is left out")

out, code = t.sh(("%s experiments/continual/seeds.lua %s/r1"):format(kiln_bin, dir))
t.ok(code == 1 and out == "kiln: seeds.lua: give two or more protocol directories (runs of all.lua with other seeds)\n",
  "one directory is refused in one line: " .. out)
out, code = t.sh(("%s experiments/continual/seeds.lua %s/none %s/none2"):format(kiln_bin, dir, dir))
t.ok(code == 1 and out:find("none of the four experiments has results in every directory given", 1, true),
  "directories without results are refused: " .. out)
out, code = t.sh(("%s experiments/continual/seeds.lua %s/r1 out=x"):format(kiln_bin, dir))
t.ok(code == 1 and out:find("expected protocol directories, got 'out=x'", 1, true), "a setting is refused: " .. out)
t.done()
