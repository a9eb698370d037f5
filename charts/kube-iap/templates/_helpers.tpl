{{/* The name every object of this release carries: the release name, with "kube-iap" added
unless the release name already says it. */}}
{{- define "kube-iap.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kube-iap.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels never change after install: a Deployment's selector is immutable. */}}
{{- define "kube-iap.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kube-iap.serviceAccountName" -}}
{{- default (include "kube-iap.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "kube-iap.leaseName" -}}
{{- printf "%s-leader" (include "kube-iap.fullname" .) | trunc 63 -}}
{{- end -}}

{{- define "kube-iap.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
