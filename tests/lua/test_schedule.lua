#!/usr/bin/env kiln
-- kiln.schedule: values at chosen steps against hand-computed numbers (arithmetic in the
-- comments), rewarm continuity, sequence offsets, describe/sample/config, argument errors.
local t = dofile("tests/lua/tap.lua")
local S = require "kiln.schedule"

local function lit(s) return (s:gsub("%p", "%%%0")) end  -- literal text as a Lua pattern
local EPS = 1e-12

-- constant -------------------------------------------------------------------------------
local c = S.constant { 3e-4 }
t.eq(c(0), 3e-4, "constant: step 0")
t.eq(c(123456), 3e-4, "constant: step 123456")
t.eq(S.constant(2.5)(7), 2.5, "constant(number) form")
t.eq(S.constant { lr = 1e-3 }:length(), nil, "constant has no natural length")

-- warmup{steps=10, peak=1e-3}: lr = 1e-3 * s / 10 for s < 10, then 1e-3 --------------------
local w = S.warmup { steps = 10, peak = 1e-3 }
t.eq(w(0), 0, "warmup: step 0 is start (0)")
t.near(w(5), 5e-4, EPS, "warmup: step 5 = 1e-3 * 5/10 = 5e-4")
t.eq(w(10), 1e-3, "warmup: step 10 = peak exactly")
t.eq(w(20), 1e-3, "warmup: flat at peak after")
-- start = 1e-4: 1e-4 + (1e-3 - 1e-4) * 5/10 = 1e-4 + 4.5e-4 = 5.5e-4
t.near(S.warmup { steps = 10, peak = 1e-3, start = 1e-4 }(5), 5.5e-4, EPS, "warmup with start: step 5 = 5.5e-4")

-- cosine{peak=1, floor=0.1, steps=110, warmup=10} ----------------------------------------
local cs = S.cosine { peak = 1, floor = 0.1, steps = 110, warmup = 10 }
t.eq(cs(0), 0, "cosine: step 0 = 0 (warmup from 0)")
t.near(cs(5), 0.5, EPS, "cosine: step 5 = 1 * 5/10 = 0.5")
t.eq(cs(10), 1, "cosine: step 10 = peak exactly")
-- step 35: k = 25 of 100, x = 0.25: 1 - 0.9 * (1 - cos(pi/4)) / 2 = 1 - 0.45 * 0.29289322 = 0.86819805
t.near(cs(35), 0.868198052, 1e-9, "cosine: step 35 = 0.868198052")
-- step 60: x = 0.5, cos(pi/2) = 0: 1 - 0.9 * 0.5 = 0.55
t.near(cs(60), 0.55, EPS, "cosine: step 60 = 0.55 (halfway)")
t.eq(cs(110), 0.1, "cosine: step 110 = floor exactly")
t.eq(cs(1000), 0.1, "cosine: flat at floor after steps")
-- realistic: peak 3e-4, floor 0.1 x peak, 1000 steps, warmup 100: step 550 is halfway
-- through the decay: 3e-4 - (3e-4 - 3e-5) / 2 = 3e-4 - 1.35e-4 = 1.65e-4
local cr = S.cosine { peak = 3e-4, floor_frac = 0.1, steps = 1000, warmup = 100 }
t.near(cr(550), 1.65e-4, EPS, "cosine floor_frac: step 550 = 1.65e-4")
t.near(cr(1000), 3e-5, EPS, "cosine floor_frac: floor = 0.1 * 3e-4 = 3e-5")
-- warmup_frac = 0.05 of 1000 steps = 50 warmup steps: step 25 = 3e-4 * 25/50 = 1.5e-4, step 50 = peak
local cf = S.cosine { peak = 3e-4, steps = 1000, warmup_frac = 0.05 }
t.eq(cf.params.warmup, 50, "cosine warmup_frac 0.05 of 1000 = 50 steps")
t.near(cf(25), 1.5e-4, EPS, "cosine warmup_frac: step 25 = 1.5e-4")
t.eq(cf(50), 3e-4, "cosine warmup_frac: step 50 = peak")
-- warmup_frac rounds half up: 0.015 * 100 = 1.5 -> 2
t.eq(S.cosine { peak = 1, steps = 100, warmup_frac = 0.015 }.params.warmup, 2, "warmup_frac rounds half up (1.5 -> 2)")
t.eq(S.cosine { peak = 1, steps = 100 }(0), 1, "cosine without warmup starts at peak")

