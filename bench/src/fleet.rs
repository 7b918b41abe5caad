//! What the benchmark measures, started once and side by side: the proxies
//! of each mode (from `--policy-file`, fixed-target listeners, no iptables),
//! nginx, and for the mTLS mesh the real `trellis-identity` issuing both
//! sidecars their certificates exactly as in the sandbox.
//!
//! ```text
//!  one proxy:        load ─► 127.0.0.2:18101 proxy ───────────────────────────────► upstream 127.0.0.1:18080
//!  two proxies:      load ─► 127.0.0.3:18102 client sidecar ─ h2, plaintext ─► :25106 server sidecar ─► upstream
//!  two proxies mTLS: load ─► 127.0.0.5:18104 client sidecar ─ h2 over mTLS ──► :25107 server sidecar ─► upstream
//!  nginx:            load ─► 127.0.0.4:18103 nginx (proxy_pass, upstream keepalive) ─────────────────► upstream
//! ```
//!
//! The client sidecar sees the upstream as a meshed endpoint (it has an
//! identity in the policy), so it dials the server sidecar's mesh port: the
//! multiplexed HTTP/2 transport sidecars use between pods.

use crate::{
    procs::{self, Launch, Proc},
    setup::Tools,
};
use anyhow::{Context, Result};
use serde::Serialize;
use std::{net::SocketAddr, path::Path, time::Duration};
use trellis_api::contract::env;
use trellis_policy::{
    Backend, Endpoint, OutboundPolicy, Protocol, ResourceRef, ServiceBackend, SpiffeId, Target,
};

pub const UPSTREAM: &str = "127.0.0.1:18080";
const SERVICE: &str = "198.19.0.1:80";
const NAMESPACE: &str = "bench";
const IDENTITY: &str = "127.0.0.6:18083";
const IDENTITY_ADMIN: &str = "127.0.0.6:18984";
pub const PROXY_CORE: usize = 0;
pub const LOAD_CORE: usize = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Direct,
    OneProxy,
    /// Client sidecar → server sidecar over the plaintext mesh transport.
    TwoProxies,
    /// The same over mTLS with certificates from `trellis-identity`.
    TwoProxiesMtls,
    Nginx,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::OneProxy => "one proxy",
            Mode::TwoProxies => "two (plain)",
            Mode::TwoProxiesMtls => "two (mTLS)",
            Mode::Nginx => "nginx",
        }
    }

    pub fn entry(self) -> &'static str {
        match self {
            Mode::Direct => UPSTREAM,
            Mode::OneProxy => "127.0.0.2:18101",
            Mode::TwoProxies => "127.0.0.3:18102",
            Mode::TwoProxiesMtls => "127.0.0.5:18104",
            Mode::Nginx => "127.0.0.4:18103",
        }
    }
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("constant address")
}

/// How proxies are started: as they are, or under a wrapper (valgrind),
/// which makes them slow to start.
#[derive(Clone, Debug, Default)]
pub struct Wrap {
    /// Given a process' short name, the wrapper command.
    pub wrapper: Option<fn(&Path, &str) -> Vec<String>>,
}

/// The processes of one mode: what is measured (proxies or nginx; empty
/// for direct).
#[derive(Debug)]
pub struct Started {
    pub mode: Mode,
    pub measured: Vec<Proc>,
}

/// The identity service, when the mTLS mode runs.
#[derive(Debug)]
pub struct Identity {
    _proc: Proc,
    token_client: String,
    token_server: String,
    bundle: String,
}

const CLIENT_SA: &str = "client";
const SERVER_SA: &str = "upstream";

fn server_id() -> SpiffeId {
    SpiffeId::for_service_account("cluster.local", NAMESPACE, SERVER_SA)
}

/// Starts this binary's `upstream` subcommand on [`UPSTREAM`], on the load
/// core, and waits until it accepts connections.
pub fn upstream() -> Result<Proc> {
    let me = std::env::current_exe().context("locating trellis-bench")?;
    let upstream = Proc::spawn(
        "upstream",
        &Launch::new(
            &me.to_string_lossy(),
            vec!["upstream".into(), "--addr".into(), UPSTREAM.into()],
            Some(LOAD_CORE),
        ),
    )?;
    procs::wait_for(addr(UPSTREAM), "the upstream", Duration::from_secs(10))?;
    Ok(upstream)
}

