#!/usr/bin/env kiln
-- kiln.config, the one settings convention of every experiment: the layer order (defaults <
-- config=FILE < quick profile < key=value), config= anywhere, out= used exactly, values from
-- YAML files checked like the command line's (naming file and key), ranges, one-line
-- errors from the host, and `kiln --help` listing every command.
local t = dofile("tests/lua/tap.lua")
local kiln = require "kiln"
local config = kiln.config
local build = os.getenv("KILN_BUILD") or "build"
local kiln_bin = build .. "/kiln"
local dir = t.tmpdir()
local write, sh = t.write, t.sh

local function lit(s) return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")) end

-- Layers --------------------------------------------------------------------------------
local defaults = {
  quick = false, out = "runs/x", steps = 100, lr = 0.001, name = "base",
  model = { n_layer = 2, n_embd = 64 }, seeds = { 1, 2, 3 },
  quick_settings = { out = "runs/x-quick", steps = 10, model = { n_layer = 1 } },
}
write(dir .. "/over.yaml", "steps: 50\nname: from-file\nmodel:\n  n_embd: 32\n  n_layer: 3\n")

local c = config.resolve(defaults, {})
t.ok(c.steps == 100 and c.out == "runs/x" and c.model.n_layer == 2, "defaults alone")
c = config.resolve(defaults, { "config=" .. dir .. "/over.yaml" })
t.ok(c.steps == 50 and c.name == "from-file" and c.model.n_embd == 32 and c.model.n_layer == 3 and c.lr == 0.001,
  "a config file overrides the defaults it names, leaf by leaf")
c = config.resolve(defaults, { "config=" .. dir .. "/over.yaml", "quick=true" })
t.ok(c.steps == 10 and c.model.n_layer == 1 and c.model.n_embd == 32 and c.name == "from-file",
  "the quick profile overrides the config file")
c = config.resolve(defaults, { "steps=7", "quick=true", "config=" .. dir .. "/over.yaml", "model.n_layer=5" })
t.ok(c.steps == 7 and c.model.n_layer == 5 and c.model.n_embd == 32,
  "the command line overrides the quick profile and the file, wherever they stand")
t.eq(math.type(c.steps), "integer", "integer settings stay integers")
write(dir .. "/quick.yaml", "quick: true\n")
t.eq(config.resolve(defaults, { "config=" .. dir .. "/quick.yaml" }).steps, 10, "quick: true in a file selects the quick profile")
t.eq(config.resolve(defaults, { "config=" .. dir .. "/quick.yaml", "quick=false" }).steps, 100,
  "quick=false on the command line deselects it")
t.eq(defaults.steps, 100, "resolve leaves the defaults alone")

-- config= anywhere.
for _, args in ipairs {
  { "config=" .. dir .. "/over.yaml", "lr=0.5" }, { "lr=0.5", "config=" .. dir .. "/over.yaml" },
  { "name=n", "config=" .. dir .. "/over.yaml", "lr=0.5" } } do
  c = config.resolve(defaults, args)
  t.ok(c.steps == 50 and c.lr == 0.5, "config= at position " .. (function()
    for i, a in ipairs(args) do if a:find("^config=") then return i end end end)())
end
write(dir .. "/second.yaml", "steps: 60\n")
t.eq(config.resolve(defaults, { "config=" .. dir .. "/over.yaml", "config=" .. dir .. "/second.yaml" }).steps, 60,
  "several config files apply in order")

-- out= exactly.
c = config.resolve(defaults, { "quick=true", "out=" .. dir .. "/mine" })
t.eq(c.out, dir .. "/mine", "out= is used exactly, also with quick=true")
t.eq(config.resolve(defaults, { "quick=true" }).out, "runs/x-quick", "the quick profile's own out otherwise")
c = config.resolve("experiments/reweighting.yaml", { "quick=true", "out=" .. dir .. "/rw" })
t.eq(c.out, dir .. "/rw", "reweighting.yaml: out= exactly with quick=true")
t.eq(config.resolve("experiments/reweighting.yaml", {}).out, "runs/reweighting", "reweighting.yaml: the default out")