-- linear{peak=1, floor=0.2, steps=100, warmup=20} ----------------------------------------
local li = S.linear { peak = 1, floor = 0.2, steps = 100, warmup = 20 }
t.near(li(10), 0.5, EPS, "linear: step 10 = 10/20 = 0.5")
t.eq(li(20), 1, "linear: step 20 = peak")
-- step 60: k = 40 of 80 -> 1 + (0.2 - 1) * 0.5 = 0.6
t.near(li(60), 0.6, EPS, "linear: step 60 = 0.6")
t.eq(li(100), 0.2, "linear: step 100 = floor")
t.eq(li(150), 0.2, "linear: flat after")

-- inverse_sqrt{peak=1e-3, warmup=100} ----------------------------------------------------
local is = S.inverse_sqrt { peak = 1e-3, warmup = 100 }
t.near(is(50), 5e-4, EPS, "inverse_sqrt: step 50 = 1e-3 * 50/100")
t.eq(is(100), 1e-3, "inverse_sqrt: step 100 = peak * sqrt(100/100)")
t.near(is(400), 5e-4, EPS, "inverse_sqrt: step 400 = 1e-3 * sqrt(100/400) = 5e-4")
t.near(is(10000), 1e-4, EPS, "inverse_sqrt: step 10000 = 1e-3 * sqrt(1/100) = 1e-4")

-- wsd{peak=1, warmup=10, stable=80, decay=10, floor=0.1} ----------------------------------
local ws = S.wsd { peak = 1, warmup = 10, stable = 80, decay = 10, floor = 0.1 }
t.near(ws(5), 0.5, EPS, "wsd: warmup step 5 = 0.5")
t.eq(ws(10), 1, "wsd: step 10 = peak")
t.eq(ws(89), 1, "wsd: step 89 still stable")
t.eq(ws(90), 1, "wsd: step 90 = decay start, peak")
-- step 95: 1 + (0.1 - 1) * 5/10 = 0.55
t.near(ws(95), 0.55, EPS, "wsd: step 95 = 0.55 (linear decay)")
t.eq(ws(100), 0.1, "wsd: step 100 = floor")
t.eq(ws(200), 0.1, "wsd: flat after")
t.eq(ws:length(), 100, "wsd: length = 10 + 80 + 10")
-- shapes at x = 1/4 of a 4-step decay (step 91 of warmup 10 + stable 80 + decay 4):
--   linear 1 - 0.9 * 0.25 = 0.775; cosine 1 - 0.45 * (1 - cos(pi/4)) = 0.868198052;
--   sqrt 0.1 + 0.9 * (1 - sqrt(0.25)) = 0.55
local function wsd_shape(sh) return S.wsd { peak = 1, warmup = 10, stable = 80, decay = 4, floor = 0.1, shape = sh } end
t.near(wsd_shape("linear")(91), 0.775, EPS, "wsd linear shape at x=0.25")
t.near(wsd_shape("cosine")(91), 0.868198052, 1e-9, "wsd cosine shape at x=0.25")
t.near(wsd_shape("sqrt")(91), 0.55, EPS, "wsd sqrt shape at x=0.25")

