-- kiln sample CKPT ["prompt"] [n=256] [temperature=1] [top_k=0] [top_p=1] [seed=1]
--                  [stop=TEXT] [context=slide] [threads=N] [prompt=TEXT]
--
-- Loads a checkpoint and writes the prompt followed by its continuation to stdout, a token
-- at a time as it is generated (flushed per token). temperature=0 is greedy decoding; the
-- same seed gives the same text. stop=TEXT ends the continuation after TEXT appears.
-- context=slide keeps generating past block_size on the last block_size tokens (as
-- cropping the context does); context=stop ends there. Ctrl-C ends the continuation early.
local kiln = require "kiln"

local USAGE = 'usage: kiln sample CKPT ["prompt"] [n=256] [temperature=1] [top_k=0] [top_p=1] ' ..
              '[seed=1] [stop=TEXT] [context=slide|stop] [threads=N] [prompt=TEXT]'

local DEFAULTS = {
  n = 256, temperature = 1.0, top_k = 0, top_p = 1.0, seed = 1, stop = "", context = "slide",
  threads = 0, prompt = "\n",
}

-- The tokenizer that turns text into the model's ids and back: the one the checkpoint
-- carries, or none for a byte-level model (the bytes are the ids).
local function tokenizer_for(model, meta)
  if type(meta.tokenizer) == "userdata" then return meta.tokenizer end
  return nil
end

return function(...)
  local opts, positional = kiln.config.resolve(DEFAULTS, { ... }, { positional = true })
  if #positional < 1 or #positional > 2 then
    error("kiln sample: give a checkpoint and optionally a prompt\n" .. USAGE, 0)
  end
  local path, prompt = positional[1], positional[2] or opts.prompt
  if opts.threads > 0 then kiln.set_threads(opts.threads) end
  local model, meta = kiln.load(path)
  local tokenizer = tokenizer_for(model, meta)
  local vocab = model:config().vocab_size
  if not tokenizer and vocab ~= 256 then
    error(("kiln sample: %s has a vocabulary of %d tokens, not bytes, and no tokenizer to " ..
           "encode the prompt with"):format(path, vocab), 0)
  end
  local gen = {
    max_new_tokens = 0, temperature = opts.temperature, top_k = opts.top_k,
    top_p = opts.top_p, seed = opts.seed, context = opts.context, tokenizer = tokenizer,
    stop = opts.stop ~= "" and opts.stop or nil,
  }
  -- Bad settings are refused before anything is written (a 0-token run checks them all).
  model:generate(prompt, gen)
  gen.max_new_tokens = opts.n
  gen.on_token = function(id, piece)
    io.write(piece or ("<%d>"):format(id))
    io.flush()
  end
  io.write(prompt)
  io.flush()
  local ok, err = pcall(model.generate, model, prompt, gen)
  io.write("\n")
  if not ok and not tostring(err):find("interrupted", 1, true) then error(err, 0) end
end
