{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "trickle-relay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the prefix of every object name. */}}
{{- define "trickle-relay.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "trickle-relay.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "trickle-relay.labels" -}}
helm.sh/chart: {{ include "trickle-relay.chart" . }}
app.kubernetes.io/name: {{ include "trickle-relay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: trickle-relay
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector of the operator pods. The component label keeps relay pods (which share
app.kubernetes.io/name) out of the operator's Deployment and Services.
*/}}
{{- define "trickle-relay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trickle-relay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "trickle-relay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "trickle-relay.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Watched namespaces as a JSON list: watchNamespaces, else [release namespace] when rbac.namespaced,
else [] (all namespaces, cluster-wide RBAC). Use with `include … | fromJsonArray`.
*/}}
{{- define "trickle-relay.watchNamespaces" -}}
{{- if .Values.watchNamespaces }}
{{- .Values.watchNamespaces | uniq | toJson }}
{{- else if .Values.rbac.namespaced }}
{{- list .Release.Namespace | toJson }}
{{- else }}
{{- list | toJson }}
{{- end }}
{{- end }}

{{/* "true" when leader election is on: more than one replica, or leaderElection.enabled. */}}
{{- define "trickle-relay.leaderElect" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{- define "trickle-relay.leaseName" -}}
{{- default (include "trickle-relay.fullname" .) .Values.leaderElection.id }}
{{- end }}

{{- define "trickle-relay.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "trickle-relay.relayImage" -}}
{{- printf "%s:%s" .Values.relay.image.repository (default .Chart.AppVersion .Values.relay.image.tag) }}
{{- end }}

{{/*
What the operator does in a watched namespace (operator/README.md): reconcile RelaySessions (delete
for ttlSecondsAfterFinished), write their status, own relay pods,
create each session's ServiceAccount/Role/RoleBinding, and record Events. RBAC escalation
prevention: the per-session Role grants relaysessions get/list/watch and relaysessions/status
get/patch, so the operator must hold those itself to create and bind it.
*/}}
{{- define "trickle-relay.operatorRules" -}}
- apiGroups: ["trickle-relay.io"]
  resources: ["relaysessions"]
  verbs: ["get", "list", "watch", "delete"]
- apiGroups: ["trickle-relay.io"]
  resources: ["relaysessions/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["trickle-relay.io"]
  resources: ["relaysessions/finalizers"]
  verbs: ["update"]
- apiGroups: ["trickle-relay.io"]
  resources: ["relaypools"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["trickle-relay.io"]
  resources: ["relaypools/status"]
  verbs: ["get", "patch", "update"]
# update: giving a recycled pool pod back (resourceVersion-guarded); patch: the claim's labels and the
# pool pods' own relay marks its state (the operator must hold what it grants pool pods' Roles).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete", "update", "patch"]
# A warm pool pod's claim Lease: created with the pod, updated (resourceVersion-guarded) to claim,
# drain or free it, deleted when left behind.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "list", "watch", "create", "update", "delete"]
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* Namespace the REST gateway creates RelaySessions in (--gateway-namespace). */}}
{{- define "trickle-relay.gatewayNamespace" -}}
{{- .Values.gateway.namespace | default (first .Values.watchNamespaces) | default .Release.Namespace }}
{{- end }}