-- opts.whole: a map of the user's own names, replaced as a whole from a file or the command
-- line; `key.name=v` adds one entry; the function's verdict names the source.
do
  local d = { sets = { a = "a.txt", b = "b.txt" }, steps = 1 }
  local function paths(v)
    if type(v) == "string" then return { one = v } end
    if type(v) ~= "table" then return nil, "a path or a map of paths" end
    for _, p in pairs(v) do if type(p) ~= "string" then return nil, "a path or a map of paths" end end
    return v
  end
  local opts = { whole = { sets = paths } }
  write(dir .. "/sets.yaml", "sets:\n  x: x.txt\n")
  c = config.resolve(d, { "config=" .. dir .. "/sets.yaml" }, opts)
  t.ok(c.sets.x == "x.txt" and c.sets.a == nil, "whole: a file's map replaces the default map, new names and all")
  write(dir .. "/sets1.yaml", "sets: only.txt\n")
  t.eq(config.resolve(d, { "config=" .. dir .. "/sets1.yaml" }, opts).sets.one, "only.txt",
    "whole: the function turns a file's single path into a map")
  c = config.resolve(d, { "sets.c=c.txt", "sets.a=" }, opts)
  t.ok(c.sets.c == "c.txt" and c.sets.a == "" and c.sets.b == "b.txt", "whole: key.name=v adds or replaces one entry")
  t.eq(d.sets.c, nil, "... and leaves the defaults alone")
  local ok, e = pcall(config.resolve, d, { "sets=[1,2]" }, opts)
  t.ok(not ok and tostring(e) == "command line: setting 'sets' expects a path or a map of paths, got '[1,2]'",
    "whole: a value the function refuses is named with what it expected: " .. tostring(e))
  write(dir .. "/sets2.yaml", "sets:\n  x: 3\n")
  ok, e = pcall(config.resolve, d, { "config=" .. dir .. "/sets2.yaml" }, opts)
  t.ok(not ok and tostring(e):find("^" .. lit(dir .. "/sets2.yaml") .. ": setting 'sets' expects a path or a map of paths"),
    "whole: ... naming the file it came from: " .. tostring(e))
  ok, e = pcall(config.resolve, d, { "sets.x=x.txt" })
  t.ok(not ok and tostring(e):find("unknown setting 'sets.x'"), "without opts.whole a new name is still an unknown setting")
end

-- Values from files are checked like the command line's, naming the file and the key.
local function file_err(pattern, text, what)
  local path = dir .. "/bad.yaml"
  write(path, text)
  local ok, e = pcall(config.resolve, defaults, { "config=" .. path })
  t.ok(not ok and tostring(e):find("^" .. lit(path) .. ": " .. pattern), what)
  if ok or not tostring(e):find("^" .. lit(path) .. ": " .. pattern) then t.note("got: " .. tostring(e)) end
end
file_err(lit("setting 'steps' expects an integer (like its default 100), got 'abc'"), "steps: abc\n", "steps: abc is a type error")
file_err(lit("setting 'steps' expects an integer"), "steps: 2.5\n", "steps: 2.5 is not an integer")
file_err(lit("setting 'lr' expects a number"), "lr: [1]\n", "a list for a number")
file_err(lit("setting 'model.n_layer' expects an integer"), "model:\n  n_layer: x\n", "nested keys are named in full")
file_err(lit("unknown setting 'model.n_layers' (did you mean model.n_layer"), "model:\n  n_layers: 3\n", "a typo in a file")
file_err(lit("setting 'model' expects a table"), "model: 3\n", "a scalar where a table of settings is")
file_err(lit("setting 'seeds' expects a list of integers"), "seeds: [1, a]\n", "list elements are checked")
file_err(lit("setting 'quick' expects a boolean"), "quick: maybe\n", "booleans are checked")
file_err(lit("expected a mapping of settings"), "- 1\n- 2\n", "a file that is not a mapping")
write(dir .. "/syntax.yaml", "steps: 1\nmodel:\n n_layer: [1\n")
t.err("^" .. lit(dir .. "/syntax.yaml") .. ":%d+:%d+: did not find", config.resolve, defaults, { "config=" .. dir .. "/syntax.yaml" })
t.err(lit("config=: " .. dir .. "/none.yaml not found"), config.resolve, defaults, { "config=" .. dir .. "/none.yaml" })
t.eq(config.resolve(defaults, { "name=12" }).name, "12", "a string setting takes a number as its text")
write(dir .. "/empty.yaml", "model: {}\n")
t.eq(config.resolve(defaults, { "config=" .. dir .. "/empty.yaml" }).model.n_layer, 2, "an empty mapping in a file changes nothing")
write(dir .. "/blank.yaml", "")
t.eq(config.resolve(defaults, { "config=" .. dir .. "/blank.yaml" }).steps, 100, "an empty file changes nothing")

