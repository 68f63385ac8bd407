//! Generates the kubelet device plugin API (proto/deviceplugin/v1beta1/api.proto, vendored from
//! kubernetes/kubelet) with prost and tonic: the plugin's server and the kubelet's Registration
//! client for `src/kubelet`, and the other two halves for the tests' kubelet stand-in.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/deviceplugin/v1beta1/api.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
