-- Runs the Argo CD health checks of deploy/argocd/health-checks.yaml, the exact text of each
-- resource.customizations.health.<group>_<Kind> key, against the fixtures of fixtures.lua, the
-- way Argo CD runs them: the live object as the global `obj`, only the base, table and (safe) os
-- libraries, strings without methods. Checks each result's status and message, then that every
-- phase and condition reason the operator's sources write has a fixture.
--
--   lua5.4 deploy/argocd/test/run.lua [repo root]            run the fixtures
--   lua5.4 deploy/argocd/test/run.lua [repo root] --extract D write each script to D/<key>
--
-- Runs under Lua 5.1 (what Argo CD's gopher-lua implements) and 5.4.
local root = arg[1] or "."
local HEALTH = root .. "/deploy/argocd/health-checks.yaml"
local FIXTURES = root .. "/deploy/argocd/test/fixtures.lua"
local PREFIX = "resource.customizations.health.x0tta6bl4.io_"

local function fail(message)
  io.stderr:write("argocd-test: " .. message .. "\n")
  os.exit(1)
end

local function read(path)
  local file, err = io.open(path, "r")
  if not file then
    fail("cannot read " .. tostring(err))
  end
  local text = file:read("*a")
  file:close()
  return text
end

-- The literal block scalars under the top-level `data:` of the ConfigMap, by key. Strict: any
-- line it does not understand is an error rather than a silently different script
-- (test.sh also compares the result with PyYAML's reading of the file).
local function extract(path)
  local lines = {}
  for line in (read(path) .. "\n"):gmatch("(.-)\r?\n") do
    lines[#lines + 1] = line
  end
  local i = 1
  while i <= #lines and lines[i] ~= "data:" do
    i = i + 1
  end
  if i > #lines then
    fail(path .. ": no top-level data: key")
  end
  i = i + 1
  local scripts, order = {}, {}
  while i <= #lines do
    local line = lines[i]
    if line:match("^%S") then
      break
    end
    if line:find("\t", 1, true) then
      fail(path .. ":" .. i .. ": tab in the data section")
    end
    if line:match("^%s*$") or line:match("^%s*#") then
      i = i + 1
    else
      local key, indicator = line:match("^  ([%w%._/%-]+):%s*(.-)%s*$")
      if key == nil then
        fail(path .. ":" .. i .. ": unexpected line in data: " .. line)
      end
      if indicator ~= "|" then
        fail(path .. ":" .. i .. ": " .. key .. " must be a literal block scalar (|), found '" .. indicator .. "'")
      end
      local start = i
      i = i + 1
      local indent
      local body = {}
      while i <= #lines do
        local l = lines[i]
        if l:find("\t", 1, true) then
          fail(path .. ":" .. i .. ": tab in " .. key)
        end
        local lead = #l:match("^( *)")
        if l:match("^ *$") then
          if indent ~= nil and lead > indent then
            body[#body + 1] = l:sub(indent + 1)
          else
            body[#body + 1] = ""
          end
          i = i + 1
        else
          if indent == nil then
            if lead <= 2 then
              break
            end
            indent = lead
          end
          if lead < indent then
            break
          end
          body[#body + 1] = l:sub(indent + 1)
          i = i + 1
        end
      end
      -- Clip chomping: one final line break, trailing empty lines dropped.
      while #body > 0 and body[#body] == "" do
        body[#body] = nil
      end
      if #body == 0 then
        fail(path .. ":" .. start .. ": " .. key .. " is empty")
      end
      if scripts[key] ~= nil then
        fail(path .. ":" .. start .. ": " .. key .. " appears twice")
      end
      scripts[key] = table.concat(body, "\n") .. "\n"
      order[#order + 1] = key
    end
  end
  return scripts, order
end

local scripts, order = extract(HEALTH)

if arg[2] == "--extract" then
  local dir = arg[3] or fail("--extract needs a directory")
  for _, key in ipairs(order) do
    local file = io.open(dir .. "/" .. key, "w") or fail("cannot write into " .. dir)
    file:write(scripts[key])
    file:close()
  end
  os.exit(0)
end

local function copy(value)
  if type(value) ~= "table" then
    return value
  end
  local out = {}
  for k, v in pairs(value) do
    out[k] = copy(v)
  end
  return out
end

-- Argo CD (util/lua/lua.go) opens package, base, table and a safe os (time, date, clock) only.
local BASE = {
  "assert", "error", "getmetatable", "ipairs", "next", "pairs", "pcall", "rawequal", "rawget",
  "rawset", "select", "setmetatable", "tonumber", "tostring", "type", "unpack", "xpcall", "_VERSION",
}

local function sandbox(object)
  local env = {}
  for _, name in ipairs(BASE) do
    env[name] = _G[name]
  end
  env._G = env
  env.table = copy(table)
  env.os = { time = os.time, date = os.date, clock = os.clock }
  env.obj = object
  return env
end

local compile
if setfenv ~= nil then
  compile = function(code, name, env)
    local chunk, err = loadstring(code, "=" .. name)
    if chunk ~= nil then
      setfenv(chunk, env)
    end
    return chunk, err
  end
else
  compile = function(code, name, env)
    return load(code, "=" .. name, "t", env)
  end
end

local VALID = { Healthy = true, Progressing = true, Degraded = true, Suspended = true, Missing = true, Unknown = true }

-- Runs the script of `key` on a copy of `object`; returns the result or nil and the error.
local function health(key, object)
  local chunk, err = compile(scripts[key], key, sandbox(copy(object)))
  if chunk == nil then
    return nil, "does not compile: " .. tostring(err)
  end
  -- Without Argo CD's string library strings have no methods: hide them here too.
  local strings = getmetatable("")
  local methods = strings.__index
  strings.__index = nil
  local ok, result = pcall(chunk)
  strings.__index = methods
  if not ok then
    return nil, "raised: " .. tostring(result)
  end
  if type(result) ~= "table" then
    return nil, "returned " .. type(result) .. ", not a table"
  end
  if not VALID[result.status] then
    return nil, "returned status " .. tostring(result.status) .. ", which Argo CD turns into Unknown"
  end
  if type(result.message) ~= "string" or result.message == "" then
    return nil, "returned no message"
  end
  return result
end

local cases = dofile(FIXTURES)
local passed, failed, assertions, gaps = 0, 0, 0, 0
local byKind = {}
for _, case in ipairs(cases) do
  local kind = case.object.kind
  local key = PREFIX .. kind
  if scripts[key] == nil then
    fail("no script " .. key .. " in " .. HEALTH .. " for fixture '" .. case.name .. "'")
  end
  byKind[kind] = byKind[kind] or { reasons = {}, phases = {}, count = 0 }
  local seen = byKind[kind]
  seen.count = seen.count + 1
  local status = case.object.status
  if status ~= nil then
    if status.phase ~= nil then
      seen.phases[status.phase] = true
    end
    for _, c in ipairs(status.conditions or {}) do
      seen.reasons[c.reason] = true
    end
  end

  local problems = {}
  local result, err = health(key, case.object)
  if result == nil then
    problems[#problems + 1] = err
  else
    assertions = assertions + 1
    if result.status ~= case.expect then
      problems[#problems + 1] = "status " .. result.status .. ", expected " .. case.expect
    end
    for _, part in ipairs(case.message) do
      assertions = assertions + 1
      if not result.message:find(part, 1, true) then
        problems[#problems + 1] = "message lacks \"" .. part .. "\""
      end
    end
  end
  local shown = result and (result.status .. ": " .. result.message) or "-"
  if #problems == 0 then
    passed = passed + 1
    print(string.format("ok    %-16s %-70s %s", kind, case.name, shown))
  else
    failed = failed + 1
    print(string.format("FAIL  %-16s %-70s %s", kind, case.name, shown))
    for _, problem in ipairs(problems) do
      print("        " .. problem)
    end
  end
end

for _, key in ipairs(order) do
  local kind = key:sub(#PREFIX + 1)
  if key:sub(1, #PREFIX) ~= PREFIX then
    fail(HEALTH .. ": unexpected key " .. key)
  end
  if byKind[kind] == nil then
    gaps = gaps + 1
    print("FAIL  " .. kind .. ": no fixture")
  end
end

-- Every phase and condition reason the operator writes, read from its sources.
local function code(path)
  local text = read(root .. "/" .. path)
  return text:match("^(.-)#%[cfg%(test%)%]") or text
end

local function collect(into, text, pattern)
  for value in text:gmatch(pattern) do
    into[value] = true
  end
end

local function block(text, name, path)
  return text:match("pub mod " .. name .. " {(.-)\n}") or fail(path .. ": no `pub mod " .. name .. "` block")
end

local written = {
  MeshNetwork = { reasons = {}, phases = {} },
  FLTrainingRound = { reasons = {}, phases = {} },
  ChaosExperiment = { reasons = {}, phases = {} },
}
local LITERAL_REASON = 'Status::%a+,%s*"(%u%a*)"'
collect(written.MeshNetwork.reasons, code("operator/src/mesh/status.rs"), LITERAL_REASON)
local flPlan = code("operator/src/flround/plan.rs")
collect(written.FLTrainingRound.reasons, code("operator/src/flround/status.rs"), LITERAL_REASON)
collect(written.FLTrainingRound.reasons, flPlan, 'reason:%s*"(%u%a*)"')
collect(written.FLTrainingRound.reasons, flPlan, 'pub const INVALID_SPEC: &str = "(%u%a*)"')
collect(written.FLTrainingRound.phases, flPlan, 'pub const %u+: &str = "(%u%a*)";')
collect(written.ChaosExperiment.reasons,
  block(code("operator/src/chaos/plan.rs"), "reason", "operator/src/chaos/plan.rs"), '"(%u%a*)"')
collect(written.ChaosExperiment.phases,
  block(code("crates/api/src/chaos.rs"), "phase", "crates/api/src/chaos.rs"), '"(%u%a*)"')

local function sorted(set)
  local out = {}
  for value in pairs(set) do
    out[#out + 1] = value
  end
  table.sort(out)
  return out
end

local MINIMUM = { MeshNetwork = { reasons = 10, phases = 0 }, FLTrainingRound = { reasons = 8, phases = 4 },
  ChaosExperiment = { reasons = 15, phases = 6 } }
for _, kind in ipairs({ "MeshNetwork", "FLTrainingRound", "ChaosExperiment" }) do
  local seen = byKind[kind] or { reasons = {}, phases = {}, count = 0 }
  for _, what in ipairs({ "reasons", "phases" }) do
    local list = sorted(written[kind][what])
    if #list < MINIMUM[kind][what] then
      fail(kind .. ": found only " .. #list .. " " .. what .. " in the operator's sources ("
        .. table.concat(list, ", ") .. "); the patterns in run.lua no longer match them")
    end
    local missing = {}
    for _, value in ipairs(list) do
      if not seen[what][value] then
        missing[#missing + 1] = value
      end
    end
    if #missing > 0 then
      gaps = gaps + 1
      print("FAIL  " .. kind .. ": no fixture with the " .. what .. " " .. table.concat(missing, ", "))
    elseif #list > 0 then
      print(string.format("ok    %-16s every %s the operator writes has a fixture: %s", kind,
        what:sub(1, -2), table.concat(list, ", ")))
    end
  end
end

print(string.format("%s: %d fixtures (%d passed, %d failed), %d assertions, %d scripts, %d coverage gaps",
  _VERSION, #cases, passed, failed, assertions, #order, gaps))
if failed > 0 or gaps > 0 then
  os.exit(1)
end
