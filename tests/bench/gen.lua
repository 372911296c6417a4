-- tests/bench/gen.lua — kiln's side of tests/bench/gen.sh: generation tokens/s with the key/value
-- cache for a freshly initialised model (the weights do not change the cost).
--   kiln tests/bench/gen.lua CFG THREADS NEW_TOKENS [REPEATS]
-- CFG: S, M, L (tests/bench/run's shapes) or layers,d,heads,T. The prompt is one token, so
-- with NEW_TOKENS < T every token fits the context; beyond T the context slides (the cache
-- is re-fed with the last T tokens for every new one). Prints one key=value line with the
-- median over REPEATS timed runs (after one untimed warm-up run).
local kiln = require "kiln"
local CONFIGS = { S = { 4, 128, 4, 256 }, M = { 6, 256, 8, 256 }, L = { 8, 512, 8, 512 } }

local name, threads, new = arg[1], tonumber(arg[2]), tonumber(arg[3])
local repeats = tonumber(arg[4] or "3")
if not (name and threads and new) then
  error("usage: kiln tests/bench/gen.lua S|M|L|layers,d,heads,T THREADS NEW_TOKENS [REPEATS]", 0)
end
local c = CONFIGS[name]
if not c then
  c = {}
  for v in name:gmatch("[^,]+") do c[#c + 1] = tonumber(v) end
end
kiln.set_threads(threads)
local m = kiln.model{ vocab_size = 256, n_layer = c[1], n_embd = c[2], n_head = c[3], block_size = c[4], seed = 1 }
local opts = { max_new_tokens = new, temperature = 1.0, seed = 1 }
m:generate("\n", opts)
local times = {}
for r = 1, repeats do
  opts.seed = r
  local t0 = kiln.clock()
  local out = m:generate("\n", opts)
  times[r] = kiln.clock() - t0
  assert(#out == new, "generation ended early")
  io.stderr:write(("gen kiln %s t%d run %d: %.3f s, %.1f tok/s\n"):format(name, threads, r, times[r], new / times[r]))
end
table.sort(times)
local med = repeats % 2 == 1 and times[(repeats + 1) // 2] or 0.5 * (times[repeats // 2] + times[repeats // 2 + 1])
print(("cfg=%s threads=%d new=%d tok_s=%.1f seconds=%.4f"):format(name, threads, new, new / med, med))
