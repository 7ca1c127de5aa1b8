{{- define "blog.labels" -}}
app.kubernetes.io/name: blog
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- /* Labels of the monitoring objects: the chart's, then
monitoring.additionalLabels (kube-prometheus-stack's release label). */ -}}
{{- define "blog.monitoringLabels" -}}
{{ include "blog.labels" . }}
{{- with .Values.monitoring.additionalLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}
