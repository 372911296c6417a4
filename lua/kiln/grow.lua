-- kiln.grow — growth operators that build a larger model from a trained smaller one
-- (Mallik et al., "Warmstarting for Scaling Language Models", arXiv 2411.07340; see
-- docs/warmstart.md §2). Written in Lua over tensor views (narrow / add / scale / copy /
-- fill), so a researcher can change them without
-- recompiling. Details, choices and metadata: docs/warmstart.md.
--
--   local big, recipe = kiln.grow.width(small, { n_embd = 128, n_head = 8 },
--                                       { shrink = 0.4, perturb = "mup_init", seed = 1 })
--   local deep, recipe = kiln.grow.depth(small, { factor = 2, mode = "stack" })
--   kiln.save(path, { model = big, meta = kiln.grow.meta(recipe) })
--
-- width: θ_big = λ·ZeroPad(θ_small) + σ·θ_init(big)   (shrink, zero-pad, perturb: "SZP")
--   λ = shrink; θ_init(big) = the big model's own initialisation (μP-scaled when the big
--   config is μP) from `seed`; σ from `perturb`: "mup_init" (σ = 1, the default),
--   "complement" (σ = 1 - λ), "none" (σ = 0) or a number. Which σ the paper uses is
--   not stated in the paper (docs/warmstart.md §2); λ = 0 with σ = 1 is exactly a cold start of the big model.
-- width with method = "hyperclone": HyperCloning, function-preserving (see hyperclone below).
-- depth: stacking ([0..L-1, 0..L-1]) or interleaving ([0,0',1,1',...]) copies of blocks;
--   with identity = true (default) each new block's attn.c_proj and mlp.c_proj weights and
--   biases are 0, so it adds nothing to the residual stream and the grown model computes
--   exactly the small model's function.
local kiln = require "kiln"
local check = require "kiln.check"

local M = {}

local function fail(fmt, ...) error("kiln.grow: " .. fmt:format(...), 0) end

local function copy_table(t)
  local o = {}
  for k, v in pairs(t) do o[k] = v end
  return o
end

