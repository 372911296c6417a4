#!/usr/bin/env kiln
-- m:generate / m:logits and `kiln sample`: text in and out, streaming, stops, seeds, the
-- tokenizer hook, and the errors a researcher may run into.
local t = dofile("tests/lua/tap.lua")
local kiln = require "kiln"
local dir = t.tmpdir()
local kiln_bin = (os.getenv("KILN_BUILD") or "build") .. "/kiln"
kiln.set_threads(2)

-- A byte-level model that has memorised one line.
local TEXT = "a kiln fires clay; the sampler fires tokens.\n"
local function memorised()
  local m = kiln.model{ vocab_size = 256, block_size = 64, n_layer = 2, n_head = 2, n_embd = 32, seed = 3 }
  local opt = kiln.adamw(m, { lr = 1e-2, weight_decay = 0 })
  local n = #TEXT - 1
  local batch = kiln.batch(1, n)
  for i = 1, n do batch:set(1, i, TEXT:byte(i), TEXT:byte(i + 1)) end
  local loss
  for _ = 1, 300 do
    m:zero_grad(); loss = m:forward(batch); m:backward(); opt:step()
  end
  t.note(("memorised: loss %.4f after 300 steps"):format(loss))
  return m
end

local m = memorised()
local rest = TEXT:sub(8)
local got, why = m:generate("a kiln ", { max_new_tokens = #rest, temperature = 0 })
t.eq(got, rest, "greedy decoding of a string prompt returns the memorised text")
t.eq(why, "length", "... ending for length")

local ids = m:generate({ 97, 32, 107 }, { max_new_tokens = 4, temperature = 0 })
t.eq(type(ids), "table", "a table of ids gives ids back")
t.eq(string.char(table.unpack(ids)), "iln ", "... the same continuation as text")

-- m:logits(): the distribution the last token was drawn from.
m:generate("a kiln", { max_new_tokens = 0 })
local lg = m:logits()
t.eq(lg:size(1), 256, "logits() has vocab_size entries")
local best, bv = -1, -math.huge
for i = 1, 256 do if lg:get(i) > bv then best, bv = i - 1, lg:get(i) end end
t.eq(best, 32, "max_new_tokens = 0: logits() is the prompt's next-token distribution (argmax ' ')")
local one = m:generate("a kiln", { max_new_tokens = 1, temperature = 0 })
t.eq(one, " ", "greedy's one token is that argmax")

-- Streaming: pieces arrive in order and add up to the result; false ends the generation.
local pieces, seen = {}, {}
local text = m:generate("a", { max_new_tokens = 30, seed = 7, on_token = function(id, piece)
  seen[#seen + 1] = id; pieces[#pieces + 1] = piece
end })
t.eq(table.concat(pieces), text, "on_token's pieces concatenate to the returned text")
t.eq(#seen, 30, "on_token is called once per token")
local count = 0
local cut, why2 = m:generate("a", { max_new_tokens = 30, on_token = function() count = count + 1; return count < 5 end })
t.ok(#cut == 5 and why2 == "callback", "on_token returning false ends after that token (" .. #cut .. ", " .. why2 .. ")")

-- Stops: a text, an id, a sequence of ids; the stop is part of the output.
local s1, w1 = m:generate("a kiln ", { max_new_tokens = 100, temperature = 0, stop = "clay" })
t.ok(s1 == "fires clay" and w1 == "stop", "stop = \"clay\": '" .. s1 .. "' (" .. w1 .. ")")
local s2 = m:generate("a kiln ", { max_new_tokens = 100, temperature = 0, stop = { 59 } })
t.eq(s2, "fires clay;", "stop = {59}: the token ';'")
local s3 = m:generate("a kiln ", { max_new_tokens = 100, temperature = 0, stop = { { 116, 104 }, "zz" } })
t.eq(s3, "fires clay; th", "a sequence of ids among several stops")

-- Seeds.
local a = m:generate("a", { max_new_tokens = 40, temperature = 2, seed = 1 })
local b = m:generate("a", { max_new_tokens = 40, temperature = 2, seed = 1 })
local c = m:generate("a", { max_new_tokens = 40, temperature = 2, seed = 2 })
t.ok(a == b, "same seed, same text")
t.ok(a ~= c, "another seed, another text")
local g1 = m:generate("a kil", { max_new_tokens = 20, temperature = 0 })
local k1 = m:generate("a kil", { max_new_tokens = 20, temperature = 2, top_k = 1, seed = 5 })
t.eq(k1, g1, "top_k = 1 is greedy")

-- Context: 64 positions; sliding goes on, stop ends.
local long, wl = m:generate("a", { max_new_tokens = 100, seed = 3 })
t.ok(#long == 100 and wl == "length", "slide (default): 100 tokens past a 64-token context")
local full, wf = m:generate("a", { max_new_tokens = 100, seed = 3, context = "stop" })
t.ok(#full == 64 and wf == "full", "context = \"stop\": 64 tokens after a 1-token prompt (" .. #full .. ")")
t.eq(full, long:sub(1, 64), "... the same tokens up to there")

-- The tokenizer hook: a 16-token model over the letters a..p.
local letters = {
  encode = function(self, s)
    local out = {}
    for ch in s:gmatch(".") do out[#out + 1] = ch:byte() - 97 end
    return out
  end,
  decode = function(self, list)
    local chars = {}
    for i, id in ipairs(list) do chars[i] = string.char(97 + id) end
    return table.concat(chars)
  end,
}
local small = kiln.model{ vocab_size = 16, block_size = 32, n_layer = 1, n_head = 2, n_embd = 16 }
local streamed = {}
local out = small:generate("abc", { max_new_tokens = 12, tokenizer = letters, seed = 4, stop = "pp",
                                    on_token = function(_, piece) streamed[#streamed + 1] = piece end })
t.ok(#out >= 1 and not out:find("[^a-p]"), "a tokenizer decodes the output: '" .. out .. "'")
t.eq(table.concat(streamed), out, "... and each streamed piece")
local ids2 = small:generate({ 0, 1, 2 }, { max_new_tokens = 12, seed = 4, stop = { { 15, 15 } } })
t.eq(letters:decode(ids2), out, "the same ids as passing the encoded prompt")

-- Errors.
t.err("unknown option 'temprature'", m.generate, m, "a", { temprature = 1 })
t.err("top_p %(0%) must be in %(0, 1%]", m.generate, m, "a", { top_p = 0 })
t.err("temperature %(%-1%) must be a finite number >= 0", m.generate, m, "a", { temperature = -1 })
t.err("top_k %(300%) must be in %[0, 256%]", m.generate, m, "a", { top_k = 300 })
t.err("max_new_tokens %(%-1%) must be in", m.generate, m, "a", { max_new_tokens = -1 })
t.err("field 'seed' must be an integer", m.generate, m, "a", { seed = 1.5 })
t.err("context must be \"slide\" or \"stop\"", m.generate, m, "a", { context = "wrap" })
t.err("stop%[2%] = 300 is not a token id", m.generate, m, "a", { stop = { "x", 300 } })
t.err("stop%[1%] is empty", m.generate, m, "a", { stop = "" })
t.err("prompt is empty", m.generate, m, "", {})
t.err("prompt%[2%] must be a token id in %[0, 256%) %(got string%)", m.generate, m, { 1, "a" })
t.err("prompt must be a string or a table", m.generate, m, 42)
t.err("on_token must be a function", m.generate, m, "a", { on_token = 1 })
t.err("boom", m.generate, m, "a", { on_token = function() error("boom") end })
t.err("vocabulary %(16%) is not bytes", small.generate, small, "abc", {})
t.err("tokenizer must be an object", small.generate, small, "abc", { tokenizer = 3 })
t.err("the tokenizer has no encode method", small.generate, small, "abc", { tokenizer = { decode = letters.decode } })
t.err("the tokenizer has no decode method", small.generate, small, "abc", { tokenizer = { encode = letters.encode } })
t.err("the tokenizer has no decode method", small.generate, small, "abc",
      { tokenizer = { encode = letters.encode }, on_token = function() end })
t.err("no generation yet", kiln.model{ n_layer = 1, n_head = 1, n_embd = 8, block_size = 8 }.logits,
      kiln.model{ n_layer = 1, n_head = 1, n_embd = 8, block_size = 8 })
local closed = kiln.model{ n_layer = 1, n_head = 1, n_embd = 8, block_size = 8 }
closed:generate("a", { max_new_tokens = 2 })
closed:close()
t.err("kiln.Model: object is closed", closed.generate, closed, "a")
t.err("kiln.Model: object is closed", closed.logits, closed)

-- kiln sample: streams the memorised text from a checkpoint.
local ckpt = dir .. "/memorised.safetensors"
kiln.save(ckpt, { model = m })
local shown, code = t.sh(("%s sample %s 'a kiln ' n=%d temperature=0"):format(kiln_bin, ckpt, #rest))
t.eq(code, 0, "kiln sample exits 0")
t.eq(shown, TEXT .. "\n", "kiln sample prints the prompt and the memorised continuation")
local stopped = t.sh(("%s sample %s 'a kiln ' temperature=0 stop=';'"):format(kiln_bin, ckpt))
t.eq(stopped, "a kiln fires clay;\n", "kiln sample stop=';'")
local s_a = t.sh(("%s sample %s a n=30 seed=9 threads=1"):format(kiln_bin, ckpt))
local s_b = t.sh(("%s sample %s a n=30 seed=9 threads=2"):format(kiln_bin, ckpt))
t.ok(s_a == s_b and #s_a == 32, "kiln sample: the same text at 1 and 2 threads")
local bad, bcode = t.sh(("%s sample %s a top_p=2"):format(kiln_bin, ckpt))
t.ok(bcode ~= 0 and bad:find("top_p %(2%) must be in") and not bad:find("^a"),
     "kiln sample refuses top_p=2 before writing anything")
local none, ncode = t.sh(kiln_bin .. " sample")
t.ok(ncode ~= 0 and none:find("usage: kiln sample"), "kiln sample without a checkpoint shows the usage")
local missing, mcode = t.sh(kiln_bin .. " sample " .. dir .. "/nope.safetensors")
t.ok(mcode ~= 0 and missing:find("nope.safetensors"), "a missing checkpoint is named")

-- A checkpoint that carries a BPE tokenizer: kiln sample encodes the prompt and decodes the
-- continuation with it (a tokenizer trained here on the test text, so no corpus is needed).
local tok = kiln.tokenizer.train { files = "tests/data/tiny_en.txt", vocab_size = 300 }
local bm = kiln.model { vocab_size = tok:vocab_size(), block_size = 16, n_layer = 1, n_head = 2, n_embd = 16 }
local bpe_ckpt = dir .. "/bpe.safetensors"
kiln.save(bpe_ckpt, { model = bm, tokenizer = tok })
local prompt = "the quick brown"
local out_b, code_b = t.sh(("%s sample %s %q n=12 temperature=0"):format(kiln_bin, bpe_ckpt, prompt))
local direct = bm:generate(tok:encode(prompt), { max_new_tokens = 12, temperature = 0 })
t.ok(code_b == 0 and out_b == prompt .. tok:decode(direct) .. "\n",
     "kiln sample decodes a BPE checkpoint's continuation with the tokenizer it carries")

t.done()
