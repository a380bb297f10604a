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
{{- if or .Values.apiKey.value (and .Values.kafkaSasl.enabled (not .Values.kafkaSasl.existingSecret)) (include "userflux-connector.storesDestinationKeys" .) (include "userflux-connector.registrySecret" .) }}true{{- end }}
{{- end }}

{{/*
Destinations: config.userflux.destinations declares them by name; apiKey.destinations
gives each its key. The chart sets a destination's api_key to ${USERFLUX_API_KEY_<NAME>},
filled from its Secret, as it does the top-level key.
*/}}
{{- define "userflux-connector.destinations" -}}
{{- $userflux := get .Values.config "userflux" | default dict }}
{{- $declared := get $userflux "destinations" | default dict }}
{{- keys $declared | sortAlpha | toJson }}
{{- end }}

{{- define "userflux-connector.destinationEnv" -}}
USERFLUX_API_KEY_{{ upper . }}
{{- end }}

{{- define "userflux-connector.storesDestinationKeys" -}}
{{- range $name, $key := .Values.apiKey.destinations }}{{ if and (kindIs "map" $key) $key.value }}true{{ end }}{{ end }}
{{- end }}

{{/* Whether a mapping sends to the top-level key's project (it names no destination, or "default"). */}}
{{- define "userflux-connector.usesDefaultKey" -}}
{{- if eq (include "userflux-connector.destinations" .) "[]" }}true
{{- else }}
{{- range .Values.config.mappings }}{{ if or (not (hasKey . "destination")) (eq (toString .destination) "default") }}true{{ end }}{{ end }}
{{- end }}
{{- end }}

{{/* Whether the pods get USERFLUX_API_KEY, the top-level key. */}}
{{- define "userflux-connector.hasDefaultKey" -}}
{{- if or .Values.apiKey.value .Values.apiKey.existingSecret }}true{{ end }}
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
{{- if and (not (or .Values.apiKey.value .Values.apiKey.existingSecret)) (include "userflux-connector.usesDefaultKey" .) }}
{{- fail "apiKey: the UserFlux Write Only API Key is required: set apiKey.existingSecret to a Secret holding it (key apiKey.existingSecretKey), or apiKey.value" }}
{{- end }}
{{- $declared := include "userflux-connector.destinations" . | fromJsonArray }}
{{- range $declared }}
{{- $key := get $.Values.apiKey.destinations . | default dict }}
{{- if and $key.value $key.existingSecret }}
{{- fail (printf "apiKey.destinations.%s: set either value or existingSecret, not both" .) }}
{{- end }}
{{- if not (or $key.value $key.existingSecret) }}
{{- fail (printf "apiKey.destinations.%s: config.userflux.destinations declares %s: its write key is required: set apiKey.destinations.%s.existingSecret to a Secret holding it (key existingSecretKey, default api-key), or its value" . . .) }}
{{- end }}
{{- end }}
{{- range $name, $_ := .Values.apiKey.destinations }}
{{- if not (has $name $declared) }}
{{- fail (printf "apiKey.destinations.%s: config.userflux.destinations declares no destination %s" $name $name) }}
{{- end }}
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
API keys, the top-level one and each destination's, and the SASL credentials as ${VAR}
references to Secret-backed variables, the static member id). Rendered once here; the ConfigMap and its checksum both use it.
*/}}
{{- define "userflux-connector.config" -}}
{{- $config := deepCopy .Values.config }}
{{- if not (dig "metrics" "enabled" true $config) }}
{{- fail "config.metrics.enabled: the chart's probes and monitoring need the metrics endpoint; keep it enabled" }}
{{- end }}
{{- $userflux := get $config "userflux" | default dict }}
{{- if include "userflux-connector.hasDefaultKey" . }}
{{- $_ := set $userflux "api_key" "${USERFLUX_API_KEY}" }}
{{- end }}
{{- range $name, $destination := get $userflux "destinations" | default dict }}
{{- $_ := set $destination "api_key" (printf "${%s}" (include "userflux-connector.destinationEnv" $name)) }}
{{- end }}
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

