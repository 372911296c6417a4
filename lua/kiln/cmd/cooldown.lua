-- kiln cooldown RUN_DIR at=STEP length=N shape=S — fork a cooldown from a run's checkpoint
--
-- kiln cooldown RUN_DIR at=STEP length=STEPS shape=linear|cosine|1-sqrt [out=DIR] [floor=0]
--               [eval_every=N] [seed=N] [restart=false] [force=false] [checkpoint_every=0]
--               [average=true]
--
-- Continues RUN_DIR from RUN_DIR/checkpoints/step_<at>.safetensors (model and AdamW moments)
-- with the LR decaying from the run's LR at step `at` to `floor` over `length` steps, into its
-- own run directory (default RUN_DIR-cooldown-<at>-<length>-<shape>); see kiln.cooldown.
local kiln = require "kiln"
local cooldown = require "kiln.cooldown"

local USAGE = "usage: kiln cooldown RUN_DIR at=STEP length=STEPS shape=linear|cosine|1-sqrt [out=DIR] [floor=0] " ..
              "[eval_every=N] [seed=N] [restart=false] [force=false] [checkpoint_every=0] [average=true]"

-- Mistakes in what was asked (a missing checkpoint, a schedule that is not constant, a
-- fingerprint refusal) print one line; anything else keeps its traceback.
local function is_user_error(e)
  return type(e) == "string" and (e:find("^kiln%.cooldown%.fork: ") or e:find("^kiln%.train: ")) ~= nil
end

return function(...)
  local opts, positional = kiln.config.resolve({
    at = -1, length = 0, shape = "", out = "", floor = 0.0, eval_every = 0, seed = "", restart = false,
    force = false, checkpoint_every = 0, average = true,
  }, { ... }, { positional = true, origin = "kiln cooldown", rules = {
    floor = { min = 0 },
    eval_every = { min = 0 }, checkpoint_every = { min = 0 },
    seed = { check = function(v) if v ~= "" and not math.tointeger(tonumber(v)) then return "an integer" end end },
  } })
  if #positional ~= 1 then kiln.config.fail("kiln cooldown: give one run directory\n%s", USAGE) end
  if opts.at < 0 then kiln.config.fail("kiln cooldown: setting 'at' is required: at=STEP, a step the run has a checkpoint of\n%s", USAGE) end
  if opts.length < 1 then kiln.config.fail("kiln cooldown: setting 'length' must be a number of steps >= 1, got %d\n%s", opts.length, USAGE) end
  if opts.shape == "" then kiln.config.fail("kiln cooldown: setting 'shape' is required: shape=%s\n%s", table.concat(cooldown.SHAPES, "|"), USAGE) end
  for _, s in ipairs(cooldown.SHAPES) do if opts.shape == s then goto known end end
  kiln.config.fail("kiln cooldown: setting 'shape' must be one of %s, got '%s'", table.concat(cooldown.SHAPES, ", "), opts.shape)
  ::known::
  local average = nil                 -- the run's own average, continued
  if not opts.average then average = false end
  local ok, summary = pcall(cooldown.fork, {
    run = positional[1], at = opts.at, length = opts.length, shape = opts.shape,
    out = opts.out ~= "" and opts.out or nil, floor = opts.floor, eval_every = opts.eval_every,
    seed = opts.seed ~= "" and math.tointeger(tonumber(opts.seed)) or nil, restart = opts.restart,
    force = opts.force, checkpoint_every = opts.checkpoint_every,
    average = average,
    command = "kiln cooldown " .. table.concat({ ... }, " "),
  })
  if not ok then
    if is_user_error(summary) then kiln.config.fail("%s", summary) end
    error(summary, 0)
  end
  local parts = {}
  for name, loss in pairs(summary.eval or {}) do parts[#parts + 1] = ("%s_loss %.4f"):format(name, loss) end
  table.sort(parts)
  print(("%s: %s after %d steps%s"):format(summary.cooldown.out, summary.status or "?", summary.steps or 0,
    #parts > 0 and (": " .. table.concat(parts, "  ")) or ""))
end
