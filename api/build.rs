//! Compiles `proto/*.proto` with protox (no system `protoc`) and generates the
//! prost messages and tonic clients and servers from the descriptor set.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/policy.proto",
        "proto/discovery.proto",
        "proto/identity.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // These carry secrets (a private key, a service-account token); their
        // `Debug` impls in `src/lib.rs` leave them out of log lines.
        .skip_debug([
            ".trellis.policy.v1.CertificatePem",
            ".trellis.identity.v1.CertifyRequest",
        ])
        .compile_fds(fds)?;
    Ok(())
}