{{/*
The pods' scheduling rules with this release's pods filled in: a topology spread
constraint, or a pod (anti-)affinity term, written without a labelSelector selects the
release's own pods (name and instance), so two releases in one namespace never count
each other's pods.
*/}}
{{- define "userflux-connector.topologySpreadConstraints" -}}
{{- $selector := include "userflux-connector.selectorLabels" . | fromYaml }}
{{- $constraints := list }}
{{- range .Values.topologySpreadConstraints }}
{{- $constraint := deepCopy . }}
{{- if not (hasKey $constraint "labelSelector") }}
{{- $_ := set $constraint "labelSelector" (dict "matchLabels" $selector) }}
{{- end }}
{{- $constraints = append $constraints $constraint }}
{{- end }}
{{- if $constraints }}
{{- toYaml $constraints }}
{{- end }}
{{- end }}

{{- define "userflux-connector.affinity" -}}
{{- $selector := include "userflux-connector.selectorLabels" . | fromYaml }}
{{- $affinity := deepCopy .Values.affinity }}
{{- range $kind := list "podAffinity" "podAntiAffinity" }}
{{- with get $affinity $kind }}
{{- range (get . "requiredDuringSchedulingIgnoredDuringExecution" | default list) }}
{{- if not (hasKey . "labelSelector") }}
{{- $_ := set . "labelSelector" (dict "matchLabels" $selector) }}
{{- end }}
{{- end }}
{{- range (get . "preferredDuringSchedulingIgnoredDuringExecution" | default list) }}
{{- $term := get . "podAffinityTerm" | default dict }}
{{- if not (hasKey $term "labelSelector") }}
{{- $_ := set $term "labelSelector" (dict "matchLabels" $selector) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if $affinity }}
{{- toYaml $affinity }}
{{- end }}
{{- end }}

{{/*
The monitor's relabelings: the scrape job is userflux-connector whatever the release is
called (the alert rules and the dashboard select job="userflux-connector"), and
`release` tells two releases in one namespace apart. The Operator applies an endpoint's
relabelings after the job it derives from the Service or PodMonitor, so these win; the
user's own come after them.
*/}}
{{- define "userflux-connector.monitorRelabelings" -}}
- action: replace
  targetLabel: job
  replacement: userflux-connector
- action: replace
  sourceLabels: [__meta_kubernetes_pod_label_app_kubernetes_io_instance]
  targetLabel: release
{{- with .Values.prometheus.monitor.relabelings }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
What the pods' credentials depend on: the chart's Secret data when it creates one,
else the names and keys of the operator's Secrets (a change of their contents is not
seen by Helm; restart the pods, or use a reloader).
*/}}
{{- define "userflux-connector.secretChecksum" -}}
{{- $parts := list .Values.apiKey.existingSecret .Values.apiKey.existingSecretKey (toJson .Values.apiKey.destinations) .Values.kafkaSasl.enabled .Values.kafkaSasl.existingSecret .Values.kafkaSasl.usernameKey .Values.kafkaSasl.passwordKey .Values.kafkaTls.existingSecret .Values.schemaRegistry.auth .Values.schemaRegistry.existingSecret .Values.schemaRegistry.usernameKey .Values.schemaRegistry.passwordKey .Values.schemaRegistry.tokenKey .Values.schemaRegistry.tlsSecret }}
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
  {{- if include "userflux-connector.hasDefaultKey" . }}
  - name: USERFLUX_API_KEY
    valueFrom:
      secretKeyRef:
        name: {{ .Values.apiKey.existingSecret | default (include "userflux-connector.secretName" .) }}
        key: {{ ternary .Values.apiKey.existingSecretKey "api-key" (ne .Values.apiKey.existingSecret "") }}
  {{- end }}
  {{- range $name, $key := .Values.apiKey.destinations }}
  - name: {{ include "userflux-connector.destinationEnv" $name }}
    valueFrom:
      secretKeyRef:
        name: {{ $key.existingSecret | default (include "userflux-connector.secretName" $) }}
        key: {{ ternary ($key.existingSecretKey | default "api-key") (printf "api-key-%s" $name) (ne ($key.existingSecret | default "") "") }}
  {{- end }}
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
{{- with include "userflux-connector.affinity" . }}
affinity:
  {{- . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with include "userflux-connector.topologySpreadConstraints" . }}
topologySpreadConstraints:
  {{- . | nindent 2 }}
{{- end }}
{{- end }}
