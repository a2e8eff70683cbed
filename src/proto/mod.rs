//! The generated protobuf and gRPC code (package `pcs.v1`) and its descriptor set.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("pcs.v1");

/// Every message and service of `proto/`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pcs_descriptor.bin"));

mod convert;
mod qualified;
mod stored;

pub use convert::{MalformedScore, decode_stored, qualification_windows, restore_shortfalls};
pub use qualified::{DesignationQualified, QualifiedView};
pub use stored::without_shortfalls;
