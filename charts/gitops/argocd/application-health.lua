-- Argo CD health of a child Application (app of apps), so that the sync waves of
-- apps/*.yaml wait for the CRDs (-1) and the operator (0) to be healthy before the sessions (1).
local hs = { status = "Progressing", message = "" }
if obj.status ~= nil and obj.status.health ~= nil and obj.status.health.status ~= nil then
  hs.status = obj.status.health.status
  hs.message = obj.status.health.message or ""
end
return hs
