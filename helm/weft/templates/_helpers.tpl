{{- define "weft.labels" -}}
app.kubernetes.io/name: weft
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "weft.selector" -}}
app.kubernetes.io/name: weft
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "weft.image" -}}
{{ printf "%s:%s" .Values.image.repository .Values.image.tag | quote }}
{{- end }}

{{/* The Services' DNS names: what the certificates must carry, what the clients dial. */}}
{{- define "weft.gatewayHost" -}}
{{ printf "%s-gateway.%s.svc" .Release.Name .Release.Namespace }}
{{- end }}
{{- define "weft.ipamHost" -}}
{{ printf "%s-ipam.%s.svc" .Release.Name .Release.Namespace }}
{{- end }}

{{- define "weft.tlsSecret" -}}
{{ .Values.tls.existingSecret | default (printf "%s-pki" .Release.Name) }}
{{- end }}
{{- define "weft.dbSecret" -}}
{{ .Values.postgres.existingSecret | default (printf "%s-db" .Release.Name) }}
{{- end }}
{{- define "weft.authSecret" -}}
{{ .Values.auth.existingSecret | default (printf "%s-admin" .Release.Name) }}
{{- end }}

{{/* Checks the schema cannot express, or that must hold also when it is skipped. */}}
{{- define "weft.validate" -}}
{{- if and (not .Values.postgres.enabled) (or (gt (int .Values.gateway.replicas) 1) (gt (int .Values.ipam.replicas) 1)) }}
{{- fail "gateway.replicas and ipam.replicas > 1 need Postgres (postgres.enabled): SQLite allows one replica" }}
{{- end }}
{{- if and .Values.postgres.enabled (not .Values.postgres.existingSecret) (or (not .Values.postgres.gatewayUrl) (not .Values.postgres.ipamUrl)) }}
{{- fail "postgres.enabled needs postgres.existingSecret (keys DATABASE_URL and IPAM_DATABASE_URL), or postgres.gatewayUrl and postgres.ipamUrl" }}
{{- end }}
{{- if and .Values.postgres.enabled (not .Values.postgres.existingSecret) (eq .Values.postgres.gatewayUrl .Values.postgres.ipamUrl) }}
{{- fail "postgres.gatewayUrl and postgres.ipamUrl must name two databases: each service migrates its own" }}
{{- end }}
{{- if and (not .Values.tls.existingSecret) (not .Values.tls.generate) }}
{{- fail "every Weft service serves mutual TLS: set tls.existingSecret (files of `weft pki`), or tls.generate=true" }}
{{- end }}
{{- if .Values.node.cni.enabled }}
{{- if or (not .Values.node.cni.network) (not .Values.node.cni.tokenSecret) }}
{{- fail "node.cni.enabled needs node.cni.network (a Weft network) and node.cni.tokenSecret (a Secret with a token of role operator under the key token)" }}
{{- end }}
{{- if and (not .Values.gateway.plaintextOnPodNetwork) (not .Values.node.cni.gateway) }}
{{- fail "weft-cni speaks plaintext only: node.cni.enabled needs gateway.plaintextOnPodNetwork=true (tokens then cross the pod network unencrypted), or node.cni.gateway" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Anti-affinity between the replicas of one component. */}}
{{- define "weft.antiAffinity" -}}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" (dict "app.kubernetes.io/instance" .root.Release.Name "app.kubernetes.io/component" .component)) -}}
podAntiAffinity:
{{- if eq .mode "hard" }}
  requiredDuringSchedulingIgnoredDuringExecution:
    - {{- toYaml $term | nindent 6 }}
{{- else }}
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        {{- toYaml $term | nindent 8 }}
{{- end }}
{{- end }}

{{/* The unprivileged container of the control plane: no capability, read-only root. */}}
{{- define "weft.restricted" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* An exec probe: one grpc.health.v1 check over TLS (the kubelet's grpc probe has no TLS). */}}
{{- define "weft.probe" -}}
exec:
  command: [weft, probe, --addr, {{ printf "127.0.0.1:%d" (int .port) | quote }}, --tls-ca, {{ .ca | quote }}, --kind, {{ .kind }}]
timeoutSeconds: 5
{{- end }}

{{/* A duration of the schema's form (N s or N m) in whole seconds. */}}
{{- define "weft.seconds" -}}
{{- if hasSuffix "m" . }}{{ mul (trimSuffix "m" . | int) 60 }}{{ else }}{{ trimSuffix "s" . | int }}{{ end }}
{{- end }}

{{/* The node's name and address, for $(NODE_NAME) and $(NODE_IP) in the arguments. */}}
{{- define "weft.nodeEnv" -}}
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: NODE_IP
  valueFrom:
    fieldRef:
      fieldPath: status.hostIP
{{- end }}

{{/* The metrics listener of a container (dict root, ip: the env var holding the address,
POD_IP (defined here) or NODE_IP (weft.nodeEnv), port). */}}
{{- define "weft.metricsEnv" -}}
{{- if .root.Values.metrics.enabled }}
{{- if eq .ip "POD_IP" }}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- end }}
- name: WEFT_METRICS_LISTEN
  value: {{ printf "$(%s):%d" .ip (int .port) | quote }}
{{- end }}
{{- end }}

{{/* The metrics port of a container (dict root, name, port). */}}
{{- define "weft.metricsPort" -}}
{{- if .root.Values.metrics.enabled }}
- name: {{ .name }}
  containerPort: {{ .port }}
{{- end }}
{{- end }}