-- Ranges name where the value came from.
local rules = { rules = { steps = { min = 1 }, lr = { above = 0 }, seeds = { min = 0 } } }
write(dir .. "/zero.yaml", "steps: 0\n")
t.err("^" .. lit(dir .. "/zero.yaml: setting 'steps' must be >= 1, got 0"), config.resolve, defaults,
  { "config=" .. dir .. "/zero.yaml" }, rules)
t.err("^" .. lit("command line: setting 'lr' must be > 0, got 0"), config.resolve, defaults, { "lr=0" }, rules)
t.err("^" .. lit("command line: setting 'seeds' must be >= 0, got -1"), config.resolve, defaults, { "seeds=[1,-1]" }, rules)
t.ok(pcall(config.resolve, defaults, { "steps=1", "lr=1e-9" }, rules), "values in range pass")
write(dir .. "/win.yaml", "train:\n  eval_windows: 0\n")
local ok, e = pcall(dofile, "experiments/lib/setup.lua")
t.ok(ok, "experiments/lib/setup.lua loads")
if ok then
  local setup = e
  local ok2, e2 = pcall(setup.config, "experiments", "reweighting", { "config=" .. dir .. "/win.yaml" },
    { ["train.eval_windows"] = setup.positive })
  t.ok(not ok2 and tostring(e2) == dir .. "/win.yaml: setting 'train.eval_windows' must be >= 1, got 0",
    "eval_windows: 0 in a config file is refused naming file and key")

  -- setup.train_or_diverged: a summary, or nil with <run_dir>/diverged for a diverged run.
  local function run(run_dir, lr, over)
    local o = { model = { vocab_size = 256, block_size = 16, n_layer = 1, n_head = 2, n_embd = 16, seed = 1 },
                optimizer = { lr = lr, clip = 0 }, data = kiln.dataset("tests/data/tiny_en.txt"), steps = 4,
                batch = 2, context = 16, quiet = true, run_dir = run_dir }
    for k, v in pairs(over or {}) do o[k] = v end
    return setup.train_or_diverged(o)
  end
  t.eq(run(dir .. "/fine", 1e-3).status, "complete", "train_or_diverged: a run that trains returns its summary")
  t.ok(not setup.diverged(dir .. "/fine"), "... and is not marked diverged")
  t.eq(run(dir .. "/div", 1e35), nil, "a diverging run returns nil")
  t.ok(setup.diverged(dir .. "/div") and t.read(dir .. "/div/diverged"):find("diverged: ", 1, true),
       "... and is recorded in <run_dir>/diverged with kiln.train's message")
  t.err("unknown option 'bogus'", run, dir .. "/bad", 1e-3, { bogus = 1 })
end

-- The continual study: out= replaces dir=, and quick=true does not change an explicit out.
local saved0 = arg[0]
arg[0] = "experiments/continual/peak_lr.lua"
local common = dofile("experiments/continual/common.lua")
arg[0] = saved0
c = common.settings("peak_lr", { "quick=true", "out=" .. dir .. "/cont" })
t.ok(c.out == dir .. "/cont" and c.budget_tokens == 300000, "continual: out= exactly, quick settings applied")
t.eq(common.settings("peak_lr", { "quick=true" }).out, "runs/continual/peak_lr-quick", "continual: the quick profile's out")
t.eq(common.settings("all", {}).out, "runs/continual/all", "continual: the default out")
t.err(lit("setting 'dir' is now 'out'"), common.settings, "peak_lr", { "dir=x" })

-- One line from the host for a settings mistake; a traceback for a bug ----------------
write(dir .. "/settings.lua", "kiln.config.resolve({ steps = 1 }, arg)\n")
local out, code = sh(kiln_bin .. " " .. dir .. "/settings.lua steps=abc")
t.eq(out, "kiln: command line: setting 'steps' expects an integer (like its default 1), got 'abc'\n",
  "a settings mistake is one line")
t.eq(code, 1, "... and exit code 1")
out, code = sh(kiln_bin .. " experiments/reweighting.lua config=" .. dir .. "/win.yaml")
t.ok(code == 1 and out == "kiln: " .. dir .. "/win.yaml: setting 'train.eval_windows' must be >= 1, got 0\n",
  "an experiment refuses eval_windows: 0 from a file in one line")
if code ~= 1 then t.note(out) end
out, code = sh(kiln_bin .. " experiments/quickstart.lua bogus=1")
t.ok(code == 1 and select(2, out:gsub("\n", "")) == 1 and out:find("unknown setting 'bogus'", 1, true),
  "quickstart uses the same settings (one line for an unknown key)")