/// Starts `trellis-identity` with a CA in `dir` and a token per sidecar.
pub fn identity(tools: &Tools, dir: &Path) -> Result<Identity> {
    use std::os::unix::fs::PermissionsExt;
    let write_secret = |name: &str, text: &str| -> Result<String> {
        let p = dir.join(name);
        std::fs::write(&p, text)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
        Ok(p.to_string_lossy().into_owned())
    };
    let token = |sa: &str| format!("bench-{sa}-{:016x}", fastrand::u64(..));
    let (client_tok, server_tok) = (token(CLIENT_SA), token(SERVER_SA));
    let entry = |tok: &str, sa: &str| {
        serde_json::json!({"token": tok, "namespace": NAMESPACE, "serviceAccount": sa,
            "expiresAt": "2099-01-01T00:00:00Z"})
    };
    let tokens = serde_json::json!({"tokens": [entry(&client_tok, CLIENT_SA), entry(&server_tok, SERVER_SA)]});
    let tokens_file = write_secret("identity-tokens.json", &tokens.to_string())?;
    let bundle = dir.join("trust-bundle.pem");
    let args = vec![
        "--state-dir".into(),
        dir.join("identity").to_string_lossy().into_owned(),
        "--listen".into(),
        IDENTITY.into(),
        "--admin-listen".into(),
        IDENTITY_ADMIN.into(),
        "--bundle-file".into(),
        bundle.to_string_lossy().into_owned(),
        "--tokens-file".into(),
        tokens_file,
    ];
    let proc = Proc::spawn(
        "identity",
        &Launch::new(&tools.identity.to_string_lossy(), args, Some(LOAD_CORE)),
    )?;
    procs::wait_ready(
        addr(IDENTITY_ADMIN),
        "trellis-identity",
        Duration::from_secs(30),
    )?;
    for _ in 0..100 {
        if bundle.is_file() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Identity {
        _proc: proc,
        token_client: write_secret("token-client", &client_tok)?,
        token_server: write_secret("token-server", &server_tok)?,
        bundle: bundle.to_string_lossy().into_owned(),
    })
}

