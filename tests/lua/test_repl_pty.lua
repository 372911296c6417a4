#!/usr/bin/env kiln
-- The interactive prompt on a real terminal: kiln runs inside a detached tmux session (a
-- pseudo-terminal); keys go in with send-keys, the screen comes back with capture-pane.
-- Every wait polls the screen for the expected text (generous deadlines, no fixed sleeps
-- standing in for "long enough"), so a loaded machine only makes it slower.
if os.execute("command -v tmux >/dev/null 2>&1") ~= true then
  io.write("1..0 # SKIP tmux is not installed\n")
  os.exit(0)
end
local t = dofile("tests/lua/tap.lua")
local build = os.getenv("KILN_BUILD") or "build"
local kiln_bin = build .. "/kiln"
if kiln_bin:sub(1, 1) ~= "/" then kiln_bin = os.getenv("PWD") .. "/" .. kiln_bin end
local dir = t.tmpdir()
local sock = dir .. "/tmux.sock"
local DEADLINE = 25   -- seconds for any one expected output

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
local function run(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local ok = p:close()
  return out, ok
end
local function tmux(args) return run("tmux -S " .. q(sock) .. " " .. args) end
-- Tabs in the output become cursor moves on a terminal: runs of blanks compare as one space.
-- Blank rows below the cursor are dropped, so positions in the text only grow.
local function screen() return (tmux("capture-pane -p -J -S - -t kt"):gsub("[ \t]+", " "):gsub("%s+$", "")) end
local function sleep(s) os.execute("sleep " .. s) end

-- Wait until the screen, after its first `from` characters, matches the (plain) text.
local function wait_for(text, from)
  local t0 = os.time()
  repeat
    local s = screen()
    local at = s:find(text, (from or 0) + 1, true)
    if at then return s, at end
    sleep(0.1)
  until os.time() - t0 > DEADLINE
  return nil, screen()
end

local mark = 0           -- screen position after the last completed exchange
local function prompts(s) local n = 0; for _ in s:gmatch("kiln>") do n = n + 1 end; return n end

-- Type a line, press Enter, wait for `expect` and then for the next prompt.
local function send_line(line, expect)
  local before = prompts(screen())
  if line ~= "" then tmux("send-keys -t kt -l " .. q(line)) end
  tmux("send-keys -t kt Enter")
  local s, at = wait_for(expect or "kiln>", mark)
  if not s then return false, at end
  local t0 = os.time()
  while prompts(s) <= before and os.time() - t0 <= DEADLINE do sleep(0.1); s = screen() end
  local out = s:sub(mark + 1)
  mark = #s
  return prompts(s) > before, out
end

local env = "HOME=" .. q(dir) .. " OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell} KILN_THREADS=1 TERM=xterm"
local _, started = tmux("new-session -d -s kt -x 160 -y 50 " .. q("cd " .. q(os.getenv("PWD")) .. " && env " .. env .. " " .. kiln_bin))
t.ok(started, "kiln starts inside tmux")
tmux("set-option -t kt remain-on-exit on")
local s = wait_for("kiln>")
t.ok(s and s:find("help()", 1, true), "the prompt appears with a banner")
mark = s and #s or 0

-- An expression prints its value; several results; pretty printing.
local ok, out = send_line("1 + 2, 'three'", "3 three")
t.ok(ok, "an expression prints its value without return or =")

-- A multi-line function definition.
tmux("send-keys -t kt -l " .. q("function twice(x)"))
tmux("send-keys -t kt Enter")
t.ok(wait_for(">>", mark), "an unfinished statement asks for more")
tmux("send-keys -t kt -l " .. q("  return 2 * x"))
tmux("send-keys -t kt Enter")
ok, out = send_line("end")
ok, out = send_line("twice(21)", "42")
t.ok(ok, "the multi-line function was defined and works")

-- An error keeps the session and what was defined before.
ok, out = send_line("kept = 7; error('bo' .. 'om here')", "boom here")
t.ok(ok and out:find("stack traceback", 1, true), "an error prints its message and a traceback")
ok, out = send_line("kept * 6, twice(kept)", "42 14")
t.ok(ok, "after the error, earlier variables and functions are still there")

-- A model; tab completion of a method name.
ok, out = send_line("m = kiln.model{n_layer=1, n_head=2, n_embd=32, block_size=32}; b = kiln.batch(4, 32); b:rows(4); opt = kiln.adamw(m)")
t.ok(ok, "a model, a batch and an optimizer")
ok, out = send_line("m", "parameters")
t.ok(ok and out:find("kiln.Model n_layer=1", 1, true), "a model prints its config and parameter count")
tmux("send-keys -t kt -l " .. q("m:for"))
tmux("send-keys -t kt Tab")
s = wait_for("m:forward(", mark)
t.ok(s, "Tab completes m:for to m:forward(")
tmux("send-keys -t kt -l " .. q("b) > 0"))
ok, out = send_line("", "true")
t.ok(ok, "the completed line runs")
tmux("send-keys -t kt -l " .. q("kiln.sched"))
tmux("send-keys -t kt Tab")
t.ok(wait_for("kiln.schedule", mark), "Tab completes a field of a table (kiln.sched -> kiln.schedule)")
tmux("send-keys -t kt C-u")

-- Ctrl-C at the prompt clears the line and keeps the session.
tmux("send-keys -t kt -l " .. q("kept = 1000"))
tmux("send-keys -t kt C-c")
s = wait_for("^C", mark)
mark = s and #s or mark
ok, out = send_line("kept", "7")
t.ok(ok and not out:find("1000", 1, true), "Ctrl-C at the prompt drops the line being typed")

-- Ctrl-C interrupts a training loop; the model is intact and usable afterwards.
local loop = "for i = 1, 1e9 do m:zero_grad(); m:forward(b); m:backward(); opt:step()" ..
             " if i == 3 then print('tr' .. 'aining') end end"
tmux("send-keys -t kt -l " .. q(loop))
tmux("send-keys -t kt Enter")
s = wait_for("training", mark)
t.ok(s, "a training loop runs")
sleep(0.3)
tmux("send-keys -t kt C-c")
s = wait_for("interrupted", mark)
t.ok(s, "Ctrl-C stops it with an 'interrupted' error")
local t0 = os.time()
while s and prompts(s:sub(mark + 1)) < 1 and os.time() - t0 < DEADLINE do sleep(0.1); s = screen() end
mark = s and #s or mark
-- (>= 0, not > 0: the all-zero batch is learnt so well that the loss can reach exactly 0.)
ok, out = send_line("opt.t >= 3, m:forward(b) >= 0, m:flat_params():first_nonfinite()", "true true nil")
t.ok(ok, "the next command uses the model: steps kept, forward works, parameters finite")
if not ok then t.note("screen after the interrupt: " .. tostring(out):sub(-600)) end

-- Help from the embedded API reference.
ok, out = send_line("?kiln.model", "GPT-2 style model")
t.ok(ok, "?kiln.model prints the reference entry")

-- Ctrl-D leaves; the history is saved.
tmux("send-keys -t kt C-d")
t0 = os.time()
local dead
repeat
  dead = tmux("display-message -p -t kt '#{pane_dead}'"):match("1")
  if not dead then sleep(0.1) end
until dead or os.time() - t0 > DEADLINE
t.ok(dead, "Ctrl-D at an empty prompt exits")
local f = io.open(dir .. "/.kiln_history")
local hist = f and f:read("a") or ""
if f then f:close() end
t.ok(hist:find("twice(21)", 1, true), "the history is written to ~/.kiln_history")
tmux("kill-server")
t.done()
