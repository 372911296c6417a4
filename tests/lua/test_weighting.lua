#!/usr/bin/env kiln
-- kiln.weighting: every weighting's vector for T = 10 and T = 256 against the boundary rule
-- of docs/schedules-and-weightings.md (n(T,f) = max(1, round-half-up(T*f))), normalize
-- semantics, and the error messages. Expected vectors are built from literal 0-based ranges.
local t = dofile("tests/lua/tap.lua")
local W = require "kiln.weighting"

local function lit(s) return (s:gsub("%p", "%%%0")) end

-- Expected vector: 1 everywhere, `factor` on 0-based positions a..b.
local function expect(T, a, b, factor)
  local v = {}
  for i = 1, T do v[i] = 1 end
  for p = a, b do v[p + 1] = factor end
  return v
end

-- Compare whole vectors; report the first difference.
local function same(got, want, what, tol)
  tol = tol or 0
  if #got ~= #want then return t.ok(false, what .. (" (length %d, want %d)"):format(#got, #want)) end
  for i = 1, #want do
    if math.abs(got[i] - want[i]) > tol then
      t.note(("%s: position %d (0-based): got %s, want %s"):format(what, i - 1, got[i], want[i]))
      return t.ok(false, what)
    end
  end
  return t.ok(true, what)
end

local function sum(v) local s = 0; for i = 1, #v do s = s + v[i] end; return s end

-- uniform ----------------------------------------------------------------------------------
same(W.uniform():vector(10), expect(10, 0, -1, 0), "uniform T=10: all ones")
same(W.uniform():vector(256), expect(256, 0, -1, 0), "uniform T=256: all ones")
t.eq(W.uniform().normalize, false, "uniform: normalize defaults to false")

-- head / middle / tail with the paper's fractions ----------------------------------------
-- T = 10: 10 * 0.1 = 1 -> head 0..0, tail 9..9, middle 1..8
same(W.head():vector(10), expect(10, 0, 0, 0.5), "head T=10: position 0 x0.5")
same(W.middle():vector(10), expect(10, 1, 8, 0.5), "middle T=10: positions 1..8 x0.5")
same(W.tail():vector(10), expect(10, 9, 9, 0.5), "tail T=10: position 9 x0.5")
-- T = 256: 25.6 rounds to 26 -> head 0..25, tail 230..255, middle 26..229 (204 positions)
same(W.head { fraction = 0.1, factor = 0.5 }:vector(256), expect(256, 0, 25, 0.5), "head T=256: positions 0..25 x0.5")
same(W.middle { fraction = 0.8, factor = 0.5 }:vector(256), expect(256, 26, 229, 0.5), "middle T=256: positions 26..229 x0.5")
same(W.tail { fraction = 0.1, factor = 0.5 }:vector(256), expect(256, 230, 255, 0.5), "tail T=256: positions 230..255 x0.5")

-- The three regions partition 0..T-1 exactly for every T >= 3.
local partition_ok, first_bad = true, nil
for T = 3, 1024 do
  local h, m, tl = W.head():region(T), W.middle():region(T), W.tail():region(T)
  if not (h.first == 0 and m.first == h.last + 1 and tl.first == m.last + 1 and tl.last == T - 1
          and h.count + m.count + tl.count == T and h.count == tl.count and m.count >= 1) then
    partition_ok, first_bad = false, T; break
  end
end
t.ok(partition_ok, "head{0.1} + middle{0.8} + tail{0.1} partition 0..T-1 for T = 3..1024" ..
  (first_bad and (" (fails at T=" .. first_bad .. ")") or ""))
