{{/* The image of a component: image.registry/images.<name>:image.tag (appVersion by default). */}}
{{- define "trellis.image" -}}
{{- $v := .root.Values -}}
{{- printf "%s/%s:%s" $v.image.registry (index $v.images .name) (default .root.Chart.AppVersion $v.image.tag) -}}
{{- end -}}

{{/* Labels of every object; `component` names the part. */}}
{{- define "trellis.labels" -}}
app.kubernetes.io/name: trellis-{{ .component }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: trellis
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "trellis.selector" -}}
app.kubernetes.io/name: trellis-{{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* Pod-level security of the control plane: non-root, RuntimeDefault seccomp. */}}
{{- define "trellis.podSecurity" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "trellis.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Spread replicas over nodes unless the user set an affinity. */}}
{{- define "trellis.affinity" -}}
{{- if .values.affinity -}}
{{ toYaml .values.affinity }}
{{- else -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "trellis.selector" . | nindent 12 }}
{{- end -}}
{{- end -}}

{{/* The downward-API environment every component reads (names from trellis_api::contract::env). */}}
{{- define "trellis.podEnv" -}}
- name: TRELLIS_POD_NAMESPACE
  valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
- name: TRELLIS_POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: TRELLIS_CLUSTER_DOMAIN
  value: {{ .Values.clusterDomain | quote }}
- name: TRELLIS_TRUST_DOMAIN
  value: {{ .Values.trustDomain | quote }}
{{- end -}}

{{- define "trellis.pullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Addresses of the control plane, as proxies reach them. */}}
{{- define "trellis.controllerAddr" -}}
{{ printf "trellis-controller.%s.svc.%s:8090" .Release.Namespace .Values.clusterDomain }}
{{- end -}}
{{- define "trellis.identityName" -}}
{{ printf "trellis-identity.%s.svc" .Release.Namespace }}
{{- end -}}
{{- define "trellis.identityAddr" -}}
{{ printf "trellis-identity.%s.svc.%s:8083" .Release.Namespace .Values.clusterDomain }}
{{- end -}}
{{- define "trellis.controllerServiceAccount" -}}
trellis-controller
{{- end -}}
{{/* The SPIFFE id the controller's certificate carries, which proxies require of it. */}}
{{- define "trellis.controllerIdentity" -}}
{{ printf "spiffe://%s/ns/%s/sa/%s" .Values.trustDomain .Release.Namespace (include "trellis.controllerServiceAccount" .) }}
{{- end -}}
{{- define "trellis.caSecret" -}}
{{ default "trellis-identity-ca" .Values.identity.trustAnchor.existingSecret }}
{{- end -}}

{{/* What the injector puts into pods (its ConfigMap, and the checksum that rolls it). */}}
{{- define "trellis.injectorConfig" -}}
proxyImage: {{ include "trellis.image" (dict "root" . "name" "proxy") }}
initImage: {{ include "trellis.image" (dict "root" . "name" "proxyInit") }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
cniEnabled: {{ .Values.cni.enabled }}
controllerAddr: {{ include "trellis.controllerAddr" . }}
{{- if .Values.controller.mtls }}
controllerIdentity: {{ include "trellis.controllerIdentity" . }}
{{- end }}
identityAddr: {{ include "trellis.identityAddr" . }}
identityName: {{ include "trellis.identityName" . }}
trustDomain: {{ .Values.trustDomain }}
clusterDomain: {{ .Values.clusterDomain }}
logLevel: {{ .Values.proxy.logLevel | quote }}
logFormat: {{ .Values.proxy.logFormat }}
proxyResources: {{- toYaml .Values.proxy.resources | nindent 2 }}
initResources: {{- toYaml .Values.proxy.initResources | nindent 2 }}
{{- end -}}

{{/* A control-plane pod's own mesh identity, as the injector gives a sidecar
one: the projected token (audience trellis-identity) and the trust bundle
identity publishes in the release namespace, in one volume, and the
environment trellis_identity_client::IdentityConfig::from_env reads. */}}
{{- define "trellis.identityDir" -}}
/var/run/trellis
{{- end -}}
{{- define "trellis.identityEnv" -}}
- name: TRELLIS_IDENTITY_ADDR
  value: {{ include "trellis.identityAddr" . }}
- name: TRELLIS_IDENTITY_NAME
  value: {{ include "trellis.identityName" . }}
- name: TRELLIS_IDENTITY_TOKEN
  value: {{ include "trellis.identityDir" . }}/identity-token
- name: TRELLIS_TRUST_BUNDLE
  value: {{ include "trellis.identityDir" . }}/trust-bundle.pem
- name: TRELLIS_SERVICE_ACCOUNT
  valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}
{{- end -}}
{{- define "trellis.identityMount" -}}
- name: trellis-identity
  mountPath: {{ include "trellis.identityDir" . }}
  readOnly: true
{{- end -}}
{{/* The kubelet refreshes the token at 80 % of its hour, as for sidecars. */}}
{{- define "trellis.identityVolume" -}}
- name: trellis-identity
  projected:
    defaultMode: 0444
    sources:
      - serviceAccountToken:
          audience: trellis-identity
          expirationSeconds: 3600
          path: identity-token
      - configMap:
          name: trellis-trust-bundle
          optional: false
          items:
            - key: ca-bundle.crt
              path: trust-bundle.pem
{{- end -}}
