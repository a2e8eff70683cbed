//! Generates the gRPC and message code from `proto/` with protox (a Rust protobuf compiler),
//! so building needs no system `protoc`. The file descriptor set is kept for server
//! reflection.
//!
//! The server is generated in a second pass, into `server/`, with every message taken from
//! the first pass except three that carry scores already encoded, instead of decoding them
//! to be encoded again: WatchScores sends `ScoreChangedWire` (the feed's score passed
//! through), GetScore and BatchGetScores send `GetScoreResponseWire` and
//! `BatchGetScoresResponseWire` (stored scores with their plans spliced in).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/pcs/v1/events.proto", "proto/pcs/v1/scores.proto", "proto/pcs/v1/service.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("pcs_descriptor.bin"), prost::Message::encode_to_vec(&descriptors))?;
    tonic_prost_build::configure().build_client(true).build_server(false).compile_fds(descriptors.clone())?;
    let server = out.join("server");
    std::fs::create_dir_all(&server)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .out_dir(server)
        .extern_path(".pcs.v1.ScoreChanged", "crate::proto::ScoreChangedWire")
        .extern_path(".pcs.v1.GetScoreResponse", "crate::proto::GetScoreResponseWire")
        .extern_path(".pcs.v1.BatchGetScoresResponse", "crate::proto::BatchGetScoresResponseWire")
        .extern_path(".pcs.v1", "crate::proto")
        .compile_fds(descriptors)?;
    Ok(())
}
