-- Argo CD health of a GeluModelRollout, from the status the operator writes: observedGeneration,
-- stage, message and the conditions (docs/operator.md, docs/gitops.md).
-- It runs in Argo CD's Lua sandbox, without the string library: no string functions here.
local hs = {}

local function condition(status, conditionType)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == conditionType then
      return c
    end
  end
  return nil
end

local function isTrue(c)
  return c ~= nil and c.status == "True"
end

-- What stalls a rollout outside its own analysis: a person must fix the spec or create the
-- object it names.
local blocking = {
  InvalidSpec = true, RepositoryMissing = true, HTTPRouteMissing = true, ResourceConflict = true,
}

local status = obj.status
if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the rollout"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local stalled = condition(status, "Stalled")
if isTrue(stalled) and blocking[stalled.reason] then
  hs.status = "Degraded"
  hs.message = stalled.message
  return hs
end

local message = status.message
if isTrue(stalled) and stalled.message ~= nil and stalled.message ~= "" then
  message = stalled.message
end

local stage = status.stage
if stage == nil then
  stage = "Pending"
end
if stage == "Promoted" then
  local reconciling = condition(status, "Reconciling")
  if isTrue(reconciling) then
    -- Promoted, and the baseline still rolls to the candidate's model.
    hs.status = "Progressing"
    hs.message = reconciling.message
    return hs
  end
  hs.status = "Healthy"
elseif stage == "RolledBack" then
  hs.status = "Degraded"
elseif stage == "Paused" then
  hs.status = "Suspended"
elseif stage == "Pending" or stage == "Progressing" then
  hs.status = "Progressing"
else
  hs.status = "Unknown"
  message = "unknown stage " .. stage
end
hs.message = message
return hs