-- Round half up at exact halves: T = 25 -> 2.5 -> 3; T = 15 -> 1.5 -> 2; T = 5 -> 0.5 -> 1.
t.eq(W.head():region(25).count, 3, "head T=25: 2.5 rounds up to 3 positions")
t.eq(W.middle():region(25).first, 3, "middle T=25 starts at position 3")
t.eq(W.middle():region(25).last, 21, "middle T=25 ends at position 21")
t.eq(W.tail():region(15).first, 13, "tail T=15: 1.5 -> 2 positions, 13..14")
t.eq(W.head():region(5).count, 1, "head T=5: 0.5 -> 1 position")
t.eq(W.head():region(4).count, 1, "head T=4: 0.4 -> at least 1 position")
t.eq(W.middle():region(2).count, 0, "middle T=2 is empty")
same(W.middle():vector(2), { 1, 1 }, "middle T=2 weighs nothing down")
local h, m, tl = W.split(256)
t.eq(h.last .. "/" .. m.first .. "-" .. m.last .. "/" .. tl.first, "25/26-229/230", "split(256) = head 0..25, middle 26..229, tail 230..255")

-- Other fractions and factors.
-- head{0.25, factor 0} T=10: 2.5 -> 3 -> positions 0..2; T=256: 64 -> 0..63
same(W.head { fraction = 0.25, factor = 0 }:vector(10), expect(10, 0, 2, 0), "head 0.25 x0 T=10: positions 0..2")
same(W.head { fraction = 0.25, factor = 0 }:vector(256), expect(256, 0, 63, 0), "head 0.25 x0 T=256: positions 0..63")
-- tail{0.05, factor 2} T=10: 0.5 -> 1 -> position 9; T=256: 12.8 -> 13 -> 243..255
same(W.tail { fraction = 0.05, factor = 2 }:vector(10), expect(10, 9, 9, 2), "tail 0.05 x2 T=10: position 9")
same(W.tail { fraction = 0.05, factor = 2 }:vector(256), expect(256, 243, 255, 2), "tail 0.05 x2 T=256: positions 243..255")
-- middle{0.5} T=10: edges (1-0.5)/2 = 0.25 -> 2.5 -> 3 -> middle 3..6; T=256: 64 -> 64..191
same(W.middle { fraction = 0.5 }:vector(10), expect(10, 3, 6, 0.5), "middle 0.5 T=10: positions 3..6")
same(W.middle { fraction = 0.5 }:vector(256), expect(256, 64, 191, 0.5), "middle 0.5 T=256: positions 64..191")
same(W.middle { fraction = 1 }:vector(10), expect(10, 0, 9, 0.5), "middle fraction 1 covers everything")
same(W.head { fraction = 1, factor = 3 }:vector(10), expect(10, 0, 9, 3), "head fraction 1 covers everything")