write(dir .. "/bug.lua", "local function f() return nil + 1 end\nf()\n")
out, code = sh(kiln_bin .. " " .. dir .. "/bug.lua")
t.ok(code == 1 and out:find("stack traceback", 1, true), "a genuine bug keeps its traceback")
t.eq(tostring(select(2, pcall(config.fail, "a %s", "b"))), "a b", "config.fail messages read as strings")
t.eq("x: " .. select(2, pcall(config.fail, "y")), "x: y", "... and concatenate")

-- End to end: a quick run writes exactly where out= says ----------------------------------
local rw = dir .. "/rw-run"
out, code = sh(table.concat({ kiln_bin, "experiments/reweighting.lua", "quick=true", "out=" .. rw, "threads=1",
  "seeds=[1]", "train.steps=2", "train.warmup=1", "train.eval_every=2", "train.eval_windows=2", "model.context=32",
  "model.n_embd=16", "model.n_layer=1", "data.train=tests/data/tiny_en.txt", "data.val=tests/data/tiny_en.txt",
  "data.ood=tests/data/tiny_other.txt", "'variants=[uniform,head,head_unnorm]'" }, " "))
t.ok(code == 0 and t.read(rw .. "/results.md") ~= nil, "a quick re-weighting run writes its table under out=")
if code ~= 0 then t.note(out) end
t.ok(t.read(rw .. "-quick/results.md") == nil, "... and nothing under out-quick")
local function run_fp(variant) return kiln.yaml.load(rw .. "/" .. variant .. "/seed1/config.yaml").fingerprint.settings end
t.eq(run_fp("head")["weighting.normalize"], true, "variants: head follows weighting.normalize (true)")
t.eq(run_fp("head_unnorm")["weighting.normalize"], false, "... head_unnorm is the same weighting, not normalised")
t.eq(run_fp("head_unnorm")["weighting.sha256"], run_fp("head")["weighting.sha256"], "... with the same weights")
t.ok((t.read(rw .. "/comparison.csv") or ""):find("\nhead_unnorm,id,", 1, true), "... and is compared with uniform")
out, code = sh(kiln_bin .. " experiments/reweighting.lua 'variants=[uniform,head_normed]'")
t.ok(code == 1 and out:find("setting 'variants' must be one of uniform, head, middle, tail, head_unnorm", 1, true),
  "an unknown arm is refused in one line")

-- KILN_GEMM chooses the matrix multiply, and kiln.gemm() says which ----------------------
write(dir .. "/gemm.lua", "print(require('kiln').gemm())\n")
for _, name in ipairs { "kiln", "openblas" } do
  out = sh(("KILN_GEMM=%s %s %s/gemm.lua"):format(name, kiln_bin, dir))
  t.eq(out, name .. "\n", "KILN_GEMM=" .. name .. ": kiln.gemm() is " .. name)
end
out, code = sh(("KILN_GEMM=OpenBLAS %s %s/gemm.lua"):format(kiln_bin, dir))
t.eq(out, "kiln: KILN_GEMM=OpenBLAS: expected kiln or openblas (or leave it unset for the default)\n",
  "a misspelt KILN_GEMM is refused in one line")
t.eq(code, 1, "... and exit code 1")

-- KILN_THREADS must be a whole number: "abc" used to mean all CPUs, silently ----------------
write(dir .. "/threads.lua", "print(require('kiln').get_threads())\n")
t.eq(sh(("KILN_THREADS=1 %s %s/threads.lua"):format(kiln_bin, dir)), "1\n", "KILN_THREADS=1 gives 1 thread")
for _, bad in ipairs { "abc", "2x", "0", "-1", "1.5" } do
  out, code = sh(("KILN_THREADS=%s %s %s/threads.lua"):format(bad, kiln_bin, dir))
  t.eq(out, ("kiln: KILN_THREADS=%s: expected a whole number of threads from 1 to 4096 (or leave it unset for all CPUs)\n"):format(bad),
    "KILN_THREADS=" .. bad .. " is refused in one line")
  t.eq(code, 1, "... and exit code 1")
end

-- kiln --help lists every command ---------------------------------------------------------
local help = sh(kiln_bin .. " --help")
local listed = 0
for f in io.popen("ls lua/kiln/cmd"):lines() do
  local name = f:match("^(.-)%.lua$")
  if name then
    listed = listed + 1
    t.ok(help:find("\n  " .. name .. " ", 1, true), "kiln --help lists the command " .. name)
  end
end
t.ok(listed >= 2, "there are commands to list")
t.ok(help:find("config=FILE", 1, true), "kiln --help mentions config=FILE")

t.done()
