//! trellis-cni: the chained CNI plugin that installs Trellis capture rules.

fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    std::process::exit(trellis_cni::process_main());
}