-- ramp: w(t) = from + (to - from) * t / (T - 1) -----------------------------------------
-- T=10, 1 -> 0.1: w(t) = 1 - 0.1 t: 1, 0.9, ..., 0.1
same(W.ramp { from = 1, to = 0.1 }:vector(10), { 1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1 }, "ramp 1->0.1 T=10", 1e-12)
local r256 = W.ramp { from = 0, to = 1 }:vector(256)
t.eq(#r256, 256, "ramp T=256 has 256 weights")
t.eq(r256[1], 0, "ramp T=256: position 0 = from")
t.near(r256[52], 0.2, 1e-12, "ramp T=256: position 51 = 51/255 = 0.2")
t.eq(r256[256], 1, "ramp T=256: position 255 = to exactly")
t.eq(W.ramp { from = 2, to = 5 }:vector(1)[1], 2, "ramp T=1 = from")

-- custom -----------------------------------------------------------------------------------
-- The callback gets 0-based token positions: weight = pos + 1 gives 1..T.
local seen = {}
local cf = W.custom(function(pos, T) seen[#seen + 1] = pos; return pos + 1 end)
local v10 = cf:vector(10)
t.eq(seen[1], 0, "custom(function): first position passed is 0")
t.eq(seen[10], 9, "custom(function): last position passed is T-1 = 9")
same(v10, { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, "custom(function) T=10")
t.eq(cf:vector(256)[256], 256, "custom(function) T=256: last weight 256")
t.eq(W.custom(function(pos, T) return T end):vector(256)[1], 256, "custom(function) receives T")
local arr = {}
for i = 1, 256 do arr[i] = i % 2 end
same(W.custom(arr):vector(256), arr, "custom(array) T=256")
same(W.custom { 2, 1, 1, 1, 1, 1, 1, 1, 1, 2 }:vector(10), { 2, 1, 1, 1, 1, 1, 1, 1, 1, 2 }, "custom{list} T=10")
t.eq(W.custom { 1, 2, normalize = true }.normalize, true, "custom{list, normalize = true}")
t.eq(W.custom({ 1, 2 }, { normalize = true }).normalize, true, "custom(list, {normalize = true})")
t.eq(W.custom { weights = { 1, 2 }, normalize = true }:vector(2)[2], 2, "custom{weights = list}")
t.ok(W.custom(arr):vector(256) ~= W.custom(arr):vector(256), "vector returns a fresh table each call")

-- normalize (docs/design.md §3.2) -----------------------------------------------------------
local hn = W.head { normalize = true }
t.eq(hn.normalize, true, "head{normalize = true} carries the flag")
same(hn:vector(10), expect(10, 0, 0, 0.5), "normalize does not change vector()")
-- T = 10: mean = (0.5 + 9) / 10 = 0.95; loss weights 0.5/0.95 and 1/0.95
t.near(hn:mean(10), 0.95, 1e-15, "head T=10: mean(w) = 0.95")
local lw = hn:loss_weights(10)
t.near(lw[1], 0.5 / 0.95, 1e-15, "normalized head T=10: position 0 = 0.5/0.95")
t.near(lw[2], 1 / 0.95, 1e-15, "normalized head T=10: position 1 = 1/0.95")
t.near(sum(lw), 10, 1e-12, "normalized weights sum to T")
-- T = 256: mean = (26 * 0.5 + 230) / 256 = 243/256; position 0 -> 0.5 * 256/243 = 128/243
t.near(hn:mean(256), 243 / 256, 1e-15, "head T=256: mean(w) = 243/256")
t.near(hn:loss_weights(256)[1], 128 / 243, 1e-15, "normalized head T=256: position 0 = 128/243")
same(W.head():loss_weights(10), expect(10, 0, 0, 0.5), "without normalize loss_weights = vector")
-- A constant per-token CE c: weighted loss sum(w c)/T is 0.95c without normalize, c with.
local c = 2.0
local function loss(weights) local s = 0; for i = 1, #weights do s = s + weights[i] * c end; return s / #weights end
t.near(loss(W.head():loss_weights(10)), 0.95 * c, 1e-12, "unnormalized head loss on constant CE = 0.95 c")
t.near(loss(hn:loss_weights(10)), c, 1e-12, "normalized head loss on constant CE = c")

-- describe / config / make -----------------------------------------------------------------
t.eq(W.head():describe(), "head(fraction=0.1, factor=0.5)", "describe head")
t.eq(hn:describe(), "head(fraction=0.1, factor=0.5, normalize)", "describe normalized head")
t.eq(W.middle():describe(), "middle(fraction=0.8, factor=0.5)", "describe middle")
t.eq(W.uniform():describe(), "uniform()", "describe uniform")
t.eq(W.ramp { from = 1, to = 0.5 }:describe(), "ramp(from=1, to=0.5)", "describe ramp")
t.eq(W.custom(arr):describe(), "custom(256 weights)", "describe custom list")
t.eq(W.custom(function() return 1 end, { name = "flat" }):describe(), "custom(flat)", "describe named custom function")
for _, w in ipairs { W.uniform(), hn, W.middle { fraction = 0.5, factor = 0.25 }, W.tail(), W.ramp { from = 0, to = 1 }, W.custom(arr) } do
  local back = W.make(w:config())
  same(back:vector(256), w:vector(256), "config round trip: " .. w:describe())
  t.eq(back.normalize, w.normalize, "config round trip keeps normalize: " .. w:describe())
end
same(W.make("tail"):vector(10), expect(10, 9, 9, 0.5), "make(\"tail\") = tail{} defaults")
same(W.make(nil):vector(10), expect(10, 0, -1, 0), "make(nil) = uniform")
same(W.make { kind = "head", fraction = 0.2, factor = 0 }:vector(10), expect(10, 0, 1, 0), "make{kind = \"head\", ...}")

-- errors ------------------------------------------------------------------------------------
t.err(lit("weighting: expected 256 weights (one per position), got 255"), function()
  local a = {}
  for i = 1, 255 do a[i] = 1 end
  return W.custom(a):vector(256)
end)
t.err(lit("weighting: expected 10 weights (one per position), got 11"), function()
  return W.custom { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 }:vector(10)
end)
t.err(lit("weighting.head: 'fraction' must be a number in (0, 1] (got 0)"), W.head, { fraction = 0 })
t.err(lit("weighting.tail: 'fraction' must be a number in (0, 1] (got 1.5)"), W.tail, { fraction = 1.5 })
t.err(lit("weighting.middle: 'factor' must be a finite number >= 0 (got -0.5)"), W.middle, { factor = -0.5 })
t.err(lit("weighting.head: 'factor' must be a finite number >= 0 (got inf)"), W.head, { factor = math.huge })
t.err(lit("weighting.head: 'normalize' must be true or false (got 1)"), W.head, { normalize = 1 })
t.err(lit("weighting.head: unknown field 'frac'"), W.head, { frac = 0.1 })
t.err(lit("weighting.ramp: 'to' is required"), W.ramp, { from = 1 })
t.err(lit("weighting.custom: weight 3 (position 2, 0-based) must be a finite number >= 0 (got -1)"), W.custom, { 1, 1, -1 })
t.err(lit("weighting.custom: weight 2 (position 1, 0-based) must be a finite number >= 0 (got nan)"), W.custom, { 1, 0 / 0 })
t.err(lit("weighting.custom: function returned nan for position 3 (0-based) of T = 10"), function()
  return W.custom(function(pos) return pos == 3 and 0 / 0 or 1 end):vector(10)
end)
t.err(lit("weighting.custom: function returned nil for position 0 (0-based)"), function()
  return W.custom(function() end):vector(4)
end)
t.err(lit("weighting: head(fraction=1, factor=0, normalize): all 10 weights are 0, cannot normalize (mean(w) = 0)"), function()
  return W.head { fraction = 1, factor = 0, normalize = true }:vector(10)
end)
t.ok(pcall(function() return W.head { fraction = 1, factor = 0 }:vector(10) end), "all-zero weights without normalize are allowed")
t.err(lit("weighting:vector: T (the context length) must be a whole number in 1..1048576 (got 0)"), function() return W.uniform():vector(0) end)
t.err(lit("weighting:vector: T (the context length) must be a whole number in 1..1048576 (got 2.5)"), function() return W.uniform():vector(2.5) end)
-- Huge context lengths are refused before anything is allocated.
t.err(lit("weighting:vector: T (the context length) must be a whole number in 1..1048576 (got 2147483648)"), function() return W.uniform():vector(2 ^ 31) end)
t.err(lit("weighting:mean: T (the context length) must be a whole number in 1..1048576 (got 1048577)"), function() return W.head():mean(1048577) end)
t.err(lit("weighting.split: T (the context length) must be a whole number in 1..1048576"), W.split, math.maxinteger)
t.eq(#W.uniform():vector(1048576), 1048576, "the largest context length is accepted")
t.err(lit("kiln.weighting:vector: called on number, expected a kiln.weighting (use value:method(...))"), W.uniform().vector, 5)
t.err(lit("weighting: unknown weighting \"heads\""), W.make, "heads")
t.err(lit("weighting.custom: expected a function(pos, T) or a list of weights (got true)"), W.custom, true)

t.done()
