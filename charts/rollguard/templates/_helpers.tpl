{{- define "rollguard.labels" -}}
app.kubernetes.io/name: rollguard
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "rollguard.selector" -}}
app.kubernetes.io/name: rollguard
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
