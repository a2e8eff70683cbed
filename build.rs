//! Generates the gRPC and message code from `proto/` with protox (a Rust protobuf compiler),
//! so building needs no system `protoc`. The file descriptor set is kept for server
//! reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/pcs/v1/events.proto", "proto/pcs/v1/scores.proto", "proto/pcs/v1/service.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("pcs_descriptor.bin"), prost::Message::encode_to_vec(&descriptors))?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    Ok(())
}
