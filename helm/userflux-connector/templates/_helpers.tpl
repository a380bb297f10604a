{{/* Names and labels. */}}
{{- define "userflux-connector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "userflux-connector.fullname" -}}
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

{{- define "userflux-connector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "userflux-connector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "userflux-connector.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "userflux-connector.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "userflux-connector.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "userflux-connector.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "userflux-connector.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The metrics port: the connector's own setting, so the two can never disagree. */}}
{{- define "userflux-connector.metricsPort" -}}
{{- dig "metrics" "port" 9464 .Values.config | int }}
{{- end }}

{{/* Seconds Kubernetes waits after SIGTERM: above the connector's shutdown grace. */}}
{{- define "userflux-connector.terminationGracePeriodSeconds" -}}
{{- $grace := dig "pipeline" "shutdown_grace_s" 30 .Values.config | float64 }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add (ceil $grace | int) 15 }}
{{- else if le (float64 .Values.terminationGracePeriodSeconds) $grace }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be longer than config.pipeline.shutdown_grace_s (%v): Kubernetes would kill the connector before it delivered what is in flight" .Values.terminationGracePeriodSeconds $grace) }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Secrets: the chart's own Secret, or the operator's. */}}
{{- define "userflux-connector.secretName" -}}
{{- include "userflux-connector.fullname" . }}
{{- end }}

{{- define "userflux-connector.createsSecret" -}}
{{- if or (not .Values.apiKey.existingSecret) (and .Values.kafkaSasl.enabled (not .Values.kafkaSasl.existingSecret)) (include "userflux-connector.registrySecret" .) }}true{{- end }}
{{- end }}

{{/* The chart's Secret holds the schema registry's credentials. */}}
{{- define "userflux-connector.registrySecret" -}}
{{- if and .Values.schemaRegistry.url (ne .Values.schemaRegistry.auth "none") (not .Values.schemaRegistry.existingSecret) }}true{{- end }}
{{- end }}

{{/* Fails the render, naming the fix, when a secret has no source. */}}
{{- define "userflux-connector.validateSecrets" -}}
{{- if and .Values.apiKey.value .Values.apiKey.existingSecret }}
{{- fail "apiKey: set either value or existingSecret, not both" }}
{{- end }}
{{- if not (or .Values.apiKey.value .Values.apiKey.existingSecret) }}
{{- fail "apiKey: the UserFlux Write Only API Key is required: set apiKey.existingSecret to a Secret holding it (key apiKey.existingSecretKey), or apiKey.value" }}
{{- end }}
{{- if and .Values.kafkaSasl.enabled (not .Values.kafkaSasl.existingSecret) (not (and .Values.kafkaSasl.username .Values.kafkaSasl.password)) }}
{{- fail "kafkaSasl: enabled needs kafkaSasl.existingSecret, or both kafkaSasl.username and kafkaSasl.password" }}
{{- end }}
{{- $registry := .Values.schemaRegistry }}
{{- if and (eq $registry.auth "basic") (not $registry.existingSecret) (not (and $registry.username $registry.password)) }}
{{- fail "schemaRegistry: auth basic needs schemaRegistry.existingSecret, or both schemaRegistry.username and schemaRegistry.password" }}
{{- end }}
{{- if and (eq $registry.auth "bearer") (not $registry.existingSecret) (not $registry.token) }}
{{- fail "schemaRegistry: auth bearer needs schemaRegistry.existingSecret, or schemaRegistry.token" }}
{{- end }}
{{- if and (ne $registry.auth "none") (not $registry.url) }}
{{- fail (printf "schemaRegistry: auth %s is set but schemaRegistry.url is empty" $registry.auth) }}
{{- end }}
{{- if not $registry.url }}
{{- $formats := list (dig "value_format" "" .Values.config) (dig "key_format" "" .Values.config) }}
{{- range .Values.config.mappings }}
{{- $formats = concat $formats (list (get . "value_format" | default "") (get . "key_format" | default "")) }}
{{- end }}
{{- range $formats }}
{{- if has . (list "avro" "protobuf" "json_schema") }}
{{- fail (printf "schemaRegistry.url: the configuration reads %s, through a schema registry; set schemaRegistry.url" .) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The connector's configuration: .Values.config with what the chart owns added (the
API key and SASL credentials as ${VAR} references to Secret-backed variables, the
static member id). Rendered once here; the ConfigMap and its checksum both use it.
*/}}
{{- define "userflux-connector.config" -}}
{{- $config := deepCopy .Values.config }}
{{- if not (dig "metrics" "enabled" true $config) }}
{{- fail "config.metrics.enabled: the chart's probes and monitoring need the metrics endpoint; keep it enabled" }}
{{- end }}
{{- $userflux := get $config "userflux" | default dict }}
{{- $_ := set $userflux "api_key" "${USERFLUX_API_KEY}" }}
{{- $_ := set $config "userflux" $userflux }}
{{- $kafka := get $config "kafka" | default dict }}
{{- if .Values.kafkaSasl.enabled }}
{{- $_ := set $kafka "sasl.username" "${KAFKA_SASL_USERNAME}" }}
{{- $_ := set $kafka "sasl.password" "${KAFKA_SASL_PASSWORD}" }}
{{- end }}
{{- if .Values.staticMembership.enabled }}
{{- $_ := set $kafka "group.instance.id" "${POD_NAME}" }}
{{- end }}
{{- $_ := set $config "kafka" $kafka }}
{{- $registry := .Values.schemaRegistry }}
{{- if $registry.url }}
{{- $section := get $config "schema_registry" | default dict }}
{{- $_ := set $section "url" $registry.url }}
{{- if eq $registry.auth "basic" }}
{{- $_ := set $section "basic_auth" (dict "username" "${SCHEMA_REGISTRY_USERNAME}" "password" "${SCHEMA_REGISTRY_PASSWORD}") }}
{{- else if eq $registry.auth "bearer" }}
{{- $bearer := get $section "bearer" | default dict }}
{{- $_ := set $bearer "token" "${SCHEMA_REGISTRY_TOKEN}" }}
{{- $_ := set $section "bearer" $bearer }}
{{- end }}
{{- $_ := set $config "schema_registry" $section }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* "auto" means: when the cluster serves the Prometheus Operator's CRD. */}}
{{- define "userflux-connector.wanted" -}}
{{- $enabled := index . 0 }}
{{- $context := index . 1 }}
{{- $api := index . 2 }}
{{- if eq (toString $enabled) "true" }}true
{{- else if and (eq (toString $enabled) "auto") ($context.Capabilities.APIVersions.Has $api) }}true
{{- end }}
{{- end }}

{{/*
What the pods' credentials depend on: the chart's Secret data when it creates one,
else the names and keys of the operator's Secrets (a change of their contents is not
seen by Helm; restart the pods, or use a reloader).
*/}}
{{- define "userflux-connector.secretChecksum" -}}
{{- $parts := list .Values.apiKey.existingSecret .Values.apiKey.existingSecretKey .Values.kafkaSasl.enabled .Values.kafkaSasl.existingSecret .Values.kafkaSasl.usernameKey .Values.kafkaSasl.passwordKey .Values.kafkaTls.existingSecret .Values.schemaRegistry.auth .Values.schemaRegistry.existingSecret .Values.schemaRegistry.usernameKey .Values.schemaRegistry.passwordKey .Values.schemaRegistry.tokenKey .Values.schemaRegistry.tlsSecret }}
{{- if include "userflux-connector.createsSecret" . }}
{{- $parts = append $parts (include (print .Template.BasePath "/secret.yaml") .) }}
{{- end }}
{{- toJson $parts | sha256sum }}
{{- end }}

{{/* The chart mounts /tmp (Protobuf schemas are compiled there) when a registry is
configured, unless extraVolumes already has a volume named tmp. */}}
{{- define "userflux-connector.ownTmp" -}}
{{- $theirs := false }}
{{- range .Values.extraVolumes }}{{ if eq .name "tmp" }}{{ $theirs = true }}{{ end }}{{ end }}
{{- if and .Values.schemaRegistry.url (not $theirs) }}true{{- end }}
{{- end }}

{{/*
The connector container's environment, mounts and the pod's volumes and scheduling:
the Deployment's and the replay Job's alike, so both read the same ConfigMap and the
same Secrets.
*/}}
{{- define "userflux-connector.env" -}}
env:
  - name: USERFLUX_API_KEY
    valueFrom:
      secretKeyRef:
        name: {{ .Values.apiKey.existingSecret | default (include "userflux-connector.secretName" .) }}
        key: {{ ternary .Values.apiKey.existingSecretKey "api-key" (ne .Values.apiKey.existingSecret "") }}
  {{- if .Values.kafkaSasl.enabled }}
  - name: KAFKA_SASL_USERNAME
    valueFrom:
      secretKeyRef:
        name: {{ .Values.kafkaSasl.existingSecret | default (include "userflux-connector.secretName" .) }}
        key: {{ ternary .Values.kafkaSasl.usernameKey "kafka-sasl-username" (ne .Values.kafkaSasl.existingSecret "") }}
  - name: KAFKA_SASL_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ .Values.kafkaSasl.existingSecret | default (include "userflux-connector.secretName" .) }}
        key: {{ ternary .Values.kafkaSasl.passwordKey "kafka-sasl-password" (ne .Values.kafkaSasl.existingSecret "") }}
  {{- end }}
  {{- $registry := .Values.schemaRegistry }}
  {{- $registrySecret := $registry.existingSecret | default (include "userflux-connector.secretName" .) }}
  {{- $own := eq $registry.existingSecret "" }}
  {{- if and $registry.url (eq $registry.auth "basic") }}
  - name: SCHEMA_REGISTRY_USERNAME
    valueFrom:
      secretKeyRef:
        name: {{ $registrySecret }}
        key: {{ ternary "schema-registry-username" $registry.usernameKey $own }}
  - name: SCHEMA_REGISTRY_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ $registrySecret }}
        key: {{ ternary "schema-registry-password" $registry.passwordKey $own }}
  {{- else if and $registry.url (eq $registry.auth "bearer") }}
  - name: SCHEMA_REGISTRY_TOKEN
    valueFrom:
      secretKeyRef:
        name: {{ $registrySecret }}
        key: {{ ternary "schema-registry-token" $registry.tokenKey $own }}
  {{- end }}
  - name: POD_NAME
    valueFrom:
      fieldRef:
        fieldPath: metadata.name
  {{- with .Values.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .Values.extraEnvFrom }}
