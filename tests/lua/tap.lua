-- tap.lua — TAP output for kiln's Lua tests (testes style: plain asserts wrapped in names).
--   local t = dofile("tests/lua/tap.lua")
--   t.ok(cond, "what")            t.eq(got, want, "what")        t.near(got, want, tol, "what")
--   t.err("pattern", f, ...)      -- f(...) must raise an error whose message matches pattern
--   t.skip("reason")              -- a check that cannot run here (TAP SKIP)
--   t.sh(cmd) -> output, exit code (stderr included)   t.write(path, s)   t.read(path) -> s or nil
--   t.done()                      -- prints the plan and "N passed, N failed"; exits 1 on failure
local t = { n = 0, failed = 0 }

local function report(pass, what, detail)
  t.n = t.n + 1
  if not pass then t.failed = t.failed + 1 end
  io.write(pass and "ok " or "not ok ", t.n, " - ", what or "", "\n")
  if not pass and detail then io.write("#   ", (tostring(detail):gsub("\n", "\n#   ")), "\n") end
  io.stdout:flush()
  return pass
end

function t.ok(cond, what) return report(not not cond, what, "condition was false") end

function t.eq(got, want, what)
  return report(got == want, what, ("got %s, want %s"):format(tostring(got), tostring(want)))
end

function t.near(got, want, tol, what)
  local pass = type(got) == "number" and math.abs(got - want) <= tol
  return report(pass, what, ("got %s, want %s +- %s"):format(tostring(got), tostring(want), tostring(tol)))
end

function t.err(pattern, f, ...)
  local okcall, msg = pcall(f, ...)
  local pass = not okcall and tostring(msg):find(pattern) ~= nil
  return report(pass, "error matching '" .. pattern .. "'",
    okcall and "no error was raised" or ("message was: " .. tostring(msg)))
end

-- A test that cannot run here: counted as passing, shown as skipped by prove.
function t.skip(reason)
  t.n = t.n + 1
  io.write("ok ", t.n, " # SKIP ", reason, "\n")
end

function t.note(...) io.write("# ", table.concat({ ... }, " "), "\n") end

-- A fresh empty directory under the system temp dir (removed by t.done unless KEEP_TMP).
local tmpdirs = {}
function t.tmpdir()
  local p = os.tmpname(); os.remove(p)
  assert(os.execute("mkdir -p '" .. p .. "'"))
  tmpdirs[#tmpdirs + 1] = p
  return p
end

-- Runs a shell command: its output with stderr, and its exit code (0 on success).
function t.sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok and 0 or code
end

function t.write(path, s) local f = assert(io.open(path, "wb")); f:write(s); f:close() end

-- A file's bytes, or nil when it cannot be opened.
function t.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function t.done()
  if not os.getenv("KEEP_TMP") then
    for _, d in ipairs(tmpdirs) do os.execute("rm -rf '" .. d .. "'") end
  end
  io.write("1..", t.n, "\n", t.n - t.failed, " passed, ", t.failed, " failed\n")
  os.exit(t.failed == 0 and 0 or 1)
end

return t
