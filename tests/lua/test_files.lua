#!/usr/bin/env kiln
-- kiln's file primitives from Lua: SHA-256, the core's atomic writer, stale temp cleanup and
-- run-directory locks (the mechanism under run directories and fingerprints).
local t = dofile("tests/lua/tap.lua")
local kiln = require "kiln"

t.eq(kiln.sha256("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "sha256('abc'), FIPS 180-2")
t.eq(kiln.sha256(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "sha256 of the empty string")

local dir = t.tmpdir()
local text = ("kiln\n"):rep(100000) .. "\0binary\255"
kiln.write_atomic(dir .. "/a.txt", text)
t.eq(t.read(dir .. "/a.txt"), text, "write_atomic writes the exact bytes")
local hex, bytes = kiln.sha256_file(dir .. "/a.txt")
t.eq(hex, kiln.sha256(text), "sha256_file equals sha256 of the content")
t.eq(bytes, #text, "sha256_file returns the byte count")
local out = t.sh("sha256sum " .. dir .. "/a.txt")
t.eq(out:match("^(%x+)"), hex, "sha256_file agrees with sha256sum")
kiln.write_atomic(dir .. "/a.txt", "second")
t.eq(t.read(dir .. "/a.txt"), "second", "write_atomic replaces a file")
t.err("cannot write '" .. dir .. "/missing/x': cannot create", kiln.write_atomic, dir .. "/missing/x", "y")
t.err("hash: cannot open '" .. dir .. "/nope': No such file or directory", kiln.sha256_file, dir .. "/nope")

-- A temp file of a dead process (a shell's pid after it exited) and one of this process:
-- only the first goes.
local dead = tonumber((t.sh("sh -c 'echo $$'")))
t.write(dir .. "/a.txt.tmp." .. dead, "debris")
local me = tonumber((t.sh("echo $PPID")))   -- the shell's parent is this kiln process
t.write(dir .. "/a.txt.tmp." .. me, "mine")
t.eq(kiln.remove_stale_temps(dir, "a.txt"), 1, "remove_stale_temps removes one stale file")
t.ok(t.read(dir .. "/a.txt.tmp." .. dead) == nil, "the dead process's temp file is gone")
t.ok(t.read(dir .. "/a.txt.tmp." .. me) ~= nil, "this process's temp file is kept")
os.remove(dir .. "/a.txt.tmp." .. me)

local lock = kiln.lock(dir .. "/lock")
t.ok(tostring(lock):find("kiln.Lock", 1, true), "kiln.lock returns a kiln.Lock")
t.eq(kiln.lock_holder(dir .. "/lock"), me, "lock_holder names this process")
t.err("is locked by process " .. me, kiln.lock, dir .. "/lock")
local out2, code = t.sh(("%s/kiln -e 'local k = require \"kiln\"; k.lock(%q)'"):format(os.getenv("KILN_BUILD"), dir .. "/lock"))
t.ok(code ~= 0 and out2:find("is locked by process " .. me, 1, true), "another process is refused, naming the holder")
lock:close()
t.eq(kiln.lock_holder(dir .. "/lock"), nil, "closed: nobody holds it")
do
  local l2 <close> = kiln.lock(dir .. "/lock")
  t.ok(kiln.lock_holder(dir .. "/lock") == me, "a <close> lock is held inside its block")
end
t.eq(kiln.lock_holder(dir .. "/lock"), nil, "and released when the block ends")
t.err("bad argument #1 to 'kiln[%.%w]*lock' %(string expected, got nil%)", kiln.lock, nil)
t.done()
