#!/usr/bin/env kiln
-- The prompt's Lua side (kiln.repl: display, completion, help) and `kiln -i` fed from a
-- pipe (lua.c's design: the same loop reads lines whether or not stdin is a terminal).
-- The terminal behaviour (Tab, Ctrl-C, Ctrl-D) is in test_repl_pty.lua.
local t = dofile("tests/lua/tap.lua")
local repl = kiln.repl
local build = os.getenv("KILN_BUILD") or "build"
local kiln_bin = build .. "/kiln"
local dir = t.tmpdir()

local sh = t.sh
local function session(lines)
  local f = assert(io.open(dir .. "/in.lua", "wb"))
  f:write(table.concat(lines, "\n"), "\n")
  f:close()
  return sh("HOME=" .. dir .. " " .. kiln_bin .. " -i < " .. dir .. "/in.lua")
end

-- Display ------------------------------------------------------------------------------
local f = repl.format
t.eq(f(42), "42", "integers")
t.eq(f(0.5), "0.5", "floats")
t.eq(f("raw text"), "raw text", "a string result prints as is")
t.eq(f({1, 2, "x"}), '{1, 2, "x"}', "a short array on one line, strings quoted inside")
t.eq(f({b = 2, a = 1, [10] = true}), "{[10] = true, a = 1, b = 2}", "keys sorted, non-identifiers bracketed")
t.eq(f({a = {b = {c = {d = {}}}}}), "{a = {b = {c = {...} (1 entry)}}}", "nesting stops at the depth limit")
local cyc = {}; cyc.self = cyc
t.ok(f(cyc):find("<cycle", 1, true), "a table that contains itself")
local big = {}
for i = 1, 100 do big[i] = i end
t.ok(f(big):find("... (60 more)", 1, true), "long tables are cut at the item limit")
local wide = {}
for i = 1, 12 do wide["key_number_" .. i] = i end
t.ok(f(wide):find("\n  key_number_1 = 1,\n", 1, true), "a table too wide for one line prints one entry a line")
t.eq(f(kiln.model), "function kiln.model", "kiln functions print their name")

local v = f(kiln.tensor_from{{1, 2, 3}, {4, 5, 6}})
t.ok(v:find("^kiln.Tensor%(2x3%)  min 1  max 6  mean 3.5"), "a tensor shows its shape and statistics")
t.ok(v:find("[[1., 2., 3.],\n [4., 5., 6.]]", 1, true), "and its values, in rows")
local rows = {}
for i = 1, 100 do rows[i] = {} for j = 1, 50 do rows[i][j] = i * 1000 + j end end
v = f(kiln.tensor_from(rows))
t.ok(v:find("[[  1001.,   1002.,   1003., ...,   1048.,   1049.,   1050.],", 1, true), "a big tensor: first and last columns")
t.ok(v:find(" ...,\n [ 98001.", 1, true) and v:find("100050.]]", 1, true), "and first and last rows, NumPy style")
local _, nlines = v:gsub("\n", "")
t.ok(nlines <= 9, "a 100x50 tensor prints in a few lines")
t.ok(f(kiln.tensor(2, 2, 2)):find("[[[0., 0.],\n  [0., 0.]],\n\n [[0., 0.],", 1, true), "3-D tensors as nested blocks")
t.ok(f(kiln.tensor_from{1e-6, 2e-6}):find("1.0000e-06", 1, true), "tiny values in scientific notation")

local m = kiln.model{n_layer = 1, n_head = 2, n_embd = 32, block_size = 32}
v = f(m)
t.ok(v:find("kiln.Model  n_layer=1  n_head=2  n_embd=32  block_size=32  vocab_size=256", 1, true), "a model shows its config")
local n = m:num_params()
local grouped = tostring(n):reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
t.ok(v:find("parameters  " .. grouped, 1, true), "and its parameter count")
local opt = kiln.adamw(m, {lr = 1e-3})
v = f(opt)
t.ok(v:find("kiln.AdamW  step 0", 1, true) and v:find("lr=0.001  beta1=0.9", 1, true), "an optimizer shows its step and hyperparameters")
t.eq(f(kiln.schedule.cosine{peak = 3e-4, steps = 100, warmup = 10}), "schedule cosine(peak=0.0003, floor=0, steps=100, warmup=10)", "a schedule shows its describe()")
t.eq(f(kiln.weighting.tail{}), "weighting tail(fraction=0.1, factor=0.5)", "a weighting shows its describe()")
t.eq(f({s = kiln.schedule.constant(1)}), "{s = constant(lr=1)}", "schedules inside tables too")

-- Completion -----------------------------------------------------------------------------
local c = repl.complete
rawset(_G, "mdl", m)
rawset(_G, "optim", opt)
local function has(list, x) for _, y in ipairs(list) do if y == x then return true end end return false end
t.ok(has(c("mdl:for"), "mdl:forward("), "methods of a userdata (mdl:for -> mdl:forward()")
t.eq(#c("mdl:for"), 1, "and only the matching ones")
t.ok(has(c("optim:st"), "optim:step("), "methods of kiln.AdamW come from __methods")
t.ok(has(c("kiln.sch"), "kiln.schedule"), "fields of a table, including modules not loaded yet")
t.ok(has(c("kiln.schedule.cos"), "kiln.schedule.cosine("), "fields of a nested table")
t.ok(has(c("pri"), "print("), "global names")
t.ok(has(c("whi"), "while"), "keywords")
t.ok(has(c("string.fo"), "string.format("), "standard library fields")
rawset(_G, "str", "abc")
t.ok(has(c("str:up"), "str:upper("), "string methods")
t.eq(#c("nosuchthing.x"), 0, "nothing for an unknown table")
t.ok(not has(c("kiln_"), "kiln_repl_print("), "the prompt's own globals are not offered")

-- Help ------------------------------------------------------------------------------------
local h = repl.help_text
t.ok(h(kiln.model):find("GPT-2 style model", 1, true), "help(kiln.model): the reference entry")
t.ok(h(kiln.train):find("The training loop", 1, true) or h(kiln.train):find("training loop", 1, true), "help(kiln.train)")
t.ok(h("kiln.train"):find("training loop", 1, true), "help by name")
t.ok(h(m.forward):find("mean loss over the batch", 1, true), "a method: its row of the class table")
t.ok(h("mdl:backward"):find("gradient of the last forward", 1, true), "help('m:backward') through the value's class")
t.ok(h(m):find("m:zero_grad()", 1, true), "help(model): the class's methods")
t.ok(h(kiln.schedule.cosine):find("cos(pi", 1, true), "library functions from their docs page")
t.ok(h(kiln.schedule.constant(1)):find("s:describe()", 1, true), "help(schedule value): its methods")
t.ok(h(print):find("lua.org/manual", 1, true), "Lua's own functions point to the manual")
t.ok(h():find("Ctrl-C", 1, true), "help() explains the prompt")

-- The loop, fed from a pipe ---------------------------------------------------------------
local out = session({ "x = 20", "x + 1, 'b'", "function g(a)", "  return a * 3", "end", "g(x)",
                      "error('bad' .. 'news')", "x", "=x * 2", "return x, nil", "?kiln.batch",
                      "{1, {2}}" })
t.ok(out:find("21\tb\n", 1, true), "expressions print, several results on one line")
t.ok(out:find("\n60\n", 1, true), "a function defined over several lines")
t.ok(out:find("badnews", 1, true) and out:find("stack traceback", 1, true), "an error with a traceback")
t.ok(out:find("\n20\n40\n", 1, true), "the session goes on after the error; =expr works")
t.ok(out:find("20\tnil", 1, true), "nil results are printed")
t.ok(out:find("Room for B windows", 1, true), "?name prints help")
t.ok(out:find("{1, {2}}", 1, true), "tables pretty-printed")
out = session({ "for i = 1, 3 do", "print(i)" })
t.ok(out:find("'end' expected", 1, true), "end of input inside a statement reports the parser's message")
out, n = session({ "_PROMPT = 'p> '", "1" })
t.eq(n, 0, "end of input leaves with status 0")
local script = dir .. "/s.lua"
local fh = assert(io.open(script, "w")); fh:write("answer = 41\n"); fh:close()
out = sh("echo 'answer + 1' | " .. kiln_bin .. " -i " .. script)
t.ok(out:find("42", 1, true), "kiln -i script runs the script, then reads commands")
out = sh("echo 'print(1 + 1)' | " .. kiln_bin)
t.eq(out, "2\n", "without -i, stdin that is not a terminal is a script")
out = sh("cd / && echo '?kiln.model' | " .. (kiln_bin:sub(1, 1) == "/" and kiln_bin or os.getenv("PWD") .. "/" .. kiln_bin) .. " -i")
t.ok(out:find("GPT-2 style model", 1, true), "help works from any directory (the docs are in the binary)")
t.done()
