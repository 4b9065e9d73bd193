{{/* The chart's name, or nameOverride. */}}
{{- define "gelu-rollout.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The objects' name: fullnameOverride, else RELEASE-NAME (RELEASE alone where it holds NAME). */}}
{{- define "gelu-rollout.fullname" -}}
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

{{- define "gelu-rollout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gelu-rollout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "gelu-rollout.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "gelu-rollout.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: gelu-rollout
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "gelu-rollout.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gelu-rollout.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: set it when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image by digest where one is given (it pins the image), else by tag. */}}
{{- define "gelu-rollout.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The scrape job the operator's targets get: a ServiceMonitor's is its Service's name, a
PodMonitor's NAMESPACE/NAME. */}}
{{- define "gelu-rollout.job" -}}
{{- if .Values.prometheusRule.job }}
{{- .Values.prometheusRule.job }}
{{- else if .Values.podMonitor.enabled }}
{{- printf "%s/%s" .Release.Namespace (include "gelu-rollout.fullname" .) }}
{{- else }}
{{- printf "%s-metrics" (include "gelu-rollout.fullname" .) }}
{{- end }}
{{- end }}

{{/* Combinations the schema cannot say clearly: each refused with what to change. */}}
{{- define "gelu-rollout.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.peering.enabled) }}
{{- fail (printf "replicaCount is %d, but more than one replica needs peering.enabled=true: without Kopf peering every replica would reconcile every rollout at once" (int .Values.replicaCount)) }}
{{- end }}
{{- if and (eq .Values.strategy.type "RollingUpdate") (not .Values.peering.enabled) }}
{{- fail "strategy.type RollingUpdate needs peering.enabled=true: during an update the old and the new operator would both reconcile every rollout" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled .Values.podMonitor.enabled }}
{{- fail "serviceMonitor.enabled and podMonitor.enabled are both true: choose one, or Prometheus scrapes the operator twice" }}
{{- end }}
{{- if and .Values.networkPolicy.enabled .Values.networkPolicy.egress.enabled (not .Values.networkPolicy.egress.apiServerCIDRs) }}
{{- fail "networkPolicy.egress.apiServerCIDRs is empty: with networkPolicy.egress.enabled the operator could not reach the API server; list its addresses" }}
{{- end }}
{{- end }}

{{/* The rules of the namespaced resources the operator works on: in the ClusterRole in
cluster-wide mode, in a Role per watched namespace otherwise. Derived from the operator's calls:
adapters/kube/kinds.py, controller.py, handlers.py and Kopf. */}}
{{- define "gelu-rollout.namespacedRules" -}}
# GeluModelRollouts: Kopf lists and watches them and patches its annotations and finalizer
# onto them; nothing creates, updates or deletes them but their users.
- apiGroups: [gelu.dev]
  resources: [gelumodelrollouts]
  verbs: [get, list, watch, patch]
# Their status subresource: each tick's status is merge-patched there.
- apiGroups: [gelu.dev]
  resources: [gelumodelrollouts/status]
  verbs: [patch]
# Owned ConfigMaps (the arms' model repositories): listed and watched by label (the
# operator's cache of its own objects), server-side applied (patch; create for a new one),
# pruned (delete); get reads the user's repository and sample-input ConfigMaps.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, patch, delete]
# Owned Services (the arms' and, in ReplicaRatio mode, the rollout's): the same verbs.
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, delete]
# Owned Deployments (the arms' Triton pods): the same verbs; get reads their readiness.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
# The arms' pods, listed and watched by label, read while a Deployment is not ready: why
# they do not run (a crash loop, a missing Secret), for ResourcesReady and an Event. Never
# written.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# The user's HTTPRoute (HTTPRoute mode): read, then its backends' weights merge-patched;
# never created or deleted.
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, patch]
# Events that explain each transition, posted by Kopf.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}

{{/* Kopf's peering, where peering is on: Kopf watches the peering object and patches its
keep-alive into it; the operator creates the object where it is missing. */}}
{{- define "gelu-rollout.peeringRule" -}}
# Kopf peering ({{ .resource }}, named {{ .name }}): watched for peers, patched with this
# replica's keep-alive; created by the operator where missing.
- apiGroups: [kopf.dev]
  resources: [{{ .resource }}]
  verbs: [get, list, watch, patch, create]
{{- end }}

{{/* Kopf's cluster-scoped reads in every mode: it lists the CRDs at start and watches them, so
it notices its resources (and the peering CRD) being added or removed. */}}
{{- define "gelu-rollout.crdRule" -}}
# CustomResourceDefinitions: Kopf lists and watches them to find the resources it serves.
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- end }}