/// Starts what `mode` measures.
pub fn start(
    mode: Mode,
    tools: &Tools,
    dir: &Path,
    identity: Option<&Identity>,
    wrap: &Wrap,
) -> Result<Started> {
    let within = if wrap.wrapper.is_some() {
        Duration::from_secs(180)
    } else {
        Duration::from_secs(30)
    };
    let proxy = |name: &str, pod: &str, admin: &str, extra: Vec<String>| -> Result<Launch> {
        let mut args: Vec<String> = vec![
            "sidecar".into(),
            "--worker-threads".into(),
            "1".into(),
            "--outbound-addr".into(),
            format!("{pod}:0"),
            "--admin-addr".into(),
            admin.into(),
        ];
        args.extend(extra);
        let mut l = Launch::new(&tools.proxy.to_string_lossy(), args, Some(PROXY_CORE));
        if let Some(w) = wrap.wrapper {
            l.wrapper = w(dir, name);
        }
        Ok(l)
    };
    let started = |measured: Vec<Proc>, admins: &[&str]| -> Result<Started> {
        for (p, a) in measured.iter().zip(admins) {
            procs::wait_ready(addr(a), &p.name, within)?;
        }
        Ok(Started { mode, measured })
    };
    match mode {
        Mode::Direct => Ok(Started {
            mode,
            measured: Vec::new(),
        }),
        Mode::OneProxy => {
            let file = policy_file(dir, "one.yaml", None)?;
            let l = proxy(
                "one",
                "127.0.0.2",
                "127.0.0.2:18201",
                vec![
                    "--inbound-addr".into(),
                    "127.0.0.2:0".into(),
                    "--policy-file".into(),
                    file,
                    "--outbound-fixed".into(),
                    format!("{}={SERVICE}", mode.entry()),
                ],
            )?;
            started(vec![Proc::spawn("proxy", &l)?], &["127.0.0.2:18201"])
        }
        Mode::TwoProxies | Mode::TwoProxiesMtls => {
            let tls = mode == Mode::TwoProxiesMtls;
            let (mesh_port, client_pod, server_admin, client_admin) = if tls {
                (25107, "127.0.0.5", "127.0.0.1:18207", "127.0.0.5:18204")
            } else {
                (25106, "127.0.0.3", "127.0.0.1:18206", "127.0.0.3:18202")
            };
            let tag = if tls { "tls" } else { "plain" };
            let client_file = policy_file(dir, &format!("client-{tag}.yaml"), Some(server_id()))?;
            let server_file = dir.join(format!("server-{tag}.yaml"));
            std::fs::write(&server_file, "outbound: []\n")?;
            let with_identity = |mut l: Launch, token: &str, sa: &str| -> Result<Launch> {
                if tls {
                    let id = identity.context("the mTLS mode needs trellis-identity")?;
                    l = l
                        .env(env::IDENTITY_ADDR, IDENTITY)
                        .env(env::IDENTITY_TOKEN, token)
                        .env(env::TRUST_BUNDLE, &id.bundle)
                        .env(env::POD_NAMESPACE, NAMESPACE)
                        .env(env::POD_NAME, &format!("{sa}-0"))
                        .env(env::SERVICE_ACCOUNT, sa);
                }
                Ok(l)
            };
            let tokens = identity.map(|i| (i.token_server.clone(), i.token_client.clone()));
            let (server_tok, client_tok) = tokens.unwrap_or_default();
            let server = proxy(
                &format!("server-{tag}"),
                "127.0.0.1",
                server_admin,
                vec![
                    "--inbound-addr".into(),
                    format!("127.0.0.1:{mesh_port}"),
                    "--policy-file".into(),
                    server_file.to_string_lossy().into_owned(),
                ],
            )?;
            let server = Proc::spawn(
                &format!("server proxy ({tag})"),
                &with_identity(server, &server_tok, SERVER_SA)?,
            )?;
            let client = proxy(
                &format!("client-{tag}"),
                client_pod,
                client_admin,
                vec![
                    "--inbound-addr".into(),
                    format!("{client_pod}:0"),
                    "--mesh-port".into(),
                    mesh_port.to_string(),
                    "--policy-file".into(),
                    client_file,
                    "--outbound-fixed".into(),
                    format!("{}={SERVICE}", mode.entry()),
                ],
            )?;
            let client = Proc::spawn(
                &format!("client proxy ({tag})"),
                &with_identity(client, &client_tok, CLIENT_SA)?,
            )?;
            started(vec![client, server], &[client_admin, server_admin])
        }
        Mode::Nginx => {
            let conf = dir.join("nginx.conf");
            std::fs::write(
                &conf,
                format!(
                    "worker_processes 1;\ndaemon off;\nmaster_process off;\npid {pid};\nerror_log {err} warn;\n\
                     events {{ worker_connections 4096; }}\n\
                     http {{\n  access_log off;\n  upstream u {{ server {UPSTREAM}; keepalive 64; }}\n\
                       server {{\n    listen {listen};\n    location / {{\n      proxy_pass http://u;\n\
                           proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
                    listen = mode.entry(),
                    pid = dir.join("nginx.pid").display(),
                    err = dir.join("nginx.err").display(),
                ),
            )?;
            let l = Launch::new(
                &tools.nginx.to_string_lossy(),
                vec![
                    "-e".into(),
                    dir.join("nginx.err").to_string_lossy().into_owned(),
                    "-c".into(),
                    conf.to_string_lossy().into_owned(),
                ],
                Some(PROXY_CORE),
            );
            let p = Proc::spawn("nginx", &l)?;
            procs::wait_for(addr(mode.entry()), "nginx", within)?;
            Ok(Started {
                mode,
                measured: vec![p],
            })
        }
    }
}

/// A policy file whose Service has the upstream as its one endpoint,
/// meshed when `identity` is given.
fn policy_file(dir: &Path, name: &str, identity: Option<SpiffeId>) -> Result<String> {
    #[derive(Serialize)]
    struct File {
        outbound: Vec<OutboundPolicy>,
    }
    let service = ResourceRef::new(NAMESPACE, "upstream");
    let policy = OutboundPolicy {
        target: Target(addr(SERVICE)),
        service: service.clone(),
        port: 80,
        port_name: None,
        protocol: Protocol::Detect,
        http_routes: Vec::new(),
        grpc_routes: Vec::new(),
        tcp_routes: Vec::new(),
        tls_routes: Vec::new(),
        backend: Backend::Service(ServiceBackend {
            service,
            port: 80,
            authority: "upstream.bench.svc.cluster.local:80".into(),
            protocol: Protocol::Detect,
            endpoints: vec![Endpoint {
                addr: addr(UPSTREAM),
                identity,
                pod: None,
                zone: None,
            }],
            retry_budget: None,
        }),
    };
    let path = dir.join(name);
    std::fs::write(
        &path,
        serde_saphyr::to_string(&File {
            outbound: vec![policy],
        })?,
    )?;
    Ok(path.to_string_lossy().into_owned())
}
