{{/* Names: the release's full name, capped at 63 characters (the DNS label limit of most object names). */}}
{{- define "xw-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "xw-operator.fullname" -}}
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

{{- define "xw-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable across upgrades (a Deployment's selector is immutable). */}}
{{- define "xw-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "xw-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "xw-operator.labels" -}}
helm.sh/chart: {{ include "xw-operator.chart" . }}
{{ include "xw-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: xw-operator
{{- end }}

{{- define "xw-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "xw-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "xw-operator.configMapName" -}}
{{- printf "%s-devices" (include "xw-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The ConfigMap in which the operator persists the last devices.yaml it accepted (start-up fallback). */}}
{{- define "xw-operator.lastGoodConfigMapName" -}}
{{- printf "%s-last-good" (include "xw-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The coordination.k8s.io Lease the replicas elect their leader on. */}}
{{- define "xw-operator.leaseName" -}}
{{- include "xw-operator.fullname" . }}
{{- end }}

{{- define "xw-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
devices.yaml text: values.devicesConfig as given (a string), or rendered from a mapping, or the shipped
file. A string that is not a YAML mapping fails the install here, naming the value, rather than leaving
the operator to refuse it later.
*/}}
{{- define "xw-operator.devicesConfig" -}}
{{- $cfg := .Values.devicesConfig }}
{{- if not $cfg }}
{{- .Files.Get "files/devices.yaml" }}
{{- else }}
{{- $parsed := $cfg }}
{{- if not (kindIs "map" $cfg) }}
{{- $parsed = fromYaml $cfg }}
{{- if hasKey $parsed "Error" }}
{{- fail (printf "values.devicesConfig is not a YAML mapping: %s" (get $parsed "Error")) }}
{{- end }}
{{- end }}
{{- if not (and (hasKey $parsed "version") (hasKey $parsed "vendors")) }}
{{- fail "values.devicesConfig must be a devices.yaml with 'version' and 'vendors' at the top level (e.g. --set-file devicesConfig=./devices.yaml)" }}
{{- end }}
{{- if kindIs "map" $cfg }}
{{- toYaml $cfg }}
{{- else }}
{{- $cfg }}
{{- end }}
{{- end }}
{{- end }}
