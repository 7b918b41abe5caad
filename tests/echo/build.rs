//! Compiles `proto/echo.proto` with protox (no system `protoc`) into the
//! gRPC echo service and its client (the tests and the sandbox call it).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "proto/echo.proto";
    println!("cargo:rerun-if-changed={file}");
    let fds = protox::compile([file], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
