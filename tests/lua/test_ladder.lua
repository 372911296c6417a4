#!/usr/bin/env kiln
-- kiln.ladder (docs/lua-api.md) and the two experiments built on it (docs/experiments.md):
-- the size law recovers a known a·N^b + c exactly from clean points and closely from noisy
-- ones; the size-and-data law recovers a known E + A/N^α + B/D^β; ARE is the mean relative
-- error; the LR optimum finds the vertex of a known parabola in log2(lr) between grid points;
-- parameter counts match the GPT-2 formula; the experiments' settings resolve (quick
-- profile, plan_only) and a tiny end-to-end run of each writes its tables.
local t = dofile("tests/lua/tap.lua")
local kiln = require "kiln"
local ladder = kiln.ladder
local dir = t.tmpdir()
kiln.set_threads(1)

-- 1. L(N) = a·N^b + c -------------------------------------------------------------------
local a, b, c = 1.7, -0.35, 2.1
local ns, ys = {}, {}
for k = 0, 6 do ns[#ns + 1] = 0.02 * 2 ^ (k * 0.7); ys[#ys + 1] = a * ns[#ns] ^ b + c end
local law = ladder.fit_size(ns, ys)
t.near(law.a, a, 1e-6, ("clean points: a = %.9g"):format(law.a))
t.near(law.b, b, 1e-6, ("clean points: b = %.9g"):format(law.b))
t.near(law.c, c, 1e-6, ("clean points: c = %.9g"):format(law.c))
t.near(law.predict(10), a * 10 ^ b + c, 1e-6, "clean points: the prediction far beyond the fitted range is exact")

-- the same law with up to ±0.2% multiplicative noise (a fixed, known sequence): the
-- predictions of three sizes 1.7-7x beyond the largest fitted one stay within 2%, and the
-- fit is not exact. (The extrapolation amplifies noise: the same sequence at ±1% gives up
-- to 7.6% error at 12 M, which is why the ladder's held-out error is worth measuring.)
local noise = { 0.0016, -0.002, 0.0008, -0.0012, 0.002, -0.0004, 0.0012 }
local noisy = {}
for k, y in ipairs(ys) do noisy[k] = y * (1 + noise[k]) end
local nlaw = ladder.fit_size(ns, noisy)
local big_ns, truth, pred = { 3, 6, 12 }, {}, {}
for k, n in ipairs(big_ns) do truth[k], pred[k] = a * n ^ b + c, nlaw.predict(n) end
local are, worst = ladder.are(truth, pred)
t.ok(worst < 0.02, ("noisy points: largest relative error of the predictions %.4f < 0.02"):format(worst))
t.ok(are > 1e-6, ("noisy points: the fit is not exact (ARE %.2g)"):format(are))
t.ok(nlaw.r2 > 0.9 and nlaw.r2 < 1, ("noisy points: R² %.4f"):format(nlaw.r2))

-- a ladder whose loss does not fall: the default bounds (a, c >= 0) keep the law sane
local flat = ladder.fit_size({ 1, 2, 3, 4, 5 }, { 3.0, 3.1, 2.95, 3.05, 3.0 })
t.ok(flat.a >= 0 and flat.c >= 0, ("a flat ladder gives a >= 0 (%.3g) and c >= 0 (%.3g)"):format(flat.a, flat.c))

t.err("fit_size: needs at least 4 points", ladder.fit_size, { 1, 2, 3 }, { 1, 2, 3 })
t.err("fit_size: N%[2%] = %-1 must be > 0", ladder.fit_size, { 1, -1, 3, 4 }, { 1, 2, 3, 4 })
t.err("fit_size: 4 x values but 3 losses", ladder.fit_size, { 1, 2, 3, 4 }, { 1, 2, 3 })
t.err("fit_size: point 3 is not a pair of finite numbers", ladder.fit_size, { 1, 2, 3, 4 }, { 1, 2, 0 / 0, 4 })

-- 2. ARE ---------------------------------------------------------------------------------
local m, w = ladder.are({ 2, 4 }, { 2.2, 3.8 })
t.near(m, (0.1 + 0.05) / 2, 1e-12, "ARE = mean |(y - ŷ)/y|")
t.near(w, 0.1, 1e-12, "and the largest relative error")

-- 3. L(N, D) = E + A/N^α + B/D^β from clean points on a grid of sizes and data ------------
local E, A, al, B, be = 1.5, 0.4, 0.3, 0.8, 0.45
local pts = {}
for _, n in ipairs { 0.02, 0.05, 0.1, 0.2, 0.4 } do
  for _, d in ipairs { 0.1, 0.2, 0.4, 0.8 } do pts[#pts + 1] = { n = n, d = d, loss = E + A / n ^ al + B / d ^ be } end
end
local nd = ladder.fit_size_data(pts)
t.ok(math.abs(nd.E - E) < 1e-4 and math.abs(nd.A - A) < 1e-4 and math.abs(nd.alpha - al) < 1e-4
  and math.abs(nd.B - B) < 1e-4 and math.abs(nd.beta - be) < 1e-4,
  ("L(N, D) from clean points: E %.6f A %.6f alpha %.6f B %.6f beta %.6f"):format(nd.E, nd.A, nd.alpha, nd.B, nd.beta))
t.near(nd.predict(2, 3.2), E + A / 2 ^ al + B / 3.2 ^ be, 1e-4, "L(N, D) predicts a larger model trained longer")
t.err("fit_size_data: point 2 needs n > 0 and d > 0", ladder.fit_size_data, { { n = 1, d = 1, loss = 1 }, { n = 0, d = 1, loss = 1 } })

-- 4. The LR optimum ------------------------------------------------------------------------
-- loss = 2 + 0.3·(log2 lr - log2 0.0037)²: the vertex lies between grid points
local lrs = { 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032 }
local function parabola(x0, k, lo)
  local out = {}
  for i, lr in ipairs(lrs) do out[i] = lo + k * (math.log(lr, 2) - math.log(x0, 2)) ^ 2 end
  return out
end
local best = ladder.lr_optimum(lrs, parabola(0.0037, 0.3, 2))
t.eq(best.grid_lr, 0.004, "the grid minimum of the parabola")
t.near(best.log2_lr, math.log(0.0037, 2), 1e-9, ("a parabola in log2 lr: the vertex %.6g is found exactly"):format(best.lr))
t.ok(best.refined and not best.edge, "refined, not at the edge")
-- a quartic bowl: the 3-point parabola is an estimate, off by less than half a grid step
local q = {}
for i, lr in ipairs(lrs) do q[i] = 2 + (math.log(lr, 2) - math.log(0.003, 2)) ^ 4 + 0.1 * (math.log(lr, 2) - math.log(0.003, 2)) ^ 2 end
local bq = ladder.lr_optimum(lrs, q)
t.ok(math.abs(bq.log2_lr - math.log(0.003, 2)) < 0.5, ("a quartic bowl: within half an octave (%.3g)"):format(bq.lr))
-- five points (neighbours = 2) on an exact parabola: still exact
t.near(ladder.lr_optimum(lrs, parabola(0.006, 1, 3), { neighbours = 2 }).log2_lr, math.log(0.006, 2), 1e-9,
  "neighbours = 2: the least-squares parabola through 5 exact points is exact")
-- diverged runs (NaN) are skipped; a minimum at the end of the grid is not refined
local div = parabola(0.0037, 0.3, 2)
div[7], div[6] = 0 / 0, 0 / 0
t.near(ladder.lr_optimum(lrs, div).log2_lr, math.log(0.0037, 2), 1e-9, "NaN losses (diverged runs) are skipped")
local edge = ladder.lr_optimum(lrs, parabola(0.1, 0.3, 2))
t.ok(edge.edge and not edge.refined and edge.lr == 0.032, "an optimum beyond the grid: the last grid LR, flagged edge")
t.eq(ladder.lr_optimum(lrs, { 0 / 0, 0 / 0, 0 / 0, 0 / 0, 0 / 0, 0 / 0, 0 / 0 }), nil, "all diverged: nil")
t.err("lr_optimum: the lrs must increase", ladder.lr_optimum, { 0.01, 0.001, 0.1 }, { 1, 2, 3 })
t.eq(ladder.parabola_vertex({ 0, 1, 2 }, { 0, 1, 0 }), nil, "a parabola opening downwards has no minimum")

-- summary (mean, sample sd, range)
local s = ladder.summary { 0.5, -0.25, 0 / 0, 0.25 }
t.ok(math.abs(s.mean - 1 / 6) < 1e-12 and math.abs(s.sd - math.sqrt((1 / 3 ^ 2 + (5 / 12) ^ 2 + (1 / 12) ^ 2) / 2)) < 1e-12
  and s.min == -0.25 and s.max == 0.5 and s.n == 3, "summary: mean, sample sd, min, max of the finite values")

-- 5. Parameter counts: GPT-2 blocks have 12d² + 13d parameters, plus ln_f's 2d ------------
local mc = { vocab_size = 256, block_size = 32, n_layer = 2, n_embd = 48, n_head = 3, seed = 1 }
local d = 48
t.eq(ladder.params(mc), 2 * (12 * d * d + 13 * d) + 2 * d, "non-embedding parameters")
t.eq(ladder.params(mc, "total"), 2 * (12 * d * d + 13 * d) + 2 * d + 256 * d + 32 * d, "total parameters")
t.err("params: which must be", ladder.params, mc, "all")

-- 6. The experiments: settings resolve (quick profile), and a tiny end-to-end run ----------
local kbin = (os.getenv("KILN_BUILD") or "build") .. "/kiln"
local out, code = t.sh(("%s experiments/mup_ladder.lua quick=true plan_only=true out=%s/l"):format(kbin, dir))
t.ok(code == 0 and out:find("widths 16,24,32,40,48,64,80,96", 1, true) and out:find("fit on the 5 smallest, predict 3", 1, true),
  "mup_ladder: the quick profile resolves to its 8-width ladder: " .. out:gsub("\n", " "))
out, code = t.sh(("%s experiments/lr_transfer.lua quick=true plan_only=true out=%s/t"):format(kbin, dir))
t.ok(code == 0 and out:find("small d=32, larger 64,128", 1, true) and out:find("7 LRs", 1, true) and out:find("seeds 1,2", 1, true),
  "lr_transfer: the quick profile resolves: " .. out:gsub("\n", " "))
local supported = pcall(kiln.grow.width, kiln.model(mc), { n_embd = 96, n_head = 6 }, { method = "hyperclone" })
t.ok(supported == (out:find("arm 'hyperclone' skipped", 1, true) == nil),
  ("lr_transfer: the hyperclone arm is %s, as kiln.grow.width %s it"):format(supported and "run" or "skipped", supported and "accepts" or "refuses"))
out, code = t.sh(("%s experiments/mup_ladder.lua quick=true model.widths=[8,16,24,32] fit.hold_out=1 out=%s/x"):format(kbin, dir))
t.ok(code ~= 0 and out:find("4 widths with fit.hold_out = 1 leaves 3", 1, true),
  "mup_ladder: too few widths to fit is refused by name: " .. out:gsub("\n", " "))
out, code = t.sh(("%s experiments/lr_transfer.lua quick=true model.widths=[16] out=%s/x"):format(kbin, dir))
t.ok(code ~= 0 and out:find("model.widths[1] = 16 must be larger than model.base_width 32", 1, true),
  "lr_transfer: a width below the base is refused by name: " .. out:gsub("\n", " "))

do
  local data_ok = io.open("data/techdocs/train.txt") and io.open("data/techdocs/val.txt")
  if not data_ok then
    t.skip("data/techdocs is missing (make data): no end-to-end runs")
    t.skip("data/techdocs is missing (make data): no end-to-end runs")
  else
    out, code = t.sh(("%s experiments/mup_ladder.lua quick=true model.widths=[8,16,24,32,40] fit.hold_out=1 train.steps=6 train.warmup=1 train.eval_windows=4 threads=1 out=%s/ladder"):format(kbin, dir))
    local md = t.read(dir .. "/ladder/results.md") or ""
    local csv = t.read(dir .. "/ladder/results.csv") or ""
    local _, rows = csv:gsub("\n", "")
    t.ok(code == 0 and md:find("| mup | 40 |", 1, true) and md:find("**predicted**", 1, true) and rows == 1 + 2 * 5 * 4,
      ("mup_ladder end to end: results.md and results.csv (%d lines) written"):format(rows) .. (code == 0 and "" or out))
    out, code = t.sh(("%s experiments/lr_transfer.lua quick=true model.widths=[48] lrs=[0.002,0.008,0.032] seeds=[1] small.steps=6 big.steps=6 train.eval_last=2 train.eval_spacing=2 train.warmup=1 train.eval_windows=4 threads=1 out=%s/lrt"):format(kbin, dir))
    md = t.read(dir .. "/lrt/results.md") or ""
    t.ok(code == 0 and md:find("| szp | 48 |", 1, true) and md:find("| cold | 48 |", 1, true)
      and t.read(dir .. "/lrt/seed1/szp/d48/lr0p008/grown.safetensors") ~= nil,
      "lr_transfer end to end: results.md with both arms, grown checkpoints written" .. (code == 0 and "" or out))
  end
end

t.done()