-- rewarm ---------------------------------------------------------------------------------
-- Paper setting: pretrain cosine to 0.1 x 3e-4, then re-warm to 6e-4 over 100 steps and
-- decay to 0.1 x 6e-4 by from + 1000.
local pre = S.cosine { peak = 3e-4, floor_frac = 0.1, steps = 1000, warmup = 100 }
local rw = S.rewarm { from = 1000, warmup = 100, peak = 6e-4, floor_frac = 0.1, steps = 1000, before = pre }
t.eq(rw(500), pre(500), "rewarm: before 'from' it follows 'before'")
t.eq(rw(999), pre(999), "rewarm: step 999 = before(999)")
t.eq(rw(1000), pre(1000), "rewarm: continuous at from: lr(1000) = before(1000)")
-- step 1050: 3e-5 + (6e-4 - 3e-5) * 50/100 = 3e-5 + 2.85e-4 = 3.15e-4
t.near(rw(1050), 3.15e-4, EPS, "rewarm: halfway through warmup = 3.15e-4")
t.eq(rw(1100), 6e-4, "rewarm: reaches new peak at from + warmup exactly")
-- step 1550: 450 of 900 decay steps: 6e-4 - (6e-4 - 6e-5) / 2 = 3.3e-4
t.near(rw(1550), 3.3e-4, EPS, "rewarm: cosine halfway = 3.3e-4")
t.near(rw(2000), 6e-5, EPS, "rewarm: floor at from + steps")
t.near(rw(5000), 6e-5, EPS, "rewarm: flat after")
t.eq(rw:length(), 2000, "rewarm: length = from + steps")
-- Re-warm from the middle of a decay: before = cs (above), before(60) = 0.55.
local rm = S.rewarm { from = 60, warmup = 10, peak = 2, floor = 0.2, steps = 50, before = cs }
t.near(rm(60), 0.55, EPS, "rewarm mid-decay: lr(from) = before(from) = 0.55")
t.ok(math.abs(rm(60) - rm(59)) < 0.02, "rewarm mid-decay: no jump between from-1 and from")
-- step 65: 0.55 + (2 - 0.55) * 5/10 = 1.275
t.near(rm(65), 1.275, EPS, "rewarm mid-decay: step 65 = 1.275")
t.eq(rm(70), 2, "rewarm mid-decay: peak at from + warmup")
-- step 90: 20 of 40 decay steps: 2 - 1.8 / 2 = 1.1
t.near(rm(90), 1.1, EPS, "rewarm mid-decay: step 90 = 1.1")
t.eq(rm(110), 0.2, "rewarm mid-decay: floor at 110")
-- Without before: the floor until from; warmup_frac is a fraction of steps (0.01 * 1000 = 10).
local rn = S.rewarm { from = 100, warmup_frac = 0.01, peak = 1, floor = 0.1, steps = 1000 }
t.eq(rn(0), 0.1, "rewarm without before: floor before 'from'")
t.eq(rn.params.warmup, 10, "rewarm warmup_frac 0.01 of 1000 = 10")
-- step 105: 0.1 + 0.9 * 5/10 = 0.55
t.near(rn(105), 0.55, EPS, "rewarm without before: step 105 = 0.55")
t.eq(rn(110), 1, "rewarm without before: peak at 110")
-- A plain function as 'before'.
local rf = S.rewarm { from = 4, warmup = 2, peak = 1, steps = 10, before = function(s) return 0.1 * s end }
t.near(rf(3), 0.3, EPS, "rewarm with function before: step 3 = 0.3")
t.near(rf(5), 0.7, EPS, "rewarm with function before: step 5 = 0.4 + 0.6/2 = 0.7")

