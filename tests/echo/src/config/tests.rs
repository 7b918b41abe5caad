use super::*;

fn config(flags: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let args =
        Args::try_parse_from(std::iter::once("trellis-echo").chain(flags.iter().copied())).unwrap();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_args(args, &|name| {
        env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
}

fn ports(c: &Config) -> Vec<(Protocol, u16, bool)> {
    c.listeners
        .iter()
        .map(|l| (l.protocol, l.addr.port(), l.tls))
        .collect()
}

#[test]
fn the_conformance_deployment_args() {
    let c = config(
        &[
            "--tcp=9090",
            "--port=8080",
            "--grpc=7070",
            "--port=8443",
            "--tls=8443",
            "--crt=/cert.crt",
            "--key=/cert.key",
        ],
        &[("NAMESPACE", "ns"), ("POD_NAME", "echo-v1-0")],
    )
    .unwrap();
    assert_eq!(
        ports(&c),
        [
            (Protocol::Http, 8080, false),
            (Protocol::Http, 8443, true),
            (Protocol::Grpc, 7070, false),
            (Protocol::Tcp, 9090, false)
        ]
    );
    // The image's certificate files are not on the host: generate one.
    assert!(
        matches!(&c.cert, CertSource::SelfSigned(names) if names.contains(&"echo-v1-0.ns".to_string()))
    );
    assert_eq!(c.identity.pod, "echo-v1-0");
}

#[test]
fn defaults_and_lists() {
    let c = config(&[], &[]).unwrap();
    assert_eq!(
        ports(&c),
        [
            (Protocol::Http, 8080, false),
            (Protocol::Grpc, 7070, false),
            (Protocol::Tcp, 9090, false)
        ]
    );
    let c = config(&["--port", "80,81", "--grpc=90"], &[]).unwrap();
    assert_eq!(ports(&c).len(), 4);
}

#[test]
fn binding() {
    let c = config(
        &["--port=80,81", "--bind-localhost=80", "--bind-ip=81"],
        &[("INSTANCE_IP", "198.18.0.4")],
    )
    .unwrap();
    assert_eq!(c.listeners[0].addr, "127.0.0.1:80".parse().unwrap());
    assert_eq!(c.listeners[1].addr, "198.18.0.4:81".parse().unwrap());
    assert!(c.listeners[2].addr.ip().is_unspecified());
}

#[test]
fn echo_basic_takes_the_environment() {
    let c = config(&["--echo-basic"], &[]).unwrap();
    assert_eq!(
        ports(&c),
        [(Protocol::Http, 3000, false), (Protocol::Http, 3001, false)]
    );
    let tls = [
        ("TLS_SERVER_CERT", "/etc/secret-volume/crt"),
        ("TLS_SERVER_PRIVKEY", "/etc/secret-volume/key"),
    ];
    let c = config(&["--echo-basic"], &tls).unwrap();
    assert_eq!(ports(&c).last(), Some(&(Protocol::Http, 8443, true)));
    let c = config(
        &["--echo-basic"],
        &[("GRPC_ECHO_SERVER", "1"), ("HTTP_PORT", "3100")],
    )
    .unwrap();
    assert_eq!(ports(&c), [(Protocol::Grpc, 3100, false)]);
    let c = config(
        &["--echo-basic"],
        &[
            ("TCP_ECHO_SERVER", "1"),
            ("TLS_SERVER_CERT", "/c"),
            ("TLS_SERVER_PRIV_KEY", "/k"),
        ],
    )
    .unwrap();
    assert_eq!(
        ports(&c),
        [(Protocol::Tcp, 3000, false), (Protocol::Tcp, 8443, true)]
    );
    assert_eq!(
        config(&["--echo-basic"], &[("HTTP_PORT", "web")]),
        Err(ConfigError::EnvPort {
            name: "HTTP_PORT",
            value: "web".into()
        })
    );
    assert!(Args::try_parse_from(["trellis-echo", "--echo-basic", "--port=1"]).is_err());
}

#[test]
fn bad_combinations_are_named() {
    assert_eq!(
        config(&["--port=80", "--grpc=80"], &[]),
        Err(ConfigError::Duplicate(80))
    );
    assert_eq!(
        config(&["--tls=443"], &[]),
        Err(ConfigError::Unknown {
            flag: "tls",
            port: 443
        })
    );
    assert_eq!(
        config(&["--bind-ip=8080"], &[]),
        Err(ConfigError::InstanceIp(String::new()))
    );
    assert_eq!(config(&["--crt=/x"], &[]), Err(ConfigError::HalfCert));
    assert!(Args::try_parse_from(["trellis-echo", "--port=http"]).is_err());
}
