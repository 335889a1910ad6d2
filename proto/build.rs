//! Compiles `proto/**/*.proto` with protox (pure Rust), so building needs no
//! system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "callflow/events/v1/events.proto",
        "callflow/eventstore/v1/eventstore.proto",
        "callflow/reminders/v1/reminders.proto",
        "callflow/timers/v1/timers.proto",
        "callflow/leads/v1/leads.proto",
        "callflow/routing/v1/routing.proto",
        "callflow/options/v1/options.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let mut compiler = protox::Compiler::new(["."])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(files)?;
    let descriptors = compiler.file_descriptor_set();
    // The descriptors themselves, for readers that decode payloads by name
    // (JSON export) and read custom field options (personal data). Encoded by
    // protox itself: prost's types would drop the custom options.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("callflow_descriptors.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    // Type names let code ask a payload for its name (`prost::Name`), which
    // is the event's `type` in the log.
    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds_with_config(descriptors, config)?;
    Ok(())
}
