-- nanogpt_kiln.lua — the kiln side of test_nanogpt.sh: for each MLP activation, a small model
-- trained briefly (so its weights are no longer the init's), saved with its optimizer as a
-- kiln checkpoint, and the log-probability of every next token at every position of a fixed
-- batch, which a nanoGPT GPT loaded from that checkpoint must reproduce.
--
--   kiln tests/reference/nanogpt_kiln.lua OUTDIR
--
-- Writes OUTDIR/<activation>.safetensors and OUTDIR/<activation>.logprobs: one line per
-- (row, position), the input token, then log p(v) for v = 0 .. V-1. kiln gives per-token
-- losses, not logits: log p(v) is minus the loss with target v, so the V targets take V
-- forwards of the same inputs.
local kiln = require "kiln"
local out = assert(arg[1], "usage: kiln tests/reference/nanogpt_kiln.lua OUTDIR")
kiln.set_threads(1)
local V, T = 256, 24
local text = { "It is a truth universally acknowledged, th", "Call me Ishmael. Some years ago, never mi" }
for _, act in ipairs { "gelu_tanh", "gelu" } do
  local s = kiln.train {
    model = { vocab_size = V, block_size = 32, n_layer = 2, n_head = 2, n_embd = 32, seed = 5, activation = act },
    optimizer = { lr = 1e-2 }, data = kiln.dataset("tests/data/tiny_en.txt"),
    steps = 60, batch = 8, context = 32, seed = 3, quiet = true,
  }
  local model = s.model
  assert(model:config().activation == act)
  kiln.save(out .. "/" .. act .. ".safetensors", { model = model, optimizer = s.optimizer })
  local batch = kiln.batch(#text, T)
  local rows = {}
  for v = 0, V - 1 do
    for r, line in ipairs(text) do
      for t = 1, T do batch:set(r, t, line:byte(t), v) end
    end
    model:forward(batch)
    local ce = model:losses():totable()
    for r = 1, #text do
      for t = 1, T do
        local k = (r - 1) * T + t
        rows[k] = rows[k] or { ("%d"):format(text[r]:byte(t)) }
        rows[k][v + 2] = ("%.9g"):format(-ce[r][t])
      end
    end
  end
  local f = assert(io.open(out .. "/" .. act .. ".logprobs", "w"))
  for _, row in ipairs(rows) do f:write(table.concat(row, " "), "\n") end
  f:close()
  print(("%s: trained 60 steps, final loss %.4f"):format(act, s.final_loss))
end
