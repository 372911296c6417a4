#!/usr/bin/env kiln
-- kiln.tokenizer and `kiln tokenize`: training from Lua, encode/decode round trips, special
-- tokens only when allowed, save/load, uint16 token files, stats, and errors that say what
-- is wrong.
local t = dofile("tests/lua/tap.lua")
local kiln = require "kiln"
local tokenizer = kiln.tokenizer
local build = os.getenv("KILN_BUILD") or "build"
local dir = t.tmpdir()
local en, other = "tests/data/tiny_en.txt", "tests/data/tiny_other.txt"
local other_text = t.read(other)

local tok = tokenizer.train{ files = en, vocab_size = 700, specials = { "<|endoftext|>" }, progress = false }
t.eq(tok:vocab_size(), 700, "train: the vocabulary has the size asked for")
t.eq(tok:special_id("<|endoftext|>"), 0, "train: the special token is id 0")
t.eq(tok:token(0), "<|endoftext|>", "token(0) is the special's text")
t.eq(tok:num_merges(), 700 - 1 - 256, "merges = vocab - specials - 256 bytes")
local l, r, m = tok:merge(1)
t.eq(tok:token(m), tok:token(l) .. tok:token(r), "merge 1 makes its two tokens joined")

local ids = tok:encode(other_text)
t.ok(#ids > 0 and #ids < #other_text, "encode: fewer tokens than bytes (" .. #ids .. ")")
t.eq(tok:decode(ids), other_text, "decode(encode(text)) is the text")
t.eq(tok:count(other_text), #ids, "count agrees with encode")

local s = "a<|endoftext|>b"
local plain, allowed = tok:encode(s), tok:encode(s, true)
local function has(list, v) for _, x in ipairs(list) do if x == v then return true end end return false end
t.ok(not has(plain, 0), "without allow_special the special's text is ordinary text")
t.ok(has(allowed, 0), "with allow_special it is the special token")
t.eq(tok:decode(allowed), s, "and decodes back to the text")

local path = dir .. "/tokenizer.json"
tok:save(path)
local back = tokenizer.load(path)
t.eq(table.concat(back:encode(other_text), ","), table.concat(ids, ","), "save/load: the same ids")
t.eq(tostring(tokenizer.load(dir)), tostring(back), "load(dir) finds tokenizer.json in it")

local n = tok:encode_file(other, dir .. "/other.bin")
local bin = t.read(dir .. "/other.bin")
t.eq(#bin, 2 * n, "encode_file writes 2 bytes per token")
t.eq(tok:decode(tokenizer.read_bin(dir .. "/other.bin")), other_text, "the .bin decodes to the file")

local st = tokenizer.stats(tok, other)
t.eq(st.bytes, #other_text, "stats: bytes")
t.near(st.bytes_per_token, #other_text / #ids, 1e-12, "stats: bytes per token")

t.err("unknown option 'vocab'", tokenizer.train, { files = en, vocab = 10 })
t.err("cannot read training file 'nope.txt'", tokenizer.train, { files = "nope.txt", vocab_size = 300 })
t.err("vocab_size", tokenizer.train, { files = en, vocab_size = 0 })
t.err("alphabet", tokenizer.train, { files = en, vocab_size = 300, alphabet = "some" })
t.err("missing%.json: cannot open", tokenizer.load, dir .. "/missing.json")
t.err("neither tokenizer.json nor encoder.json", tokenizer.load, t.tmpdir())
t.err("outside the vocabulary", tok.decode, tok, { 1, 700 })
t.err("must be a token id", tok.decode, tok, { 1, "x" })
t.err("token id must be in 0..699", tok.token, tok, 700)
t.write(dir .. "/odd.bin", "abc")
t.err("odd size", tokenizer.read_bin, dir .. "/odd.bin")
tok:close()
t.err("closed", tok.encode, tok, "x")

-- the command line
local kiln_bin = build .. "/kiln"
local out, code = t.sh(("%s tokenize train %s out=%s/cli.json vocab_size=400"):format(kiln_bin, en, dir))
t.ok(code == 0 and out:find("vocabulary 400"), "kiln tokenize train writes tokenizer.json")
out, code = t.sh(("%s tokenize stats tokenizer=%s/cli.json %s"):format(kiln_bin, dir, other))
t.ok(code == 0 and out:find("bytes/tok") and out:find("tiny_other.txt"), "kiln tokenize stats reports bytes per token")
out, code = t.sh(("%s tokenize encode tokenizer=%s/cli.json %s out=%s/cli.bin 2>/dev/null && %s tokenize decode tokenizer=%s/cli.json %s/cli.bin > %s/cli.txt")
  :format(kiln_bin, dir, other, dir, kiln_bin, dir, dir, dir))
t.ok(code == 0 and t.read(dir .. "/cli.txt") == other_text, "kiln tokenize encode out= then decode gives the file back")
out, code = t.sh(kiln_bin .. " tokenize frobnicate")
t.ok(code ~= 0 and out:find("unknown subcommand 'frobnicate'") and out:find("usage"), "an unknown subcommand prints the usage")
out, code = t.sh(kiln_bin .. " tokenize encode " .. other)
t.ok(code ~= 0 and out:find("give tokenizer=PATH"), "encode without a tokenizer says so")

t.done()
