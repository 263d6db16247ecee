{{/* Base name of every object: fullnameOverride, else the release name. */}}
{{- define "eso.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "eso.controller.name" -}}
{{- printf "%s-controller" (include "eso.fullname" .) -}}
{{- end -}}

{{- define "eso.agent.name" -}}
{{- printf "%s-agent" (include "eso.fullname" .) -}}
{{- end -}}

{{/* Name of the S3 config Secret: the existing one, else the one the chart creates. */}}
{{- define "eso.s3.secretName" -}}
{{- default (printf "%s-s3" (include "eso.fullname" .)) .Values.s3.existingSecret -}}
{{- end -}}

{{- define "eso.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "eso.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component; call with (dict "ctx" . "component" "controller"). */}}
{{- define "eso.selectorLabels" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The etcd paths and node selector of the chosen preset, as YAML (fromYaml to use). */}}
{{- define "eso.etcd" -}}
{{- $preset := .Values.etcd.preset -}}
{{- if eq $preset "custom" -}}
{{- $c := .Values.etcd.custom -}}
{{- range $k := list "certDir" "caFile" "certFile" "keyFile" "snapshotDir" -}}
{{- if not (get $c $k) -}}
{{- fail (printf "etcd.preset=custom needs etcd.custom.%s" $k) -}}
{{- end -}}
{{- end -}}
{{- toYaml $c -}}
{{- else if hasKey .Values.presets $preset -}}
{{- toYaml (get .Values.presets $preset) -}}
{{- else -}}
{{- fail (printf "etcd.preset must be one of kubeadm, k3s, rke2, custom (got %q)" $preset) -}}
{{- end -}}
{{- end -}}

{{/* Render-time validation of values that make no sense. */}}
{{- define "eso.validate" -}}
{{- if and (not .Values.local.enabled) (not .Values.s3.enabled) -}}
{{- fail "no snapshot storage enabled: set local.enabled=true and/or s3.enabled=true" -}}
{{- end -}}
{{- if and .Values.s3.enabled (not .Values.s3.existingSecret) (not .Values.s3.bucket) -}}
{{- fail "s3.enabled=true needs s3.bucket (the chart creates the S3 config Secret), or s3.existingSecret naming a Secret that sets etcd-s3-bucket" -}}
{{- end -}}
{{- if not (has .Values.s3.bucketLookupType (list "auto" "dns" "path")) -}}
{{- fail (printf "s3.bucketLookupType must be auto, dns or path (got %q)" .Values.s3.bucketLookupType) -}}
{{- end -}}
{{- if lt (int .Values.controller.replicas) 1 -}}
{{- fail "controller.replicas must be at least 1" -}}
{{- end -}}
{{- $_ := include "eso.etcd" . -}}
{{- end -}}
