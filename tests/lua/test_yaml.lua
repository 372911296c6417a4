#!/usr/bin/env kiln
-- kiln.yaml (lua/l_yaml.c): scalar types, round trips with exact numbers and subtypes, sorted
-- keys, anchors and merge keys, errors naming file:line:column, atomic dump.
local t = dofile("tests/lua/tap.lua")
local yaml = require("kiln").yaml

local function lit(s) return (s:gsub("%p", "%%%0")) end

local function ls(dir)
  local p = io.popen("ls -A '" .. dir .. "'")
  local names = {}
  for line in p:lines() do names[#names + 1] = line end
  p:close()
  table.sort(names)
  return table.concat(names, " ")
end

local write, read = t.write, t.read

-- Deep equality that also compares number subtypes (1 vs 1.0) and NaN with NaN.
local function deq(a, b, path)
  path = path or "value"
  if type(a) ~= type(b) then return false, path .. ": " .. type(a) .. " vs " .. type(b) end
  if type(a) == "number" then
    if math.type(a) ~= math.type(b) then return false, path .. ": " .. math.type(a) .. " vs " .. math.type(b) end
    if a ~= a and b ~= b then return true end
    if a ~= b then return false, path .. (": %.17g vs %.17g"):format(a, b) end
    if a == 0 and 1 / a ~= 1 / b then return false, path .. ": signed zero differs" end
    return true
  end
  if type(a) ~= "table" then return a == b, path .. ": " .. tostring(a) .. " vs " .. tostring(b) end
  for k, v in pairs(a) do
    local ok, why = deq(v, b[k], path .. "." .. tostring(k))
    if not ok then return false, why end
  end
  for k in pairs(b) do
    if a[k] == nil then return false, path .. "." .. tostring(k) .. " is extra" end
  end
  return true
end

-- scalar types (YAML 1.2 core schema) -------------------------------------------------------
local d = yaml.decode([[
int: 42
neg: -7
hex: 0x1F
oct: 0o17
float: 1.5
one: 1.0
exp: 1e-3
lr: 3.0e-4
inf: .inf
ninf: -.inf
nan: .nan
yes_: true
no_: False
word: yes
nul: null
tilde: ~
quoted_int: "42"
quoted_float: '1.5'
quoted_true: "true"
str: hello world
tagged: !!str 7
forced_float: !!float 2
list: [1, two, 3.5]
nested:
  deep:
    key: value
]], "types.yaml")
t.eq(math.type(d.int), "integer", "42 is an integer")
t.eq(d.int, 42, "42 value")
t.eq(d.neg, -7, "-7")
t.eq(d.hex, 31, "0x1F = 31")
t.eq(d.oct, 15, "0o17 = 15")
t.eq(math.type(d.float), "float", "1.5 is a float")
t.eq(math.type(d.one), "float", "1.0 stays a float")
t.eq(d.exp, 1e-3, "1e-3 is the number 0.001")
t.eq(d.lr, 3e-4, "3.0e-4")
t.eq(d.inf, math.huge, ".inf")
t.eq(d.ninf, -math.huge, "-.inf")
t.ok(d.nan ~= d.nan, ".nan is NaN")
t.eq(d.yes_, true, "true is a boolean")
t.eq(d.no_, false, "False is a boolean")
t.eq(d.word, "yes", "yes stays a string (YAML 1.2)")
t.eq(d.nul, nil, "null: key absent")
t.eq(d.tilde, nil, "~: key absent")
t.eq(d.quoted_int, "42", "quoted 42 stays a string")
t.eq(d.quoted_float, "1.5", "quoted 1.5 stays a string")
t.eq(d.quoted_true, "true", "quoted true stays a string")
t.eq(d.str, "hello world", "plain string")
t.eq(d.tagged, "7", "!!str 7 is a string")
t.eq(math.type(d.forced_float), "float", "!!float 2 is a float")
t.eq(#d.list, 3, "flow sequence -> array of 3")
t.eq(d.list[2], "two", "array element 2")
t.eq(d.nested.deep.key, "value", "nested mappings")
t.eq(yaml.decode("1: a\n2: b\n")[2], "b", "integer keys stay integers")
t.eq(next(yaml.decode("")), nil, "empty text -> empty table")
t.eq(next(yaml.decode("# only a comment\n")), nil, "comment-only text -> empty table")
t.eq(yaml.decode("42"), 42, "a scalar document decodes to the scalar")

-- anchors, aliases, merge keys -------------------------------------------------------------
local a = yaml.decode([[
base: &b {lr: 0.001, steps: 10}
run1: *b
run2:
  <<: *b
  steps: 20
]])
t.ok(a.run1 == a.base, "an alias is the same table as its anchor")
t.eq(a.run2.lr, 0.001, "merge key fills in missing keys")
t.eq(a.run2.steps, 20, "explicit keys win over merged ones")

-- round trip -------------------------------------------------------------------------------
local v = {
  model = { n_layer = 4, d_model = 128, dropout = 0.0 },
  lr = 3e-4, third = 1 / 3, tiny = 5e-324, big = 2 ^ 60, huge_int = math.maxinteger, min_int = math.mininteger,
  neg_zero = -0.0, inf = math.huge, ninf = -math.huge,
  seeds = { 1, 2, 3 }, mixed = { 1, "two", 3.25, true },
  weights = { 0.1, 0.2, 0.30000000000000004 },
  flags = { on = true, off = false },
  strings = { "true", "1.5", "", "null", "~", "a\nb", "x: y", "#c", "- z", "ünï", "<<", "0o17", "  lead", "tab\there", ".inf", "yes" },
  nested = { { name = "uniform" }, { name = "head", fraction = 0.1 } },
  [7] = "integer key", ["7"] = "string key", [2.5] = "float key",
  empty = {},
}
local text = yaml.encode(v)
local back = yaml.decode(text, "roundtrip.yaml")
local ok, why = deq(v, back)
t.ok(ok, "encode -> decode gives back the same values and subtypes" .. (ok and "" or (" (" .. why .. ")")))
t.eq(yaml.encode(back), text, "encode is deterministic (same text twice)")

-- exact text of the encoder ----------------------------------------------------------------
t.eq(yaml.encode { b = 1, a = 2, c = { z = 1, y = 2 } }, "a: 2\nb: 1\nc:\n  y: 2\n  z: 1\n", "mapping keys sorted, nested block style")
t.eq(yaml.encode { x = 0.1 }, "x: 0.1\n", "0.1 prints as 0.1")
t.eq(yaml.encode { x = 1.0 }, "x: 1.0\n", "float 1.0 keeps its point")
t.eq(yaml.encode { x = 3 }, "x: 3\n", "integer prints as an integer")
t.eq(yaml.encode { x = 1 / 3 }, "x: 0.3333333333333333\n", "1/3: shortest of 15/16/17 digits that round-trips")
t.eq(yaml.encode { x = 0.30000000000000004 }, "x: 0.30000000000000004\n", "0.1 + 0.2 needs 17 digits")
t.eq(yaml.encode { x = "true" }, "x: \"true\"\n", "string 'true' is quoted")
t.eq(yaml.encode { seeds = { 1, 2, 3 } }, "seeds: [1, 2, 3]\n", "scalar sequences in flow style")
t.eq(yaml.encode { [10] = "b", [2] = "a", k = "c" }, "2: a\n10: b\nk: c\n", "number keys first, numerically")

-- errors name file:line:column ---------------------------------------------------------------
local dir = t.tmpdir()
local bad = dir .. "/config.yaml"
write(bad, "model:\n  n_layer: 4\n  d: x: 1\n")
t.err(lit(bad .. ":3:7: mapping values are not allowed in this context"), yaml.load, bad)
t.err(lit("config.yaml:2:2: did not find expected ',' or ']' (while parsing a flow sequence at line 1, column 8)"),
  yaml.decode, "seeds: [1, 2\nx: 1\n", "config.yaml")
t.err(lit("<string>:2:1: duplicate key 'a'"), yaml.decode, "a: 1\na: 2\n")
t.err(lit("s.yaml:2:3: null in a sequence (item 2) is not supported"), yaml.decode, "- 1\n- ~\n", "s.yaml")
t.err(lit("s.yaml:1:4: unknown anchor 'nope'"), yaml.decode, "x: *nope\n", "s.yaml")
t.err(lit("s.yaml:2:1: a second document"), yaml.decode, "--- 1\n--- 2\n", "s.yaml")
t.err(lit("u.yaml:2:4: invalid leading UTF-8 octet"), yaml.decode, "a: 1\nb: \255\n", "u.yaml")
t.err(lit("s.yaml:1:4: unsupported tag '!foo'"), yaml.decode, "a: !foo 1\n", "s.yaml")
t.err(lit("s.yaml:1:4: 'x' is not a valid tag:yaml.org,2002:int"), yaml.decode, "a: !!int x\n", "s.yaml")
t.err(lit("deep.yaml:1:257: nesting deeper than 256 levels"), yaml.decode, ("["):rep(300) .. ("]"):rep(300), "deep.yaml")
t.err(lit(dir .. "/missing.yaml: cannot open: No such file or directory"), yaml.load, dir .. "/missing.yaml")
local cyc = { a = { 1 } }
cyc.a[2] = cyc
t.err(lit("yaml.encode: a cycle (a table that contains itself) at 'a[2]'"), yaml.encode, cyc)
t.err(lit("yaml.encode: cannot encode a function at 'hooks.on_step'"), yaml.encode, { hooks = { on_step = print } })
t.err(lit("yaml.encode: a key of type boolean (keys must be strings or numbers)"), yaml.encode, { [true] = 1 })
t.err(lit("yaml.encode: a string that is not valid UTF-8 at 'name'"), yaml.encode, { name = "\255" })

-- dump: atomic, nothing left behind ----------------------------------------------------------
local out = dir .. "/run.yaml"
yaml.dump({ steps = 100, lr = 3e-4 }, out)
t.eq(read(out), "lr: 0.0003\nsteps: 100\n", "dump writes the encoded text")
t.eq(yaml.load(out).steps, 100, "load reads back what dump wrote")
yaml.dump({ steps = 200 }, out)
t.eq(yaml.load(out).steps, 200, "dump replaces an existing file")
t.eq(ls(dir), "config.yaml run.yaml", "no temporary file left after dump")
local selfref = {}
selfref.me = selfref
t.err("cycle", yaml.dump, selfref, out)
t.eq(read(out), "steps: 200\n", "a failed dump leaves the existing file untouched")
t.eq(ls(dir), "config.yaml run.yaml", "a failed dump leaves no temporary file")
t.err(lit("yaml.dump: cannot write '" .. dir .. "/nodir/x.yaml': cannot create"), yaml.dump, { a = 1 }, dir .. "/nodir/x.yaml")
t.eq(ls(dir), "config.yaml run.yaml", "a dump into a missing directory creates nothing")

-- dump: the file gets the permissions of any new file (0666 less the umask), and the
-- process umask is left alone.
local umask_before = io.popen("sh -c umask"):read("l")
local mode = io.popen("stat -c %a '" .. out .. "'"):read("l")
local want = ("%o"):format(tonumber("666", 8) & ~tonumber(umask_before, 8))
t.eq(mode, want, "a dumped file has mode 0666 less the umask (" .. umask_before .. ")")

-- shared tables: written once with an anchor, then as aliases ----------------------------------
local shared = { lr = 1e-3 }
local text = yaml.encode({ a = shared, b = shared, c = { shared } })
t.eq(text, "a: &t1\n  lr: 0.001\nb: *t1\nc:\n- *t1\n", "a shared table is anchored once and aliased after")
local back = yaml.decode(text)
t.ok(back.a == back.b and back.c[1] == back.a and back.a.lr == 1e-3, "and decodes to one shared table")
-- A "billion laughs" built in Lua: 30 levels of 10 references each (10^30 leaves expanded).
local level = { "lol" }
for _ = 1, 30 do
  local nxt = {}
  for i = 1, 10 do nxt[i] = level end
  level = nxt
end
local t0 = os.clock()
local laughs = yaml.encode({ root = level })
t.ok(#laughs < 20000 and os.clock() - t0 < 1, "nested shared tables encode in linear size: " .. #laughs .. " bytes")
t.err("the document expands to more than 10000000 nodes", yaml.decode, laughs)
level = { "lol" }
for _ = 1, 5 do
  local nxt = {}
  for i = 1, 10 do nxt[i] = level end
  level = nxt
end
local back2 = yaml.decode(yaml.encode({ root = level }))
t.ok(back2.root[1] == back2.root[10] and back2.root[1][1] == back2.root[10][10], "5 levels (10^5 leaves) decode back shared")
t.err(lit("yaml.encode: a cycle (a table that contains itself) at 'a[2]'"), yaml.encode, cyc)

-- decode: a document whose aliases expand past 10^7 nodes is refused ------------------------
local bl = { "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]" }
local prev = "a"
for i, name in ipairs { "b", "c", "d", "e", "f", "g", "h", "i" } do
  bl[#bl + 1] = ("%s: &%s [%s]"):format(name, name, ("*" .. prev .. ", "):rep(9) .. "*" .. prev)
  prev = name
end
t0 = os.clock()
-- level k has 10^k leaves: g (line 7, 1.1 * 10^7 nodes) is the first past the limit
t.err(lit("laughs.yaml:7:44: the document expands to more than 10000000 nodes"), yaml.decode, table.concat(bl, "\n") .. "\n", "laughs.yaml")
t.ok(os.clock() - t0 < 1, "and is refused at once")
local ok6 = yaml.decode(table.concat(bl, "\n", 1, 6) .. "\n", "laughs.yaml")
t.ok(ok6.f[1] == ok6.e and ok6.f[10][10] == ok6.d, "a document expanding to about 10^6 nodes decodes")
t.err(lit("r.yaml:1:14: alias '*x' inside its own anchor: recursive structures are not supported"),
  yaml.decode, "a: &x [1, 2, *x]\n", "r.yaml")

t.done()