envFrom:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "userflux-connector.volumeMounts" -}}
volumeMounts:
  - name: config
    mountPath: /etc/userflux-connector
    readOnly: true
  {{- if .Values.kafkaTls.existingSecret }}
  - name: kafka-tls
    mountPath: {{ .Values.kafkaTls.mountPath }}
    readOnly: true
  {{- end }}
  {{- if .Values.schemaRegistry.tlsSecret }}
  - name: schema-registry-tls
    mountPath: {{ .Values.schemaRegistry.tlsMountPath }}
    readOnly: true
  {{- end }}
  {{- if include "userflux-connector.ownTmp" . }}
  - name: tmp
    mountPath: /tmp
  {{- end }}
  {{- with .Values.extraVolumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{- define "userflux-connector.volumes" -}}
volumes:
  - name: config
    configMap:
      name: {{ include "userflux-connector.fullname" . }}
  {{- if .Values.kafkaTls.existingSecret }}
  - name: kafka-tls
    secret:
      secretName: {{ .Values.kafkaTls.existingSecret }}
  {{- end }}
  {{- if .Values.schemaRegistry.tlsSecret }}
  - name: schema-registry-tls
    secret:
      secretName: {{ .Values.schemaRegistry.tlsSecret }}
  {{- end }}
  {{- if include "userflux-connector.ownTmp" . }}
  # Protobuf schemas are compiled by protoc, which reads files: a small /tmp in memory.
  - name: tmp
    emptyDir:
      medium: Memory
      sizeLimit: 16Mi
  {{- end }}
  {{- with .Values.extraVolumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{- define "userflux-connector.scheduling" -}}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
