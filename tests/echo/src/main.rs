//! trellis-echo: the test backend (HTTP/1.1, h2c, gRPC and TCP echo).

fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    std::process::exit(trellis_echo::process_main());
}
