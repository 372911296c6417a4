#!/usr/bin/env kiln
-- The kiln host: scripts, arguments, -e, stdin, errors with tracebacks and exit codes,
-- and kiln.so under stock lua5.4.
local t = dofile("tests/lua/tap.lua")
local build = os.getenv("KILN_BUILD") or "build"
local kiln_bin = build .. "/kiln"
local dir = t.tmpdir()

local sh, write = t.sh, t.write

write(dir .. "/args.lua", "print(#arg, arg[0] ~= nil, arg[1], arg[2], ...)")
local out, code = sh(kiln_bin .. " " .. dir .. "/args.lua one two=2")
t.eq(out, "2\ttrue\tone\ttwo=2\tone\ttwo=2\n", "script arguments arrive in arg and ...")
t.eq(code, 0, "a good script exits 0")

write(dir .. "/fails.lua", "local function inner() error('boom here') end\ninner()\n")
out, code = sh(kiln_bin .. " " .. dir .. "/fails.lua")
t.eq(code, 1, "a failing script exits 1")
t.ok(out:find("fails.lua:1: boom here", 1, true), "the message names file and line")
t.ok(out:find("stack traceback", 1, true) and out:find("in local 'inner'", 1, true) or
     out:find("in function 'inner'", 1, true), "and comes with a traceback")

out, code = sh(kiln_bin .. " -e 'print(kiln.version, type(kiln.model))'")
t.ok(out:match("^%d+%.%d+%.%d+\tfunction\n$"), "-e runs code with kiln preloaded as a global")
out, code = sh("echo 'print(1 + 1)' | " .. kiln_bin)
t.eq(out, "2\n", "stdin that is not a terminal runs as a script")
out, code = sh(kiln_bin .. " -e 'error(\"x\")'")
t.eq(code, 1, "-e errors exit 1")
out, code = sh(kiln_bin .. " --bogus")
t.ok(code ~= 0 and out:find("unrecognized option '--bogus'", 1, true), "unknown options are refused")
out, code = sh(kiln_bin .. " " .. dir .. "/missing.lua")
t.ok(code == 1 and out:find("missing.lua", 1, true), "a missing script is named")
out = sh(kiln_bin .. " -e 'print(kiln.schedule ~= nil, kiln.nonexistent_module)'")
t.eq(out, "true\tnil\n", "library modules load on first use; unknown names are nil")

-- The embedded library can be overridden from KILN_PATH without recompiling.
os.execute("mkdir -p " .. dir .. "/kiln")
write(dir .. "/kiln/weighting.lua", "return { overridden = true }")
out = sh("KILN_PATH='" .. dir .. "/?.lua' " .. kiln_bin .. " -e 'print(kiln.weighting.overridden)'")
t.eq(out, "true\n", "a module on KILN_PATH overrides the embedded one")

-- kiln.so for stock lua5.4.
if os.getenv("KILN_SANITIZE") == "1" then
  -- An ASan-instrumented kiln.so cannot load into an uninstrumented lua5.4.
  t.skip("kiln.so under lua5.4 is not checked in sanitizer builds")
elseif os.execute("command -v lua5.4 >/dev/null 2>&1") then
  out, code = sh("cd " .. build .. " && lua5.4 -e 'local k = require \"kiln\"; print(type(k.model), k.schedule ~= nil)'")
  t.eq(out, "function\ttrue\n", "lua5.4 can require the kiln.so module")
else
  t.skip("lua5.4 not installed")
end
t.done()
