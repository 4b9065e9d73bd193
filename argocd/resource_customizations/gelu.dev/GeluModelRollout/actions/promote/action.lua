-- Ask the operator to promote: the annotation it reads, KIND/ID, acted on once per ID; the UTC
-- time makes each request new (docs/operator.md, Manual requests).
local os = require("os")
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["gelu.dev/request"] = "promote/" .. os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
