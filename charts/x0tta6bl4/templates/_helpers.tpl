{{/*
Chart name, overridable with nameOverride.
*/}}
{{- define "x0tta6bl4.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix of the release's resources: <release>-<chart>, or just <release> when the
release name already contains the chart name. Truncated to 63 characters (DNS label limit).
*/}}
{{- define "x0tta6bl4.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "x0tta6bl4.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every resource of the chart.
*/}}
{{- define "x0tta6bl4.labels" -}}
helm.sh/chart: {{ include "x0tta6bl4.chart" . }}
{{ include "x0tta6bl4.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: x0tta6bl4
{{- end }}

{{/*
Labels that select the operator pods; immutable in a Deployment, so never add to them.
*/}}
{{- define "x0tta6bl4.selectorLabels" -}}
app.kubernetes.io/name: {{ include "x0tta6bl4.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Name of the operator's ServiceAccount.
*/}}
{{- define "x0tta6bl4.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "x0tta6bl4.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Operator image reference; the tag defaults to the chart's appVersion.
*/}}
{{- define "x0tta6bl4.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{/*
Name of the metrics Service; also the Prometheus job label when scraped via the ServiceMonitor.
*/}}
{{- define "x0tta6bl4.metricsServiceName" -}}
{{- printf "%s-metrics" (include "x0tta6bl4.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}
