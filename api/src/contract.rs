//! The names every Trellis component agrees on: ports, the proxy's user id,
//! label and annotation keys, and environment variable names. Nothing else in
//! the workspace spells these out.

/// Ports.
pub mod port {
    /// The sidecar's outbound listener (iptables OUTPUT redirects here).
    pub const PROXY_OUTBOUND: u16 = 15101;
    /// The sidecar's inbound listener (iptables PREROUTING redirects here).
    pub const PROXY_INBOUND: u16 = 15106;
    /// The proxy's admin listener: `/metrics`, `/ready`, `/live`, `/config`.
    pub const PROXY_ADMIN: u16 = 15190;
    /// The controller's gRPC discovery service.
    pub const CONTROLLER_GRPC: u16 = 8090;
    /// The controller's admin server: `/status`, `/policy`, `/metrics`.
    pub const CONTROLLER_ADMIN: u16 = 9990;
    /// The identity service (gRPC over TLS).
    pub const IDENTITY_GRPC: u16 = 8083;
    /// The identity service's admin server: `/metrics`, `/ready`, `/live`.
    pub const IDENTITY_ADMIN: u16 = 9983;
    /// The injector webhook (HTTPS).
    pub const INJECTOR_WEBHOOK: u16 = 8443;
}

/// The user id the proxy runs as; its own traffic is never captured.
pub const PROXY_UID: u32 = 2102;

/// The default SPIFFE trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// The default Kubernetes cluster domain (`svc.<domain>` names).
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// `controllerName` of the `trellis` GatewayClass and XMesh.
pub const CONTROLLER_NAME: &str = "trellis.io/controller";
/// The name of the GatewayClass and XMesh the chart installs.
pub const GATEWAY_CLASS_NAME: &str = "trellis";
/// Trellis' own CRD group, only where Gateway API has nothing.
pub const POLICY_GROUP: &str = "policy.trellis.io";

/// The audience of the projected service-account token a proxy presents to
/// the identity service.
pub const IDENTITY_TOKEN_AUDIENCE: &str = "trellis-identity";

/// The ConfigMap identity publishes the trust bundle as (in its own namespace
/// and in every namespace whose pods may be meshed, which mount it), and the
/// key holding the PEM anchors.
pub const TRUST_BUNDLE_CONFIGMAP: &str = "trellis-trust-bundle";
pub const TRUST_BUNDLE_KEY: &str = "ca-bundle.crt";

/// The name of the sidecar container and of the capture init container.
pub const PROXY_CONTAINER_NAME: &str = "trellis-proxy";
pub const INIT_CONTAINER_NAME: &str = "trellis-init";

/// Label and annotation keys.
pub mod key {
    /// Namespace label that turns injection on (value [`super::INJECT_ENABLED`]);
    /// on a pod, the annotation that opts out (value [`super::INJECT_DISABLED`]).
    pub const INJECT: &str = "trellis.io/inject";
    /// Pod annotation set by the injector on every pod it injected.
    pub const INJECTED: &str = "trellis.io/injected";
    /// Namespace or pod annotation: `strict` refuses plaintext, `permissive` accepts it.
    pub const MTLS: &str = "trellis.io/mtls";
    /// Pod annotation: comma-separated inbound ports never captured.
    pub const SKIP_INBOUND_PORTS: &str = "trellis.io/skip-inbound-ports";
    /// Pod annotation: comma-separated outbound ports never captured.
    pub const SKIP_OUTBOUND_PORTS: &str = "trellis.io/skip-outbound-ports";
    /// Pod annotation: comma-separated outbound CIDRs never captured.
    pub const SKIP_OUTBOUND_CIDRS: &str = "trellis.io/skip-outbound-cidrs";
    /// Pod or Service annotation: comma-separated ports carried as opaque TCP.
    pub const OPAQUE_PORTS: &str = "trellis.io/opaque-ports";
    /// Pod annotation: the proxy's log level (a tracing filter).
    pub const PROXY_LOG_LEVEL: &str = "trellis.io/proxy-log-level";
    /// Route annotations for gRPC rules (GRPCRoute has no timeouts/retry fields).
    pub const GRPC_TIMEOUT_REQUEST: &str = "timeout.trellis.io/request";
    pub const GRPC_TIMEOUT_BACKEND_REQUEST: &str = "timeout.trellis.io/backend-request";
    pub const GRPC_RETRY_CODES: &str = "retry.trellis.io/grpc-codes";
    pub const GRPC_RETRY_ATTEMPTS: &str = "retry.trellis.io/attempts";
    pub const GRPC_RETRY_BACKOFF: &str = "retry.trellis.io/backoff";
}

