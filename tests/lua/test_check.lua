#!/usr/bin/env kiln
-- kiln.check: the argument checks of the Lua library (messages name the function, the
-- argument and what was expected; values pass through, integers converted).
local t = dofile("tests/lua/tap.lua")
local kiln = require "kiln"
local check = require "kiln.check"

local function lit(s) return (s:gsub("%p", "%%%0")) end
local who = "kiln.demo.f"

t.eq(check.arg(who, "x", 5, "number|table"), 5, "arg passes a value of one of the kinds through")
t.err(lit("kiln.demo.f: argument 'small' must be a kiln.Model, got number"), check.arg, who, "small", 5, "kiln.Model")
t.err(lit("kiln.demo.f: argument 'x' must be a number or a table, got string"), check.arg, who, "x", "s", "number|table")
t.err(lit("kiln.demo.f: argument #2 must be a string, got nil"), check.arg, who, 2, nil, "string")
t.eq(check.arg(who, "x", nil, "?table"), nil, "'?' allows nil")
t.err(lit("argument 'x' must be a table, got kiln.schedule"), check.arg, who, "x", kiln.schedule.constant(1), "table")
t.ok(check.arg(who, "f", kiln.schedule.constant(1), "callable"), "a table with __call is callable")
local m = kiln.model { vocab_size = 256, block_size = 8, n_layer = 1, n_head = 1, n_embd = 8 }
t.eq(check.arg(who, "model", m, "kiln.Model"), m, "a live model passes")
m:close()
t.err(lit("kiln.demo.f: argument 'model' is a closed kiln.Model"), check.arg, who, "model", m, "kiln.Model")

t.eq(math.type(check.integer(who, "n", 3.0)), "integer", "integer converts 3.0 to 3")
t.err(lit("kiln.demo.f: argument 'n' must be a whole number in 1..10, got 11"), check.integer, who, "n", 11, 1, 10)
t.err(lit("kiln.demo.f: argument 'n' must be a whole number >= 1, got 2.5"), check.integer, who, "n", 2.5, 1)
t.err(lit("kiln.demo.f: argument 'n' must be a whole number in 1..10000000, got 2147483648"), check.count, who, "n", 2 ^ 31, check.MAX_SAMPLES)
t.err(lit("kiln.demo.f: argument 'n' must be a whole number, got 9.2233720368547758e+18"), check.integer, who, "n", 2 ^ 63)
t.eq(check.integer(who, "n", math.mininteger), math.mininteger, "the minimum integer is an integer")
t.err(lit("kiln.demo.f: argument 'lr' must be a finite number >= 0, got nan"), check.number, who, "lr", 0 / 0, 0)
t.err(lit("kiln.demo.f: argument 'lr' must be a finite number > 0, got inf"), check.positive, who, "lr", math.huge)
t.err(lit("kiln.demo.f: argument 'x' must be a finite number, got -inf"), check.finite, who, "x", -math.huge)
t.err(lit("kiln.demo.f: argument 'name' must be a non-empty string, got string"), check.string, who, "name", "", true)
t.err(lit("kiln.demo.f: argument 'xs'[2] must be a number, got string"), check.numbers, who, "xs", { 1, "a" })
t.err(lit("kiln.demo.f: argument 'xs'[1] must be a finite number, got nan"), check.numbers, who, "xs", { 0 / 0 }, true)
t.err(lit("kiln.demo.f: argument 'ids'[2] must be an integer, got 1.5"), check.list, who, "ids", { 1, 1.5 }, "integer")
t.err(lit('kiln.demo.f: argument \'opts\' has an unknown field "shrnk" (fields: seed, shrink)'), check.fields, who, "opts", { shrnk = 1 }, { "shrink", "seed" })
t.err(lit('kiln.demo.f: argument \'mode\' must be one of "stack", "interleave", got string'), check.option, who, "mode", "x", { "stack", "interleave" })
t.err(lit("kiln.demo.f: called on number, expected a kiln.schedule (use value:method(...))"), check.self, who, 5, "kiln.schedule")
t.eq(select(2, check.call(who, function(a) return 1, a end, 7)), 7, "call returns f's results")
t.err("^" .. lit("kiln.demo.f: boom"), check.call, who, function() error("boom") end)
t.err(lit("kiln.check.arg: argument 'who' must be a string, got nil"), check.arg, nil, "x", 1, "number")
t.err(lit("kiln.check.arg: argument 'kinds' must be a string, got nil"), check.arg, who, "x", 1)
-- The documented limits, where kiln.train and friends use them.
local ds = kiln.dataset("tests/data/tiny_en.txt")
local function run(extra)
  local o = { model = { vocab_size = 256, block_size = 8, n_layer = 1, n_head = 1, n_embd = 8 }, data = ds,
              steps = 1, batch = 2, context = 8, quiet = true }
  for k, v in pairs(extra) do o[k] = v end
  return kiln.train(o)
end
t.err(lit("kiln.train: 'accumulate' must be an integer in 1..65536 (got 2147483648)"), run, { accumulate = 2 ^ 31 })
t.err(lit("kiln.train: 'batch' must be an integer in 1..1048576 (got " .. math.maxinteger .. ")"), run, { batch = math.maxinteger })
t.err(lit("kiln.train: argument 'eval.batch' must be a whole number in 1..1048576, got 4294967296"), run, { eval = { batch = 2 ^ 32 } })
t.err(lit("kiln.train: argument 'log_every' must be a whole number >= 1, got 0"), run, { log_every = 0 })
t.err(lit("kiln.train: 'optimizer': field 'lr' must be a number"), run, { optimizer = { lr = "x" } })
t.err(lit("kiln.train: the on_step hook failed at step 1: boom"), run, { on_step = function() error("boom", 0) end })
t.ok(run({ accumulate = 2 }).status == "complete", "a run within the limits trains")
t.err(lit("kiln.train.evaluate: argument 'T' must be a whole number in 1..1048576, got 2147483648"),
  kiln.train.evaluate, kiln.model { vocab_size = 256, block_size = 8, n_layer = 1, n_head = 1, n_embd = 8 }, ds, 2 ^ 31)
t.done()