-- sequence -------------------------------------------------------------------------------
local sq = S.sequence {
  { steps = 100, S.warmup { steps = 100, peak = 1 } },
  { steps = 50, schedule = 0.5 },
  { S.cosine { peak = 1, floor = 0, steps = 10 } },
}
t.eq(sq.offsets[2], 100, "sequence: phase 2 starts at 100")
t.eq(sq.offsets[3], 150, "sequence: phase 3 starts at 150")
t.near(sq(50), 0.5, EPS, "sequence: step 50 in phase 1 (local 50 of warmup 100)")
t.eq(sq(99), 0.99, "sequence: step 99 = 99/100")
t.eq(sq(100), 0.5, "sequence: step 100 is phase 2 local 0")
t.eq(sq(149), 0.5, "sequence: step 149 still phase 2")
t.eq(sq(150), 1, "sequence: step 150 is phase 3 local 0 (cosine at peak)")
t.near(sq(155), 0.5, EPS, "sequence: step 155 = cosine local 5 of 10 = 0.5")
t.eq(sq(160), 0, "sequence: step 160 = floor")
t.eq(sq(10000), 0, "sequence: past the end the last phase keeps counting")
t.eq(sq:length(), 160, "sequence: length = 150 + last phase's length 10")
local sf = S.sequence { { steps = 3, function(s) return s end }, { function(s) return 10 + s end } }
t.eq(sf(2), 2, "sequence of functions: step 2 in phase 1")
t.eq(sf(3), 10, "sequence of functions: step 3 = phase 2 local 0")
t.eq(sf(5), 12, "sequence of functions: step 5 = phase 2 local 2")
t.eq(sf:length(), nil, "sequence ending in an unbounded function has no length")

-- from -----------------------------------------------------------------------------------
local ff = S.from(function(s) return 1 / (s + 1) end, "one over step")
t.eq(ff(3), 0.25, "from: wraps the function")
t.eq(ff:describe(), "one over step", "from: describe uses the given text")
t.err(lit("schedule: function bad returned nil at step 6 (expected a finite number >= 0)"),
  S.from(function(s) if s < 5 then return 1 end end, "bad"), 6)
t.err(lit("schedule: function neg returned -1 at step 0"), S.from(function() return -1 end, "neg"), 0)

