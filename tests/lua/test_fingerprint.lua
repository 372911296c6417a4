#!/usr/bin/env kiln
-- kiln.fingerprint: what a run computes, as named settings and a digest; differences named
-- with both values; a function schedule is identified by its values.
local t = dofile("tests/lua/tap.lua")
local kiln = require "kiln"
local fp = require "kiln.fingerprint"

local dir = t.tmpdir()
t.write(dir .. "/train.txt", ("the quick brown fox\n"):rep(500))
t.write(dir .. "/val.txt", ("jumps over the lazy dog\n"):rep(100))

local function lr_values(f, steps) local v = {} for s = 0, steps - 1 do v[s + 1] = f(s) end return v end
local cosine = kiln.schedule.cosine { peak = 3e-3, steps = 100, warmup = 10 }
local function spec(over)
  local s = {
    model = { n_layer = 2, n_head = 2, n_embd = 32, block_size = 16, vocab_size = 256 },
    steps = 100, batch = 8, context = 16, accumulate = 1, seed = 1,
    lr = lr_values(function(s) return cosine(s) end, 100),
    data = { { name = "train", path = dir .. "/train.txt", weight = 1 } },
    eval = { { name = "val", path = dir .. "/val.txt" } }, eval_windows = 64,
    optimizer = { lr = 3e-3, beta1 = 0.9, beta2 = 0.95, weight_decay = 0.1, clip = 1 },
  }
  for k, v in pairs(over or {}) do s[k] = v end
  return s
end

local a = fp.compute(spec())
t.ok(type(a.digest) == "string" and #a.digest == 64, "a digest of 64 hex digits")
t.eq(fp.compute(spec()).digest, a.digest, "the same spec gives the same digest")
t.eq(a.settings["data.train.sha256"], (kiln.sha256_file(dir .. "/train.txt")), "data files are identified by content hash")
t.eq(a.settings["data.train.bytes"], 10000, "... and size")
t.eq(a.settings["weighting"], "uniform", "no weights: uniform")
t.eq(a.settings["lr.steps"], 100, "the LR at every step of the budget")
t.eq(#fp.diff(a, fp.compute(spec())), 0, "no differences between equal specs")

-- A function schedule with the same values is the same run; other values are not.
local fn = function(s) return cosine(s) end
t.eq(fp.compute(spec { lr = lr_values(fn, 100) }).digest, a.digest, "a Lua function schedule is fingerprinted by its values")
local longer = fp.compute(spec { steps = 700, lr = lr_values(kiln.schedule.cosine { peak = 3e-3, steps = 700, warmup = 10 }, 700) })
local d = fp.diff(a, longer)
local keys = {}
for _, x in ipairs(d) do keys[x.key] = x end
t.ok(keys["train.steps"] and keys["train.steps"].old == 100 and keys["train.steps"].new == 700, "a changed step count is named with both values")
t.ok(keys["lr.sha256"] ~= nil and keys["lr.steps"] ~= nil, "... and so is the LR sequence")
t.ok(fp.describe(d):find("train.steps: 100 -> 700", 1, true), "describe: 'train.steps: 100 -> 700'")

-- Weightings: a changed weighting function between a stop and a restart must show.
local w1, w100 = {}, {}
for i = 1, 16 do local p = (i - 1) / 15; w1[i] = 1 + 1 * p; w100[i] = 1 + 100 * p end
local d2 = fp.diff(fp.compute(spec { weights = w1 }), fp.compute(spec { weights = w100 }))
local text = fp.describe(d2)
t.ok(text:find("weighting.max: 2 -> 101", 1, true), "a changed weighting vector is named: " .. text)

-- Data: the same path with other content differs.
local before = fp.compute(spec())
t.write(dir .. "/train.txt", ("the quick brown cat\n"):rep(500))
local after = fp.compute(spec())
local dd = fp.describe(fp.diff(before, after))
t.ok(dd:find("data.train.sha256", 1, true) and not dd:find("data.train.bytes", 1, true), "same size, new content: the hash differs (" .. dd .. ")")

t.err("kiln.fingerprint: compute: argument 'spec' must be a table, got number", fp.compute, 3)
t.err("kiln.fingerprint: spec.lr%[2%] is nan, expected a number", fp.compute, spec { lr = { 1, 0 / 0 } })
t.err("kiln.fingerprint: cannot read data file", fp.compute, spec { data = { { name = "x", path = dir .. "/none", weight = 1 } } })
t.done()
