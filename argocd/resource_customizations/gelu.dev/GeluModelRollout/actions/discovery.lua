-- The manual requests a GeluModelRollout takes, enabled where the operator acts on them (the
-- same rules as `kubectl gelu promote|abort|retry`, docs/operator.md).
local stage = "Pending"
if obj.status ~= nil and obj.status.stage ~= nil then
  stage = obj.status.stage
end
local running = stage == "Progressing" or stage == "Paused"

local actions = {}
actions["promote"] = {
  ["disabled"] = not running,
  ["displayName"] = "Promote the candidate"
}
actions["abort"] = {
  ["disabled"] = not (running or stage == "Pending"),
  ["displayName"] = "Abort (roll back)"
}
actions["retry"] = {
  ["disabled"] = not (stage == "Paused" or stage == "RolledBack"),
  ["displayName"] = "Retry"
}
return actions