-- describe / sample / config -------------------------------------------------------------
t.eq(cr:describe(), "cosine(peak=0.0003, floor=3e-05, steps=1000, warmup=100)", "describe cosine")
t.eq(c:describe(), "constant(lr=0.0003)", "describe constant")
t.eq(ws:describe(), "wsd(peak=1, warmup=10, stable=80, decay=10, floor=0.1, shape=linear)", "describe wsd")
t.eq(sq:describe(), "sequence(100 steps of warmup(peak=1, steps=100); 50 steps of constant(lr=0.5); then cosine(peak=1, floor=0, steps=10, warmup=0))", "describe sequence")
t.ok(rw:describe():find("^rewarm%(from=1000, warmup=100, peak=0.0006, floor=6e%-05, steps=1000, before=cosine%(") ~= nil, "describe rewarm includes before")
t.eq(tostring(c), c:describe(), "tostring = describe")
local smp = cs:sample(3)
t.eq(#smp, 3, "sample(3) gives 3 points")
t.eq(smp[1].step, 0, "sample: first point is step 0")
t.eq(smp[2].step, 55, "sample: middle point is step 55 (of length 110)")
t.eq(smp[3].step, 110, "sample: last point is the natural length")
t.eq(smp[3].lr, 0.1, "sample: lr at 110 = floor")
t.eq(smp[2][2], cs(55), "sample: p[2] is the lr")
local s4 = c:sample(4, 10)   -- (i-1) * 10/3 rounded half up: 0, 3, 7, 10
t.eq(table.concat({ s4[1].step, s4[2].step, s4[3].step, s4[4].step }, ","), "0,3,7,10", "sample(4, 10) steps")
t.err(lit("'total_steps' is required for constant(lr=0.0003)"), function() return c:sample(5) end)
-- A huge point count is refused before anything is allocated (limit 10^7 points).
t.err(lit("kiln.schedule:sample: argument 'n' must be a whole number in 1..10000000, got 2147483648"), function() return c:sample(2 ^ 31, 10) end)
t.err(lit("kiln.schedule:sample: argument 'n' must be a whole number in 1..10000000, got " .. math.mininteger), function() return c:sample(math.mininteger, 10) end)
t.err(lit("kiln.schedule:sample: argument 'n' must be a whole number in 1..10000000, got nan"), function() return c:sample(0 / 0, 10) end)
t.err(lit("kiln.schedule:sample: called on number, expected a kiln.schedule"), function() return c.sample(5, 3) end)
for _, s in ipairs { cr, li, is, ws, rw, sq } do
  local back = S.make(s:config())
  local same = true
  for _, st in ipairs { 0, 1, 37, 99, 100, 550, 1000, 1050, 1999, 2500 } do
    if back(st) ~= s(st) then same = false end
  end
  t.ok(same, "config round trip: " .. s.kind)
end
t.eq(S.make(3e-4)(9), 3e-4, "make(number) = constant")
t.eq(S.make { kind = "warmup", steps = 4, peak = 2 }(2), 1, "make from a config table")
t.ok(S.is(S.make(function() return 1 end)), "make(function) gives a schedule")

-- argument errors ------------------------------------------------------------------------
t.err(lit("schedule.cosine: 'floor' must be <= 'peak' (got 0.001 > 0.0003)"), S.cosine, { peak = 3e-4, floor = 1e-3, steps = 10 })
t.err(lit("schedule.cosine: unknown field 'peek'"), S.cosine, { peek = 3e-4, steps = 10 })
t.err(lit("schedule.cosine: 'peak' is required (a finite number >= 0)"), S.cosine, { steps = 10 })
t.err(lit("schedule.cosine: 'peak' must be a finite number >= 0 (got \"3e-4\")"), S.cosine, { peak = "3e-4", steps = 10 })
t.err(lit("schedule.cosine: 'steps' must be a whole number >= 1 (got 10.5)"), S.cosine, { peak = 1, steps = 10.5 })
t.err(lit("schedule.cosine: 'warmup' must be a whole number of steps (got 0.01); use 'warmup_frac'"), S.cosine, { peak = 1, steps = 10, warmup = 0.01 })
t.err(lit("schedule.cosine: give 'warmup' (steps) or 'warmup_frac'"), S.cosine, { peak = 1, steps = 10, warmup = 1, warmup_frac = 0.1 })
t.err(lit("schedule.cosine: 'warmup' must be < 'steps' (got 10 >= 10)"), S.cosine, { peak = 1, steps = 10, warmup = 10 })
t.err(lit("schedule.linear: 'floor_frac' must be a number in [0, 1] (got 2)"), S.linear, { peak = 1, steps = 10, floor_frac = 2 })
t.err(lit("schedule.wsd: 'shape' must be \"linear\", \"cosine\" or \"sqrt\""), S.wsd, { peak = 1, stable = 1, decay = 1, shape = "exp" })
t.err(lit("schedule.inverse_sqrt: 'warmup' must be a whole number >= 1 (got 0)"), S.inverse_sqrt, { peak = 1, warmup = 0 })
t.err(lit("schedule.rewarm: 'before': expected a schedule"), S.rewarm, { from = 1, peak = 1, steps = 2, before = true })
t.err(lit("schedule.sequence: phase 1: 'steps' is required (only the last phase may omit it)"), S.sequence, { { 1 }, { 2 } })
t.err(lit("schedule.sequence: phase 2: has no schedule"), S.sequence, { { steps = 1, 1 }, { steps = 2 } })
t.err(lit("schedule: unknown schedule kind \"cosin\""), S.make, { kind = "cosin" })
t.err(lit("schedule: step must be a non-negative number (got -1)"), function() return cs(-1) end)
t.err(lit("schedule: step must be a non-negative number (got nan)"), function() return cs(0 / 0) end)
t.err(lit("schedule.constant: expected a table of named fields"), S.constant, "fast")

t.done()