pub const INJECT_ENABLED: &str = "enabled";
pub const INJECT_DISABLED: &str = "disabled";

/// Headers the mesh itself sets between proxies and towards applications.
pub mod header {
    /// Set by the inbound proxy to the verified client SPIFFE id; any incoming
    /// value is removed first.
    pub const CLIENT_ID: &str = "x-trellis-client-id";
}

/// Environment variables, as read by the binaries (and set by the injector,
/// the chart and the sandbox).
pub mod env {
    /// `host:port` of the controller's gRPC discovery service.
    pub const CONTROLLER_ADDR: &str = "TRELLIS_CONTROLLER_ADDR";
    /// The controller's SPIFFE id: when set, a proxy reaches the controller
    /// over mTLS with its workload certificate and refuses any other server.
    pub const CONTROLLER_IDENTITY: &str = "TRELLIS_CONTROLLER_IDENTITY";
    /// `host:port` of the identity service.
    pub const IDENTITY_ADDR: &str = "TRELLIS_IDENTITY_ADDR";
    /// The DNS name the identity service's certificate carries.
    pub const IDENTITY_NAME: &str = "TRELLIS_IDENTITY_NAME";
    /// Path of the trust bundle (PEM) the proxy verifies peers against.
    pub const TRUST_BUNDLE: &str = "TRELLIS_TRUST_BUNDLE";
    /// Path of the projected service-account token for the identity service.
    pub const IDENTITY_TOKEN: &str = "TRELLIS_IDENTITY_TOKEN";
    pub const TRUST_DOMAIN: &str = "TRELLIS_TRUST_DOMAIN";
    pub const CLUSTER_DOMAIN: &str = "TRELLIS_CLUSTER_DOMAIN";
    /// The pod's namespace, name, IP and service account (downward API).
    pub const POD_NAMESPACE: &str = "TRELLIS_POD_NAMESPACE";
    pub const POD_NAME: &str = "TRELLIS_POD_NAME";
    pub const POD_IP: &str = "TRELLIS_POD_IP";
    pub const SERVICE_ACCOUNT: &str = "TRELLIS_SERVICE_ACCOUNT";
    /// The proxy's log filter (tracing `EnvFilter` syntax).
    pub const LOG: &str = "TRELLIS_LOG";
    /// `json` or `plain`.
    pub const LOG_FORMAT: &str = "TRELLIS_LOG_FORMAT";
    /// OTLP gRPC endpoint for traces; tracing export is off when unset.
    pub const OTLP_ENDPOINT: &str = "TRELLIS_OTLP_ENDPOINT";
    /// Comma-separated inbound ports the proxy must not capture (init/CNI).
    pub const SKIP_INBOUND_PORTS: &str = "TRELLIS_SKIP_INBOUND_PORTS";
    pub const SKIP_OUTBOUND_PORTS: &str = "TRELLIS_SKIP_OUTBOUND_PORTS";
    pub const SKIP_OUTBOUND_CIDRS: &str = "TRELLIS_SKIP_OUTBOUND_CIDRS";
}

/// Exit status for bad configuration or flags (BSD `EX_USAGE`).
pub const EXIT_USAGE: i32 = 64;