-- Segments {src_start, dst_start, len} (1-based) mapping one dimension of a small tensor into
-- the big one, by what the dimension indexes.
local function segments(kind, s, b)
  if kind == "resid" then return { { 1, 1, s.n_embd } }
  elseif kind == "mlp" then return { { 1, 1, 4 * s.n_embd } }
  elseif kind == "vocab" then return { { 1, 1, s.vocab_size } }
  elseif kind == "pos" then return { { 1, 1, s.block_size } }
  elseif kind == "heads" or kind == "qkv" then
    -- attention channels: small head h's hs_s channels go to the first hs_s channels of big
    -- head h. With the head size fixed (n_head grows) this is the plain top-left block.
    local hs_s, hs_b = s.n_embd // s.n_head, b.n_embd // b.n_head
    local parts = kind == "qkv" and 3 or 1
    local out = {}
    for j = 0, parts - 1 do
      if hs_s == hs_b then
        out[#out + 1] = { j * s.n_embd + 1, j * b.n_embd + 1, s.n_embd }
      else
        for h = 0, s.n_head - 1 do
          out[#out + 1] = { j * s.n_embd + h * hs_s + 1, j * b.n_embd + h * hs_b + 1, hs_s }
        end
      end
    end
    return out
  end
  error("unknown dimension kind " .. tostring(kind))
end

-- What each dimension of a parameter indexes, from its (nanoGPT) name.
local function dim_kinds(name)
  if name:find("wte.weight", 1, true) then return { "vocab", "resid" } end
  if name:find("wpe.weight", 1, true) then return { "pos", "resid" } end
  if name:find("attn.c_attn.weight", 1, true) then return { "qkv", "resid" } end
  if name:find("attn.c_attn.bias", 1, true) then return { "qkv" } end
  if name:find("attn.c_proj.weight", 1, true) then return { "resid", "heads" } end
  if name:find("mlp.c_fc.weight", 1, true) then return { "mlp", "resid" } end
  if name:find("mlp.c_fc.bias", 1, true) then return { "mlp" } end
  if name:find("mlp.c_proj.weight", 1, true) then return { "resid", "mlp" } end
  return { "resid" }   -- LayerNorm weights and biases, c_proj biases
end

-- The regions of big's tensor `name` that hold small's values: a list of
-- {small_view, big_view} pairs. Exposed for tests and for researchers' own operators.
function M.blocks(small, big, name)
  local who = "kiln.grow.blocks"
  check.arg(who, "small", small, "kiln.Model")
  check.arg(who, "big", big, "kiln.Model")
  check.string(who, "name", name)
  local s, b = small:config(), big:config()
  for _, k in ipairs { "n_embd", "n_head", "vocab_size", "block_size" } do
    if b[k] < s[k] then check.error(who, "the big model's %s %d is smaller than the small model's %d", k, b[k], s[k]) end
  end
  local okp, ts = pcall(small.param, small, name)
  local okb, tb = pcall(big.param, big, name)
  if not (okp and okb) then check.error(who, "no parameter named %s in both models", check.describe(name)) end
  local kinds = dim_kinds(name)
  local out = {}
  if #kinds == 1 then
    for _, g in ipairs(segments(kinds[1], s, b)) do
      out[#out + 1] = { ts:narrow(1, g[1], g[3]), tb:narrow(1, g[2], g[3]) }
    end
  else
    for _, g1 in ipairs(segments(kinds[1], s, b)) do
      for _, g2 in ipairs(segments(kinds[2], s, b)) do
        out[#out + 1] = { ts:narrow(1, g1[1], g1[3]):narrow(2, g2[1], g2[3]),
                          tb:narrow(1, g1[2], g1[3]):narrow(2, g2[2], g2[3]) }
      end
    end
  end
  return out
end

local function sigma_of(perturb, lambda)
  if perturb == nil or perturb == "mup_init" or perturb == "init" then return 1, "mup_init" end
  if perturb == "complement" then return 1 - lambda, "complement" end
  if perturb == "none" or perturb == false then return 0, "none" end
  if type(perturb) == "number" and perturb >= 0 and perturb < math.huge then return perturb, "sigma" end
  check.fail("kiln.grow.width", "opts.perturb", '"mup_init", "complement", "none" or a finite number >= 0', perturb)
end

-- HyperCloning (Samragh et al. 2024, arXiv 2409.12903; docs/warmstart.md): the big model is
-- n = n_embd_big / n_embd_small times wider and computes the small model's function. Every
-- activation of width d becomes n copies side by side; a linear map whose input is such a
-- tiled vector gets its weight tiled n x n and divided by n (y = Σ_b (W/n)·x = W·x in each
-- output copy), biases and LayerNorm parameters are tiled (a tiled vector has the small
-- vector's mean and variance), wte and wpe are tiled along d unscaled, and heads are cloned:
-- n_head x n with the head size kept, so big head h computes small head h mod n_head.
local function effective_scales(c)
  -- the factor on the tied readout's logits, and the one on the attention scores' q·k
  local hs = c.n_embd // c.n_head
  if c.parametrization == "mup" then
    return (c.output_mult or 1) / (c.n_embd / (c.base_width or c.n_embd)), (c.attn_mult or 1) / hs
  end
  return 1, 1 / math.sqrt(hs)
end

-- Copy small tensor ts into the rows x cols grid of blocks of big tensor tb, each block
-- times `scale`; rows/cols count repetitions along each dimension (cols nil for 1-D), and
-- row0 offsets the rows (a q/k/v third of c_attn).
local function tile(ts, tb, rows, cols, scale, row0, rows_of_block)
  local r = rows_of_block or ts:size(1)
  for a = 0, rows - 1 do
    local band = tb:narrow(1, (row0 or 0) + a * r + 1, r)
    if not cols then
      band:copy(ts):scale(scale)
    else
      local c = ts:size(2)
      for b = 0, cols - 1 do band:narrow(2, b * c + 1, c):copy(ts):scale(scale) end
    end
  end
end

-- The paper's symmetry breaking: in each row band, pairs of column blocks get +N and -N, so
-- a tiled input still sees Σ_b W_b = W (function preserved) while the copies now differ.
-- N ~ N(0, σ²) with σ² = mean(block²)·10^(-snr_db/10).
local function add_pair_noise(tb, ts, n, scale, row0, snr_db, rng)
  local r, c = ts:size(1), ts:size(2)
  local power = (ts:norm() * scale) ^ 2 / ts:numel()
  local std = math.sqrt(power / 10 ^ (snr_db / 10))
  for a = 0, n - 1 do
    local band = tb:narrow(1, row0 + a * r + 1, r)
    for b = 0, n - 2, 2 do
      local noise = ts:clone()
      noise:normal(rng, std)
      band:narrow(2, b * c + 1, c):add(noise)
      band:narrow(2, (b + 1) * c + 1, c):add(noise, -1)
    end
  end
end

local HYPERCLONE_OPTS = { method = true, noise = true, seed = true, from = true }

local function hyperclone(small, big_config, opts)
  for k in pairs(opts) do
    if not HYPERCLONE_OPTS[k] then fail("width: option '%s' does not apply to method \"hyperclone\" (its options: noise, seed, from)", tostring(k)) end
  end
  local s = small:config()
  local cfg = copy_table(s)
  for k, v in pairs(big_config or {}) do cfg[k] = v end
  if (big_config or {}).parametrization == "sp" then
    cfg.base_width, cfg.output_mult, cfg.attn_mult, cfg.zero_query = nil, nil, nil, nil
  end
  cfg.seed = opts.seed or (big_config or {}).seed or 1
  for _, k in ipairs { "vocab_size", "n_layer", "block_size" } do
    if cfg[k] ~= s[k] then fail("width: hyperclone keeps %s (%d), got %s", k, s[k], tostring(cfg[k])) end
  end
  local n = cfg.n_embd // s.n_embd
  if math.type(cfg.n_embd) ~= "integer" or n < 1 or n * s.n_embd ~= cfg.n_embd then
    fail("width: hyperclone needs n_embd a multiple of the small model's %d (got %s)", s.n_embd, tostring(cfg.n_embd))
  end
  if cfg.n_head ~= n * s.n_head then
    fail("width: hyperclone clones heads: n_head must be %d x %d = %d (head size kept), got %s",
      n, s.n_head, n * s.n_head, tostring(cfg.n_head))
  end
  local snr = opts.noise
  if snr ~= nil and snr ~= false and (type(snr) ~= "number" or snr ~= snr) then
    fail("width: noise must be a signal-to-noise ratio in dB (a number) or false (got %s)", tostring(snr))
  end
  snr = snr or nil

  local big = kiln.model(cfg)
  -- what the tiling multiplies: the logits by n (n copies in the tied readout's dot product)
  -- times the change of the readout multiplier; the attention scores by the change of scale
  local out_s, att_s = effective_scales(s)
  local out_b, att_b = effective_scales(big:config())
  local logit_factor = n * out_b / out_s
  local q_scale = att_s / att_b
  local rng = snr and kiln.rng(cfg.seed)
  local d, D = s.n_embd, cfg.n_embd
  for _, p in ipairs(big:params()) do
    local name = p.name
    local ts, tb = small:param(name), big:param(name)
    local kinds = dim_kinds(name)
    if kinds[1] == "vocab" or kinds[1] == "pos" then
      tile(ts, tb, 1, n, 1)
    elseif kinds[1] == "qkv" then
      for j = 0, 2 do
        local third = ts:narrow(1, j * d + 1, d)
        local sc = j == 0 and q_scale or 1
        if #kinds == 1 then tile(third, tb, n, nil, sc, j * D)
        else
          tile(third, tb, n, n, sc / n, j * D)
          if snr then add_pair_noise(tb, third, n, sc / n, j * D, snr, rng) end
        end
      end
    elseif #kinds == 2 then
      tile(ts, tb, n, n, 1 / n)
      if snr then add_pair_noise(tb, ts, n, 1 / n, 0, snr, rng) end
    else
      -- biases and LayerNorm; ln_f also undoes the readout's logit factor
      tile(ts, tb, n, nil, name:find("ln_f", 1, true) and 1 / logit_factor or 1)
    end
  end
  local recipe = {
    op = "width", method = "hyperclone", factor = n, noise_snr_db = snr, seed = cfg.seed,
    readout_scale = 1 / logit_factor, query_scale = q_scale,
    from_n_embd = s.n_embd, from_n_head = s.n_head, from_block_size = s.block_size,
    to_n_embd = cfg.n_embd, to_n_head = cfg.n_head, parametrization = cfg.parametrization,
    from = opts.from,
  }
  return big, recipe
end

local WIDTH_OPTS = { shrink = true, perturb = true, seed = true, norm = true, from = true, method = true, noise = true }

-- grow.width(small, big_config, opts) -> big, recipe
-- big_config: a kiln.model config; missing fields come from the small model's config
-- (so { n_embd = 128, n_head = 8 } is enough). opts: shrink (λ, default 0.4), perturb
-- (see above), seed (the big model's init seed; default big_config.seed or 1), norm
-- ("szp": LayerNorm weights and biases are treated like every other tensor, so a padded
-- LayerNorm weight is σ·1 and a copied one λ·w + σ; "copy": LayerNorm weights and biases are
-- copied unshrunk and unperturbed, new coordinates get weight 1 and bias 0), from (a string
-- naming the source, e.g. its checkpoint path, recorded in the recipe).
local CONFIG_INTS = { "vocab_size", "block_size", "n_layer", "n_head", "n_embd", "seed" }

function M.width(small, big_config, opts)
  local who = "kiln.grow.width"
  check.arg(who, "small", small, "kiln.Model")
  check.arg(who, "big_config", big_config, "?table")
  opts = check.fields(who, "opts", opts or {}, WIDTH_OPTS)
  if opts.method == "hyperclone" then return hyperclone(small, big_config, opts) end
  if opts.method ~= nil and opts.method ~= "szp" then
    check.fail(who, "opts.method", '"szp" (shrink, zero-pad, perturb; the default) or "hyperclone"', opts.method)
  end
  if opts.noise ~= nil then check.error(who, "opts.noise applies to method \"hyperclone\" only") end
  for _, k in ipairs(CONFIG_INTS) do
    if (big_config or {})[k] ~= nil then check.integer(who, "big_config." .. k, big_config[k], 1) end
  end
  check.number(who, "opts.shrink", opts.shrink == nil and 0.4 or opts.shrink)
  if opts.seed ~= nil then check.integer(who, "opts.seed", opts.seed) end
  check.arg(who, "opts.from", opts.from, "?string")
  local s = small:config()
  local cfg = copy_table(s)
  for k, v in pairs(big_config or {}) do cfg[k] = v end
  if (big_config or {}).parametrization == "sp" then
    cfg.base_width, cfg.output_mult, cfg.attn_mult, cfg.zero_query = nil, nil, nil, nil
  end
  local lambda = opts.shrink == nil and 0.4 or opts.shrink
  local sigma, pmode = sigma_of(opts.perturb, lambda)
  local norm = opts.norm or "szp"
  if norm ~= "szp" and norm ~= "copy" then fail("width: norm must be \"szp\" or \"copy\"") end
  cfg.seed = opts.seed or (big_config or {}).seed or 1
  if cfg.vocab_size ~= s.vocab_size then fail("width: vocab_size must stay %d (got %d)", s.vocab_size, cfg.vocab_size) end
  if cfg.n_layer ~= s.n_layer then fail("width: n_layer must stay %d (use grow.depth to add blocks)", s.n_layer) end
  for _, k in ipairs { "n_embd", "n_head", "block_size" } do
    if cfg[k] < s[k] then fail("width: %s %d is smaller than the small model's %d", k, cfg[k], s[k]) end
  end
  if cfg.n_embd % cfg.n_head ~= 0 then fail("width: n_embd %d is not divisible by n_head %d", cfg.n_embd, cfg.n_head) end
  if cfg.n_embd // cfg.n_head < s.n_embd // s.n_head then
    fail("width: head size %d is smaller than the small model's %d", cfg.n_embd // cfg.n_head, s.n_embd // s.n_head)
  end

  local big = check.call(who, kiln.model, cfg)       -- θ_init(big), μP-scaled under μP
  for _, p in ipairs(big:params()) do
    local name = p.name
    local tb = big:param(name)
    if norm == "copy" and p.kind == "norm" then
      tb:fill(1)
      for _, pair in ipairs(M.blocks(small, big, name)) do pair[2]:copy(pair[1]) end
    elseif norm == "copy" and p.kind == "bias" and name:find("ln_", 1, true) then
      tb:fill(0)
      for _, pair in ipairs(M.blocks(small, big, name)) do pair[2]:copy(pair[1]) end
    else
      tb:scale(sigma)
      if lambda ~= 0 then
        for _, pair in ipairs(M.blocks(small, big, name)) do pair[2]:add(pair[1], lambda) end
      end
    end
  end
  local recipe = {
    op = "width", shrink = lambda, perturb = pmode, sigma = sigma, seed = cfg.seed, norm = norm,
    from_n_embd = s.n_embd, from_n_head = s.n_head, from_block_size = s.block_size,
    to_n_embd = cfg.n_embd, to_n_head = cfg.n_head, parametrization = cfg.parametrization,
    from = opts.from,
  }
  return big, recipe
end

local DEPTH_OPTS = { factor = true, n_layer = true, mode = true, new_blocks = true, identity = true, seed = true, from = true }

-- grow.depth(small, opts) -> big, recipe
-- opts: n_layer (target depth) or factor (default 2); mode "stack" (new blocks on top,
-- copies of blocks 0, 1, ... in order; any n_layer >= the small one's) or "interleave"
-- (each block followed by factor-1 copies of itself; n_layer a multiple of the small one's);
-- new_blocks "copy" (default: copies of the source block) or "init" (the big model's fresh
-- init from seed); identity (default true): zero the new blocks' attn.c_proj and
-- mlp.c_proj weights and biases, so every new block is the identity on the residual stream.
function M.depth(small, opts)
  local who = "kiln.grow.depth"
  check.arg(who, "small", small, "kiln.Model")
  opts = check.fields(who, "opts", opts or {}, DEPTH_OPTS)
  local s = small:config()
  local L = s.n_layer
  if opts.factor ~= nil then check.integer(who, "opts.factor", opts.factor, 1, 1024) end
  if opts.n_layer ~= nil then check.integer(who, "opts.n_layer", opts.n_layer, L, 1024 * L) end
  if opts.seed ~= nil then check.integer(who, "opts.seed", opts.seed) end
  check.arg(who, "opts.identity", opts.identity, "?boolean")
  check.arg(who, "opts.from", opts.from, "?string")
  local Lb = opts.n_layer or L * (opts.factor or 2)
  local mode = opts.mode or "stack"
  local new_blocks = opts.new_blocks or "copy"
  local identity = opts.identity ~= false
  if math.type(Lb) ~= "integer" or Lb < L then fail("depth: n_layer must be an integer >= %d", L) end
  if mode ~= "stack" and mode ~= "interleave" then fail("depth: mode must be \"stack\" or \"interleave\"") end
  if mode == "interleave" and Lb % L ~= 0 then fail("depth: interleave needs n_layer a multiple of %d", L) end
  if new_blocks ~= "copy" and new_blocks ~= "init" then fail("depth: new_blocks must be \"copy\" or \"init\"") end
  local cfg = copy_table(s)
  cfg.n_layer, cfg.seed = Lb, opts.seed or 1
  local big = check.call(who, kiln.model, cfg)
  -- source[i] = small block copied into big block i; is_new[i] = it is an added block
  local source, is_new = {}, {}
  for i = 0, Lb - 1 do
    if mode == "stack" then source[i], is_new[i] = i % L, i >= L
    else local k = Lb // L; source[i], is_new[i] = i // k, i % k ~= 0 end
  end
  for _, p in ipairs(big:params()) do
    local tb = big:param(p.name)
    if p.layer == nil then
      tb:copy(small:param(p.name))
    else
      local i = p.layer
      local suffix = p.name:match("^transformer%.h%.%d+%.(.*)$")
      if not is_new[i] or new_blocks == "copy" then
        tb:copy(small:param(("transformer.h.%d.%s"):format(source[i], suffix)))
      end
      if is_new[i] and identity and suffix:find("c_proj", 1, true) then tb:fill(0) end
    end
  end
  local map = {}
  for i = 0, Lb - 1 do map[#map + 1] = (is_new[i] and "+" or "") .. source[i] end
  local recipe = { op = "depth", mode = mode, new_blocks = new_blocks, identity = identity,
                   from_n_layer = L, to_n_layer = Lb, layers = table.concat(map, ","),
                   seed = cfg.seed, from = opts.from }
  return big, recipe
end

-- Flat checkpoint metadata for a recipe (or a list of recipes, applied in order):
-- keys "grow.<field>" (or "grow.<i>.<field>"), for kiln.save{meta = ...}.
function M.meta(recipe, into)
  check.arg("kiln.grow.meta", "recipe", recipe, "table")
  local out = check.arg("kiln.grow.meta", "into", into, "?table") or {}
  local function put(prefix, r)
    for k, v in pairs(r) do
      if type(v) == "number" or type(v) == "string" or type(v) == "boolean" then out[prefix .. k] = v end
    end
  end
  if recipe[1] then
    out["grow.steps"] = #recipe
    for i, r in ipairs(recipe) do put(("grow.%d."):format(i), check.arg("kiln.grow.meta", ("recipe[%d]"):format(i), r, "table")) end
  else
    put("grow.", recipe)
  end
  return out
end

-- The recipe back from a checkpoint's meta (kiln.load's second result), or nil.
function M.recipe_from_meta(meta)
  check.arg("kiln.grow.recipe_from_meta", "meta", meta, "table")
  local r
  for k, v in pairs(meta) do
    local field = type(k) == "string" and k:match("^grow%.([%w_]+)$")
    if field and field ~= "steps" then
      r = r or {}
      r[field] = tonumber(v) or (v == "true" and true) or (v == "false" and false) or v
    end
  end
  return r
end

return M
